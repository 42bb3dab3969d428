// ssmx/ops/backward.h — backward passes (input gradients only) of the forward kernels, llm.c style: each op's backward
// takes the gradient of its output plus what the forward saw, and writes the gradient of its input. No weight
// gradients. Every function is a template instantiated for float (the fast path: OpenBLAS, threads, SIMD lanes) and
// double (the reference path of the conservation tests). Results never depend on the thread count (fixed partitions,
// fixed summation orders).
//
// Options that turn a gradient into MambaLRP's modified gradient (shared/specs/mambalrp.md §4) sit on the op they
// modify: RMSNorm's `hold_rstd` (LN rule), SiLU's `SiluRule::Identity`, the gate's `scale` ½ (half rule) and the
// scan's `hold_params` (Ā, B̄, C constant). The LRP-ε and LRP-γ rules for linear layers are separate functions.
//
// Shapes as in the forward headers: T tokens, row-major, `ld_*` row strides.
#pragma once

#include <cstdint>

namespace ssmx {

// ---- linear: out = inp·Wᵀ + b  (W: (O, I)) ----
// dinp (T, I) [+]= dout (T, O) · W. One GEMM per call, over fixed output tiles (sgemm / dgemm).
template <typename Real>
void linear_backward(Real* dinp, const Real* dout, const Real* w, int64_t T, int64_t I, int64_t O, int64_t ld_dout,
                     int64_t ld_dinp, bool accumulate);

// LRP-ε on a linear layer, in gradient×input form: multiplies the output gradient by z / (z + ε·sign z), where z is the
// layer's forward output (bias included; sign 0 counts as +). Then linear_backward gives
//   R_j = x_j·Σ_k w_kj·R_k / (z_k + ε·sign z_k)  with R_k = z_k·g_k.
template <typename Real>
void epsilon_rescale(Real* g, const Real* z, int64_t T, int64_t O, int64_t ld_g, int64_t ld_z, double eps);

// Generalised LRP-γ on a linear layer (the official MambaLRP ModifiedLinear, mambalrp.md §4.1 item 5), gradient×input
// form. With W⁺ = max(W, 0), W⁻ = min(W, 0), x⁺ = max(x, 0), x⁻ = min(x, 0), Wp = W + γW⁺, Wn = W + γW⁻:
//   z⁺ = x⁺·Wpᵀ + x⁻·Wnᵀ + (b + γb⁺)     (favours positive contributions; used where z = x·Wᵀ + b > 1e-6)
//   z⁻ = x⁺·Wnᵀ + x⁻·Wpᵀ + (b + γb⁻)     (favours negative contributions; used elsewhere)
//   out = zp·[z / zp]                     ([·] held constant; zp = z⁺ or z⁻ per output element)
// dinp [+]= the gradient of that graph: g̃ = dout·z/zp pushed through the selected copies (x > 0 takes the x⁺ path,
// x ≤ 0 the x⁻ path). bias_relevance (nullable) += Σ g̃·(bias of the selected copy), so that with
// R_k = z_k·dout_k:  Σ_j x_j·dinp_j + bias_relevance = Σ_k R_k. x: (T, I) stride ld_x; b: (O) or nullptr.
template <typename Real>
void linear_gamma_backward(Real* dinp, const Real* dout, const Real* x, const Real* w, const Real* b, int64_t T,
                           int64_t I, int64_t O, int64_t ld_x, int64_t ld_dout, int64_t ld_dinp, double gamma,
                           bool accumulate, double* bias_relevance);

// ---- RMSNorm: y = x·r·w, r = 1/sqrt(mean(x²) + eps) ----
// Exact:      dx = r·w⊙dy − x·r³/C·Σ_c x_c·w_c·dy_c
// hold_rstd:  dx = r·w⊙dy  (r held constant: the LN rule)
// w may be nullptr (weightless, Falcon-Mamba's mixer norms). rstd is the forward's. Sums in double. dinp may alias
// dout (same strides). accumulate: dinp += instead of =.
template <typename Real>
void rmsnorm_backward(Real* dinp, const Real* dout, const Real* inp, const Real* rstd, const Real* w, int64_t T,
                      int64_t C, bool hold_rstd, bool accumulate, int64_t ld_in, int64_t ld_dout, int64_t ld_dinp);

// ---- depthwise causal conv1d (conv1d.h) ----
// The transposed convolution: dx[τ, c] = Σ_k w[c, k] · dout[τ + (K-1) - k, c]  (terms with index < T).
// dout (T, C) contiguous; dx (T, C) with row stride ld_dx, overwritten.
template <typename Real>
void conv1d_causal_backward(Real* dx, const Real* dout, const Real* w, int64_t T, int64_t C, int64_t K, int64_t ld_dx);

// ---- SiLU, softplus ----
// Exact: SiLU'(x) = σ(x)·(1 + x·(1 − σ(x))). Identity (MambaLRP): SiLU(x) = x·[σ(x)], derivative σ(x), so that
// x·din = SiLU(x)·dout elementwise. (The official code uses SiLU(x)/stab(x), stab(x) = x + 1e-6·(sign x + [x = 0]),
// which differs from σ(x) by about 1e-6/|x| relative; we use σ(x) itself.)
enum class SiluRule { Exact, Identity };
// sigmoid: σ(x) from the forward (nullptr: computed here).
template <typename Real>
void silu_backward(Real* din, const Real* dout, const Real* x, int64_t n, SiluRule rule, const Real* sigmoid = nullptr);
// softplus' (PyTorch, threshold 20): x > 20 ? 1 : σ(x). din may alias dout.
template <typename Real>
void softplus_backward(Real* din, const Real* dout, const Real* x, int64_t n);

// ---- the gate y = pre ⊙ SiLU(z), pre = ssm + D·u (the scan's output before the gate) ----
//   dpre = scale·dy ⊙ SiLU(z)
//   dz   = scale·dy ⊙ pre ⊙ SiLU'(z)   (σ(z) with SiluRule::Identity)
// scale = ½ is MambaLRP's half rule (o = ½·o + ½·[o]): then pre·dpre = SiLU(z)·(∂/∂SiLU(z)) = ½·y·dy elementwise.
// dy, ssm, u, dpre: (T, E) contiguous (dpre may alias dy); z: stride ld_z; dz: stride ld_dz. D may be nullptr.
template <typename Real>
void gate_backward(Real* dpre, Real* dz, const Real* dy, const Real* ssm, const Real* u, const Real* D, const Real* z,
                   int64_t T, int64_t E, int64_t ld_z, int64_t ld_dz, Real scale, SiluRule rule);

// ---- the selective scan (selective_scan.h), without the gate: pre = ssm + D·u ----
// Reverse scan, with gh_T = 0:
//   gh_t = C_t ⊙ dpre_t + Ā_{t+1} ⊙ gh_{t+1}                 (per channel e, state n)
//   du_t = Δ_t·Σ_n B_t[n]·gh_t[n] + D·dpre_t
// and unless hold_params (MambaLRP's SSM rule: Ā, B̄ = Δ·B and C held constant):
//   dΔ_t  = Σ_n gh_t[n]·(A[n]·Ā_t[n]·h_{t-1}[n] + B_t[n]·u_t)
//   dB_t  = Σ_e gh_t[e, :]·Δ_t[e]·u_t[e]       dC_t = Σ_e dpre_t[e]·h_t[e, :]
// The forward states h are recomputed per channel group (never stored across the whole scan). The channel sums of dB
// and dC are taken in fixed 128-channel chunks, then over chunks in order: bitwise the same for any thread count.
// f32: 8 channels per SIMD group with all states in registers (N = 8 or 16), a generic kernel otherwise.
template <typename Real>
struct ScanBackwardArgs {
  int64_t T = 0, E = 0, N = 0;
  const Real* u = nullptr;      // (T, E)
  const Real* delta = nullptr;  // (T, E)
  const Real* A = nullptr;      // (E, N)
  const Real* B = nullptr;      // (T, N) row stride ld_bc
  const Real* C = nullptr;      // (T, N) row stride ld_bc
  int64_t ld_bc = 0;
  const Real* D = nullptr;      // (E) or nullptr
  const Real* dpre = nullptr;   // (T, E) gradient of ssm + D·u
  bool hold_params = false;
  Real* du = nullptr;           // (T, E) out (overwritten)
  Real* ddelta = nullptr;       // (T, E) out, or nullptr; unused with hold_params
  Real* dB = nullptr;           // (T, N) out, row stride ld_dbc, or nullptr; unused with hold_params
  Real* dC = nullptr;           // (T, N) out, row stride ld_dbc, or nullptr; unused with hold_params
  int64_t ld_dbc = 0;
};
template <typename Real>
void selective_scan_backward(const ScanBackwardArgs<Real>& a);

// ---- a forward kernel of the gradient path ----
// selective_scan_forward's ssm and y outputs (y = (ssm + D·u)·SiLU(z), when y is not null) with the same float
// operations in the same order, so bitwise the same values. With N = 8 or 16 and E a multiple of 8 this is the
// 8-lane register kernel with the D skip and the gate computed on the 8 lanes too (the plain kernel's per-channel
// scalar output loop took a third of its time); otherwise it calls selective_scan_forward.
struct ScanArgs;
void selective_scan_forward_fast(float* ssm, float* y, const ScanArgs& a);

}  // namespace ssmx
