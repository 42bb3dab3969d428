// ssmx/attribution/mamba2_attention.h — the implicit (hidden) attention of a Mamba-2 layer
// (shared/specs/hidden-attention.md §3).
//
// Per head h (group g = h / (H/G)), with S_t = Σ_{τ≤t} δ_τ of that head (prefix sums in double):
//   alpha_h[i, j] = exp(A_h · (S_i − S_j)) · δ_j · (C_i · B_j)_g      for j ≤ i, 0 above the diagonal,
// so that the layer's SSM output is ssm[i, h·P + p] = Σ_j alpha_h[i, j] · x[j, h·P + p]; the D skip D_h·x_i is the
// separate diagonal term (y = ssm + D·x), not included in alpha.
// Every result is bitwise the same for any thread count (rows are split across threads; each row's arithmetic is
// fixed).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ssmx {

class Mamba2Model;

struct Mamba2AttnInputs {
  int64_t T = 0, H = 0, P = 0, G = 1, N = 0;
  const float* delta = nullptr;  // (T, H)
  const float* A = nullptr;      // (H), negative
  const float* B = nullptr;      // (T, G·N), row stride ld_bc
  const float* C = nullptr;      // (T, G·N), row stride ld_bc
  int64_t ld_bc = 0;
};

// Inputs of layer `layer` from its named activations (layers.{i}.delta, .B, .C, as the forward exposes them).
// The tensors are referenced, not copied: `acts` must outlive the result.
Mamba2AttnInputs mamba2_attention_inputs(const Mamba2Model& model, int64_t layer, const std::map<std::string, Tensor>& acts);

// Full matrices of the selected heads: out (heads.size(), T, T).
void mamba2_attention_full(float* out, const Mamba2AttnInputs& in, const std::vector<int64_t>& heads);
// One query row i of every head: out (H, T), entries j > i are zero.
void mamba2_attention_row(float* out, const Mamba2AttnInputs& in, int64_t i);

enum class HeadReduce { Mean, AbsMean, Max };
// A reduction over all heads without materialising H×T×T: out (T, T).
void mamba2_attention_reduce(float* out, const Mamba2AttnInputs& in, HeadReduce how);
// The same reduction for one query row: out (T).
void mamba2_attention_reduce_row(float* out, const Mamba2AttnInputs& in, int64_t i, HeadReduce how);

}  // namespace ssmx
