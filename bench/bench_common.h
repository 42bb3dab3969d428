// Shared pieces of the benchmark programs: machine limits measured on the spot, reference timings, reporting.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ssmx::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best-of-3 sgemm rate (FLOP/s) of this machine's BLAS at the current thread count, on a square problem large
// enough to reach the peak (performance.md §B3 measures the same way).
inline double measure_sgemm_peak(int n = 2048) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double dt = now_s() - t0;
    if (rep > 0) best = std::min(best, dt);
  }
  return 2.0 * double(n) * n * n / best;
}

// Reads {"results": [{"T": 512, "seconds": 1.23}, ...]} written by scripts/bench_reference.py.
inline std::map<int64_t, double> read_reference(const std::string& path) {
  std::map<int64_t, double> out;
  std::ifstream f(path);
  if (!f) return out;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains("results")) return out;
  for (const auto& r : j["results"])
    if (r.contains("T") && r.contains("seconds")) out[r["T"].get<int64_t>()] = r["seconds"].get<double>();
  return out;
}

// Pulls "--name=value" out of argv (so Google Benchmark does not see it).
inline std::string take_flag(int& argc, char** argv, const std::string& name, const std::string& def) {
  std::string val = def;
  const std::string pre = "--" + name + "=";
  int w = 1;
  for (int r = 1; r < argc; ++r) {
    std::string a = argv[r];
    if (a.rfind(pre, 0) == 0) val = a.substr(pre.size());
    else argv[w++] = argv[r];
  }
  argc = w;
  return val;
}

}  // namespace ssmx::bench
