// ssmx/attribution/griffin_attention.h — implicit attention of a Griffin / RecurrentGemma recurrent block.
//
// The RG-LRU is a data-controlled linear recurrence h_i = a_i ⊙ h_{i-1} + m_i ⊙ gx_i ⊙ c_i (c = conv output,
// gx = input gate, m_i = sqrt(1 - a_i²), m_0 = 1, a_0 = 0 at the reset). Per channel (hidden-attention.md §3.3):
//
//   α_RG[i,j] = (Π_{k=j+1..i} a_k) · m_j · gx_j                 (j ≤ i; 0 above the diagonal)
//   Â        = diag(y) · α_RG · M_conv                          M_conv[i,j] = w[K-1-(i-j)] for 0 ≤ i-j < K
//   gated_i  = Σ_j Â[i,j]·x_j + y_i · b_conv · Σ_j α_RG[i,j]      (x = linear_x output, gated = linear_out input)
//
// Options drop the gate (diag(y)) or the conv (M_conv); `compat` reproduces the authors' patched
// modeling_recurrent_gemma.py, whose forward (tracing hard-coded to True) drops m: m ≡ 1.
//
// Rows are built by a backward running product (every factor ≤ 1, no division, no exp). Rows are independent, so
// work is split over rows (full matrices, reductions) or over fixed 64-channel blocks (one row): any thread count
// gives bitwise identical results. Reductions never allocate C×T×T.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "attribution/hidden_attention.h"  // AttnReduce
#include "core/tensor.h"

namespace ssmx {

struct GriffinTrace {
  int64_t T = 0, W = 0, K = 0;
  const float* a = nullptr;       // (T, W) decay, 0 at position 0
  const float* gate_x = nullptr;  // (T, W) input gate
  const float* y = nullptr;       // (T, W) gelu branch
  const float* conv_w = nullptr;  // (W, K)
  const float* conv_b = nullptr;  // (W) or nullptr
  const float* x = nullptr;       // (T, W) linear_x output (only for the identity / callers)
};

// From a Griffin layer's named activations ("layers.{i}.a", ".gate_x", ".y", ".x") and its conv weights.
GriffinTrace griffin_trace(const std::map<std::string, Tensor>& acts, int64_t layer, const float* conv_w,
                           const float* conv_b, int64_t K);

struct GriffinAttnOptions {
  bool gate = true;     // diag(y)
  bool conv = true;     // M_conv
  bool compat = false;  // drop sqrt(1 - a²) as the authors' patched file does
};

// Full matrices of channels [c0, c1): (c1 - c0, T, T).
Tensor griffin_attention_full(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t c0, int64_t c1);
// Row i of every channel in [c0, c1): (c1 - c0, T).
Tensor griffin_attention_row(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t i, int64_t c0, int64_t c1);
// Reduction over channels [c0, c1): (T, T), zero above the diagonal. Mean/AbsMean divide by the channel count.
Tensor griffin_attention_reduce(const GriffinTrace& tr, const GriffinAttnOptions& o, AttnReduce red, int64_t c0,
                                int64_t c1);

// A local (multi-query) attention layer has an explicit attention matrix: the softmax weights per query head,
// (heads, T, T), zero outside the causal window (j ≤ i and i − j ≤ window, as the forward masks). From the layer's
// kept "layers.{i}.q" (T, heads·head_dim) and "layers.{i}.k" (T, kv_heads·head_dim), both after RoPE. Head h reads
// key/value head h / (heads / kv_heads); attn[i, h] = Σ_j P[h, i, j] · v[j, h / (heads / kv_heads)] reproduces the
// layer's "attn" activation. Rows are computed in double and are independent of the thread count.
Tensor griffin_local_attention(const std::map<std::string, Tensor>& acts, int64_t layer, int64_t heads,
                               int64_t kv_heads, int64_t head_dim, int64_t window);

}  // namespace ssmx
