// ssmx/ops/f64.h — double-precision twins of the forward kernels (linear, RMSNorm, causal conv, SiLU, softplus,
// selective scan), for the f64 gradient path (models/mamba_grad.h: mamba_gradient_f64), the reference of the
// conservation tests.
//
// Same definitions, shapes, strides and argument order as the f32 kernels in linear.h, norm.h, conv1d.h, vmath.h and
// selective_scan.h, overloaded on double pointers, so that code templated on the scalar type calls either. Plain
// loops (std::exp, std::log1p) and cblas_dgemm over fixed output tiles (results do not depend on the thread count).
// exp arguments are not clamped here: a double never overflows on the values a model produces.
#pragma once

#include <cstdint>

namespace ssmx {

// out (T, O) [stride ld_out] = inp (T, I) [stride ld_in] · wᵀ (w: (O, I)) + b (b: (O) or nullptr).
void linear_forward(double* out, const double* inp, const double* w, const double* b, int64_t T, int64_t I, int64_t O,
                    int64_t ld_in, int64_t ld_out);
inline void linear_forward(double* out, const double* inp, const double* w, const double* b, int64_t T, int64_t I,
                           int64_t O) {
  linear_forward(out, inp, w, b, T, I, O, I, O);
}

// y = x / sqrt(mean(x²) + eps) · w (w may be nullptr); rstd (T) or nullptr receives 1/sqrt(mean(x²) + eps).
void rmsnorm_forward(double* out, double* rstd, const double* inp, const double* w, int64_t T, int64_t C, double eps,
                     int64_t ld_in, int64_t ld_out);
inline void rmsnorm_forward(double* out, double* rstd, const double* inp, const double* w, int64_t T, int64_t C,
                            double eps) {
  rmsnorm_forward(out, rstd, inp, w, T, C, eps, C, C);
}

// out[t, c] = b[c] + Σ_k w[c, k] · x[t - (K-1) + k, c]  (x before the start = 0); out (T, C) contiguous.
void conv1d_causal_forward(double* out, const double* x, const double* w, const double* b, int64_t T, int64_t C,
                           int64_t K, int64_t ld_x);

// SiLU x·σ(x) and PyTorch softplus (x > 20 ? x : log1p(exp(x))); out may alias in.
void silu_array(double* out, const double* in, int64_t n);
void softplus_array(double* out, const double* in, int64_t n);

// The selective scan of selective_scan.h in double.
struct ScanArgsF64 {
  int64_t T = 0, E = 0, N = 0;
  const double* u = nullptr;      // (T, E)
  const double* delta = nullptr;  // (T, E)
  const double* A = nullptr;      // (E, N)
  const double* B = nullptr;      // (T, N) row stride ld_bc
  const double* C = nullptr;      // (T, N) row stride ld_bc
  int64_t ld_bc = 0;
  const double* D = nullptr;      // (E) or nullptr
  const double* z = nullptr;      // (T, E) row stride ld_z, or nullptr
  int64_t ld_z = 0;
};
void selective_scan_forward(double* ssm, double* y, double* h_last, const ScanArgsF64& a);

}  // namespace ssmx
