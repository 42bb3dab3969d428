#include "ops/conv1d.h"

#include <cstddef>
#include <vector>

#include "core/parallel.h"

namespace ssmx {

void conv1d_causal_forward(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t C, int64_t K,
                           int64_t ld_x) {
  // Taps transposed to (K, C) so the inner loop runs over contiguous channels.
  std::vector<float> wt(std::size_t(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[k * C + c] = w[c * K + k];
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * C;
      if (b) {
        for (int64_t c = 0; c < C; ++c) o[c] = b[c];
      } else {
        for (int64_t c = 0; c < C; ++c) o[c] = 0.0f;
      }
      for (int64_t k = 0; k < K; ++k) {
        const int64_t tau = t - (K - 1) + k;
        if (tau < 0) continue;
        const float* xr = x + tau * ld_x;
        const float* wk = wt.data() + k * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += wk[c] * xr[c];
      }
    }
  }, 8);
}

}  // namespace ssmx
