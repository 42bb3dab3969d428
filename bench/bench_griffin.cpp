// Forward pass of a random ~110M-parameter RecurrentGemma / Griffin (hidden 768, lru_width 768, 12 heads of 64 with
// one KV head, MLP width 2304, 12 layers in the recurrent, recurrent, attention pattern, vocab 32000, window 2048) at
// T=512 and 2048, full capped logits, next to the PyTorch reference (scripts/bench_griffin_reference.py), plus the
// channel-mean implicit attention of one recurrent layer.
//
//   build/bench_griffin [--reference=bench/results/reference_griffin.json] [--json=bench/results/griffin.json]
//                       [--seqlens=512,2048] [--explain-seqlens=512] [--threads=N]
// and `explain --method grad-input` (one forward + backward of griffin_grad; f32 dense projections through OpenBLAS
// sgemm) at --explain-seqlens, next to the reference's autograd explanation ("explain_results").
#include <benchmark/benchmark.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <sstream>

#include "attribution/explain.h"
#include "attribution/griffin_attention.h"
#include "bench_common.h"
#include "core/large_pages.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/griffin.h"

using namespace ssmx;

namespace {

constexpr int64_t kDm = 768, kW = 768, kH = 12, kHd = 64, kF = 2304, kLayers = 12, kV = 32000;

void write_random_griffin(const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<SafetensorsEntry> entries;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float std, float mean = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = std == 0.0f ? mean : mean + std * nd(rng);
    entries.push_back(make_f32_entry(name, shape, v.data()));
  };
  const float sD = 1.0f / std::sqrt(float(kDm)), sW = 1.0f / std::sqrt(float(kW)), sF = 1.0f / std::sqrt(float(kF));
  const int64_t bw = kW / kH;
  add("model.embed_tokens.weight", {kV, kDm}, sD);
  add("model.final_norm.weight", {kDm}, 0.0f);
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".", tb = p + "temporal_block.";
    add(p + "temporal_pre_norm.weight", {kDm}, 0.0f);
    add(p + "channel_pre_norm.weight", {kDm}, 0.0f);
    if (i % 3 != 2) {
      add(tb + "linear_y.weight", {kW, kDm}, sD), add(tb + "linear_y.bias", {kW}, 0.0f);
      add(tb + "linear_x.weight", {kW, kDm}, sD), add(tb + "linear_x.bias", {kW}, 0.0f);
      add(tb + "linear_out.weight", {kDm, kW}, sW), add(tb + "linear_out.bias", {kDm}, 0.0f);
      add(tb + "conv_1d.weight", {kW, 1, 4}, 0.5f), add(tb + "conv_1d.bias", {kW}, 0.0f);
      add(tb + "rg_lru.recurrent_param", {kW}, 1.0f, -3.0f);
      add(tb + "rg_lru.input_gate_weight", {kH, bw, bw}, 1.0f / std::sqrt(float(bw)));
      add(tb + "rg_lru.input_gate_bias", {kH, bw}, 0.0f);
      add(tb + "rg_lru.recurrent_gate_weight", {kH, bw, bw}, 1.0f / std::sqrt(float(bw)));
      add(tb + "rg_lru.recurrent_gate_bias", {kH, bw}, 0.0f);
    } else {
      add(tb + "q_proj.weight", {kH * kHd, kDm}, sD);
      add(tb + "k_proj.weight", {kHd, kDm}, sD);
      add(tb + "v_proj.weight", {kHd, kDm}, sD);
      add(tb + "o_proj.weight", {kDm, kH * kHd}, sD), add(tb + "o_proj.bias", {kDm}, 0.0f);
    }
    add(p + "mlp_block.gate_proj.weight", {kF, kDm}, sD), add(p + "mlp_block.gate_proj.bias", {kF}, 0.0f);
    add(p + "mlp_block.up_proj.weight", {kF, kDm}, sD), add(p + "mlp_block.up_proj.bias", {kF}, 0.0f);
    add(p + "mlp_block.down_proj.weight", {kDm, kF}, sF), add(p + "mlp_block.down_proj.bias", {kDm}, 0.0f);
  }
  write_safetensors(dir + "/model.safetensors", std::move(entries), {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["architectures"] = {"RecurrentGemmaForCausalLM"};
  j["model_type"] = "recurrent_gemma";
  j["hidden_size"] = kDm, j["lru_width"] = kW, j["num_attention_heads"] = kH, j["num_key_value_heads"] = 1;
  j["head_dim"] = kHd, j["intermediate_size"] = 2 * kF, j["num_hidden_layers"] = kLayers, j["vocab_size"] = kV;
  j["attention_window_size"] = 2048, j["conv1d_width"] = 4, j["logits_soft_cap"] = 30.0;
  std::ofstream(dir + "/config.json") << j.dump(2) << "\n";
}

struct State {
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;
  std::map<int64_t, double> best, best_attn, best_explain;
} g;

std::vector<int32_t> make_ids(int64_t T) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % kV);
  return ids;
}

void bm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  for (auto _ : st) {
    const double t0 = bench::now_s();
    ForwardResult r = g.model->forward(ids, {});
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(r.logits.data.data());
    auto it = g.best.find(T);
    if (it == g.best.end() || dt < it->second) g.best[T] = dt;
  }
}

// Channel-mean implicit attention (T×T over 768 channels) of layer 0, activations from a hooked forward.
void bm_attention(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  const auto& gm = dynamic_cast<const GriffinModel&>(*g.model);
  std::map<std::string, Tensor> acts;
  ForwardOptions opt;
  opt.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& a) {
    if (layer == 0) acts = a;
  };
  gm.forward(ids, opt);
  const GriffinLayer& ly = gm.layer(0);
  GriffinTrace tr = griffin_trace(acts, 0, ly.conv_w.p, ly.conv_b.p, gm.config().conv_width);
  for (auto _ : st) {
    const double t0 = bench::now_s();
    Tensor m = griffin_attention_reduce(tr, {}, AttnReduce::Mean, 0, tr.W);
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(m.data.data());
    auto it = g.best_attn.find(T);
    if (it == g.best_attn.end() || dt < it->second) g.best_attn[T] = dt;
  }
}

// explain(grad-input): griffin_gradient (forward + backward), the target resolved inside its forward.
void bm_explain(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  ExplainOptions o;
  o.method = Method::GradInput;
  for (auto _ : st) {
    const double t0 = bench::now_s();
    Explanation ex = explain(*g.model, nullptr, ids, o);
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(ex.relevance.data());
    auto it = g.best_explain.find(T);
    if (it == g.best_explain.end() || dt < it->second) g.best_explain[T] = dt;
  }
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string ref_path = bench::take_flag(argc, argv, "reference", "bench/results/reference_griffin.json");
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  const std::string seqlens = bench::take_flag(argc, argv, "seqlens", "512,2048");
  const std::string explain_seqlens = bench::take_flag(argc, argv, "explain-seqlens", "512");
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-griffin").string();
  write_random_griffin(dir);
  g.ck = open_checkpoint(dir);
  g.model = load_causal_lm(g.ck);

  const std::vector<int64_t> Ts = bench::parse_lengths(seqlens), Te = bench::parse_lengths(explain_seqlens);
  for (int64_t T : Ts) {
    benchmark::RegisterBenchmark(("forward_griffin110m/T=" + std::to_string(T)).c_str(), bm_forward)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
    benchmark::RegisterBenchmark(("attention_mean_layer0/T=" + std::to_string(T)).c_str(), bm_attention)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  }
  for (int64_t T : Te)
    benchmark::RegisterBenchmark(("explain_grad_input/T=" + std::to_string(T)).c_str(), bm_explain)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  nlohmann::ordered_json out;
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()},
                    {"load_average_1min", bench::load_average_1min()}};
  out["shape"] = {{"hidden", kDm}, {"lru_width", kW}, {"heads", kH}, {"head_dim", kHd}, {"kv_heads", 1},
                  {"mlp_width", kF}, {"layers", kLayers}, {"vocab", kV}};
  out["results"] = bench::compare_table("forward, Griffin ~110M shape (12 layers, D=768, W=768, F=2304, V=32000, "
                                        "all logits), " + std::to_string(num_threads()) + " threads",
                                        g.best, bench::read_reference(ref_path));
  for (auto& r : out["results"]) r["attention_mean_layer0_s"] = g.best_attn[r["T"].get<int64_t>()];
  out["explain_grad_input"] = bench::compare_table(
      "explain --method grad-input (one gradient engine forward + backward, the target resolved inside it) vs "
      "PyTorch autograd (forward + backward), same shape",
      g.best_explain, bench::read_reference(ref_path, "explain_results"));
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
