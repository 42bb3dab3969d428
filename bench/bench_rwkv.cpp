// Forward pass and implicit attention of an rwkv-4-169m-shaped model (hidden 768, 12 layers, attention 768,
// intermediate 3072, vocab 50277; random weights) at T=512 and T=2048, full logits at every position, and
// `explain --method grad-input` at --explain-seqlens, each next to the PyTorch reference
// (scripts/bench_rwkv_reference.py: "results" and "explain_results").
//
//   build/bench_rwkv [--reference=bench/results/reference_rwkv.json] [--json=bench/results/rwkv.json]
//                    [--layers=12] [--seqlens=512,2048] [--explain-seqlens=512] [--threads=N]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "attribution/explain.h"
#include "attribution/rwkv_attention.h"
#include "bench_common.h"
#include "core/large_pages.h"
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
  std::map<int64_t, double> forward, attention_mean, explain;
} g;

std::vector<int32_t> make_ids(int64_t T) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % g.cfg.vocab);
  return ids;
}

void record(std::map<int64_t, double>& best, int64_t T, double s) {
  auto it = best.find(T);
  if (it == best.end() || s < it->second) best[T] = s;
}

void bm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  for (auto _ : st) {
    const double t0 = now_s();
    ForwardResult r = g.model->forward(ids, {});
    benchmark::DoNotOptimize(r.logits.data.data());
    record(g.forward, T, now_s() - t0);
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
    record(g.attention_mean, T, now_s() - t0);
  }
}

// ssmx explain --method grad-input at the last position: the gradient engine's forward (resolving the target) and backward.
void bm_explain_grad_input(benchmark::State& st) {
  const int64_t T = st.range(0);
  const auto ids = make_ids(T);
  ExplainOptions o;
  o.method = Method::GradInput;
  for (auto _ : st) {
    const double t0 = now_s();
    Explanation ex = explain(*g.model, nullptr, ids, o);
    benchmark::DoNotOptimize(ex.relevance.data());
    record(g.explain, T, now_s() - t0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string ref_path = take_flag(argc, argv, "reference", "bench/results/reference_rwkv.json");
  const std::string json = take_flag(argc, argv, "json", "");
  const int layers = std::stoi(take_flag(argc, argv, "layers", "12"));
  const std::string seqlens = take_flag(argc, argv, "seqlens", "512,2048");
  const std::string explain_seqlens = take_flag(argc, argv, "explain-seqlens", "512");
  set_num_threads(std::stoi(take_flag(argc, argv, "threads", "0")));
  g.cfg.n_layer = layers, g.cfg.hidden = 768, g.cfg.att = 768, g.cfg.ffn = 3072, g.cfg.vocab = 50277;
  g.cfg.rescale_every = 6;
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-rwkv").string();
  write_random_rwkv(dir, g.cfg, 1);
  g.ck = open_checkpoint(dir);
  g.model = RwkvModel::load(g.ck);
  for (int64_t T : parse_lengths(seqlens)) {
    const std::string s = std::to_string(T);
    benchmark::RegisterBenchmark(("rwkv_forward/T=" + s).c_str(), bm_forward)->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("rwkv_attention_mean/T=" + s).c_str(), bm_attention_mean)->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  for (int64_t T : parse_lengths(explain_seqlens))
    benchmark::RegisterBenchmark(("rwkv_explain_grad_input/T=" + std::to_string(T)).c_str(), bm_explain_grad_input)
        ->Arg(T)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  nlohmann::ordered_json out;
  out["model"] = "random rwkv-4-169m shape (hidden 768, " + std::to_string(layers) + " layers, vocab 50277)";
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()}, {"load_average_1min", load_average_1min()}};
  out["results"] = compare_table("forward, rwkv-4-169m shape, all logits, " + std::to_string(num_threads()) + " threads",
                                 g.forward, read_reference(ref_path));
  for (auto& r : out["results"]) r["attention_mean_layer_s"] = g.attention_mean[r["T"].get<int64_t>()];
  out["explain_grad_input"] = compare_table(
      "explain --method grad-input (one gradient engine forward + backward, the target resolved inside it) vs "
      "PyTorch autograd (forward + backward), same shape", g.explain,
      read_reference(ref_path, "explain_results"));
  if (!json.empty()) std::ofstream(json) << out.dump(2) << "\n";
  std::filesystem::remove_all(dir);
  return 0;
}
