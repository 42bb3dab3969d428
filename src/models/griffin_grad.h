// ssmx/models/griffin_grad.h — gradients of a RecurrentGemma target with respect to the (scaled) input embeddings,
// plain or with LRP rules, for explain() (attribution/backend.h).
//
// f = seed · GemmaRMSNorm_f(h_L)[position], before the LM head and its soft cap. One forward pass over tokens
// 0..position caches every layer's values; one backward pass walks the layers in reverse. Templated on the real type
// so that the double version (plain loops) is the reference of the tests; the f32 version's dense projections go
// through OpenBLAS sgemm over fixed tiles (ops/linear.h, ops/backward.h), independent of the thread count.
//
// Rules (GradRequest::rules; all off = the exact gradient):
//   norm: every Gemma RMSNorm's 1/rms held constant
//   silu: gelu_tanh(x) = x·[gelu(x)/x]                      (identity rule; gelu branch y and the MLP gate)
//   gate: rg_lru⊙y and gelu(gate)⊙up split half / half      (half rule)
//   ssm:  RG-LRU a_t and the input normaliser m_t·gx_t held constant (no gradient into the gates), and the local
//         attention's softmax weights held constant (AttnLRP-style: no gradient into q, k)
// The linear rules (epsilon, gamma) are not implemented: a request with them throws.
// keep_layer_grads: grad_resid[l] = ∂̃f/∂(residual entering layer l) (T, Dm); grad_y[l] = ∂̃f/∂(rg_lru ⊙ y) (T, W)
// for a recurrent layer and ∂̃f/∂(the concatenated head outputs before o_proj) (T, Hh·hd) for a local attention one.
// zero_biases: every bias (linear_y/x/out, conv, both RG-LRU gates, o_proj, the MLP's three) is taken as zero.
#pragma once

#include "models/griffin.h"
#include "models/mamba_grad.h"

namespace ssmx {

GradResult griffin_gradient(const GriffinModel& m, const GradRequest& req);
GradResultT<double> griffin_gradient_f64(const GriffinModel& m, const GradRequest& req);

}  // namespace ssmx
