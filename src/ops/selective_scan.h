// ssmx/ops/selective_scan.h — the Mamba-1 selective scan (S6), forward, f32, channel lanes.
//
// For each channel e and state n, with h[-1] = 0:
//   h[t,e,n]  = exp(Δ[t,e]·A[e,n]) · h[t-1,e,n] + Δ[t,e]·B[t,n]·u[t,e]     (decay, then add)
//   ssm[t,e]  = Σ_n h[t,e,n] · C[t,n]                                       (uses the updated state)
//   y[t,e]    = (ssm[t,e] + D[e]·u[t,e]) · silu(z[t,e])                      (D skip, then the gate)
//
// Loop order (docs/architecture.md, performance.md §B1): 32 channels per lane group, the state loop inside
// the token loop, threads over channel groups. Every channel is computed the same way whatever the partition, so the
// result is bitwise identical for any thread count. exp arguments are ≤ 0 (Δ ≥ 0, A < 0) and clamped at -87.3.
#pragma once

#include <cstdint>

namespace ssmx {

struct ScanArgs {
  int64_t T = 0, E = 0, N = 0;
  const float* u = nullptr;      // (T, E)
  const float* delta = nullptr;  // (T, E)   Δ after softplus
  const float* A = nullptr;      // (E, N)   A = -exp(A_log)
  const float* B = nullptr;      // (T, N)   row stride ld_bc
  const float* C = nullptr;      // (T, N)   row stride ld_bc
  int64_t ld_bc = 0;
  const float* D = nullptr;      // (E) or nullptr (no skip)
  const float* z = nullptr;      // (T, E) row stride ld_z, or nullptr (no gate)
  int64_t ld_z = 0;
};

// ssm: (T, E) or nullptr; y: (T, E) or nullptr; h_last: (E, N) final state or nullptr.
void selective_scan_forward(float* ssm, float* y, float* h_last, const ScanArgs& a);

}  // namespace ssmx
