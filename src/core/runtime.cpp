#include "core/runtime.h"

#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

extern "C" {
char* openblas_get_corename(void);
void openblas_set_num_threads(int num_threads);
}

namespace ssmx {

namespace {
bool g_verbose = false;
int g_threads = 0;
constexpr const char* kReexecMarker = "SSMX_BLAS_REEXEC";
}  // namespace

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

void ensure_blas_core(int argc, char** argv) {
  (void)argc;
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user (or our re-exec) chose
  if (std::getenv(kReexecMarker) != nullptr) return;        // never loop
  if (const char* no = std::getenv("SSMX_NO_REEXEC"); no != nullptr && std::strcmp(no, "0") != 0) return;
  if (!cpu_has_avx512()) return;
  const std::string core = blas_core_name();
  if (core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") return;  // already AVX-512 kernels
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  setenv(kReexecMarker, "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the detected core.
  unsetenv("OPENBLAS_CORETYPE");
}

std::string blas_core_name() {
  const char* n = openblas_get_corename();
  return n ? std::string(n) : std::string("unknown");
}

std::string blas_core_reason() {
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  bool reexec = std::getenv(kReexecMarker) != nullptr;
  std::string s = "BLAS: OpenBLAS core " + blas_core_name();
  if (reexec)
    s += " (OPENBLAS_CORETYPE=SkylakeX set by ssmx: the CPU has AVX-512)";
  else if (env) {
    s += std::string(" (OPENBLAS_CORETYPE=") + env + " from the environment";
    const std::string core = env;
    if (cpu_has_avx512() && core != "SkylakeX" && core != "Cooperlake" && core != "SapphireRapids")
      s += "; this CPU has AVX-512: unset it, or set SkylakeX, for the faster AVX-512 kernels";
    s += ")";
  }
  else
    s += cpu_has_avx512() ? " (auto-detected)" : " (auto-detected; CPU has no AVX-512)";
  return s;
}

void set_num_threads(int n) {
  if (n <= 0) {
    n = static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
  }
  g_threads = n;
  // BLAS calls are always single-threaded: ssmx parallelises over fixed output tiles itself (ops/linear.cpp), which
  // keeps results bitwise identical for any thread count. (The OpenMP build of OpenBLAS sets the OpenMP thread count
  // in openblas_set_num_threads, so ours is set after it.)
  openblas_set_num_threads(1);
  omp_set_num_threads(n);
}

int num_threads() {
  if (g_threads <= 0) set_num_threads(0);
  return g_threads;
}

void set_verbose(bool v) { g_verbose = v; }
bool verbose() { return g_verbose; }
void log_verbose(const std::string& msg) {
  if (g_verbose) std::fprintf(stderr, "ssmx: %s\n", msg.c_str());
}

}  // namespace ssmx
