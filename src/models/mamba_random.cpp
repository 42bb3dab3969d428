#include "models/mamba_random.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/safetensors.h"

namespace ssmx {

void write_random_mamba(const std::string& dir, const MambaConfig& c, uint64_t seed) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<SafetensorsEntry> entries;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, auto&& gen) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = gen(i);
    entries.push_back(make_f32_entry(name, shape, v.data()));
  };
  auto normal = [&](float s) { return [&, s](int64_t) { return s * nd(rng); }; };
  auto constant = [](float v) { return [v](int64_t) { return v; }; };
  const int64_t Dm = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab;
  add("backbone.embeddings.weight", {V, Dm}, normal(1.0f));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    add(p + "norm.weight", {Dm}, constant(1.0f));
    add(p + "mixer.in_proj.weight", {2 * E, Dm}, normal(1.0f / std::sqrt(float(Dm))));
    if (c.in_proj_bias) add(p + "mixer.in_proj.bias", {2 * E}, normal(0.1f));
    add(p + "mixer.conv1d.weight", {E, 1, K}, normal(1.0f / std::sqrt(float(K))));
    if (c.conv_bias) add(p + "mixer.conv1d.bias", {E}, normal(0.1f));
    add(p + "mixer.x_proj.weight", {R + 2 * N, E}, normal(1.0f / std::sqrt(float(E))));
    add(p + "mixer.dt_proj.weight", {E, R}, normal(1.0f / std::sqrt(float(R))));
    add(p + "mixer.dt_proj.bias", {E}, [&](int64_t) {
      const float dt = std::exp(std::log(1e-3f) + ud(rng) * (std::log(1e-1f) - std::log(1e-3f)));
      return dt + std::log(-std::expm1(-dt));  // softplus⁻¹
    });
    add(p + "mixer.A_log", {E, N}, [&](int64_t k) { return std::log(float(k % N + 1)); });
    add(p + "mixer.D", {E}, constant(1.0f));
    add(p + "mixer.out_proj.weight", {Dm, E}, normal(1.0f / std::sqrt(float(E))));
    if (c.out_proj_bias) add(p + "mixer.out_proj.bias", {Dm}, normal(0.1f));
  }
  add("backbone.norm_f.weight", {Dm}, constant(1.0f));
  if (!c.tied) add("lm_head.weight", {V, Dm}, normal(1.0f / std::sqrt(float(Dm))));
  write_safetensors(dir + "/model.safetensors", std::move(entries), {{"format", "pt"}});

  nlohmann::ordered_json j;
  j["architectures"] = {c.falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"};
  j["model_type"] = c.falcon ? "falcon_mamba" : "mamba";
  j["hidden_size"] = Dm;
  j["num_hidden_layers"] = c.n_layer;
  j["intermediate_size"] = E;
  j["state_size"] = N;
  j["time_step_rank"] = R;
  j["conv_kernel"] = K;
  j["vocab_size"] = V;
  j["use_bias"] = c.in_proj_bias;
  j["use_conv_bias"] = c.conv_bias;
  j["layer_norm_epsilon"] = c.norm_eps;
  if (c.falcon) j["mixer_rms_eps"] = c.mixer_rms_eps;
  j["residual_in_fp32"] = true;
  j["tie_word_embeddings"] = c.tied;
  j["torch_dtype"] = "float32";
  std::ofstream f(dir + "/config.json");
  if (!f) throw Error(dir + "/config.json", "cannot open for writing");
  f << j.dump(2) << "\n";
}

}  // namespace ssmx
