#include "ops/backward.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "ops/f64.h"
#include "ops/linear.h"
#include "ops/selective_scan.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

// Rows per thread so that a thread gets at least ~4096 elements of work (tiny problems run without a parallel region:
// with two processes on two cores, OpenMP's spinning makes needless regions very slow).
inline int64_t min_rows(int64_t work_per_row, int64_t at_least) {
  return std::max<int64_t>(at_least, 4096 / std::max<int64_t>(1, work_per_row));
}

// Fixed output tiles, each one single-threaded GEMM, so no element's summation order depends on the thread count.
constexpr int64_t kTileM = 256;  // measured 5% faster than linear_forward's 128 x 512 for our backward shapes
constexpr int64_t kTileN = 384;

template <typename Real>
void gemm_nn(int m, int n, int k, const Real* A, int lda, const Real* B, int ldb, Real beta, Real* C, int ldc) {
  if constexpr (std::is_same_v<Real, float>)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc);
  else
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, A, lda, B, ldb, beta, C, ldc);
}

template <typename Real>
inline Real exp_r(Real x) {
  if constexpr (std::is_same_v<Real, float>) return exp_clamped(x);
  else return std::exp(x);
}

template <typename Real>
inline Real sigmoid_r(Real x) {
  return Real(1) / (Real(1) + exp_r<Real>(-x));
}

// ---- f32 SIMD lanes for the scan (the same vector type and exp as ops/selective_scan.cpp) ----
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// exp_clamped on 8 lanes: the scheme and constants of ops/vmath.h, so results equal the scalar function's.
inline v8f exp8(v8f x) {
  x = x < kExpLo ? v8f{} + kExpLo : x;
  x = x > kExpHi ? v8f{} + kExpHi : x;
  const v8f shifted = x * 1.44269504088896341f + 12582912.0f;
  const v8f fx = shifted - 12582912.0f;
  const v8i n = (v8i)shifted - 0x4B400000;
  v8f r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const v8f r2 = r * r;
  v8f p = v8f{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  return p * (v8f)((n + 127) << 23);
}

inline v8f fma8(v8f a, v8f b, v8f c) {
#if defined(__FMA__)
  return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// 2^x on 8 lanes for the backward scans (which need not reproduce the forward bit for bit): round-to-nearest split
// x = n + f, |f| ≤ ½, 2^f by its degree-6 Taylor polynomial in FMA form (truncation < 1.3e-7 relative), scaled by 2^n
// from the exponent bits. x is clamped to [-126, 127]: 2^-126 ≈ 1e-38 stands for every smaller decay. About half the
// operations of exp8 (callers fold log2(e) into A once).
inline v8f exp2_8(v8f x) {
  x = x < -126.0f ? v8f{} - 126.0f : x;
  x = x > 127.0f ? v8f{} + 127.0f : x;
  const v8f shifted = x + 12582912.0f;
  const v8f f = x - (shifted - 12582912.0f);
  v8f p = v8f{} + 1.5403530393381606e-4f;
  p = fma8(p, f, v8f{} + 1.3333558146428443e-3f);
  p = fma8(p, f, v8f{} + 9.6181291076284772e-3f);
  p = fma8(p, f, v8f{} + 5.5504108664821580e-2f);
  p = fma8(p, f, v8f{} + 2.4022650695910071e-1f);
  p = fma8(p, f, v8f{} + 6.9314718055994531e-1f);
  p = fma8(p, f, v8f{} + 1.0f);
  const v8i n = (v8i)shifted - 0x4B400000;
  return p * (v8f)((n + 127) << 23);
}
constexpr float kLog2e = 1.44269504088896341f;

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

constexpr int64_t kChunk = 128;  // channels per partial sum of dB / dC (a multiple of 8)

// Reverse scan of channels [c0, c0 + 8), Ā, B̄, C held constant: only du.
template <int Q>
void scan_bwd8_hold(const ScanBackwardArgs<float>& a, int64_t c0) {
  const int64_t T = a.T, E = a.E, N = a.N;
  v8f dh[Q], At[Q];  // At: A·log2(e), for exp2_8
  for (int q = 0; q < Q; ++q) {
    dh[q] = v8f{};
    for (int l = 0; l < 8; ++l) At[q][l] = a.A[(c0 + l) * N + q] * kLog2e;
  }
  const v8f Dv = a.D ? load8(a.D + c0) : v8f{};
  for (int64_t t = T - 1; t >= 0; --t) {
    const v8f d = load8(a.delta + t * E + c0);
    const v8f g = load8(a.dpre + t * E + c0);
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    v8f acc = v8f{};
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) {
      dh[q] = fma8(g, v8f{} + Ct[q], dh[q]);
      acc = fma8(dh[q], v8f{} + Bt[q], acc);
      dh[q] *= exp2_8(d * At[q]);
    }
    store8(a.du + t * E + c0, fma8(d, acc, Dv * g));
  }
}

// The full backward (dΔ, dB, dC as well as du) for the groups of 8 channels c0, c0 + 8, …, c0 + 8·(G−1), blocked in time so
// that the working set stays in L2: a forward pass keeps the states only at block starts; then, block by block from
// the end, each group recomputes its states and decays for the block (the same exp2_8 values) into small buffers and
// runs the backward steps there, with its dh carried from the later block. Per block, Lb / Lc accumulate each group's
// dB / dC terms lane-wise in group order and are then summed over lanes into P (T, 2N) = [dB | dC]; the order of every
// sum is fixed, so results do not depend on threads. (Unblocked, the (T, N) lane accumulators and the stored states
// of a group streamed through L3 at long T: 3 MB per group per layer at T = 1024.)
template <int Q>
void scan_bwd8_full_blocked(const ScanBackwardArgs<float>& a, int64_t c0, int64_t G, float* P) {
  constexpr int64_t TB = 64;
  const int64_t T = a.T, E = a.E, N = a.N, nb = (T + TB - 1) / TB;
  std::vector<v8f> ckpt(size_t(G * nb * Q)), dhs(size_t(G * Q)), hb(size_t(TB * Q)), dAb(size_t(TB * Q)),
      Lb(size_t(TB * Q)), Lc(size_t(TB * Q));
  std::vector<v8f> A2s(size_t(G * Q)), Ats(size_t(G * Q));
  for (int64_t g = 0; g < G; ++g)
    for (int q = 0; q < Q; ++q)
      for (int l = 0; l < 8; ++l) {
        Ats[size_t(g * Q + q)][l] = a.A[(c0 + g * 8 + l) * N + q];
        A2s[size_t(g * Q + q)][l] = Ats[size_t(g * Q + q)][l] * kLog2e;
      }
  for (int64_t g = 0; g < G; ++g) {  // forward states at block starts
    const int64_t cg = c0 + g * 8;
    const v8f* A2 = A2s.data() + g * Q;
    v8f h[Q];
    for (int q = 0; q < Q; ++q) h[q] = v8f{};
    for (int64_t t = 0; t < T; ++t) {
      if (t % TB == 0)
        for (int q = 0; q < Q; ++q) ckpt[size_t((g * nb + t / TB) * Q + q)] = h[q];
      const v8f d = load8(a.delta + t * E + cg);
      const v8f du = d * load8(a.u + t * E + cg);
      const float* Bt = a.B + t * a.ld_bc;
#pragma GCC unroll 16
      for (int q = 0; q < Q; ++q) h[q] = fma8(exp2_8(d * A2[q]), h[q], du * Bt[q]);
    }
  }
  const v8f zero = v8f{};
  for (int64_t blk = nb - 1; blk >= 0; --blk) {
    const int64_t t0 = blk * TB, t1 = std::min(T, t0 + TB);
    std::fill(Lb.begin(), Lb.end(), zero);
    std::fill(Lc.begin(), Lc.end(), zero);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t cg = c0 + g * 8;
      const v8f* A2 = A2s.data() + g * Q;
      const v8f* At = Ats.data() + g * Q;
      const v8f* h0 = ckpt.data() + (g * nb + blk) * Q;  // state before t0
      {
        v8f h[Q];
        for (int q = 0; q < Q; ++q) h[q] = h0[q];
        for (int64_t t = t0; t < t1; ++t) {
          const v8f d = load8(a.delta + t * E + cg);
          const v8f du = d * load8(a.u + t * E + cg);
          const float* Bt = a.B + t * a.ld_bc;
#pragma GCC unroll 16
          for (int q = 0; q < Q; ++q) {
            const v8f dA = exp2_8(d * A2[q]);
            dAb[size_t((t - t0) * Q + q)] = dA;
            h[q] = fma8(dA, h[q], du * Bt[q]);
            hb[size_t((t - t0) * Q + q)] = h[q];
          }
        }
      }
      const v8f Dv = a.D ? load8(a.D + cg) : v8f{};
      v8f dh[Q];
      for (int q = 0; q < Q; ++q) dh[q] = dhs[size_t(g * Q + q)];
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const v8f d = load8(a.delta + t * E + cg);
        const v8f uu = load8(a.u + t * E + cg);
        const v8f gg = load8(a.dpre + t * E + cg);
        const v8f du = d * uu;
        const float* Bt = a.B + t * a.ld_bc;
        const float* Ct = a.C + t * a.ld_bc;
        const v8f* hp = t > t0 ? hb.data() + (t - 1 - t0) * Q : h0;
        const v8f* ht = hb.data() + (t - t0) * Q;
        const v8f* dA = dAb.data() + (t - t0) * Q;
        v8f* lb = Lb.data() + (t - t0) * Q;
        v8f* lc = Lc.data() + (t - t0) * Q;
        v8f acc_u = v8f{}, acc_d = v8f{};
#pragma GCC unroll 16
        for (int q = 0; q < Q; ++q) {
          const v8f b = v8f{} + Bt[q];
          dh[q] = fma8(gg, v8f{} + Ct[q], dh[q]);
          lc[q] = fma8(gg, ht[q], lc[q]);
          lb[q] = fma8(dh[q], du, lb[q]);
          acc_u = fma8(dh[q], b, acc_u);
          acc_d = fma8(dh[q], fma8(At[q] * dA[q], hp[q], b * uu), acc_d);
          dh[q] *= dA[q];
        }
        store8(a.du + t * E + cg, fma8(d, acc_u, Dv * gg));
        if (a.ddelta) store8(a.ddelta + t * E + cg, acc_d);
      }
      for (int q = 0; q < Q; ++q) dhs[size_t(g * Q + q)] = dh[q];
    }
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t n = 0; n < N; ++n) {
        const v8f vb = Lb[size_t((t - t0) * Q + n)], vc = Lc[size_t((t - t0) * Q + n)];
        float sb = 0.0f, sc = 0.0f;
        for (int l = 0; l < 8; ++l) sb += vb[l], sc += vc[l];
        P[t * 2 * N + n] += sb;
        P[t * 2 * N + N + n] += sc;
      }
  }
}

// One channel, any N, any Real. full: also dΔ and the dB / dC contributions, added to P (T, 2N) = [dB | dC].
template <typename Real>
void scan_bwd_channel(const ScanBackwardArgs<Real>& a, int64_t e, bool full, Real* hbuf, Real* dh, Real* P) {
  const int64_t T = a.T, E = a.E, N = a.N;
  const Real* Ae = a.A + e * N;
  if (full) {
    for (int64_t t = 0; t < T; ++t) {
      const Real d = a.delta[t * E + e], du = d * a.u[t * E + e];
      const Real* Bt = a.B + t * a.ld_bc;
      for (int64_t n = 0; n < N; ++n) {
        const Real hprev = t > 0 ? hbuf[(t - 1) * N + n] : Real(0);
        hbuf[t * N + n] = exp_r<Real>(d * Ae[n]) * hprev + du * Bt[n];
      }
    }
  }
  for (int64_t n = 0; n < N; ++n) dh[n] = 0;
  const Real Dv = a.D ? a.D[e] : Real(0);
  for (int64_t t = T - 1; t >= 0; --t) {
    const Real d = a.delta[t * E + e], g = a.dpre[t * E + e];
    const Real uu = full ? a.u[t * E + e] : Real(0);
    const Real* Bt = a.B + t * a.ld_bc;
    const Real* Ct = a.C + t * a.ld_bc;
    Real acc_u = 0, acc_d = 0;
    for (int64_t n = 0; n < N; ++n) {
      dh[n] += g * Ct[n];
      acc_u += dh[n] * Bt[n];
      const Real dA = exp_r<Real>(d * Ae[n]);
      if (full) {
        const Real hprev = t > 0 ? hbuf[(t - 1) * N + n] : Real(0);
        P[t * 2 * N + n] += dh[n] * (d * uu);
        P[t * 2 * N + N + n] += g * hbuf[t * N + n];
        acc_d += dh[n] * (Ae[n] * dA * hprev + Bt[n] * uu);
      }
      dh[n] *= dA;
    }
    a.du[t * E + e] = d * acc_u + Dv * g;
    if (full && a.ddelta) a.ddelta[t * E + e] = acc_d;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------

template <typename Real>
void linear_backward(Real* dinp, const Real* dout, const Real* w, int64_t T, int64_t I, int64_t O, int64_t ld_dout,
                     int64_t ld_dinp, bool accumulate) {
  if (T == 0 || I == 0) return;
  if (O == 0) {
    if (!accumulate)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < I; ++i) dinp[t * ld_dinp + i] = 0;
    return;
  }
  const int64_t tm = (T + kTileM - 1) / kTileM, tn = (I + kTileN - 1) / kTileN;
  parallel_for(tm * tn, [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t r0 = (tile / tn) * kTileM, c0 = (tile % tn) * kTileN;
      const int64_t m = std::min(kTileM, T - r0), n = std::min(kTileN, I - c0);
      gemm_nn<Real>(int(m), int(n), int(O), dout + r0 * ld_dout, int(ld_dout), w + c0, int(I),
                    accumulate ? Real(1) : Real(0), dinp + r0 * ld_dinp + c0, int(ld_dinp));
    }
  });
}

template <typename Real>
void epsilon_rescale(Real* g, const Real* z, int64_t T, int64_t O, int64_t ld_g, int64_t ld_z, double eps) {
  const Real e = Real(eps);
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t o = 0; o < O; ++o) {
        const Real zz = z[t * ld_z + o];
        const Real den = zz + (zz >= Real(0) ? e : -e);
        g[t * ld_g + o] *= den != Real(0) ? zz / den : Real(0);
      }
  }, min_rows(O, 16));
}

template <typename Real>
void linear_gamma_backward(Real* dinp, const Real* dout, const Real* x, const Real* w, const Real* b, int64_t T,
                           int64_t I, int64_t O, int64_t ld_x, int64_t ld_dout, int64_t ld_dinp, double gamma,
                           bool accumulate, double* bias_relevance) {
  if (T == 0 || I == 0) return;
  const Real gm = Real(gamma);
  const size_t nw = size_t(O * I), nx = size_t(T * I), no = size_t(T * O);
  std::vector<Real> Wp(nw), Wn(nw), xp(nx), xn(nx), z(no), zpos(no), zneg(no), tmp(no), bp, bn;
  for (size_t k = 0; k < nw; ++k) {
    Wp[k] = w[k] + gm * std::max(w[k], Real(0));
    Wn[k] = w[k] + gm * std::min(w[k], Real(0));
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const Real v = x[t * ld_x + i];
      xp[size_t(t * I + i)] = std::max(v, Real(0));
      xn[size_t(t * I + i)] = std::min(v, Real(0));
    }
  if (b) {
    bp.resize(size_t(O)), bn.resize(size_t(O));
    for (int64_t o = 0; o < O; ++o) {
      bp[size_t(o)] = b[o] + gm * std::max(b[o], Real(0));
      bn[size_t(o)] = b[o] + gm * std::min(b[o], Real(0));
    }
  }
  linear_forward(z.data(), x, w, b, T, I, O, ld_x, O);
  linear_forward(zpos.data(), xp.data(), Wp.data(), b ? bp.data() : nullptr, T, I, O);
  linear_forward(tmp.data(), xn.data(), Wn.data(), nullptr, T, I, O);
  for (size_t k = 0; k < no; ++k) zpos[k] += tmp[k];
  linear_forward(zneg.data(), xp.data(), Wn.data(), b ? bn.data() : nullptr, T, I, O);
  linear_forward(tmp.data(), xn.data(), Wp.data(), nullptr, T, I, O);
  for (size_t k = 0; k < no; ++k) zneg[k] += tmp[k];
  // g̃ split by the selected copy: gp where z > 1e-6 (positive-favouring), gn elsewhere. Reuse zpos / zneg storage.
  double brel = 0.0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) {
      const size_t k = size_t(t * O + o);
      const bool sel = z[k] > Real(1e-6);
      const Real zp = sel ? zpos[k] : zneg[k];
      const Real gt = zp != Real(0) ? dout[t * ld_dout + o] * (z[k] / zp) : Real(0);
      if (b) brel += double(gt) * double(sel ? bp[size_t(o)] : bn[size_t(o)]);
      zpos[k] = sel ? gt : Real(0);
      zneg[k] = sel ? Real(0) : gt;
    }
  if (bias_relevance) *bias_relevance += brel;
  // Gradient reaching x⁺: gp·Wp + gn·Wn; reaching x⁻: gp·Wn + gn·Wp.
  std::vector<Real> dxp(nx), dxn(nx);
  linear_backward(dxp.data(), zpos.data(), Wp.data(), T, I, O, O, I, false);
  linear_backward(dxp.data(), zneg.data(), Wn.data(), T, I, O, O, I, true);
  linear_backward(dxn.data(), zpos.data(), Wn.data(), T, I, O, O, I, false);
  linear_backward(dxn.data(), zneg.data(), Wp.data(), T, I, O, O, I, true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const size_t k = size_t(t * I + i);
      const Real v = x[t * ld_x + i] > Real(0) ? dxp[k] : dxn[k];
      Real& o = dinp[t * ld_dinp + i];
      o = accumulate ? o + v : v;
    }
}

template <typename Real>
void rmsnorm_backward(Real* dinp, const Real* dout, const Real* inp, const Real* rstd, const Real* w, int64_t T,
                      int64_t C, bool hold_rstd, bool accumulate, int64_t ld_in, int64_t ld_dout, int64_t ld_dinp) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Real* x = inp + t * ld_in;
      const Real* dy = dout + t * ld_dout;
      Real* dx = dinp + t * ld_dinp;
      const Real r = rstd[t];
      Real k = 0;
      if (!hold_rstd) {
        double s = 0.0;
        for (int64_t c = 0; c < C; ++c) s += double(x[c]) * double(w ? w[c] : Real(1)) * double(dy[c]);
        const double rd = double(r);
        k = Real(s * rd * rd * rd / double(C));
      }
      for (int64_t c = 0; c < C; ++c) {
        Real v = r * (w ? w[c] : Real(1)) * dy[c];
        if (!hold_rstd) v -= x[c] * k;
        dx[c] = accumulate ? dx[c] + v : v;
      }
    }
  }, min_rows(C, 16));
}

template <typename Real>
void conv1d_causal_backward(Real* dx, const Real* dout, const Real* w, int64_t T, int64_t C, int64_t K, int64_t ld_dx) {
  std::vector<Real> wt(size_t(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[size_t(k * C + c)] = w[c * K + k];
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t tau = t0; tau < t1; ++tau) {
      Real* o = dx + tau * ld_dx;
      for (int64_t c = 0; c < C; ++c) o[c] = 0;
      for (int64_t k = K - 1; k >= 0; --k) {  // output token t = τ + (K-1) - k, nearest first
        const int64_t t = tau + (K - 1) - k;
        if (t >= T) continue;
        const Real* g = dout + t * C;
        const Real* wk = wt.data() + k * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += wk[c] * g[c];
      }
    }
  }, min_rows(C * K, 8));
}

template <typename Real>
void silu_backward(Real* din, const Real* dout, const Real* x, int64_t n, SiluRule rule, const Real* sigmoid) {
  const Real ex = rule == SiluRule::Exact ? Real(1) : Real(0);  // the identity rule drops the correction term
  parallel_for(n, [&](int64_t b, int64_t e) {
    if (sigmoid) {
#pragma omp simd
      for (int64_t i = b; i < e; ++i) {
        const Real s = sigmoid[i];
        din[i] = dout[i] * (s * (Real(1) + ex * (x[i] * (Real(1) - s))));
      }
    } else {
#pragma omp simd
      for (int64_t i = b; i < e; ++i) {
        const Real s = sigmoid_r<Real>(x[i]);
        din[i] = dout[i] * (s * (Real(1) + ex * (x[i] * (Real(1) - s))));
      }
    }
  }, 4096);
}

template <typename Real>
void softplus_backward(Real* din, const Real* dout, const Real* x, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) din[i] = x[i] > Real(20) ? dout[i] : dout[i] * sigmoid_r<Real>(x[i]);
  }, 4096);
}

template <typename Real>
void gate_backward(Real* dpre, Real* dz, const Real* dy, const Real* ssm, const Real* u, const Real* D, const Real* z,
                   int64_t T, int64_t E, int64_t ld_z, int64_t ld_dz, Real scale, SiluRule rule) {
  // SiLU'(z) = σ·(1 + z·(1 − σ)); the identity rule multiplies the correction by 0 (exact: σ·1 = σ).
  const Real ex = rule == SiluRule::Exact ? Real(1) : Real(0);
  auto rows = [&](auto with_d, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Real* zr = z + t * ld_z;
      Real* dzr = dz + t * ld_dz;
      const Real* dyr = dy + t * E;
      const Real* sr = ssm + t * E;
      const Real* ur = u + t * E;
      Real* dpr = dpre + t * E;
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) {
        const Real zz = zr[e];
        const Real s = sigmoid_r<Real>(zz);
        const Real g = scale * dyr[e];
        Real pre = sr[e];
        if constexpr (decltype(with_d)::value) pre += D[e] * ur[e];
        dzr[e] = g * pre * (s * (Real(1) + ex * (zz * (Real(1) - s))));
        dpr[e] = g * (zz * s);
      }
    }
  };
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    if (D) rows(std::true_type{}, t0, t1);
    else rows(std::false_type{}, t0, t1);
  }, min_rows(E, 4));
}

template <typename Real>
void selective_scan_backward(const ScanBackwardArgs<Real>& a) {
  const int64_t T = a.T, E = a.E, N = a.N;
  if (T == 0 || E == 0) return;
  const bool full = !a.hold_params && (a.ddelta || a.dB || a.dC);
  bool fast = false;
  if constexpr (std::is_same_v<Real, float>) fast = N == 8 || N == 16;
  const int64_t g8 = fast ? E / 8 : 0;  // SIMD groups of 8 channels; the channels after them go through the generic kernel

  if (!full) {
    if constexpr (std::is_same_v<Real, float>) {
      if (fast)
        parallel_for(g8, [&](int64_t b, int64_t e) {
          for (int64_t g = b; g < e; ++g) {
            if (N == 16) scan_bwd8_hold<16>(a, g * 8);
            else scan_bwd8_hold<8>(a, g * 8);
          }
        }, min_rows(T * N * 8, 1));
    }
    parallel_for(E - g8 * 8, [&](int64_t b, int64_t e) {
      std::vector<Real> dh(static_cast<size_t>(N));
      for (int64_t c = b; c < e; ++c) scan_bwd_channel<Real>(a, g8 * 8 + c, false, nullptr, dh.data(), nullptr);
    }, min_rows(T * N, 1));
    return;
  }

  const int64_t n_chunks = (E + kChunk - 1) / kChunk;
  std::vector<Real> P(size_t(n_chunks * T * 2 * N), Real(0));  // per chunk (T, 2N): partial [dB | dC]
  parallel_for(n_chunks, [&](int64_t k0, int64_t k1) {
    std::vector<Real> hbuf(size_t(T * N)), dh(static_cast<size_t>(N));
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c0 = k * kChunk, c1 = std::min(E, c0 + kChunk);
      Real* Pk = P.data() + k * T * 2 * N;
      int64_t c = c0;
      if constexpr (std::is_same_v<Real, float>) {
        if (fast && c0 + 8 <= c1 && c0 < g8 * 8) {
          const int64_t G = (c1 - c0) / 8;
          if (N == 16) scan_bwd8_full_blocked<16>(a, c0, G, Pk);
          else scan_bwd8_full_blocked<8>(a, c0, G, Pk);
          c = c0 + G * 8;
        }
      }
      for (; c < c1; ++c) scan_bwd_channel<Real>(a, c, true, hbuf.data(), dh.data(), Pk);
    }
  });
  if (a.dB || a.dC)
    parallel_for(T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t n = 0; n < 2 * N; ++n) {
          Real s = 0;
          for (int64_t k = 0; k < n_chunks; ++k) s += P[size_t((k * T + t) * 2 * N + n)];
          Real* dst = n < N ? a.dB : a.dC;
          if (dst) dst[t * a.ld_dbc + (n < N ? n : n - N)] = s;
        }
    }, min_rows(2 * N * n_chunks, 16));
}

namespace {
// Channels [c0, c0 + 8), all Q = N states in registers: scan_group8 of ops/selective_scan.cpp with its output loop on
// the 8 lanes (exp8 equals exp_clamped lane by lane, so SiLU(z) = z / (1 + exp8(-z)) is silu_f's value).
template <int Q>
void scan_fwd8(float* ssm, float* y, const ScanArgs& a, int64_t c0) {
  const int64_t T = a.T, E = a.E, N = a.N;
  v8f h[Q], At[Q];
  for (int q = 0; q < Q; ++q) {
    h[q] = v8f{};
    for (int l = 0; l < 8; ++l) At[q][l] = a.A[(c0 + l) * N + q];
  }
  const v8f Dv = a.D ? load8(a.D + c0) : v8f{};
  for (int64_t t = 0; t < T; ++t) {
    const v8f d = load8(a.delta + t * E + c0);
    const v8f uu = load8(a.u + t * E + c0);
    const v8f du = d * uu;
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    v8f acc = v8f{};
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) {
      const v8f dA = exp8(d * At[q]);
      h[q] = dA * h[q] + du * Bt[q];
      acc += h[q] * Ct[q];
    }
    if (ssm) store8(ssm + t * E + c0, acc);
    if (y) {
      v8f v = acc;
      if (a.D) v += Dv * uu;
      if (a.z) {
        const v8f zz = load8(a.z + t * a.ld_z + c0);
        v *= zz / (1.0f + exp8(-zz));
      }
      store8(y + t * E + c0, v);
    }
  }
}
}  // namespace

void selective_scan_forward_fast(float* ssm, float* y, const ScanArgs& a) {
  if ((a.N != 8 && a.N != 16) || a.E % 8 != 0) {
    selective_scan_forward(ssm, y, nullptr, a);
    return;
  }
  parallel_for(a.E / 8, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      if (a.N == 16) scan_fwd8<16>(ssm, y, a, g * 8);
      else scan_fwd8<8>(ssm, y, a, g * 8);
    }
  }, min_rows(a.T * a.N * 8, 1));
}

// ---- instantiations ----
#define SSMX_BACKWARD_INSTANTIATE(R)                                                                                  \
  template void linear_backward<R>(R*, const R*, const R*, int64_t, int64_t, int64_t, int64_t, int64_t, bool);        \
  template void epsilon_rescale<R>(R*, const R*, int64_t, int64_t, int64_t, int64_t, double);                         \
  template void linear_gamma_backward<R>(R*, const R*, const R*, const R*, const R*, int64_t, int64_t, int64_t,       \
                                         int64_t, int64_t, int64_t, double, bool, double*);                           \
  template void rmsnorm_backward<R>(R*, const R*, const R*, const R*, const R*, int64_t, int64_t, bool, bool,          \
                                    int64_t, int64_t, int64_t);                                                       \
  template void conv1d_causal_backward<R>(R*, const R*, const R*, int64_t, int64_t, int64_t, int64_t);               \
  template void silu_backward<R>(R*, const R*, const R*, int64_t, SiluRule, const R*);                               \
  template void softplus_backward<R>(R*, const R*, const R*, int64_t);                                                \
  template void gate_backward<R>(R*, R*, const R*, const R*, const R*, const R*, const R*, int64_t, int64_t, int64_t, \
                                 int64_t, R, SiluRule);                                                               \
  template void selective_scan_backward<R>(const ScanBackwardArgs<R>&);
SSMX_BACKWARD_INSTANTIATE(float)
SSMX_BACKWARD_INSTANTIATE(double)
#undef SSMX_BACKWARD_INSTANTIATE

}  // namespace ssmx
