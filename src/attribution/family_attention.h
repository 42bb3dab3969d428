// ssmx/attribution/family_attention.h — per-layer attention of the Mamba-2, RWKV-4 and RecurrentGemma language
// models, in the shapes `ssmx attention` writes and the Python API returns (one place for both).
//
// Per family (docs/mamba2.md, docs/rwkv.md, docs/griffin.md):
//   mamba2          channels = the Di inner channels (the P channels of a head share its matrix); kinds s6, unified
//   rwkv            channels = the attention width; s6 = alpha_WKV (rows sum to 1), unified = diag(r)·alpha_WKV
//   recurrent_gemma recurrent layers: channels = lru_width; s6 = α_RG·M_conv, unified = diag(y)·α_RG·M_conv,
//                   unified-noconv = diag(y)·α_RG, unified-nogate = s6; compat "tracing" drops √(1 − a²).
//                   Local attention layers: their softmax weights per query head (kind "softmax", every --kind),
//                   always all heads.
// Results: full (n, T, T), or (T, T) reduced over the channels; a row (n, T), or (T) reduced.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attribution/hidden_attention.h"
#include "core/tensor.h"
#include "models/model.h"

namespace ssmx {

struct FamilyAttnRequest {
  AttnKind kind = AttnKind::S6;
  std::string compat = "none";  // recurrent_gemma: none | tracing; the others: none
  int64_t c0 = 0, c1 = -1;      // channel range [c0, c1); c1 = -1: every channel
  int64_t row = -1;             // a query row (0 ≤ row < T), or -1 for full matrices
  bool reduce = false;          // reduce over the channels with `red`
  AttnReduce red = AttnReduce::Mean;
};

struct FamilyAttnLayer {
  int64_t layer = 0;
  Tensor result;
  std::string kind;      // attn_kind_name(request kind), or "softmax" for a local attention layer
  int64_t a = 0, b = 0;  // the channels (or heads) of the result's leading axis
  std::string axis;      // "channel" or "head"
  std::string op;        // what the matrix is, in words
};

// Whether family_attention serves this model (mamba2, rwkv, recurrent_gemma).
bool has_family_attention(const CausalLM& m);
// layers; channels = what `c0, c1` refer to (Mamba-2 d_inner, RWKV attention width, RecurrentGemma lru_width);
// heads = the query heads of RecurrentGemma's local attention layers (0 for the others). Throws for other models.
struct FamilyAttnShape {
  int64_t layers = 0, channels = 0, heads = 0;
};
FamilyAttnShape family_attention_shape(const CausalLM& m);
// Checks the request for this family (throws ssmx::Error naming the option: "--kind", "--compat", "--channels"),
// runs one forward over `ids` and calls `each` for every layer in `layers` (ascending), one layer at a time.
void family_attention(const CausalLM& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                      const FamilyAttnRequest& req, const std::function<void(const FamilyAttnLayer&)>& each);

}  // namespace ssmx
