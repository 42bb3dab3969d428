#include "ops/norm.h"

#include <cmath>

#include "core/parallel.h"

namespace ssmx {

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t T, int64_t C, float eps,
                     int64_t ld_in, int64_t ld_out) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = inp + t * ld_in;
      float* y = out + t * ld_out;
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += double(x[c]) * double(x[c]);
      const float r = static_cast<float>(1.0 / std::sqrt(ss / double(C) + double(eps)));
      if (rstd) rstd[t] = r;
      if (w) {
        for (int64_t c = 0; c < C; ++c) y[c] = (x[c] * r) * w[c];
      } else {
        for (int64_t c = 0; c < C; ++c) y[c] = x[c] * r;
      }
    }
  }, 16);
}

}  // namespace ssmx
