#include "models/rwkv_random.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/safetensors.h"

namespace ssmx {

void write_random_rwkv(const std::string& dir, const RwkvConfig& c, uint64_t seed) {
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
  auto uniform = [&](float lo, float hi) { return [&, lo, hi](int64_t) { return lo + (hi - lo) * ud(rng); }; };
  auto constant = [](float v) { return [v](int64_t) { return v; }; };
  const int64_t H = c.hidden, A = c.att, I = c.ffn, V = c.vocab;
  const float sh = 1.0f / std::sqrt(float(H));
  add("rwkv.embeddings.weight", {V, H}, normal(1.0f));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string b = "rwkv.blocks." + std::to_string(i) + ".";
    if (i == 0) {
      add(b + "pre_ln.weight", {H}, constant(1.0f));
      add(b + "pre_ln.bias", {H}, constant(0.0f));
    }
    for (const char* ln : {"ln1", "ln2"}) {
      add(b + ln + ".weight", {H}, constant(1.0f));
      add(b + ln + ".bias", {H}, constant(0.0f));
    }
    add(b + "attention.time_decay", {A}, uniform(-5.0f, 1.0f));
    add(b + "attention.time_first", {A}, uniform(-1.0f, 1.0f));
    for (const char* m : {"key", "value", "receptance"}) add(b + "attention.time_mix_" + m, {1, 1, H}, uniform(0.0f, 1.0f));
    add(b + "attention.key.weight", {A, H}, normal(sh));
    add(b + "attention.value.weight", {A, H}, normal(sh));
    add(b + "attention.receptance.weight", {A, H}, normal(sh));
    add(b + "attention.output.weight", {H, A}, normal(1.0f / std::sqrt(float(A))));
    for (const char* m : {"key", "receptance"}) add(b + "feed_forward.time_mix_" + m, {1, 1, H}, uniform(0.0f, 1.0f));
    add(b + "feed_forward.key.weight", {I, H}, normal(sh));
    add(b + "feed_forward.receptance.weight", {H, H}, normal(sh));
    add(b + "feed_forward.value.weight", {H, I}, normal(1.0f / std::sqrt(float(I))));
  }
  add("rwkv.ln_out.weight", {H}, constant(1.0f));
  add("rwkv.ln_out.bias", {H}, constant(0.0f));
  add("head.weight", {V, H}, normal(sh));
  write_safetensors(dir + "/model.safetensors", std::move(entries), {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["architectures"] = {"RwkvForCausalLM"};
  j["model_type"] = "rwkv";
  j["hidden_size"] = H;
  j["attention_hidden_size"] = A;
  j["intermediate_size"] = I;
  j["num_hidden_layers"] = c.n_layer;
  j["vocab_size"] = V;
  j["rescale_every"] = c.rescale_every;
  j["layer_norm_epsilon"] = c.norm_eps;
  j["tie_word_embeddings"] = false;
  std::ofstream f(dir + "/config.json");
  if (!f) throw Error(dir + "/config.json", "cannot write");
  f << j.dump(2) << "\n";
}

}  // namespace ssmx
