// Placeholder until the gradient engine lands (replaced by src/models/mamba_grad.cpp).
#include "models/mamba_grad.h"
#include "core/error.h"
namespace ssmx {
GradResult mamba_gradient(const MambaModel&, const GradRequest&) { throw Error("stub", "not yet"); }
GradResultT<double> mamba_gradient_f64(const MambaModel&, const GradRequest&) { throw Error("stub", "not yet"); }
}
