// ssmx/ops/linear.h — y = x·Wᵀ + b through OpenBLAS (PyTorch Linear: W stored [out, in]).
#pragma once

#include <cstdint>

namespace ssmx {

// out: (T, O) with row stride ld_out; inp: (T, I) with row stride ld_in; w: (O, I) row-major; b: (O) or nullptr.
// Overwrites out.
void linear_forward(float* out, const float* inp, const float* w, const float* b, int64_t T, int64_t I, int64_t O,
                    int64_t ld_in, int64_t ld_out);
inline void linear_forward(float* out, const float* inp, const float* w, const float* b, int64_t T, int64_t I,
                           int64_t O) {
  linear_forward(out, inp, w, b, T, I, O, I, O);
}

}  // namespace ssmx
