// Forward pass of a mamba2-130m-shaped model (Dm 768, 24 layers, expand 2 → Di 1536, head_dim 64 → 24 heads, 1 group,
// state 128, conv 4, V 50288; random weights written to a temp dir) at T=512 and T=2048, all logits. Prints the PyTorch
// reference's time on the same shape (scripts/bench_mamba2_reference.py) next to it.
//
//   build/bench_mamba2 [--reference=bench/results/reference_mamba2.json] [--json=bench/results/mamba2.json]
//                      [--layers=24] [--seqlens=512,2048] [--explain-seqlens=512] [--threads=N]
// Also times `explain --method grad-input` (the gradient engine) at --explain-seqlens (empty: skipped), next to the
// reference's autograd explanation ("explain_results" of the reference file).
#include <benchmark/benchmark.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "bench_common.h"
#include "core/large_pages.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "attribution/explain.h"
#include "models/model.h"

using namespace ssmx;

namespace {

constexpr int64_t kDm = 768, kDi = 1536, kP = 64, kH = kDi / kP, kG = 1, kN = 128, kK = 4, kV = 50288;

struct State {
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;
  int layers = 24;
  std::map<int64_t, double> best;
  std::map<int64_t, double> best_explain;  // explain grad-input (gradient engine), by T
} g;

void write_random_mamba2(const std::string& dir, int layers) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<SafetensorsEntry> es;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, auto&& gen) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = gen();
    es.push_back(make_f32_entry(name, shape, v.data()));
  };
  const int64_t W = 2 * kDi + 2 * kG * kN + kH, CD = kDi + 2 * kG * kN;
  add("backbone.embeddings.weight", {kV, kDm}, [&] { return nd(rng) * 0.05f; });
  for (int i = 0; i < layers; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    add(p + "norm.weight", {kDm}, [&] { return 1.0f; });
    add(p + "mixer.in_proj.weight", {W, kDm}, [&] { return nd(rng) / std::sqrt(float(kDm)); });
    add(p + "mixer.conv1d.weight", {CD, 1, kK}, [&] { return nd(rng) * 0.5f; });
    add(p + "mixer.conv1d.bias", {CD}, [&] { return ud(rng) - 0.5f; });
    add(p + "mixer.dt_bias", {kH}, [&] { return std::log(std::expm1(0.001f + 0.1f * ud(rng))); });
    add(p + "mixer.A_log", {kH}, [&] { return std::log(1.0f + 15.0f * ud(rng)); });
    add(p + "mixer.D", {kH}, [&] { return 1.0f; });
    add(p + "mixer.norm.weight", {kDi}, [&] { return 1.0f; });
    add(p + "mixer.out_proj.weight", {kDm, kDi}, [&] { return nd(rng) / std::sqrt(float(kDi)); });
  }
  add("backbone.norm_f.weight", {kDm}, [&] { return 1.0f; });
  write_safetensors(dir + "/model.safetensors", std::move(es), {{"format", "pt"}});
  nlohmann::json c = {{"model_type", "mamba2"}, {"hidden_size", kDm}, {"num_hidden_layers", layers}, {"num_heads", kH},
                      {"head_dim", kP}, {"n_groups", kG}, {"state_size", kN}, {"expand", 2}, {"conv_kernel", kK},
                      {"vocab_size", kV}, {"tie_word_embeddings", true}, {"chunk_size", 256}, {"use_bias", false}};
  std::ofstream(dir + "/config.json") << c.dump(2);
}

void bm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % kV);
  for (auto _ : st) {
    const double t0 = bench::now_s();
    ForwardResult r = g.model->forward(ids, {});
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(r.logits.data.data());
    auto it = g.best.find(T);
    if (it == g.best.end() || dt < it->second) g.best[T] = dt;
  }
}

// ssmx explain --method grad-input: one gradient (models/mamba2_grad.h), the target resolved inside its forward.
void bm_explain(benchmark::State& st) {
  const int64_t T = st.range(0);
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % kV);
  ExplainOptions o;
  o.method = Method::GradInput;
  for (auto _ : st) {
    const double t0 = bench::now_s();
    const Explanation ex = ssmx::explain(*g.model, nullptr, ids, o);
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
  const std::string ref_path = bench::take_flag(argc, argv, "reference", "bench/results/reference_mamba2.json");
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  g.layers = std::stoi(bench::take_flag(argc, argv, "layers", "24"));
  const std::string seqlens = bench::take_flag(argc, argv, "seqlens", "512,2048");
  const std::string explain_seqlens = bench::take_flag(argc, argv, "explain-seqlens", "512");  // "" skips explain
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-mamba2-130m").string();
  std::fprintf(stderr, "bench: writing a random %d-layer mamba2-130m-shaped model to %s\n", g.layers, dir.c_str());
  write_random_mamba2(dir, g.layers);
  g.ck = open_checkpoint(dir);
  g.model = load_causal_lm(g.ck);

  const std::vector<int64_t> Ts = bench::parse_lengths(seqlens), Te = bench::parse_lengths(explain_seqlens);
  for (int64_t T : Ts)
    benchmark::RegisterBenchmark(("forward_mamba2_130m/T=" + std::to_string(T)).c_str(), bm_forward)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  for (int64_t T : Te)
    benchmark::RegisterBenchmark(("explain_grad_input_mamba2_130m/T=" + std::to_string(T)).c_str(), bm_explain)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  nlohmann::ordered_json out;
  out["shape"] = {{"layers", g.layers}, {"d_model", kDm}, {"d_inner", kDi}, {"heads", kH}, {"head_dim", kP},
                  {"groups", kG}, {"state", kN}, {"vocab", kV}};
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()},
                    {"load_average_1min", bench::load_average_1min()}};
  out["results"] = bench::compare_table("forward, mamba2-130m shape (" + std::to_string(g.layers) +
                                            " layers), all logits, " + std::to_string(num_threads()) + " threads",
                                        g.best, bench::read_reference(ref_path));
  out["explain_grad_input"] = bench::compare_table(
      "explain --method grad-input (one gradient engine forward + backward, the target resolved inside it) vs "
      "PyTorch autograd (forward + backward), same shape",
      g.best_explain, bench::read_reference(ref_path, "explain_results"));
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
