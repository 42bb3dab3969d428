#include "ops/selective_scan.h"

#include <vector>

#include "core/parallel.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {
constexpr int64_t kLanes = 16;
}

void selective_scan_forward(float* ssm, float* y, float* h_last, const ScanArgs& a) {
  const int64_t T = a.T, E = a.E, N = a.N;
  const int64_t n_blocks = (E + kLanes - 1) / kLanes;
  parallel_for(n_blocks, [&](int64_t blk0, int64_t blk1) {
    std::vector<float> At(size_t(N * kLanes)), h(size_t(N * kLanes));
    alignas(64) float d[kLanes], uu[kLanes], du[kLanes], acc[kLanes];
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t c0 = blk * kLanes;
      const int64_t w = E - c0 < kLanes ? E - c0 : kLanes;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t l = 0; l < kLanes; ++l) At[n * kLanes + l] = l < w ? a.A[(c0 + l) * N + n] : 0.0f;
      std::fill(h.begin(), h.end(), 0.0f);
      for (int64_t t = 0; t < T; ++t) {
        const float* dr = a.delta + t * E + c0;
        const float* ur = a.u + t * E + c0;
        for (int64_t l = 0; l < kLanes; ++l) {
          d[l] = l < w ? dr[l] : 0.0f;
          uu[l] = l < w ? ur[l] : 0.0f;
          du[l] = d[l] * uu[l];
          acc[l] = 0.0f;
        }
        const float* Bt = a.B + t * a.ld_bc;
        const float* Ct = a.C + t * a.ld_bc;
        for (int64_t n = 0; n < N; ++n) {
          const float bn = Bt[n], cn = Ct[n];
          float* hn = h.data() + n * kLanes;
          const float* An = At.data() + n * kLanes;
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) {
            const float dA = exp_clamped(d[l] * An[l]);
            hn[l] = dA * hn[l] + du[l] * bn;
            acc[l] += hn[l] * cn;
          }
        }
        for (int64_t l = 0; l < w; ++l) {
          const int64_t e = c0 + l;
          if (ssm) ssm[t * E + e] = acc[l];
          if (y) {
            float v = acc[l];
            if (a.D) v += a.D[e] * uu[l];
            if (a.z) v *= silu_f(a.z[t * a.ld_z + e]);
            y[t * E + e] = v;
          }
        }
      }
      if (h_last)
        for (int64_t l = 0; l < w; ++l)
          for (int64_t n = 0; n < N; ++n) h_last[(c0 + l) * N + n] = h[n * kLanes + l];
    }
  });
}

}  // namespace ssmx
