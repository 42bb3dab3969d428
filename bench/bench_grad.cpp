// Forward + backward of a mamba-130m-shaped model (D=768, 24 layers, E=1536, N=16, R=48, V=50280; random weights),
// seeded with a token logit at the last position: `grad-input` (the exact gradient, rules off: the backward goes
// through Δ, B, C, x_proj and dt_proj) and `mamba-lrp` (all MambaLRP rules: Ā, B̄, C held, so no x_proj / dt_proj
// backward). Reports, next to each time, the PyTorch reference's time on this machine (scripts/bench_reference.py
// --grad: autograd on inputs_embeds, MambaLRP through .detach()) and the GEMM-bound limit: the GEMM flops of the
// forward (no head: only the seed row of norm_f is needed) and of the backward, divided by the measured sgemm peak.
//
//   build/bench_grad [--reference=bench/results/reference_grad.json] [--json=bench/results/grad.json]
//                    [--layers=24] [--seqlens=256,1024] [--threads=0]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <sstream>

#include "bench_common.h"
#include "core/large_pages.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/mamba.h"
#include "models/mamba_grad.h"
#include "models/mamba_random.h"

using namespace ssmx;

namespace {

struct State {
  MambaConfig cfg;
  Checkpoint ck;
  std::unique_ptr<MambaModel> model;
  std::map<std::pair<std::string, int64_t>, double> best;  // (method, T) -> best seconds
} g;

double gemm_flops(const MambaConfig& c, int64_t T, bool lrp) {
  const double Dm = double(c.d_model), E = double(c.d_inner), R = double(c.dt_rank), N = double(c.d_state);
  const double fwd = 2.0 * T * (Dm * 2 * E + E * (R + 2 * N) + R * E + E * Dm);
  double bwd = 2.0 * T * (2 * E * Dm + E * Dm);
  if (!lrp) bwd += 2.0 * T * ((R + 2 * N) * E + E * R);
  return (fwd + bwd) * double(c.n_layer);
}

void bm_grad(benchmark::State& st, const std::string& method) {
  const int64_t T = st.range(0);
  GradRequest q;
  q.ids.resize(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) q.ids[size_t(i)] = int32_t((i * 7919 + 13) % g.cfg.vocab);
  const int64_t Dm = g.cfg.d_model, token = 1234;
  q.seed.assign(g.model->lm_head().p + token * Dm, g.model->lm_head().p + (token + 1) * Dm);
  q.rules = method == "mamba-lrp" ? LrpRules::mamba_lrp() : LrpRules::gradient();
  for (auto _ : st) {
    const double t0 = bench::now_s();
    GradResult r = mamba_gradient(*g.model, q);
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(r.grad.data());
    auto key = std::make_pair(method, T);
    auto it = g.best.find(key);
    if (it == g.best.end() || dt < it->second) g.best[key] = dt;
  }
  st.counters["GFLOP/s"] = benchmark::Counter(gemm_flops(g.cfg, T, method == "mamba-lrp") * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// {"results": [{"T": 1024, "method": "mamba-lrp", "seconds": 12.3}, ...]}
std::map<std::pair<std::string, int64_t>, double> read_reference(const std::string& path) {
  std::map<std::pair<std::string, int64_t>, double> out;
  std::ifstream f(path);
  if (!f) return out;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains("results")) return out;
  for (const auto& r : j["results"])
    if (r.contains("T") && r.contains("method") && r.contains("seconds"))
      out[{r["method"].get<std::string>(), r["T"].get<int64_t>()}] = r["seconds"].get<double>();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string ref_path = bench::take_flag(argc, argv, "reference", "bench/results/reference_grad.json");
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  const int layers = std::stoi(bench::take_flag(argc, argv, "layers", "24"));
  const std::string seqlens = bench::take_flag(argc, argv, "seqlens", "256,1024");
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));

  g.cfg.n_layer = layers, g.cfg.d_model = 768, g.cfg.d_inner = 1536, g.cfg.d_state = 16, g.cfg.d_conv = 4;
  g.cfg.dt_rank = 48, g.cfg.vocab = 50280, g.cfg.conv_bias = true, g.cfg.tied = true;
  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-grad-mamba130m").string();
  std::fprintf(stderr, "bench: writing a random %d-layer mamba-130m-shaped model to %s\n", layers, dir.c_str());
  write_random_mamba(dir, g.cfg, 1);
  g.ck = open_checkpoint(dir);
  g.model = MambaModel::load(g.ck, false);

  std::vector<int64_t> Ts;
  std::stringstream ss(seqlens);
  for (std::string s; std::getline(ss, s, ',');) Ts.push_back(std::stoll(s));
  const std::vector<std::string> methods = {"grad-input", "mamba-lrp"};
  for (int64_t T : Ts)
    for (const std::string& m : methods)
      benchmark::RegisterBenchmark(("grad_mamba130m/" + m + "/T=" + std::to_string(T)).c_str(),
                                   [m](benchmark::State& st) { bm_grad(st, m); })
          ->Arg(T)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  const double peak = bench::measure_sgemm_peak();
  const auto ref = read_reference(ref_path);
  std::printf("\nforward + backward to the input embeddings, mamba-130m shape (%d layers, D=768, E=1536, N=16), seed at "
              "the last position, %d threads, %s\n", layers, num_threads(), blas_core_reason().c_str());
  std::printf("measured sgemm peak: %.0f GFLOP/s\n", peak / 1e9);
  std::printf("%6s  %-11s  %10s  %12s  %9s  %14s  %12s\n", "T", "method", "ssmx (s)", "PyTorch (s)", "speed-up",
              "GEMM limit (s)", "ssmx/limit");
  nlohmann::ordered_json out;
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()}, {"sgemm_peak_gflops", peak / 1e9}};
  out["shape"] = {{"n_layer", layers}, {"d_model", 768}, {"d_inner", 1536}, {"d_state", 16}, {"dt_rank", 48}, {"vocab", 50280}};
  for (int64_t T : Ts)
    for (const std::string& m : methods) {
      const double t = g.best[{m, T}], lim = gemm_flops(g.cfg, T, m == "mamba-lrp") / peak;
      auto it = ref.find({m, T});
      char refs[32] = "n/a", spd[32] = "n/a";
      if (it != ref.end() && layers == 24) {
        std::snprintf(refs, sizeof refs, "%.3f", it->second);
        std::snprintf(spd, sizeof spd, "%.1fx", it->second / t);
      }
      std::printf("%6lld  %-11s  %10.3f  %12s  %9s  %14.3f  %11.2fx\n", (long long)T, m.c_str(), t, refs, spd, lim,
                  t / lim);
      out["results"].push_back({{"T", T}, {"method", m}, {"ssmx_s", t}, {"gemm_limit_s", lim},
                                {"pytorch_s", it != ref.end() && layers == 24 ? nlohmann::ordered_json(it->second)
                                                                              : nlohmann::ordered_json(nullptr)}});
    }
  if (ref.empty()) std::printf("(no PyTorch reference timings at %s: run scripts/bench_reference.py --grad)\n", ref_path.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
