#include "test_util.h"

#include "core/error.h"
#include "io/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

namespace ssmx::test {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ssmx-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = mkdtemp(buf.data());
  path_ = p ? std::string(p) : std::string();
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

double parity_error(const float* a, const float* b, int64_t n) {
  double mx = 1.0, err = 0.0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, std::fabs(double(b[i])));
  for (int64_t i = 0; i < n; ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    err = std::max(err, d);
  }
  return err / mx;
}

double parity_error(const std::vector<float>& a, const std::vector<double>& b) {
  double mx = 1.0, err = 0.0;
  for (double v : b) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    err = std::max(err, d);
  }
  return err / mx;
}

std::vector<float> random_normal(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}
}  // namespace

CliResult run_cli(const std::vector<std::string>& args) {
  TempDir td;
  std::string cmd = shell_quote(SSMX_CLI_PATH);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(td.file("out")) + " 2>" + shell_quote(td.file("err")) + " </dev/null";
  int st = std::system(cmd.c_str());
  CliResult r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = read_file(td.file("out"));
  r.err = read_file(td.file("err"));
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::vector<double> f64_tensor(const std::string& path, const std::string& name) {
  const SafetensorsFile f = read_safetensors(path);
  for (const auto& [n, t] : f.tensors) {
    if (n != name) continue;
    if (t.dtype != DType::F64 || !t.is_contiguous()) throw Error(path, name + " is not a contiguous F64 tensor");
    std::vector<double> v(size_t(t.numel()));
    std::memcpy(v.data(), t.storage + t.offset * 8, v.size() * 8);
    return v;
  }
  throw Error(path, name + " is missing from the fixture");
}

}  // namespace ssmx::test
