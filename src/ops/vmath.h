// ssmx/ops/vmath.h — elementwise math that vectorises: clamped exp, sigmoid, SiLU, softplus.
//
// These are plain loops over arrays written so that GCC turns them into SIMD code at -O2/-O3 with -march=native
// (no -ffast-math anywhere: libmvec's vector expf falls back to scalar calls outside its fast range, see
// docs/architecture.md). exp_clamped follows the classic Cephes single-precision scheme (range reduction by
// ln 2 split in two constants, degree-6 polynomial, scale by 2^n built from the exponent bits); arguments are clamped
// to [-87.3, 88.3] so that 2^n stays a normal float and no lane ever overflows or goes subnormal. Maximum error
// against double-precision exp is about 2 ulp inside the range (tested in tests/ops/test_vmath.cpp).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace ssmx {

constexpr float kExpLo = -87.3f;
constexpr float kExpHi = 88.3f;

inline float exp_clamped(float x) {
  x = x < kExpLo ? kExpLo : x;
  x = x > kExpHi ? kExpHi : x;
  // n = round(x / ln 2) by the 1.5·2^23 trick: adding it leaves n in the low mantissa bits (no branches, no
  // float→int conversion, so the loop vectorises).
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float fx = shifted - 12582912.0f;
  const int32_t n = std::bit_cast<int32_t>(shifted) - 0x4B400000;
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(n + 127) << 23);
  return p * scale;
}

// Natural log for x > 0 normal (Cephes logf scheme, about 1 ulp).
inline float log_pos(float x) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  int32_t e = static_cast<int32_t>(bits >> 23) - 126;
  float m = std::bit_cast<float>((bits & 0x007fffffu) | 0x3f000000u);  // m in [0.5, 1)
  // Bring m into [sqrt(0.5), sqrt(2)).
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_clamped(-x)); }
inline float silu_f(float x) { return x / (1.0f + exp_clamped(-x)); }

// PyTorch softplus (beta 1, threshold 20): x > 20 ? x : log1p(exp(x)), computed as max(x,0) + log1p(exp(-|x|)).
// log1p(v) for v in (0, 1] uses log(1+v) corrected by v/((1+v)-1) so tiny v keep full precision.
inline float softplus_f(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float v = exp_clamped(-ax);  // (0, 1]
  const float w = 1.0f + v;
  const float d = w - 1.0f;
  const float l1p = d == 0.0f ? v : log_pos(w) * (v / d);
  const float r = (x > 0.0f ? x : 0.0f) + l1p;
  return x > 20.0f ? x : r;
}

// Array forms (out may alias in).
void silu_array(float* out, const float* in, int64_t n);
void softplus_array(float* out, const float* in, int64_t n);
void exp_array(float* out, const float* in, int64_t n);

}  // namespace ssmx
