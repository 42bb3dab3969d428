// ssmx/attribution/bidirectional.h — hidden attention of a bidirectional (Vision Mamba "v2") mixer.
//
// Vim runs one scan over the tokens and one over the reversed tokens (its own conv, x_proj, dt_proj, A, D; the
// reversed x and z), flips the second back and adds them, optionally halving the sum (`if_devide_out`):
//
//   y = s · (y_fwd + flip(y_bwd)),   s = 1/2 or 1.
//
// Both scans are Mamba-1 mixers, so each has a (causal) hidden attention α_fwd, α_bwd (hidden_attention.h) in its own
// token order. In the original order the layer's operator is therefore
//
//   α[i, j] = s · ( α_fwd[i, j] + α_bwd[T−1−i, T−1−j] )
//
// — the forward part lower-triangular, the backward part upper-triangular, both contributing to the diagonal. This
// exact sum is the default. The published code never forms it (hidden-attention.md §2.2, §3.2); two compat modes
// reproduce its class-token rows:
//   - Stitched ("unified" repository, generate_ours): the forward row for j ≤ i and the flipped backward row for
//     j > i, no factor s — the backward diagonal is left out.
//   - HiddenAttnStitched (Ali et al., xai_b): both rows with the HiddenAttnRow quirk (the query's own decay missing,
//     the diagonal zero), forward for j < i, flipped backward for j > i, no factor s.
#pragma once

#include <cstdint>
#include <string>

#include "attribution/hidden_attention.h"
#include "core/tensor.h"

namespace ssmx {

struct BidirTrace {
  MixerTrace fwd;     // the forward scan, original token order
  MixerTrace bwd;     // the backward scan, in its own (reversed) token order
  float scale = 1.0f; // s: 0.5 when the model halves the sum of the directions
};

enum class BidirCompat { None, Stitched, HiddenAttnStitched };
const char* bidir_compat_name(BidirCompat c);
BidirCompat parse_bidir_compat(const std::string& s);  // "none", "stitched", "hiddenattn-stitched"

// Full matrices of channels [c0, c1) in the original token order: (c1 - c0, T, T). Exact sum only.
Tensor bidir_attention_full(const BidirTrace& tr, AttnKind kind, int64_t c0, int64_t c1);

// Row i (for example the class token) of channels [c0, c1): (c1 - c0, T).
Tensor bidir_attention_row(const BidirTrace& tr, AttnKind kind, int64_t i, int64_t c0, int64_t c1,
                           BidirCompat compat = BidirCompat::None);

// Reductions over channels [c0, c1) of the exact matrices: (T, T), computed 64 channels at a time.
Tensor bidir_attention_reduce(const BidirTrace& tr, AttnKind kind, AttnReduce red, int64_t c0, int64_t c1);

// Reduction over channels of row i: (T).
Tensor bidir_attention_row_reduce(const BidirTrace& tr, AttnKind kind, AttnReduce red, int64_t i, int64_t c0,
                                  int64_t c1, BidirCompat compat = BidirCompat::None);

}  // namespace ssmx
