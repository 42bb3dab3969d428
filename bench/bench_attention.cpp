// Hidden attention of one mamba-130m-shaped layer (E=1536, N=16): the full channel-mean map at T=1024, and the
// last-token row of all 24 layers at T=8192, next to a naive loop (the log-space formula per entry, measured on a
// slice of channels and scaled up) and the limits of performance.md. Also the gradient × value map (the weighted GEMM
// path) and the absmean map (non-linear, impulse propagation). The official code's approach (its Python triple
// loop) is timed by scripts/bench_reference.py --attention and read from bench/results/reference_attention.json.
//
//   build/bench_attention [--json=bench/results/attention.json]
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "attribution/hidden_attention.h"
#include "bench_common.h"
#include "core/large_pages.h"
#include "core/parallel.h"
#include "core/runtime.h"
#include "ops/vmath.h"

using namespace ssmx;

namespace {

struct Synth {
  int64_t T, E, N, K;
  std::vector<float> delta, A, BC, conv, z, w, b, D, u, x;
  MixerTrace tr;
  Synth(int64_t T_, int64_t E_, int64_t N_) : T(T_), E(E_), N(N_), K(4) {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    delta.resize(size_t(T * E));
    for (auto& v : delta) v = softplus_f(nd(rng) - 4.0f);  // Mamba's dt range, about 1e-3 .. 1e-1
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < N; ++n) A.push_back(-float(n + 1));
    BC.resize(size_t(T * 2 * N));
    for (auto& v : BC) v = nd(rng);
    conv.resize(size_t(T * E));
    for (auto& v : conv) v = nd(rng);
    z = conv;
    w.assign(size_t(E * K), 0.25f);
    D.assign(size_t(E), 1.0f);
    tr.T = T, tr.E = E, tr.N = N, tr.K = K, tr.delta = delta.data(), tr.A = A.data(), tr.B = BC.data(),
    tr.C = BC.data() + N, tr.ld_bc = 2 * N, tr.conv = conv.data(), tr.z = z.data(), tr.conv_w = w.data(),
    tr.D = D.data();
  }
};

std::map<std::string, double> g_best;
void note(const std::string& k, double s) {
  auto it = g_best.find(k);
  if (it == g_best.end() || s < it->second) g_best[k] = s;
}

// The naive kernel: every entry from the log-space formula with float partial sums, threads over rows.
void naive_mean_map(const MixerTrace& tr, int64_t c0, int64_t c1, float* out) {
  const int64_t T = tr.T, E = tr.E, N = tr.N;
  std::vector<float> S(size_t(T * E));
  for (int64_t e = 0; e < E; ++e) {
    float s = 0.0f;
    for (int64_t t = 0; t < T; ++t) S[size_t(t * E + e)] = (s += tr.delta[t * E + e]);
  }
  parallel_for(T, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        float acc = 0.0f;
        for (int64_t e = c0; e < c1; ++e)
          for (int64_t n = 0; n < N; ++n)
            acc += tr.C[i * tr.ld_bc + n] * exp_clamped(tr.A[e * N + n] * (S[size_t(i * E + e)] - S[size_t(j * E + e)])) *
                   tr.delta[j * E + e] * tr.B[j * tr.ld_bc + n];
        out[i * T + j] = acc / float(c1 - c0);
      }
  });
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));
  Synth map_case(1024, 1536, 16);
  Synth row_case(8192, 1536, 16);

  benchmark::RegisterBenchmark("mean_map/s6/T=1024/E=1536", [&](benchmark::State& st) {
    for (auto _ : st) {
      const double t0 = bench::now_s();
      Tensor m = hidden_attention_reduce(map_case.tr, AttnKind::S6, AttnReduce::Mean, 0, 1536);
      note("map_s6", bench::now_s() - t0);
      benchmark::DoNotOptimize(m.data.data());
    }
  })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  benchmark::RegisterBenchmark("mean_map/unified/T=1024/E=1536", [&](benchmark::State& st) {
    for (auto _ : st) {
      const double t0 = bench::now_s();
      Tensor m = hidden_attention_reduce(map_case.tr, AttnKind::Unified, AttnReduce::Mean, 0, 1536);
      note("map_unified", bench::now_s() - t0);
      benchmark::DoNotOptimize(m.data.data());
    }
  })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  std::vector<float> gw(size_t(1024 * 1536));
  for (size_t k = 0; k < gw.size(); ++k) gw[k] = float((k * 2654435761u) % 1000) / 1000.0f - 0.5f;
  benchmark::RegisterBenchmark("grad_x_value_map/unified/T=1024/E=1536", [&](benchmark::State& st) {
    for (auto _ : st) {
      const double t0 = bench::now_s();
      Tensor m = hidden_attention_weighted(map_case.tr, AttnKind::Unified, gw.data(), map_case.conv.data(), nullptr, 0, 1536);
      note("map_grad_x_value", bench::now_s() - t0);
      benchmark::DoNotOptimize(m.data.data());
    }
  })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  benchmark::RegisterBenchmark("absmean_map/s6/T=1024/E=1536 (impulse propagation)", [&](benchmark::State& st) {
    for (auto _ : st) {
      const double t0 = bench::now_s();
      Tensor m = hidden_attention_reduce(map_case.tr, AttnKind::S6, AttnReduce::AbsMean, 0, 1536);
      note("map_absmean_s6", bench::now_s() - t0);
      benchmark::DoNotOptimize(m.data.data());
    }
  })->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  benchmark::RegisterBenchmark("naive_mean_map/s6/T=1024/E=64 (x24 = all channels)", [&](benchmark::State& st) {
    std::vector<float> out(size_t(1024 * 1024));
    for (auto _ : st) {
      const double t0 = bench::now_s();
      naive_mean_map(map_case.tr, 0, 64, out.data());
      note("naive_map_64", bench::now_s() - t0);
    }
  })->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
  benchmark::RegisterBenchmark("last_row/s6/T=8192/E=1536/x24 layers", [&](benchmark::State& st) {
    for (auto _ : st) {
      const double t0 = bench::now_s();
      for (int l = 0; l < 24; ++l) {
        Tensor r = hidden_attention_row(row_case.tr, AttnKind::S6, 8191, 0, 1536);
        benchmark::DoNotOptimize(r.data.data());
      }
      note("rows_24", bench::now_s() - t0);
    }
  })->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  // Limits (performance.md §B2): the GEMM path's off-diagonal blocks are 2·K·(T² − T·Q)/2 flops with K = E·N (Q = 64),
  // so at the sgemm peak that is the floor of the mean map; the row needs up to E·N·T exps.
  const double peak = bench::measure_sgemm_peak();
  const double gemm_flops = 1536.0 * 16 * (1024.0 * 1024.0 - 1024.0 * 64);
  std::printf("\nhidden attention, mamba-130m layer shape (E=1536, N=16), %d threads, %s\n", num_threads(), blas_core_reason().c_str());
  std::printf("  channel-mean map, T=1024:  s6 %.3f s, unified %.3f s   (target < 0.5 s)\n", g_best["map_s6"], g_best["map_unified"]);
  std::printf("  gradient x value map (unified, W and V per (token, channel)), T=1024: %.3f s\n", g_best["map_grad_x_value"]);
  std::printf("  absmean map (non-linear: impulse propagation, no GEMM), T=1024: %.3f s\n", g_best["map_absmean_s6"]);
  std::printf("  naive log-space loop:      %.3f s (64 channels x24)  -> %.1fx slower than ssmx\n", g_best["naive_map_64"] * 24,
              g_best["naive_map_64"] * 24 / g_best["map_s6"]);
  std::printf("  GEMM flop floor at the sgemm peak (%.0f GFLOP/s): %.3f s -> ssmx s6 map at %.1fx of it\n", peak / 1e9,
              gemm_flops / peak, g_best["map_s6"] / (gemm_flops / peak));
  std::printf("  last-token row, 24 layers, T=8192: %.3f s   (target < 1 s)\n", g_best["rows_24"]);
  std::ifstream rf("bench/results/reference_attention.json");
  if (rf) {
    nlohmann::json rj = nlohmann::json::parse(rf, nullptr, false);
    if (!rj.is_discarded() && rj.contains("results"))
      for (const auto& r : rj["results"])
        std::printf("  official approach (%s), T=%lld: %.2f s%s\n", r.value("method", "?").c_str(),
                    (long long)r.value("T", 0), r.value("seconds", 0.0), r.value("extrapolated", false) ? " (extrapolated)" : "");
  }
  if (!json_path.empty()) {
    nlohmann::ordered_json j;
    for (auto& [k, v] : g_best) j[k] = v;
    j["sgemm_peak_gflops"] = peak / 1e9;
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
