#include "ops/selective_scan.h"

#include <algorithm>
#include <vector>

#include "core/parallel.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

constexpr int64_t kLanes = 32;  // channels per group (measured: 32 > 8 > 16 with AVX2; stack tiles, fixed trip counts)
constexpr int64_t kMaxStackN = 64;

// One group of up to kLanes channels [c0, c0 + w) over all tokens. At and h are (N, kLanes) tiles.
void scan_group(float* ssm, float* y, float* h_last, const ScanArgs& a, int64_t c0, int64_t w, float* __restrict At,
                float* __restrict h) {
  const int64_t T = a.T, E = a.E, N = a.N;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < kLanes; ++l) {
      At[n * kLanes + l] = l < w ? a.A[(c0 + l) * N + n] : 0.0f;
      h[n * kLanes + l] = 0.0f;
    }
  alignas(64) float d[kLanes], uu[kLanes], du[kLanes], acc[kLanes];
  for (int64_t t = 0; t < T; ++t) {
    const float* dr = a.delta + t * E + c0;
    const float* ur = a.u + t * E + c0;
    for (int64_t l = 0; l < kLanes; ++l) {
      d[l] = l < w ? dr[l] : 0.0f;  // padded lanes: Δ = 0, so dA = 1 and nothing is added
      uu[l] = l < w ? ur[l] : 0.0f;
      du[l] = d[l] * uu[l];
      acc[l] = 0.0f;
    }
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    for (int64_t n = 0; n < N; ++n) {
      const float bn = Bt[n], cn = Ct[n];
      float* __restrict hn = h + n * kLanes;
      const float* __restrict An = At + n * kLanes;
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

}  // namespace

void selective_scan_forward(float* ssm, float* y, float* h_last, const ScanArgs& a) {
  const int64_t E = a.E, N = a.N;
  const int64_t n_groups = (E + kLanes - 1) / kLanes;
  parallel_for(n_groups, [&](int64_t g0, int64_t g1) {
    alignas(64) float At_stack[kMaxStackN * kLanes], h_stack[kMaxStackN * kLanes];
    std::vector<float> At_heap, h_heap;
    float* At = At_stack;
    float* h = h_stack;
    if (N > kMaxStackN) {
      At_heap.resize(size_t(N * kLanes));
      h_heap.resize(size_t(N * kLanes));
      At = At_heap.data(), h = h_heap.data();
    }
    for (int64_t g = g0; g < g1; ++g) scan_group(ssm, y, h_last, a, g * kLanes, std::min(kLanes, E - g * kLanes), At, h);
  });
}

}  // namespace ssmx
