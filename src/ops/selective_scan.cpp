#include "ops/selective_scan.h"

#include <algorithm>
#include <cstring>
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

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// exp_clamped on 8 lanes (same scheme and constants as ops/vmath.h, so the results are identical).
inline v8f exp8(v8f x) {
  x = x < kExpLo ? v8f{} + kExpLo : x;
  x = x > kExpHi ? v8f{} + kExpHi : x;
  const v8f shifted = x * 1.44269504088896341f + 12582912.0f;
  const v8f fx = shifted - 12582912.0f;
  const v8i n = (v8i)shifted - 0x4B400000;
  v8f r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const v8f r2 = r * r;
  v8f p = v8f{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  return p * (v8f)((n + 127) << 23);
}

// 8 channels [c0, c0 + 8) with all N = Q states held in registers across the token loop (N = 8 or 16): 1.5x the
// memory-tile version above.
template <int Q>
void scan_group8(float* ssm, float* y, float* h_last, const ScanArgs& a, int64_t c0) {
  const int64_t T = a.T, E = a.E, N = a.N;
  v8f h[Q], At[Q];
  for (int q = 0; q < Q; ++q) {
    h[q] = v8f{};
    for (int l = 0; l < 8; ++l) At[q][l] = a.A[(c0 + l) * N + q];
  }
  for (int64_t t = 0; t < T; ++t) {
    v8f d, uu;
    std::memcpy(&d, a.delta + t * E + c0, sizeof d);
    std::memcpy(&uu, a.u + t * E + c0, sizeof uu);
    const v8f du = d * uu;
    const float* Bt = a.B + t * a.ld_bc;
    const float* Ct = a.C + t * a.ld_bc;
    v8f acc = v8f{};
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) {
      const v8f dA = exp8(d * At[q]);
      h[q] = dA * h[q] + du * Bt[q];
      acc += h[q] * Ct[q];
    }
    for (int l = 0; l < 8; ++l) {
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
    for (int l = 0; l < 8; ++l)
      for (int q = 0; q < Q; ++q) h_last[(c0 + l) * N + q] = h[q][l];
}

}  // namespace

void selective_scan_forward(float* ssm, float* y, float* h_last, const ScanArgs& a) {
  const int64_t E = a.E, N = a.N;
  if (N == 16 || N == 8) {  // register kernel for whole groups of 8 channels, the generic one for the rest
    const int64_t g8 = E / 8;
    parallel_for(g8, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        if (N == 16) scan_group8<16>(ssm, y, h_last, a, g * 8);
        else scan_group8<8>(ssm, y, h_last, a, g * 8);
      }
    });
    if (g8 * 8 < E) {
      alignas(64) float At[kMaxStackN * kLanes], h[kMaxStackN * kLanes];
      scan_group(ssm, y, h_last, a, g8 * 8, E - g8 * 8, At, h);
    }
    return;
  }
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
