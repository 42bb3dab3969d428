#include "ops/vmath.h"

namespace ssmx {

void silu_array(float* out, const float* in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = silu_f(in[i]);
}

void softplus_array(float* out, const float* in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = softplus_f(in[i]);
}

void exp_array(float* out, const float* in, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = exp_clamped(in[i]);
}

}  // namespace ssmx
