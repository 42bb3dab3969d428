// ssmx/ops/norm.h — RMSNorm as Hugging Face Mamba computes it (f32): y = x / sqrt(mean(x²) + eps) · w.
#pragma once

#include <cstdint>

namespace ssmx {

// out: (T, C) stride ld_out; inp: (T, C) stride ld_in; w: (C) or nullptr (weightless, Falcon-Mamba's mixer norms).
// rstd: (T) or nullptr — the 1/sqrt(mean+eps) per row, cached for backward passes. The mean of squares is summed in
// double so that the result does not depend on the summation order.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t T, int64_t C, float eps,
                     int64_t ld_in, int64_t ld_out);
inline void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t T, int64_t C, float eps) {
  rmsnorm_forward(out, rstd, inp, w, T, C, eps, C, C);
}

}  // namespace ssmx
