// Forward pass of a Vim-S-shaped Vision Mamba (random weights written as safetensors, loaded with VimModel::load):
// 224×224 pixels, patch 16 → 196 patches + the middle class token = 197 tokens, d_model 384, 24 bidirectional layers,
// E 768, N 16, 1000 classes; pixels → logits, no activations kept. Reports, next to the time, the plain-PyTorch
// reference's time on this machine (scripts/bench_vim_reference.py) and the GEMM-bound limit: the forward's GEMM
// flops (in_proj, both directions' x_proj and dt_proj, out_proj, patch embedding, head) over the measured sgemm peak.
//
//   build/bench_vim [--reference=bench/results/reference_vim.json] [--json=bench/results/vim.json]
//                   [--layers=24] [--d-model=384] [--img=224] [--threads=0]
#include <benchmark/benchmark.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>
#include <random>

#include "bench_common.h"
#include "core/large_pages.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "attribution/explain.h"
#include "models/vim.h"

using namespace ssmx;

namespace {

struct State {
  std::unique_ptr<VimModel> model;
  Tensor pixels;
  double best = 1e30, best_cpu = 1e30;  // wall seconds; process CPU seconds (all threads)
} g;

// A random Vim with the official tensor names and Mamba-like initialisation scales (values do not affect the time,
// except that they must be finite and keep Δ in Mamba's usual range).
void write_random_vim(const std::string& path, int64_t D, int64_t depth, int64_t img, int64_t patch, int64_t classes,
                      uint64_t seed) {
  const int64_t E = 2 * D, N = 16, K = 4, R = (D + 15) / 16, M = (img / patch) * (img / patch);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<float>> keep;
  std::vector<SafetensorsEntry> entries;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, auto&& gen) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = gen();
    entries.push_back(make_f32_entry(name, shape, v.data()));
  };
  auto normal = [&](double std) {
    return [&rng, std] { return float(std::normal_distribution<double>(0.0, std)(rng)); };
  };
  auto uniform = [&](double lo, double hi) {
    return [&rng, lo, hi] { return float(std::uniform_real_distribution<double>(lo, hi)(rng)); };
  };
  add("cls_token", {1, 1, D}, normal(0.02));
  add("pos_embed", {1, M + 1, D}, normal(0.02));
  add("patch_embed.proj.weight", {D, 3, patch, patch}, normal(1.0 / std::sqrt(3.0 * patch * patch)));
  add("patch_embed.proj.bias", {D}, normal(0.02));
  for (int64_t i = 0; i < depth; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".", q = p + "mixer.";
    add(p + "norm.weight", {D}, uniform(0.9, 1.1));
    add(q + "in_proj.weight", {2 * E, D}, normal(1.0 / std::sqrt(double(D))));
    add(q + "out_proj.weight", {D, E}, normal(1.0 / std::sqrt(double(E))));
    for (const std::string s : {"", "_b"}) {
      add(q + "conv1d" + s + ".weight", {E, 1, K}, normal(0.5));
      add(q + "conv1d" + s + ".bias", {E}, uniform(-0.5, 0.5));
      add(q + "x_proj" + s + ".weight", {R + 2 * N, E}, normal(1.0 / std::sqrt(double(E))));
      add(q + "dt_proj" + s + ".weight", {E, R}, uniform(-1.0 / std::sqrt(double(R)), 1.0 / std::sqrt(double(R))));
      add(q + "dt_proj" + s + ".bias", {E}, [&] {
        const double dt = std::exp(std::uniform_real_distribution<double>(std::log(1e-3), std::log(1e-1))(rng));
        return float(dt + std::log(-std::expm1(-dt)));
      });
      int64_t k = 0;
      add(q + (s.empty() ? "A_log" : "A_b_log"), {E, N}, [&] { return float(std::log(double(1 + (k++ % N)))); });
      add(q + (s.empty() ? "D" : "D_b"), {E}, [] { return 1.0f; });
    }
  }
  add("norm_f.weight", {D}, uniform(0.9, 1.1));
  add("head.weight", {classes, D}, normal(1.0 / std::sqrt(double(D))));
  add("head.bias", {classes}, normal(0.02));
  write_safetensors(path, std::move(entries));
}

double gemm_flops(const VimConfig& c) {
  const double T = double(c.n_tokens), D = double(c.d_model), E = double(c.d_inner), R = double(c.dt_rank),
               N = double(c.d_state), P = double(c.patch);
  const double per_layer = 2.0 * T * (D * 2 * E + 2 * (E * (R + 2 * N) + R * E) + E * D);
  return per_layer * double(c.n_layer) + 2.0 * double(c.n_patches) * D * 3 * P * P + 2.0 * D * double(c.n_classes);
}

void bm_forward(benchmark::State& st) {
  for (auto _ : st) {
    const double t0 = bench::now_s();
    const std::clock_t c0 = std::clock();
    VimForwardResult r = g.model->forward(g.pixels);
    const double dt = bench::now_s() - t0, dc = double(std::clock() - c0) / CLOCKS_PER_SEC;
    benchmark::DoNotOptimize(r.logits.data.data());
    g.best = std::min(g.best, dt);
    g.best_cpu = std::min(g.best_cpu, dc);
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(gemm_flops(g.model->config()) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// One explanation of the predicted class with the papers' defaults (start layer 15/24), best wall time.
std::map<std::string, double> g_explain;
void bm_explain(benchmark::State& st, Method me) {
  ExplainOptions o;
  o.method = me;
  o.target.kind = Target::Kind::Class;
  o.start_layer = int64_t(std::lround(15.0 * double(g.model->config().n_layer) / 24.0));
  for (auto _ : st) {
    const double t0 = bench::now_s();
    Explanation e = explain_image(*g.model, g.pixels, o);
    const double dt = bench::now_s() - t0;
    benchmark::DoNotOptimize(e.relevance.data());
    auto it = g_explain.find(method_name(me));
    if (it == g_explain.end() || dt < it->second) g_explain[method_name(me)] = dt;
  }
}

}  // namespace

int main(int argc, char** argv) {
  ensure_blas_core(argc, argv);
  install_large_page_allocator();
  const std::string ref_path = bench::take_flag(argc, argv, "reference", "bench/results/reference_vim.json");
  const std::string json_path = bench::take_flag(argc, argv, "json", "");
  const int64_t layers = std::stoll(bench::take_flag(argc, argv, "layers", "24"));
  const int64_t D = std::stoll(bench::take_flag(argc, argv, "d-model", "384"));
  const int64_t img = std::stoll(bench::take_flag(argc, argv, "img", "224"));
  set_num_threads(std::stoi(bench::take_flag(argc, argv, "threads", "0")));

  const std::string dir = (std::filesystem::temp_directory_path() / "ssmx-bench-vim-s").string();
  std::filesystem::create_directories(dir);
  const std::string file = dir + "/vim-s-random.safetensors";
  std::fprintf(stderr, "bench: writing a random %lld-layer Vim (d_model %lld, %lldx%lld) to %s\n", (long long)layers,
               (long long)D, (long long)img, (long long)img, file.c_str());
  write_random_vim(file, D, layers, img, 16, 1000, 1);
  const Checkpoint ck = open_checkpoint(file);
  g.model = VimModel::load(ck);
  g.pixels = Tensor({3, img, img});
  std::mt19937_64 rng(3);
  for (float& x : g.pixels.data) x = float(std::normal_distribution<double>(0.0, 1.0)(rng));

  benchmark::RegisterBenchmark(("forward_vim/T=" + std::to_string(g.model->config().n_tokens)).c_str(), bm_forward)
      ->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
  for (Method me : {Method::MambaLrp, Method::MambaAttr, Method::RawAttention})
    benchmark::RegisterBenchmark((std::string("explain_vim/") + method_name(me)).c_str(),
                                 [me](benchmark::State& st) { bm_explain(st, me); })
        ->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  const VimConfig& c = g.model->config();
  const double peak = bench::measure_sgemm_peak();
  const auto ref = bench::read_reference(ref_path);
  const double lim = gemm_flops(c) / peak;
  std::printf("\nforward, Vim shape (%s: %lld layers, D=%lld, E=%lld, N=%lld, %lld tokens, %lld classes), %d threads, %s\n",
              c.size.c_str(), (long long)c.n_layer, (long long)c.d_model, (long long)c.d_inner, (long long)c.d_state,
              (long long)c.n_tokens, (long long)c.n_classes, num_threads(), blas_core_reason().c_str());
  std::printf("measured sgemm peak: %.0f GFLOP/s\n", peak / 1e9);
  auto it = ref.find(c.n_tokens);
  const bool have_ref = it != ref.end() && layers == 24 && D == 384;
  char refs[32] = "n/a", spd[32] = "n/a";
  if (have_ref) {
    std::snprintf(refs, sizeof refs, "%.3f", it->second);
    std::snprintf(spd, sizeof spd, "%.1fx", it->second / g.best);
  }
  std::printf("%6s  %10s  %12s  %9s  %14s  %12s\n", "T", "ssmx (s)", "PyTorch (s)", "speed-up", "GEMM limit (s)",
              "ssmx/limit");
  std::printf("%6lld  %10.4f  %12s  %9s  %14.4f  %11.2fx\n", (long long)c.n_tokens, g.best, refs, spd, lim,
              g.best / lim);
  std::printf("process CPU time of the best ssmx run: %.4f s (all threads)\n", g.best_cpu);
  if (!have_ref) std::printf("(no PyTorch reference timing for this shape at %s)\n", ref_path.c_str());
  for (const auto& [name, t] : g_explain)
    std::printf("explanation (%s, predicted class, start layer %lld): %.3f s   (target < 1 s)\n", name.c_str(),
                (long long)std::lround(15.0 * double(c.n_layer) / 24.0), t);
  nlohmann::ordered_json out;
  out["machine"] = {{"threads", num_threads()}, {"blas", blas_core_reason()}, {"sgemm_peak_gflops", peak / 1e9}};
  out["shape"] = {{"size", c.size}, {"img", c.img_h}, {"patch", c.patch}, {"T", c.n_tokens}, {"d_model", c.d_model},
                  {"depth", c.n_layer}, {"d_inner", c.d_inner}, {"d_state", c.d_state}, {"classes", c.n_classes}};
  out["results"].push_back({{"T", c.n_tokens}, {"ssmx_s", g.best}, {"ssmx_cpu_s", g.best_cpu}, {"gemm_limit_s", lim},
                            {"pytorch_s", have_ref ? nlohmann::ordered_json(it->second) : nlohmann::ordered_json(nullptr)}});
  for (const auto& [name, t] : g_explain) out["explanations"].push_back({{"method", name}, {"ssmx_s", t}});
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
