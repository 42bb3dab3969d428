// Helpers shared by the tests: temporary directories, tolerance checks, running the CLI.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace ssmx::test {

inline std::string data_dir() { return SSMX_TEST_DATA; }
inline std::string shared_dir() { return SSMX_SHARED_DIR; }

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// max |a - b| / max(1, max |b|): the parity measure of the project (tolerance 1e-4 in f32).
double parity_error(const float* a, const float* b, int64_t n);
double parity_error(const std::vector<float>& a, const std::vector<double>& b);

std::vector<float> random_normal(int64_t n, uint64_t seed, float scale = 1.0f);

struct CliResult {
  int rc = -1;
  std::string out, err;
};
// Runs build/ssmx with the given arguments (each argument shell-quoted).
CliResult run_cli(const std::vector<std::string>& args);

// The values of an F64 tensor `name` of a safetensors fixture file (throws ssmx::Error when missing or not F64).
std::vector<double> f64_tensor(const std::string& path, const std::string& name);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

}  // namespace ssmx::test
