// Forward pass of a mamba-130m-shaped model (D=768, 24 layers, E=1536, N=16, V=50280; random weights) at T=512 and
// T=2048, full logits at every position as transformers computes them. Reports, next to each time, the PyTorch
// reference's time on this machine (scripts/bench_reference.py) and the GEMM-bound limit: the forward's GEMM flops
// divided by this machine's measured sgemm peak (shared/specs/performance.md §B3).
//
//   build/bench_forward [--reference=bench/results/reference_forward.json] [--json=bench/results/forward.json]
//                       [--layers=24] [--seqlens=512,2048]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <sstream>

#include "bench_common.h"
#include "core/large_pages.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/mamba_random.h"
#include "models/model.h"

using namespace ssmx;

namespace {

struct State {
  MambaConfig cfg;
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;
  std::map<int64_t, double> best;  // T -> best seconds
} g;

double gemm_flops(const MambaConfig& c, int64_t T) {
  const double Dm = double(c.d_model), E = double(c.d_inner), R = double(c.dt_rank), N = double(c.d_state);
  const double per_layer = 2.0 * T * (Dm * 2 * E + E * (R + 2 * N) + R * E + E * Dm);
  return per_layer * double(c.n_layer) + 2.0 * T * Dm * double(c.vocab);
}

void bm_forward(benchmark::State& st) {
  const int64_t T = st.range(0);
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % g.cfg.vocab);
  ForwardOptions opt;
  opt.all_logits = true;
  for (auto _ : st) {
    const double t0 = bench::now_s();
    ForwardResult r = g.model->forward(ids, opt);
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(r.logits.data.data());
    auto it = g.best.find(T);
    if (it == g.best.end() || dt < it->second) g.best[T] = dt;
  }
  st.counters["GFLOP/s"] = benchmark::Counter(gemm_flops(g.cfg, T) * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string ref_path = bench::take_flag(argc, argv, "reference", "bench/results/reference_forward.json");
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  const int layers = std::stoi(bench::take_flag(argc, argv, "layers", "24"));
  const std::string seqlens = bench::take_flag(argc, argv, "seqlens", "512,2048");
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));

  g.cfg.n_layer = layers, g.cfg.d_model = 768, g.cfg.d_inner = 1536, g.cfg.d_state = 16, g.cfg.d_conv = 4;
  g.cfg.dt_rank = 48, g.cfg.vocab = 50280, g.cfg.conv_bias = true, g.cfg.tied = true;
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-mamba130m").string();
  std::fprintf(stderr, "bench: writing a random %d-layer mamba-130m-shaped model to %s\n", layers, dir.c_str());
  write_random_mamba(dir, g.cfg, 1);
  g.ck = open_checkpoint(dir);
  g.model = load_causal_lm(g.ck);

  std::vector<int64_t> Ts;
  std::stringstream ss(seqlens);
  for (std::string s; std::getline(ss, s, ',');) Ts.push_back(std::stoll(s));
  for (int64_t T : Ts)
    benchmark::RegisterBenchmark(("forward_mamba130m/T=" + std::to_string(T)).c_str(), bm_forward)
        ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  const double peak = bench::measure_sgemm_peak();
  const auto ref = bench::read_reference(ref_path);
  std::printf("\nforward, mamba-130m shape (%d layers, D=768, E=1536, N=16, V=50280, all logits), %d threads, %s\n",
              layers, num_threads(), blas_core_reason().c_str());
  std::printf("measured sgemm peak: %.0f GFLOP/s\n", peak / 1e9);
  std::printf("%6s  %10s  %12s  %9s  %14s  %12s\n", "T", "ssmx (s)", "PyTorch (s)", "speed-up", "GEMM limit (s)",
              "ssmx/limit");
  nlohmann::ordered_json out;
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()}, {"sgemm_peak_gflops", peak / 1e9}};
  for (int64_t T : Ts) {
    const double t = g.best[T], lim = gemm_flops(g.cfg, T) / peak;
    auto it = ref.find(T);
    char refs[32] = "n/a", spd[32] = "n/a";
    if (it != ref.end() && layers == 24) {
      std::snprintf(refs, sizeof refs, "%.3f", it->second);
      std::snprintf(spd, sizeof spd, "%.1fx", it->second / t);
    }
    std::printf("%6lld  %10.3f  %12s  %9s  %14.3f  %11.2fx\n", (long long)T, t, refs, spd, lim, t / lim);
    out["results"].push_back({{"T", T}, {"ssmx_s", t}, {"gemm_limit_s", lim},
                              {"pytorch_s", it != ref.end() ? nlohmann::ordered_json(it->second) : nlohmann::ordered_json(nullptr)}});
  }
  if (ref.empty()) std::printf("(no PyTorch reference timings at %s: run scripts/bench.sh to produce them)\n", ref_path.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
