// ssmx/models/mamba2_grad.h — gradients of a Mamba-2 target with respect to the input embeddings, plain or with
// LRP rules (docs/methods.md, "Mamba-2"). Same request/result types as Mamba (models/mamba_grad.h).
//
// f = seed · norm_f[position]. The backward pass is written plainly (loops over the cached forward values; the f32 engine's projections go
// through OpenBLAS, the double engine's are loops); the
// engine recomputes its own forward pass in the precision of Real, so the double version is an independent reference
// for finite differences and conservation.
//
// GradResult fields for Mamba-2: grad_resid[l] (T, Dm) = ∂̃f/∂(residual entering layer l); grad_y[l] (T, Di) =
// ∂̃f/∂(y ⊙ silu(z)), the gated tensor before the gated RMSNorm, which the unified implicit attention reconstructs.
// Rules (LrpRules): norm = 1/rms held constant in the block norms, the gated RMSNorm and norm_f; gate = half rule on
// y ⊙ silu(z); silu = identity rule x·[silu(x)/x] on the SiLU after conv1d; ssm = exp(δA), δ and C·B held constant
// (no gradient into dt, B, C). The linear rules (epsilon / gamma) are not implemented and throw.
#pragma once

#include "models/mamba2.h"
#include "models/mamba_grad.h"

namespace ssmx {

GradResult mamba2_gradient(const Mamba2Model& m, const GradRequest& req);
GradResultT<double> mamba2_gradient_f64(const Mamba2Model& m, const GradRequest& req);

}  // namespace ssmx
