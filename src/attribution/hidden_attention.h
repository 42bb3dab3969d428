// ssmx/attribution/hidden_attention.h — the hidden (implicit) attention of a Mamba-1 mixer.
//
// A selective-SSM layer is a data-controlled linear operator. Per channel e (Ali, Zimerman, Wolf 2024):
//
//   α_e[i,j] = Σ_n C_i[n] · Π_{k=j+1..i} exp(Δ_k[e]·A[e,n]) · Δ_j[e]·B_j[n]      (j ≤ i; 0 above the diagonal)
//   ssm_i[e] = Σ_j α_e[i,j] · u_j[e]                                              (u = SiLU(conv(x)))
//
// and with the conv, gate and activation folded in (Zimerman, Ali, Wolf 2024), relative to x (in_proj output):
//
//   α̂_e = diag(SiLU(z_e)) · α_e · diag(σ(c_e)) · M_e        M_e[i,j] = w[e, K-1-(i-j)] for 0 ≤ i-j < K
//   y_i[e] = Σ_j α̂_e[i,j] x_j[e] + D[e]·u_i[e]·SiLU(z_i[e]) + SiLU(z_i[e])·b[e]·Σ_j α_e[i,j]·σ(c_j[e])
//            └── unified ──────┘   └─ D term ───────────┘   └─ conv-bias term ────────────────────┘
//
// Ablations drop one factor: unified-noconv (no M), unified-nogate (no diag(SiLU z)), unified-noact (no diag(σ(c))).
//
// How it is computed (docs/hidden-attention.md): rows are produced by impulse propagation with the decays Ā
// precomputed, so the inner loops are multiply-adds with no exp and no cancellation (every factor ≤ 1). Work is split
// into fixed bands of 64 rows; each band starts from states computed directly in log space with partial sums of Δ held
// in double, so a band's result does not depend on which thread runs it: any thread count gives bitwise identical
// output. Nothing of size E×T×T is allocated unless full matrices of an explicit channel range are asked for.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ssmx {

enum class AttnKind { S6, Unified, UnifiedNoConv, UnifiedNoGate, UnifiedNoAct };
const char* attn_kind_name(AttnKind k);
// "s6", "unified", "unified-noconv", "unified-nogate", "unified-noact"; throws ssmx::Error otherwise.
AttnKind parse_attn_kind(const std::string& s);

enum class AttnReduce { Mean, AbsMean, Max };
const char* attn_reduce_name(AttnReduce r);
AttnReduce parse_attn_reduce(const std::string& s);  // "mean", "absmean", "max"

// Published-code behaviours reproduced on request (docs/hidden-attention.md explains each).
enum class AttnCompat {
  None,
  // Ali et al.'s class-token row: the product of decays stops before the query token (Ā_i missing) and the
  // entries j ≥ i, the diagonal included, are zero.
  HiddenAttnRow,
};
AttnCompat parse_attn_compat(const std::string& s);  // "none", "hiddenattn-row"

// Views of one mixer's forward quantities (all f32, row-major).
struct MixerTrace {
  int64_t T = 0, E = 0, N = 0, K = 0;
  const float* delta = nullptr;   // (T, E)  Δ after softplus
  const float* A = nullptr;       // (E, N)  -exp(A_log)
  const float* B = nullptr;       // (T, N)  row stride ld_bc
  const float* C = nullptr;       // (T, N)  row stride ld_bc
  int64_t ld_bc = 0;
  const float* conv = nullptr;    // (T, E)  conv output before SiLU (c)
  const float* z = nullptr;       // (T, E)  gate branch
  const float* conv_w = nullptr;  // (E, K)
  const float* conv_b = nullptr;  // (E) or nullptr
  const float* D = nullptr;       // (E)
  const float* u = nullptr;       // (T, E)  SSM input, SiLU(c)
  const float* x = nullptr;       // (T, E)  in_proj output (pre-conv)
};

// Full matrices of channels [c0, c1): (c1 - c0, T, T).
Tensor hidden_attention_full(const MixerTrace& tr, AttnKind kind, int64_t c0, int64_t c1);

// Row i of every channel in [c0, c1): (c1 - c0, T), in O(T·E·N).
Tensor hidden_attention_row(const MixerTrace& tr, AttnKind kind, int64_t i, int64_t c0, int64_t c1,
                            AttnCompat compat = AttnCompat::None);

// Reduction over channels [c0, c1) of the matrices: (T, T). Mean and AbsMean divide by the channel count. Mean is
// linear and uses the chunked GEMM path (hidden_attention_weighted); AbsMean and Max use impulse propagation.
Tensor hidden_attention_reduce(const MixerTrace& tr, AttnKind kind, AttnReduce red, int64_t c0, int64_t c1);

// Linear channel reduction with weights, (T, T), zero above the diagonal:
//
//   out[i,j] = Σ_{e∈[c0,c1)} w[e] · W[i,e] · α^kind_e[i,j] · V[j,e]
//
// W and V are (T, E) row-major (only columns c0..c1 are read), w is (E); any of them may be null (= 1). α^kind is the
// matrix of the kind (for the unified kinds the gate, activation and conv are inside it, so V multiplies the column
// of α̂, i.e. weights x_j). Examples:
//   - channel mean:             W = V = null, w[e] = 1 / (c1 - c0)       (what hidden_attention_reduce(Mean) returns)
//   - value-weighted:           V = u (s6) or x (unified): Σ_e α_e[i,j]·u_j[e], the contribution of token j to row i
//   - gradient × value:         W = ∂L/∂y (gradient wrt the layer's SSM output / pre-out_proj output at row i), V as
//                               above: Σ_e g_i[e]·α_e[i,j]·u_j[e], the first-order contribution of token j to L via row i
// Computed by the chunked GEMM path (docs/hidden-attention.md): off-diagonal blocks of 64×64 tokens as one sgemm per row
// chunk with K = channels·N, diagonal blocks by exact impulse propagation. Bitwise identical for any thread count.
Tensor hidden_attention_weighted(const MixerTrace& tr, AttnKind kind, const float* W, const float* V, const float* w,
                                 int64_t c0, int64_t c1);

// Tests only: forces the GEMM path's inner dimension per sgemm (channels·N; 0 = automatic) so that small problems
// span several channel blocks.
void hidden_attention_set_gemm_block_for_testing(int64_t k);

// Reduction over channels of row i: (T).
Tensor hidden_attention_row_reduce(const MixerTrace& tr, AttnKind kind, AttnReduce red, int64_t i, int64_t c0,
                                   int64_t c1, AttnCompat compat = AttnCompat::None);

// The terms that complete the unified identity: (T, E) each.
//   d_term[i,e]    = D[e]·u_i[e]·SiLU(z_i[e])
//   bias_term[i,e] = SiLU(z_i[e])·b[e]·Σ_j α_e[i,j]·σ(c_j[e])       (zero without a conv bias)
void hidden_attention_extra_terms(const MixerTrace& tr, Tensor* d_term, Tensor* bias_term);

// Bytes an output of the given mode needs (for the CLI's estimate before computing).
int64_t hidden_attention_bytes_full(int64_t channels, int64_t T);

}  // namespace ssmx
