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

// Reads {"results": [{"T": 512, "seconds": 1.23}, ...]} written by scripts/bench_reference.py; `key` picks another
// list of the same form (the family reference scripts write "explain_results" beside "results").
inline std::map<int64_t, double> read_reference(const std::string& path, const std::string& key = "results") {
  std::map<int64_t, double> out;
  std::ifstream f(path);
  if (!f) return out;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains(key) || !j[key].is_array()) return out;
  for (const auto& r : j[key])
    if (r.contains("T") && r.contains("seconds")) out[r["T"].get<int64_t>()] = r["seconds"].get<double>();
  return out;
}

// Comma-separated lengths ("512,2048").
inline std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(std::stoll(s.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

// Prints "T  ssmx  PyTorch  speed-up" rows under `title` and returns them as JSON rows
// [{"T", "ssmx_s", "pytorch_s", "speedup"}] (null where the reference has no entry for that T).
inline nlohmann::ordered_json compare_table(const std::string& title, const std::map<int64_t, double>& ours,
                                            const std::map<int64_t, double>& ref) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  std::printf("\n%s\n%6s  %10s  %12s  %9s\n", title.c_str(), "T", "ssmx (s)", "PyTorch (s)", "speed-up");
  for (const auto& [T, t] : ours) {
    auto it = ref.find(T);
    char refs[32] = "n/a", spd[32] = "n/a";
    nlohmann::ordered_json r = {{"T", T}, {"ssmx_s", t}, {"pytorch_s", nullptr}, {"speedup", nullptr}};
    if (it != ref.end()) {
      std::snprintf(refs, sizeof refs, "%.3f", it->second);
      std::snprintf(spd, sizeof spd, "%.2fx", it->second / t);
      r["pytorch_s"] = it->second;
      r["speedup"] = it->second / t;
    }
    std::printf("%6lld  %10.3f  %12s  %9s\n", (long long)T, t, refs, spd);
    rows.push_back(r);
  }
  return rows;
}

// One-minute load average, so a result file says whether the machine was quiet when it was measured.
inline double load_average_1min() {
  std::ifstream la("/proc/loadavg");
  double load = -1;
  la >> load;
  return load;
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
