// Forward pass and implicit attention of an rwkv-4-169m-shaped model (hidden 768, 12 layers, attention 768,
// intermediate 3072, vocab 50277; random weights) at T=512 and T=2048, full logits at every position.
//
//   build/bench_rwkv [--json=bench/results/rwkv.json] [--layers=12] [--seqlens=512,2048]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "attribution/explain.h"
#include "attribution/rwkv_attention.h"
#include "bench_common.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/rwkv_random.h"

using namespace ssmx;
using namespace ssmx::bench;

namespace {

struct State {
  RwkvConfig cfg;
  Checkpoint ck;
  std::unique_ptr<RwkvModel> model;
  std::map<std::string, double> best;
} g;

std::vector<int32_t> make_ids(int64_t T) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % g.cfg.vocab);
  return ids;
}

void record(const std::string& key, double s) {
  auto it = g.best.find(key);
  if (it == g.best.end() || s < it->second) g.best[key] = s;
}

void bm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  for (auto _ : st) {
    const double t0 = now_s();
    ForwardResult r = g.model->forward(ids, {});
    benchmark::DoNotOptimize(r.logits.data.data());
    record("forward_T" + std::to_string(T), now_s() - t0);
  }
}

void bm_attention_mean(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult r = g.model->forward(ids, opt);
  const int64_t layer = g.cfg.n_layer / 2;
  for (auto _ : st) {
    const double t0 = now_s();
    Tensor m = rwkv_attention_reduced(rwkv_attn_input(*g.model, layer, r.acts, true), RwkvReduce::Mean);
    benchmark::DoNotOptimize(m.data.data());
    record("attention_mean_T" + std::to_string(T), now_s() - t0);
  }
}

// ssmx explain --method grad-input at the last position: one forward + the gradient engine's forward and backward.
void bm_explain_grad_input(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  ExplainOptions o;
  o.method = Method::GradInput;
  for (auto _ : st) {
    const double t0 = now_s();
    Explanation ex = explain(*g.model, nullptr, ids, o);
    benchmark::DoNotOptimize(ex.relevance.data());
    record("explain_grad_input_T" + std::to_string(T), now_s() - t0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string json = take_flag(argc, argv, "json", "");
  const int layers = std::stoi(take_flag(argc, argv, "layers", "12"));
  const std::string seqlens = take_flag(argc, argv, "seqlens", "512,2048");
  g.cfg.n_layer = layers, g.cfg.hidden = 768, g.cfg.att = 768, g.cfg.ffn = 3072, g.cfg.vocab = 50277;
  g.cfg.rescale_every = 6;
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-rwkv").string();
  write_random_rwkv(dir, g.cfg, 1);
  g.ck = open_checkpoint(dir);
  g.model = RwkvModel::load(g.ck);
  std::stringstream ss(seqlens);
  for (std::string s; std::getline(ss, s, ',');) {
    const int64_t T = std::stoll(s);
    benchmark::RegisterBenchmark(("rwkv_forward/T=" + s).c_str(), bm_forward)->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("rwkv_attention_mean/T=" + s).c_str(), bm_attention_mean)->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("rwkv_explain_grad_input/T=" + s).c_str(), bm_explain_grad_input)->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  if (!json.empty()) {
    std::ofstream f(json);
    f << "{\n  \"model\": \"random rwkv-4-169m shape (hidden 768, " << layers << " layers, vocab 50277)\",\n"
      << "  \"threads\": " << num_threads() << ",\n";
    std::ifstream la("/proc/loadavg");
    double load = 0;
    la >> load;
    f << "  \"load_average_1min\": " << load << ",\n  \"best_seconds\": {";
    bool first = true;
    for (const auto& [k, v] : g.best) {
      f << (first ? "\n" : ",\n") << "    \"" << k << "\": " << v;
      first = false;
    }
    f << "\n  }\n}\n";
  }
  std::filesystem::remove_all(dir);
  return 0;
}
