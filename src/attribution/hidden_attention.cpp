#include "attribution/hidden_attention.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/selective_scan.h"
#include "ops/vmath.h"

namespace ssmx {

const char* attn_kind_name(AttnKind k) {
  switch (k) {
    case AttnKind::S6: return "s6";
    case AttnKind::Unified: return "unified";
    case AttnKind::UnifiedNoConv: return "unified-noconv";
    case AttnKind::UnifiedNoGate: return "unified-nogate";
    case AttnKind::UnifiedNoAct: return "unified-noact";
  }
  return "?";
}

AttnKind parse_attn_kind(const std::string& s) {
  for (AttnKind k : {AttnKind::S6, AttnKind::Unified, AttnKind::UnifiedNoConv, AttnKind::UnifiedNoGate, AttnKind::UnifiedNoAct})
    if (s == attn_kind_name(k)) return k;
  throw Error("--kind", "unknown attention kind '" + s + "' (s6, unified, unified-noconv, unified-nogate, unified-noact)");
}

const char* attn_reduce_name(AttnReduce r) {
  switch (r) {
    case AttnReduce::Mean: return "mean";
    case AttnReduce::AbsMean: return "absmean";
    case AttnReduce::Max: return "max";
  }
  return "?";
}

AttnReduce parse_attn_reduce(const std::string& s) {
  for (AttnReduce r : {AttnReduce::Mean, AttnReduce::AbsMean, AttnReduce::Max})
    if (s == attn_reduce_name(r)) return r;
  throw Error("--reduce", "unknown reduction '" + s + "' (none, mean, absmean, max)");
}

AttnCompat parse_attn_compat(const std::string& s) {
  if (s == "none" || s.empty()) return AttnCompat::None;
  if (s == "hiddenattn-row") return AttnCompat::HiddenAttnRow;
  throw Error("--compat", "unknown compatibility mode '" + s + "' (none, hiddenattn-row)");
}

int64_t hidden_attention_bytes_full(int64_t channels, int64_t T) { return channels * T * T * int64_t(sizeof(float)); }

namespace {

constexpr int64_t kBand = 128;  // rows per band: fixed, so results do not depend on the thread count

void check_range(const MixerTrace& tr, int64_t c0, int64_t c1) {
  if (c0 < 0 || c1 > tr.E || c0 >= c1)
    throw Error("--channels", "channel range " + std::to_string(c0) + ":" + std::to_string(c1) + " is not within 0:" +
                                  std::to_string(tr.E));
}

// Per-call transposed operands: (N, T) B·, C·, and per channel σ(c), SiLU(z) as (E, T).
struct Prepared {
  std::vector<float> Bt, Ct, sig, gate;
  Prepared(const MixerTrace& tr, AttnKind kind, int64_t c0, int64_t c1) {
    const int64_t T = tr.T, N = tr.N, E = tr.E;
    Bt.resize(size_t(N * T));
    Ct.resize(size_t(N * T));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        Bt[n * T + t] = tr.B[t * tr.ld_bc + n];
        Ct[n * T + t] = tr.C[t * tr.ld_bc + n];
      }
    if (kind != AttnKind::S6) {
      const int64_t nc = c1 - c0;
      sig.resize(size_t(nc * T));
      gate.resize(size_t(nc * T));
      parallel_for(nc, [&](int64_t a, int64_t b) {
        for (int64_t k = a; k < b; ++k)
          for (int64_t t = 0; t < T; ++t) {
            sig[k * T + t] = sigmoid_f(tr.conv[t * E + c0 + k]);
            gate[k * T + t] = silu_f(tr.z[t * E + c0 + k]);
          }
      });
    }
  }
};

// Turns an S6 row (α_e[i, 0..i]) into the requested kind, in place over out[0..T). `sig`, `gate`: this channel's
// σ(c) and SiLU(z) over time; w: its K conv taps. Entries j > i are zero.
void transform_row(AttnKind kind, int64_t i, int64_t T, int64_t K, const float* w, const float* sig, const float* gate,
                   const float* s6, float* out, float* tmp) {
  const int64_t n = i + 1;
  if (kind == AttnKind::S6) {
    std::memcpy(out, s6, size_t(n) * 4);
  } else {
    const bool act = kind != AttnKind::UnifiedNoAct, conv = kind != AttnKind::UnifiedNoConv,
               gated = kind != AttnKind::UnifiedNoGate;
    if (act) {
      for (int64_t j = 0; j < n; ++j) tmp[j] = s6[j] * sig[j];
    } else {
      std::memcpy(tmp, s6, size_t(n) * 4);
    }
    if (conv) {  // out[j] = Σ_k tmp[j+k] · w[K-1-k], j + k ≤ i: K vectorisable passes
      const float w0 = w[K - 1];
      for (int64_t j = 0; j < n; ++j) out[j] = tmp[j] * w0;
      for (int64_t k = 1; k < K; ++k) {
        const float wk = w[K - 1 - k];
        for (int64_t j = 0; j + k < n; ++j) out[j] += tmp[j + k] * wk;
      }
    } else {
      std::memcpy(out, tmp, size_t(n) * 4);
    }
    if (gated) {
      const float g = gate[i];
      for (int64_t j = 0; j < n; ++j) out[j] *= g;
    }
  }
  if (n < T) std::memset(out + n, 0, size_t(T - n) * 4);
}

// Impulse propagation over one band of rows [i0, i1) for channel e. Adds row i of
//   diag(row_scale) · α_e · diag(col_scale)          (either scale may be null = 1)
// into R[(i - i0) · ldR + j] for j ≤ i (R is accumulated into, never cleared here; columns i < j < i1 receive +0).
//
// Columns are independent. Each group of 8 columns keeps its states (8 at a time) in vector registers while the
// rows of the band stream past: per row and state one multiply by the broadcast decay Ā_i[n] and one multiply-add
// into the row's accumulator. The 8×8 diagonal block, where columns switch on, runs from a small array first.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

// exp_clamped on 8 lanes (the same operations, so the same results lane by lane).
inline v8f exp8(v8f x) {
  const v8f lo = v8f{} + kExpLo, hi = v8f{} + kExpHi;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v8f shifted = x * 1.44269504088896341f + 12582912.0f;
  const v8f fx = shifted - 12582912.0f;
  const v8i n = std::bit_cast<v8i>(shifted) - 0x4B400000;
  v8f r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const v8f r2 = r * r;
  v8f q = v8f{} + 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  q = q * r2 + r + 1.0f;
  return q * std::bit_cast<v8f>((n + 127) << 23);
}

struct BandWorker {
  static constexpr int64_t kW = 8;  // columns per group
  static constexpr int64_t kQ = 8;  // states held in registers at a time
  std::vector<float> abar, cs, injb, hmem;
  std::vector<double> suf;
  std::vector<v8f> acc_rows;
  explicit BandWorker(int64_t T, int64_t N)
      : abar(size_t(kBand * N)), cs(size_t(kBand * N)), injb(size_t(kBand * N)), hmem(size_t(N * kW)), suf(static_cast<size_t>(T)),
        acc_rows(size_t(kBand)) {}

  static void add_row(float* r, int64_t valid, v8f acc) {
    if (valid >= kW) {
      v8f cur;
      std::memcpy(&cur, r, sizeof cur);
      cur += acc;
      std::memcpy(r, &cur, sizeof cur);
    } else {
      for (int64_t l = 0; l < valid; ++l) r[l] += acc[l];
    }
  }

  // Rows [ia, i1) of one column group for states n0 .. n0+Q-1, the states held in registers (a fixed-size array
  // indexed only by constants, so the compiler never spills it). With ndiag > 0 the group is a diagonal block starting
  // at row ia: the states start at zero and column ia + l switches on at row ia + l (lane l set to inj[l·N + n]).
  template <int Q>
  void rows_fast(v8f* out, int64_t i0, int64_t ia, int64_t i1, int64_t N, int64_t n0, int64_t ndiag, const float* inj) {
    v8f h[Q];
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
#pragma GCC unroll 8
    for (int k = 0; k < Q; ++k) {
      if (ndiag > 0) h[k] = v8f{};
      else std::memcpy(&h[k], hmem.data() + (n0 + k) * kW, sizeof(v8f));
    }
    for (int64_t i = ia; i < ia + ndiag; ++i) {
      const float* ab = abar.data() + (i - i0) * N + n0;
      const float* c = cs.data() + (i - i0) * N + n0;
      const float* in = inj + (i - ia) * N + n0;
      const v8i on = lane == int32_t(i - ia);
      v8f acc0 = v8f{}, acc1 = v8f{};
#pragma GCC unroll 8
      for (int k = 0; k < Q; ++k) {
        h[k] *= ab[k];
        h[k] = on ? (v8f{} + in[k]) : h[k];
        if (k % 2 == 0) acc0 += h[k] * c[k];
        else acc1 += h[k] * c[k];
      }
      out[i - ia] += acc0 + acc1;
    }
    for (int64_t i = ia + ndiag; i < i1; ++i) {
      const float* ab = abar.data() + (i - i0) * N + n0;
      const float* c = cs.data() + (i - i0) * N + n0;
      v8f acc0 = v8f{}, acc1 = v8f{};
#pragma GCC unroll 8
      for (int k = 0; k < Q; ++k) {
        h[k] *= ab[k];
        if (k % 2 == 0) acc0 += h[k] * c[k];
        else acc1 += h[k] * c[k];
      }
      out[i - ia] += acc0 + acc1;
    }
  }

  // Columns from j_first (a multiple of kW, ≤ i0) on; columns before it are left alone. Column j of row i lands in
  // R[(i - i0) · ldR + j - col_base] (col_base ≤ j_first).
  void run(const MixerTrace& tr, const Prepared& P, int64_t e, int64_t i0, int64_t i1, float* R, int64_t ldR,
           const float* row_scale, const float* col_scale, int64_t j_first = 0, int64_t col_base = 0) {
    const int64_t T = tr.T, N = tr.N, E = tr.E;
    const float* A = tr.A + e * N;
    if (i0 > 0 && j_first < i0) {  // Σ_{k=j+1..i0-1} Δ_k for j < i0, in double: the exponent of the state entering the band
      suf[size_t(i0 - 1)] = 0.0;
      for (int64_t j = i0 - 1; j > 0; --j) suf[size_t(j - 1)] = suf[size_t(j)] + double(tr.delta[j * E + e]);
    }
    // Per row of the band: decays Ā_i[n], the query weights C_i[n] (· row_scale_i), and the state each column starts
    // with at its own row, Δ_j · B_j[n] (· col_scale_j); row-major (i, n).
    for (int64_t i = i0; i < i1; ++i) {
      const float di = tr.delta[i * E + e], rs = row_scale ? row_scale[i] : 1.0f, cl = col_scale ? col_scale[i] : 1.0f;
      for (int64_t n = 0; n < N; ++n) {
        abar[size_t((i - i0) * N + n)] = exp_clamped(di * A[n]);
        cs[size_t((i - i0) * N + n)] = P.Ct[size_t(n * T + i)] * rs;
        injb[size_t((i - i0) * N + n)] = di * P.Bt[size_t(n * T + i)] * cl;
      }
    }
    for (int64_t j0 = j_first; j0 < i1; j0 += kW) {
      const int64_t valid = std::min(kW, T - j0);  // columns that exist in R's rows
      int64_t ia, ndiag;
      const float* inj = nullptr;
      if (j0 < i0) {  // columns below the band (all of the group, as bands are multiples of kW): log-space states
        for (int64_t n = 0; n < N; ++n) {
          alignas(32) float arg[kW], in[kW];
          const double a = A[n];
          for (int64_t l = 0; l < kW; ++l) {
            arg[l] = float(a * suf[size_t(j0 + l)]);
            const float v = tr.delta[(j0 + l) * E + e] * P.Bt[size_t(n * T + j0 + l)];
            in[l] = col_scale ? v * col_scale[j0 + l] : v;
          }
          float* h = hmem.data() + n * kW;
#pragma omp simd
          for (int64_t l = 0; l < kW; ++l) h[l] = exp_clamped(arg[l]) * in[l];
        }
        ia = i0, ndiag = 0;
      } else {  // the diagonal block: columns switch on at their own row
        ia = j0, ndiag = std::min(i1, j0 + kW) - j0;
        inj = injb.data() + (j0 - i0) * N;
      }
      // States in registers, kQ at a time, summed over state chunks in a contiguous scratch (rows of R lie T floats
      // apart: walking them once per chunk thrashes one L1 set).
      const int64_t nrows = i1 - ia;
      std::fill(acc_rows.begin(), acc_rows.begin() + nrows, v8f{});
      for (int64_t n0 = 0; n0 < N;) {
        const int64_t q = N - n0;
        if (q >= kQ) rows_fast<kQ>(acc_rows.data(), i0, ia, i1, N, n0, ndiag, inj), n0 += kQ;
        else if (q >= 4) rows_fast<4>(acc_rows.data(), i0, ia, i1, N, n0, ndiag, inj), n0 += 4;
        else rows_fast<1>(acc_rows.data(), i0, ia, i1, N, n0, ndiag, inj), n0 += 1;
      }
      for (int64_t i = ia; i < i1; ++i) {
        float* r = R + (i - i0) * ldR + (j0 - col_base);
        const v8f acc = acc_rows[size_t(i - ia)];
        if (i - ia < ndiag) {  // inside the diagonal block: columns j ≤ i only
          for (int64_t l = 0; l <= i - j0 && l < valid; ++l) r[l] += acc[l];
        } else {
          add_row(r, valid, acc);
        }
      }
    }
  }
};

// Row and column scales that fold the gate and the activation into the propagation; the conv (channel-specific taps)
// is applied to each finished row by conv_row.
struct KindScales {
  const float* row = nullptr;
  const float* col = nullptr;
  bool conv = false;
};
KindScales kind_scales(AttnKind kind, const Prepared& P, int64_t k, int64_t T) {
  KindScales s;
  if (kind == AttnKind::S6) return s;
  if (kind != AttnKind::UnifiedNoGate) s.row = P.gate.data() + k * T;
  if (kind != AttnKind::UnifiedNoAct) s.col = P.sig.data() + k * T;
  s.conv = kind != AttnKind::UnifiedNoConv;
  return s;
}

// out[j] = Σ_k in[j+k] · w[K-1-k] for j + k ≤ i (the banded conv matrix applied from the right); zeros above i.
void conv_row(int64_t i, int64_t T, int64_t K, const float* w, const float* in, float* out) {
  const int64_t n = i + 1;
  const float w0 = w[K - 1];
  for (int64_t j = 0; j < n; ++j) out[j] = in[j] * w0;
  for (int64_t k = 1; k < K; ++k) {
    const float wk = w[K - 1 - k];
    for (int64_t j = 0; j + k < n; ++j) out[j] += in[j + k] * wk;
  }
  if (n < T) std::memset(out + n, 0, size_t(T - n) * 4);
}

template <typename PerBand>
void for_each_band(int64_t T, PerBand&& per_band) {
  const int64_t nb = (T + kBand - 1) / kBand;
  // Later bands have more columns: hand them out from the end, one at a time.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nb; ++k) {
    const int64_t b = nb - 1 - k;
    per_band(b * kBand, std::min(T, (b + 1) * kBand));
  }
}

// ---- The chunked GEMM path for linear channel reductions (docs/hidden-attention.md, performance.md §B2) ----
//
// Rows and columns are cut into chunks of kChunk tokens. For i in chunk p and j in an earlier chunk q, with the double
// cumulative sums S_t = Σ_{k≤t} Δ_k[e], the exponent of α_e[i,j] splits at the reference points r = end of q and
// p0 - 1 (p0 = start of p) into three non-negative segments:
//   α_e[i,j] = Σ_n [C_i[n]·e^{A(S_i − S_{p0−1})}] · [e^{A(S_{p0−1} − S_r)}] · [Δ_j B_j[n]·e^{A(S_r − S_j)}]
//              └── U_p[i,(e,n)] ─────────────┘   └── mid_pq[(e,n)] ─────┘   └── V_q[j,(e,n)] ──────────┘
// so every factor is ≤ 1 (in magnitude, times |C|, |ΔB|) and a Σ_e-reduction of a block of rows is one sgemm over
// K = channels·N. Row weights (the gate, W) go into U, column weights (σ(c), V) into V; the conv taps are applied to V
// inside the chunk (with the same reference r), and the taps that reach into the next chunk q+1 are a "spill" of q+1's
// operand (K−1 extra rows, reference = end of q+1) added to the tail columns of q. The diagonal blocks (and the spill of
// a diagonal block into the K−1 columns before it) are computed by the exact impulse propagation.
constexpr int64_t kChunk = 64;

inline float exp_or_zero(float x) { return x < kExpLo ? 0.0f : exp_clamped(x); }

struct LinearWeights {
  const float* row = nullptr;   // (T, E): W[i,e], multiplies row i
  const float* col = nullptr;   // (T, E): V[j,e], multiplies column j (after the conv)
  const float* chan = nullptr;  // (E): w[e]
};

struct KindFlags {
  bool gated, act, conv;
  explicit KindFlags(AttnKind k)
      : gated(k != AttnKind::S6 && k != AttnKind::UnifiedNoGate),
        act(k != AttnKind::S6 && k != AttnKind::UnifiedNoAct),
        conv(k != AttnKind::S6 && k != AttnKind::UnifiedNoConv) {}
};

// Channels per GEMM block: K = eb·N of about 4 Mi floats / T (16 MiB per operand), within [256, 4096]. Depends on the
// shape only, never on the thread count.
int64_t g_gemm_kb_override = 0;
int64_t gemm_channel_block(int64_t T, int64_t N, int64_t nc) {
  const int64_t kb = g_gemm_kb_override > 0 ? g_gemm_kb_override
                                             : std::clamp<int64_t>((int64_t(1) << 22) / std::max<int64_t>(T, 1), 256, 4096);
  return std::min(nc, std::max<int64_t>(1, kb / N));
}

// Off-diagonal blocks: out[i, j] += Σ_e (weights) α^kind_e[i,j] for j < start of i's chunk.
void linear_map_offdiag(const MixerTrace& tr, const KindFlags& kf, const LinearWeights& lw, int64_t c0, int64_t c1,
                        const Prepared& P, float* out) {
  const int64_t T = tr.T, E = tr.E, N = tr.N, K = tr.K, Q = kChunk, nq = (T + Q - 1) / Q, nc = c1 - c0;
  const int64_t ns = kf.conv ? K - 1 : 0;  // spill rows per chunk
  if (nq < 2) return;
  const int64_t eb_max = gemm_channel_block(T, N, nc), kb_max = eb_max * N;
  std::vector<float> U(size_t(T * kb_max)), Vt(size_t(T * kb_max)), Vsp(size_t(nq * ns * kb_max)), taps(size_t(K * kb_max));
  std::vector<double> S(size_t(T * eb_max));
  for (int64_t e0 = c0; e0 < c1; e0 += eb_max) {
    const int64_t eb = std::min(eb_max, c1 - e0), kb = eb * N;
    parallel_for(eb, [&](int64_t a, int64_t b) {
      for (int64_t k = a; k < b; ++k) {
        double acc = 0.0;
        for (int64_t t = 0; t < T; ++t) S[size_t(t * eb + k)] = (acc += double(tr.delta[t * E + e0 + k]));
      }
    });
    if (kf.conv)  // taps[t][(k,n)] = w[e, K-1-t]: the weight of column j+t in α̂ column j
      for (int64_t t = 0; t < K; ++t)
        for (int64_t k = 0; k < eb; ++k)
          for (int64_t n = 0; n < N; ++n) taps[size_t(t * kb + k * N + n)] = tr.conv_w[(e0 + k) * K + K - 1 - t];
    // Operands per chunk: U for chunks 1.., V (and the spill) for chunks ..nq-2.
    parallel_for(nq, [&](int64_t qa, int64_t qb) {
      std::vector<float> base(size_t(Q * kb));
      for (int64_t q = qa; q < qb; ++q) {
        const int64_t a = q * Q, b = std::min(T, a + Q);
        if (q >= 1)
          for (int64_t i = a; i < b; ++i) {
            const float* Ci = tr.C + i * tr.ld_bc;
            for (int64_t k = 0; k < eb; ++k) {
              const int64_t e = e0 + k;
              float rs = lw.row ? lw.row[i * E + e] : 1.0f;
              if (lw.chan) rs *= lw.chan[e];
              if (kf.gated) rs *= P.gate[size_t((e - c0) * T + i)];
              const float d = float(S[size_t(i * eb + k)] - S[size_t((a - 1) * eb + k)]);
              const float* Ae = tr.A + e * N;
              float* u = U.data() + i * kb + k * N;
              for (int64_t n = 0; n < N; ++n) u[n] = rs * Ci[n] * exp_or_zero(Ae[n] * d);
            }
          }
        if (q == nq - 1) continue;  // the last chunk is a column block of no off-diagonal block
        for (int64_t j = a; j < b; ++j) {
          const float* Bj = tr.B + j * tr.ld_bc;
          for (int64_t k = 0; k < eb; ++k) {
            const int64_t e = e0 + k;
            float cs = tr.delta[j * E + e];
            if (kf.act) cs *= P.sig[size_t((e - c0) * T + j)];
            if (!kf.conv && lw.col) cs *= lw.col[j * E + e];
            const float d = float(S[size_t((b - 1) * eb + k)] - S[size_t(j * eb + k)]);
            const float* Ae = tr.A + e * N;
            float* v = (kf.conv ? base.data() + (j - a) * kb : Vt.data() + j * kb) + k * N;
            for (int64_t n = 0; n < N; ++n) v[n] = cs * Bj[n] * exp_or_zero(Ae[n] * d);
          }
        }
        if (!kf.conv) continue;
        // Conv within the chunk: V[j] = Σ_t taps[t] ⊙ base[j + t] for j + t < b; then the column weight.
        for (int64_t j = a; j < b; ++j) {
          float* v = Vt.data() + j * kb;
          std::fill(v, v + kb, 0.0f);
          for (int64_t t = 0; t < K && j + t < b; ++t) {
            const float* src = base.data() + (j + t - a) * kb;
            const float* w = taps.data() + t * kb;
            for (int64_t x = 0; x < kb; ++x) v[x] += w[x] * src[x];
          }
          if (lw.col)
            for (int64_t k = 0; k < eb; ++k) {
              const float cw = lw.col[j * E + e0 + k];
              for (int64_t n = 0; n < N; ++n) v[k * N + n] *= cw;
            }
        }
        // Spill into the K−1 columns before the chunk: Σ over taps that land in this chunk (j + t ≥ a).
        if (q >= 1)
          for (int64_t sidx = 0; sidx < ns; ++sidx) {
            const int64_t j = a - ns + sidx;
            float* v = Vsp.data() + (q * ns + sidx) * kb;
            std::fill(v, v + kb, 0.0f);
            for (int64_t t = a - j; t < K; ++t) {
              const float* src = base.data() + (j + t - a) * kb;
              const float* w = taps.data() + t * kb;
              for (int64_t x = 0; x < kb; ++x) v[x] += w[x] * src[x];
            }
            if (lw.col)
              for (int64_t k = 0; k < eb; ++k) {
                const float cw = lw.col[j * E + e0 + k];
                for (int64_t n = 0; n < N; ++n) v[k * N + n] *= cw;
              }
          }
      }
    });
    // One sgemm per row chunk p over all columns before it: out[p0:p1, 0:p0] += U_p · (V·mid_p)ᵀ.
#pragma omp parallel
    {
      std::vector<float> Vs, mid;
#pragma omp for schedule(dynamic, 1)
      for (int64_t pk = 0; pk < nq - 1; ++pk) {
        const int64_t p = nq - 1 - pk, p0 = p * Q, p1 = std::min(T, p0 + Q);
        Vs.resize(size_t(p0 * kb));
        mid.resize(size_t(p * kb));
        for (int64_t q = 0; q < p; ++q) {
          const int64_t r = (q + 1) * Q - 1;  // end of chunk q
          for (int64_t k = 0; k < eb; ++k) {
            const float d = float(S[size_t((p0 - 1) * eb + k)] - S[size_t(r * eb + k)]);
            const float* Ae = tr.A + (e0 + k) * N;
            float* m = mid.data() + q * kb + k * N;
            for (int64_t n = 0; n < N; ++n) m[n] = exp_or_zero(Ae[n] * d);
          }
        }
        for (int64_t j = 0; j < p0; ++j) {
          const int64_t q = j / Q;
          const float* v = Vt.data() + j * kb;
          const float* m = mid.data() + q * kb;
          float* o = Vs.data() + j * kb;
          const int64_t sidx = j - ((q + 1) * Q - ns);
          if (sidx >= 0 && q + 1 < p) {
            const float* v2 = Vsp.data() + ((q + 1) * ns + sidx) * kb;
            const float* m2 = mid.data() + (q + 1) * kb;
            for (int64_t x = 0; x < kb; ++x) o[x] = v[x] * m[x] + v2[x] * m2[x];
          } else {
            for (int64_t x = 0; x < kb; ++x) o[x] = v[x] * m[x];
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(p1 - p0), int(p0), int(kb), 1.0f,
                    U.data() + p0 * kb, int(kb), Vs.data(), int(kb), 1.0f, out + p0 * T, int(T));
      }
    }
  }
}

// Diagonal blocks (and, with the conv, their spill into the K−1 columns before them) by impulse propagation.
void linear_map_diag(const MixerTrace& tr, const KindFlags& kf, const LinearWeights& lw, int64_t c0, int64_t c1,
                     const Prepared& P, float* out) {
  const int64_t T = tr.T, E = tr.E, K = tr.K, Q = kChunk, nq = (T + Q - 1) / Q;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t pk = 0; pk < nq; ++pk) {
    const int64_t p = nq - 1 - pk, i0 = p * Q, i1 = std::min(T, i0 + Q);
    BandWorker w(T, tr.N);
    // With the conv: rows of diag(gate)·α·diag(σ) in buf, each row padded with K−1 zeros in front (ldb = Q + K − 1),
    // then the taps as K vector passes per row.
    const int64_t ldb = Q + K - 1;
    std::vector<float> rs(static_cast<size_t>(T)), cs(static_cast<size_t>(T)), buf(kf.conv ? size_t(Q * ldb) : 0),
        tmp(static_cast<size_t>(ldb)), colw(static_cast<size_t>(ldb));
    float* dst = out + i0 * T;
    for (int64_t e = c0; e < c1; ++e) {
      for (int64_t i = i0; i < i1; ++i) {
        float r = lw.row ? lw.row[i * E + e] : 1.0f;
        if (lw.chan) r *= lw.chan[e];
        if (kf.gated) r *= P.gate[size_t((e - c0) * T + i)];
        rs[size_t(i)] = r;
        float c = kf.act ? P.sig[size_t((e - c0) * T + i)] : 1.0f;
        if (!kf.conv && lw.col) c *= lw.col[i * E + e];
        cs[size_t(i)] = c;
      }
      if (!kf.conv) {
        w.run(tr, P, e, i0, i1, dst, T, rs.data(), cs.data(), i0, 0);
        continue;
      }
      for (int64_t i = i0; i < i1; ++i) std::fill(buf.begin() + (i - i0) * ldb, buf.begin() + (i - i0) * ldb + (i - i0) + K, 0.0f);
      w.run(tr, P, e, i0, i1, buf.data() + (K - 1), ldb, rs.data(), cs.data(), i0, i0);
      const float* wt = tr.conv_w + e * K;
      const int64_t jlo = std::max<int64_t>(0, i0 - (K - 1));  // first output column
      if (lw.col)  // V[j, e] for the output columns, gathered once (rows of V lie E floats apart)
        for (int64_t j = jlo; j < i1; ++j) colw[size_t(j - i0 + K - 1)] = lw.col[j * E + e];
      for (int64_t i = i0; i < i1; ++i) {
        // buf row: index x ↔ column i0 − (K−1) + x, zero outside [i0, i]. Output column j = i0 − (K−1) + x for
        // x ∈ [jlo − i0 + K − 1, i − i0 + K − 1]: Σ_t w[K−1−t]·row[x + t].
        const float* r = buf.data() + (i - i0) * ldb;
        const int64_t x0 = jlo - i0 + K - 1, x1 = i - i0 + K;  // [x0, x1)
        for (int64_t x = x0; x < x1; ++x) tmp[size_t(x)] = wt[K - 1] * r[x];
        for (int64_t t = 1; t < K; ++t) {
          const float wk = wt[K - 1 - t];
          for (int64_t x = x0; x + t < x1; ++x) tmp[size_t(x)] += wk * r[x + t];
        }
        float* o = dst + (i - i0) * T + i0 - (K - 1);
        if (lw.col) {
          for (int64_t x = x0; x < x1; ++x) o[x] += tmp[size_t(x)] * colw[size_t(x)];
        } else {
          for (int64_t x = x0; x < x1; ++x) o[x] += tmp[size_t(x)];
        }
      }
    }
  }
}

// out (T×T, zeroed) = Σ_{e∈[c0,c1)} lw · α^kind_e, lower triangle. The off-diagonal blocks are accumulated first (one
// pass per channel block, in order), then the diagonal blocks (channels in order): a fixed order for every entry.
void linear_map(const MixerTrace& tr, AttnKind kind, const LinearWeights& lw, int64_t c0, int64_t c1, float* out) {
  if (tr.K - 1 > kChunk) throw Error("attention", "conv kernel longer than the attention chunk");
  Prepared P(tr, kind, c0, c1);
  const KindFlags kf(kind);
  linear_map_offdiag(tr, kf, lw, c0, c1, P, out);
  linear_map_diag(tr, kf, lw, c0, c1, P, out);
}

}  // namespace

Tensor hidden_attention_full(const MixerTrace& tr, AttnKind kind, int64_t c0, int64_t c1) {
  check_range(tr, c0, c1);
  const int64_t T = tr.T, nc = c1 - c0;
  Prepared P(tr, kind, c0, c1);
  Tensor out({nc, T, T});
  for_each_band(T, [&](int64_t i0, int64_t i1) {
    BandWorker w(T, tr.N);
    std::vector<float> buf;
    for (int64_t e = c0; e < c1; ++e) {
      const int64_t k = e - c0;
      const KindScales ks = kind_scales(kind, P, k, T);
      float* dst = out.ptr() + (k * T + i0) * T;  // zero-initialised
      if (!ks.conv) {
        w.run(tr, P, e, i0, i1, dst, T, ks.row, ks.col);
        continue;
      }
      buf.assign(size_t((i1 - i0) * T), 0.0f);
      w.run(tr, P, e, i0, i1, buf.data(), T, ks.row, ks.col);
      for (int64_t i = i0; i < i1; ++i) conv_row(i, T, tr.K, tr.conv_w + e * tr.K, buf.data() + (i - i0) * T, dst + (i - i0) * T);
    }
  });
  return out;
}

Tensor hidden_attention_reduce(const MixerTrace& tr, AttnKind kind, AttnReduce red, int64_t c0, int64_t c1) {
  check_range(tr, c0, c1);
  const int64_t T = tr.T, nc = c1 - c0;
  Tensor out({T, T});
  if (red == AttnReduce::Mean) {  // linear: the chunked GEMM path; AbsMean and Max below, by impulse propagation
    linear_map(tr, kind, LinearWeights{}, c0, c1, out.ptr());
    const float s = 1.0f / float(nc);
    for (float& v : out.data) v *= s;
    return out;
  }
  Prepared P(tr, kind, c0, c1);
  for_each_band(T, [&](int64_t i0, int64_t i1) {
    BandWorker w(T, tr.N);
    const int64_t nb = i1 - i0;
    float* dst = out.ptr() + i0 * T;
    std::vector<float> buf, row(static_cast<size_t>(T));
    if (red == AttnReduce::Max)
      for (int64_t i = i0; i < i1; ++i) std::fill(dst + (i - i0) * T, dst + (i - i0) * T + i + 1, -std::numeric_limits<float>::infinity());
    for (int64_t e = c0; e < c1; ++e) {
      const KindScales ks = kind_scales(kind, P, e - c0, T);
      buf.assign(size_t(nb * T), 0.0f);
      w.run(tr, P, e, i0, i1, buf.data(), T, ks.row, ks.col);
      for (int64_t i = i0; i < i1; ++i) {
        const float* r = buf.data() + (i - i0) * T;
        if (ks.conv) {
          conv_row(i, T, tr.K, tr.conv_w + e * tr.K, r, row.data());
          r = row.data();
        }
        float* o = dst + (i - i0) * T;
        if (red == AttnReduce::AbsMean) {
          for (int64_t j = 0; j <= i; ++j) o[j] += std::fabs(r[j]);
        } else {
          for (int64_t j = 0; j <= i; ++j) o[j] = std::max(o[j], r[j]);
        }
      }
    }
    if (red == AttnReduce::AbsMean) {
      const float s = 1.0f / float(nc);
      for (int64_t k = 0; k < nb * T; ++k) dst[k] *= s;
    }
  });
  return out;
}

void hidden_attention_set_gemm_block_for_testing(int64_t k) { g_gemm_kb_override = k; }

Tensor hidden_attention_weighted(const MixerTrace& tr, AttnKind kind, const float* W, const float* V, const float* w,
                                 int64_t c0, int64_t c1) {
  check_range(tr, c0, c1);
  Tensor out({tr.T, tr.T});
  LinearWeights lw;
  lw.row = W, lw.col = V, lw.chan = w;
  linear_map(tr, kind, lw, c0, c1, out.ptr());
  return out;
}

Tensor hidden_attention_row(const MixerTrace& tr, AttnKind kind, int64_t i, int64_t c0, int64_t c1, AttnCompat compat) {
  check_range(tr, c0, c1);
  const int64_t T = tr.T, N = tr.N, E = tr.E, nc = c1 - c0;
  if (i < 0 || i >= T) throw Error("--row", "row " + std::to_string(i) + " is outside 0.." + std::to_string(T - 1));
  Tensor out({nc, T});
  const float* Ci = tr.C + i * tr.ld_bc;
  // Channels in groups of 64 (8 vectors of 8): each step j reads whole cache lines of Δ (rows lie E floats apart) and
  // shares C_i·B_j across the group.
  //
  // Underflow. The running products p[n] = Π Ā only shrink. Left alone they pass through the subnormal range, where
  // this CPU's multiplies are several times slower (measured 2.4× on the whole walk) and gradual underflow drops their
  // low bits. So each lane keeps its products scaled by an exact power of two 2^(32·s): when all of a lane's p[n] fall
  // below 2^-32 they are multiplied by 2^32 and s grows by one; the entries are scaled back on output in double and
  // rounded once to float. That is exact scaling, so every entry is the same IEEE computation as without it whenever
  // no intermediate would have been subnormal, and more accurate otherwise. A lane is finished once
  //   2^(-32·s) · max_n p[n] · bound < 2^-151,   bound = max_j Δ_j[e] · max_j Σ_n |C_i[n]·B_j[n]|,
  // i.e. when every remaining entry |Σ_n p[n]·Δ_j·C_i[n]·B_j[n]| is below half the smallest subnormal and so rounds
  // to zero in float; those entries are written as +0 without being walked.
  constexpr int64_t G = 8, V = 8, GV = G * V;
  constexpr float kUp = 4294967296.0f, kLow = 1.0f / 4294967296.0f;  // 2^32, 2^-32
  constexpr float kDrop = 0x1p-100f;
  if (N > 64) throw Error("hidden attention", "row mode supports d_state up to 64");
  double unscale[64];  // 2^(-32·s), exact in double
  for (int s = 0; s < 64; ++s) unscale[s] = std::ldexp(1.0, -32 * s);
  const int64_t nblk = (nc + GV - 1) / GV;
  double cbmax = 0.0;  // max_j Σ_n |C_i[n]·B_j[n]|
  for (int64_t j = 0; j <= i; ++j) {
    double sum = 0.0;
    for (int64_t n = 0; n < N; ++n) sum += std::fabs(double(Ci[n]) * double(tr.B[j * tr.ld_bc + n]));
    cbmax = std::max(cbmax, sum);
  }
  std::vector<float> chmax(size_t(nc), 0.0f);  // max_j Δ_j[e] over j ≤ i, per channel (one contiguous pass)
  for (int64_t j = 0; j <= i; ++j) {
    const float* dr = tr.delta + j * E + c0;
    for (int64_t c = 0; c < nc; ++c) chmax[size_t(c)] = std::max(chmax[size_t(c)], dr[c]);
  }
  parallel_for(nblk, [&](int64_t b0, int64_t b1) {
    std::vector<v8f> p(size_t(V * N)), At(size_t(V * N));
    std::vector<v8f> s6(size_t(T * V));       // (T, 64 channels), scaled by 2^(32·s)
    std::vector<v4d> unsc(size_t(2 * V));     // per lane 2^(-32·s), exact in double (lanes 0-3, 4-7)
    std::vector<float> cb(static_cast<size_t>(N)), row(static_cast<size_t>(T)), sig(static_cast<size_t>(T)),
        gate(static_cast<size_t>(T)), tmp(static_cast<size_t>(T));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t e0 = c0 + blk * GV, w = std::min(GV, c1 - e0), nv = (w + G - 1) / G;
      for (int64_t v = 0; v < nv; ++v)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t l = 0; l < G; ++l) {
            const int64_t c = v * G + l;
            At[size_t(v * N + n)][l] = c < w ? tr.A[(e0 + c) * N + n] : 0.0f;
          }
      float dmax = 0.0f;
      for (int64_t c = 0; c < w; ++c) dmax = std::max(dmax, chmax[size_t(e0 - c0 + c)]);
      const double bound = double(dmax) * cbmax;
      std::fill(p.begin(), p.end(), v8f{} + 1.0f);
      // Walk j = i, i-1, ..., 0 carrying p[n] = Π_{k=j+1..i} Ā_k[n] (exact), or Π_{k=j+1..i-1} (compat row).
      int64_t jstart = i;
      int64_t jlow[V];  // lowest j walked per vector; entries below are +0
      bool live[V];
      int32_t sc[GV];   // scale exponent per channel
      for (int64_t v = 0; v < V; ++v) jlow[v] = 0, live[v] = v < nv;
      std::fill(sc, sc + GV, 0);
      std::fill(unsc.begin(), unsc.end(), v4d{} + 1.0);
      int64_t nlive = nv;
      if (compat == AttnCompat::HiddenAttnRow) {
        for (int64_t v = 0; v < V; ++v) s6[size_t(i * V + v)] = v8f{};
        jstart = i - 1;
      }
      // Live states per vector: a state is dropped once its (scaled) product is below kDrop in every lane — its
      // remaining terms are then < 2^-36 of the lane's leading term (which the rescaling keeps above 2^-64), far
      // below a float's resolution of the entry, and it never reaches the slow subnormal range.
      uint8_t act[V][64];
      int64_t na[V];
      for (int64_t v = 0; v < V; ++v) {
        na[v] = N;
        for (int64_t n = 0; n < N; ++n) act[v][n] = uint8_t(n);
      }
      for (int64_t j = jstart; j >= 0 && nlive > 0; --j) {
        const float* Bj = tr.B + j * tr.ld_bc;
        for (int64_t n = 0; n < N; ++n) cb[size_t(n)] = Ci[n] * Bj[n];
        const float* dj = tr.delta + j * E + e0;
        for (int64_t v = 0; v < nv; ++v) {
          if (!live[v]) continue;
          v8f d = v8f{};
          if ((v + 1) * G <= w) std::memcpy(&d, dj + v * G, sizeof d);
          else
            for (int64_t l = 0; l < w - v * G; ++l) d[l] = dj[v * G + l];
          v8f* pv = p.data() + v * N;
          const v8f* av = At.data() + v * N;
          const uint8_t* an = act[v];
          const int64_t nn = na[v];
          v8f acc0 = v8f{}, acc1 = v8f{};
          int64_t k = 0;
          for (; k + 1 < nn; k += 2) {
            const int64_t n0 = an[k], n1 = an[k + 1];
            acc0 += pv[n0] * (d * cb[size_t(n0)]);
            acc1 += pv[n1] * (d * cb[size_t(n1)]);
            pv[n0] *= exp8(d * av[n0]);
            pv[n1] *= exp8(d * av[n1]);
          }
          if (k < nn) {
            const int64_t n0 = an[k];
            acc0 += pv[n0] * (d * cb[size_t(n0)]);
            pv[n0] *= exp8(d * av[n0]);
          }
          {  // scale back in double, round once to float
            const v8f a = acc0 + acc1;
            const v4d lo = __builtin_convertvector(__builtin_shufflevector(a, a, 0, 1, 2, 3), v4d) * unsc[size_t(2 * v)];
            const v4d hi = __builtin_convertvector(__builtin_shufflevector(a, a, 4, 5, 6, 7), v4d) * unsc[size_t(2 * v + 1)];
            const v4f l4 = __builtin_convertvector(lo, v4f), h4 = __builtin_convertvector(hi, v4f);
            s6[size_t(j * V + v)] = __builtin_shufflevector(l4, h4, 0, 1, 2, 3, 4, 5, 6, 7);
          }
          if (j >= 16) __builtin_prefetch(dj - 16 * E + v * G);
          if ((j & 7) == 0 && j > 0) {  // drop spent states, rescale small lanes, retire finished vectors
            for (int64_t q = 0; q < na[v];) {
              const v8f x = pv[act[v][q]];
              bool spent = true;
              for (int64_t l = 0; l < G && spent; ++l) spent = v * G + l >= w || x[l] < kDrop;
              if (spent) act[v][q] = act[v][--na[v]];
              else ++q;
            }
            v8f mx = v8f{};
            for (int64_t q = 0; q < na[v]; ++q) mx = mx > pv[act[v][q]] ? mx : pv[act[v][q]];
            v8f up = v8f{} + 1.0f;
            bool done = true;
            for (int64_t l = 0; l < G; ++l) {
              const int64_t c = v * G + l;
              if (c >= w) continue;
              if (mx[l] < kLow && mx[l] > 0.0f && sc[c] < 1000) {
                up[l] = kUp, ++sc[c];
                unsc[size_t(2 * v + l / 4)][l % 4] = sc[c] < 64 ? unscale[sc[c]] : 0.0;
              }
              done = done && std::ldexp(double(mx[l]) * bound, -32 * sc[c]) < 0x1p-151;
            }
            if (done) {
              live[v] = false, jlow[v] = j, --nlive;
            } else {
              for (int64_t q = 0; q < na[v]; ++q) pv[act[v][q]] *= up;
            }
          }
        }
      }
      // Unscale and transpose (T, 64 lanes) into the channels' output rows, 32 tokens at a time (cache-friendly).
      float* ob = out.ptr() + (e0 - c0) * T;
      int64_t jmin = i;
      for (int64_t c = 0; c < w; ++c) {
        const int64_t jl = jlow[c / G];
        jmin = std::min(jmin, jl);
        std::fill(ob + c * T, ob + c * T + jl, 0.0f);
        std::fill(ob + c * T + i + 1, ob + (c + 1) * T, 0.0f);
      }
      for (int64_t jt = jmin; jt <= i; jt += 32) {
        const int64_t je = std::min(jt + 32, i + 1);
        for (int64_t c = 0; c < w; ++c) {
          const int64_t v = c / G, l = c % G;
          float* o = ob + c * T;
          for (int64_t j = std::max(jt, jlow[v]); j < je; ++j) {
            o[j] = s6[size_t(j * V + v)][l];
          }
        }
      }
      if (kind != AttnKind::S6) {
        for (int64_t c = 0; c < w; ++c) {
          const int64_t e = e0 + c, jl = jlow[c / G];
          std::copy(ob + c * T, ob + (c + 1) * T, row.begin());
          std::fill(sig.begin(), sig.begin() + jl, 0.0f);  // multiplies zeros only
          for (int64_t t = jl; t <= i; ++t) sig[size_t(t)] = sigmoid_f(tr.conv[t * E + e]);
          gate[size_t(i)] = silu_f(tr.z[i * E + e]);  // only the query's gate is read
          transform_row(kind, i, T, tr.K, tr.conv_w + e * tr.K, sig.data(), gate.data(), row.data(), ob + c * T,
                        tmp.data());
        }
      }
    }
  });
  return out;
}

Tensor hidden_attention_row_reduce(const MixerTrace& tr, AttnKind kind, AttnReduce red, int64_t i, int64_t c0,
                                   int64_t c1, AttnCompat compat) {
  Tensor rows = hidden_attention_row(tr, kind, i, c0, c1, compat);
  const int64_t T = tr.T, nc = c1 - c0;
  Tensor out({T});
  for (int64_t j = 0; j < T; ++j) {
    float s = red == AttnReduce::Max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t k = 0; k < nc; ++k) {
      const float v = rows.data[size_t(k * T + j)];
      if (red == AttnReduce::Mean) s += v;
      else if (red == AttnReduce::AbsMean) s += std::fabs(v);
      else s = std::max(s, v);
    }
    out.data[size_t(j)] = red == AttnReduce::Max ? s : s / float(nc);
  }
  return out;
}

void hidden_attention_extra_terms(const MixerTrace& tr, Tensor* d_term, Tensor* bias_term) {
  const int64_t T = tr.T, E = tr.E;
  if (d_term) {
    *d_term = Tensor({T, E});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e)
        d_term->data[size_t(t * E + e)] = tr.D[e] * tr.u[t * E + e] * silu_f(tr.z[t * E + e]);
  }
  if (bias_term) {
    *bias_term = Tensor({T, E});
    if (!tr.conv_b) return;
    // Σ_j α_e[i,j]·σ(c_j) is the scan's output for the input σ(c): one O(T·E·N) scan.
    std::vector<float> sig(size_t(T * E)), s(size_t(T * E));
    for (int64_t k = 0; k < T * E; ++k) sig[size_t(k)] = sigmoid_f(tr.conv[k]);
    ScanArgs a;
    a.T = T, a.E = E, a.N = tr.N;
    a.u = sig.data(), a.delta = tr.delta, a.A = tr.A, a.B = tr.B, a.C = tr.C, a.ld_bc = tr.ld_bc;
    selective_scan_forward(s.data(), nullptr, nullptr, a);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e)
        bias_term->data[size_t(t * E + e)] = silu_f(tr.z[t * E + e]) * tr.conv_b[e] * s[size_t(t * E + e)];
  }
}

}  // namespace ssmx
