// ssmx/models/rwkv_grad.h — gradients of an RWKV-4 target with respect to the input embeddings (the embedding rows
// before LN_pre), plain or with LRP rules.
//
// f = seed · LN_out(h)[position] (the caller adds a head bias if there is one). One forward pass caches each block's
// values, one backward pass walks the blocks in reverse. The WKV recurrence is differentiated through its normalised
// weights: wkv_i = Σ_j α_ij v_j with α_ij = exp(e_ij − log Z_i), so ∂wkv_i/∂v_j = α_ij and ∂wkv_i/∂k_j =
// α_ij (v_j − wkv_i), evaluated by a linear-time reverse recurrence with max tracking (no overflow for any keys).
//
// Rules (GradRequest::rules; all off = the exact gradient):
//   norm: every LayerNorm's 1/σ held constant (LN_pre, ln1, ln2, LN_out)
//   gate: half rule on the two gated products r⊙wkv and fr⊙(fk·W_v'ᵀ); each sigmoid gate σ(x) = x·[σ(x)/x]
//   silu: relu(x)² = x·[relu(x)²/x]
//   ssm:  the WKV weights α held constant, so wkv is a linear map of v (no gradient into k)
//   linear rules other than LRP-0 are not defined for RWKV (rwkv_gradient throws).
// With zero_biases the LayerNorm biases count as zero (RWKV-4 has no other biases).
//
// GradResult: grad, embeds, f, norm_f_at_pos; resid_relevance (L + 1, T): row 0 = Σ_d e·g of the embeddings, row ℓ
// (1 ≤ ℓ < L) = the residual stream entering block ℓ, row L = after the last block (the residual entering block 0 is
// LN_pre's output and is not a row); bias_absorbed = Σ b·∂̃f/∂b over the LayerNorm biases; with keep_layer_grads
// grad_resid[ℓ] = ∂̃f/∂(residual entering block ℓ) (T, H) and grad_y[ℓ] = ∂̃f/∂(r⊙wkv) (T, A), the tensor the gated
// implicit attention reconstructs. Tokens after `position` do not influence f (causal): their rows are zero.
#pragma once

#include "models/mamba_grad.h"
#include "models/rwkv.h"

namespace ssmx {

GradResult rwkv_gradient(const RwkvModel& m, const GradRequest& req);
// The same computation in double precision (slow): the reference for finite differences and conservation tests.
GradResultT<double> rwkv_gradient_f64(const RwkvModel& m, const GradRequest& req);

}  // namespace ssmx
