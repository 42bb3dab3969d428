// ssmx/core/runtime.h — process-level setup: BLAS core selection, thread count, logging.
//
// Debian's OpenBLAS (DYNAMIC_ARCH 0.3.21) does not recognise Zen 5 and falls back to its Haswell kernels, which
// halves GEMM throughput. OpenBLAS reads OPENBLAS_CORETYPE only when the library is loaded, so the variable has to be
// in the environment before the process starts. ensure_blas_core() therefore re-executes the current program once
// with OPENBLAS_CORETYPE=SkylakeX when (and only when) the CPU really supports AVX-512 (F, BW, DQ, VL) and the user
// has not set the variable. Set SSMX_NO_REEXEC=1 to disable this.
#pragma once

#include <string>

namespace ssmx {

// Call first thing in main(). May not return (it execs). Safe to call when it does nothing.
void ensure_blas_core(int argc, char** argv);

// Name of the OpenBLAS kernel set in use ("SkylakeX", "Haswell", ...).
std::string blas_core_name();
// Whether the CPU supports the AVX-512 subset the SkylakeX kernels need.
bool cpu_has_avx512();
// Why the core was chosen (for --verbose).
std::string blas_core_reason();

// Threads used by ssmx kernels and by OpenBLAS. n <= 0 means "all cores".
void set_num_threads(int n);
int num_threads();

// Verbose logging to stderr (off by default).
void set_verbose(bool v);
bool verbose();
void log_verbose(const std::string& msg);

}  // namespace ssmx
