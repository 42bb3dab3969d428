// ssmx/attribution/rwkv_attention.h — the implicit attention of an RWKV-4 time-mix block
// (shared/specs/hidden-attention.md §3.4).
//
// Per channel c and query token i, with w = exp(time_decay) (wneg = −w), u = time_first:
//   alpha[c][i][j] = exp(k_j + (i−1−j)·wneg − log Z_i)   j < i
//                  = exp(u + k_i − log Z_i)              j = i          0 for j > i
// where Z_i is the WKV denominator, so every row of alpha sums to 1 and wkv_i = Σ_j alpha[i][j] v_j. The gated
// matrix is diag(r)·alpha with r = σ(receptance) (layers.{l}.r): Σ_j gated[i][j]·v_j = r_i·wkv_i = layers.{l}.rwkv,
// the input of the output projection. Everything is evaluated from exponents relative to log Z_i (log space), so
// nothing overflows however large the keys are. Results do not depend on the thread count (bitwise).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "models/rwkv.h"

namespace ssmx {

struct RwkvAttnInput {
  const float* k = nullptr;     // (T, A) layers.{l}.k
  const float* r = nullptr;     // (T, A) layers.{l}.r = σ(receptance); nullptr: no gate (plain alpha)
  const float* wneg = nullptr;  // (A) −exp(time_decay)
  const float* u = nullptr;     // (A) time_first
  int64_t T = 0, A = 0;
};

// Builds the input from a model layer and that layer's activations (k and r must be present; gate=false drops r).
RwkvAttnInput rwkv_attn_input(const RwkvModel& m, int64_t layer, const std::map<std::string, Tensor>& acts, bool gate);

// log Z (T, A): the log of the WKV denominator of every (token, channel).
std::vector<float> rwkv_log_normaliser(const RwkvAttnInput& in);

// Full matrices for the given channels: (channels.size(), T, T).
Tensor rwkv_attention_channels(const RwkvAttnInput& in, const std::vector<int64_t>& channels);

// One query row i for every channel: (A, T), entry [c][j].
Tensor rwkv_attention_row(const RwkvAttnInput& in, int64_t row);

enum class RwkvReduce { Mean, AbsMean, Max };
// Reduction over channels of the (gated) matrices, (T, T), without materialising A×T×T.
Tensor rwkv_attention_reduced(const RwkvAttnInput& in, RwkvReduce how);

}  // namespace ssmx
