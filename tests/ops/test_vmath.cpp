#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/vmath.h"

using namespace ssmx;

// exp_clamped against double-precision exp over the whole clamp range: at most 3 ulp-ish relative error.
TEST(VMath, ExpMatchesDouble) {
  double worst = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.00731) {
    const float xf = float(x);
    const double ref = std::exp(double(xf));
    const double got = exp_clamped(xf);
    worst = std::max(worst, std::fabs(got - ref) / ref);
  }
  EXPECT_LT(worst, 3.6e-7) << "worst relative error " << worst;
  EXPECT_EQ(exp_clamped(0.0f), 1.0f);
  // Clamped, finite, no overflow, no subnormal.
  EXPECT_GE(exp_clamped(-1000.0f), std::numeric_limits<float>::min());  // a normal float, never subnormal
  EXPECT_LT(exp_clamped(-1000.0f), 1.3e-38f);
  EXPECT_TRUE(std::isfinite(exp_clamped(1000.0f)));
}

TEST(VMath, SoftplusMatchesPyTorchDefinition) {
  double worst = 0.0;
  for (double x = -60.0; x <= 40.0; x += 0.0137) {
    const float xf = float(x);
    const double ref = xf > 20.0f ? double(xf) : std::log1p(std::exp(double(xf)));
    const double got = softplus_f(xf);
    worst = std::max(worst, std::fabs(got - ref) / std::max(ref, 1e-30));
  }
  EXPECT_LT(worst, 5e-7) << "worst relative error " << worst;
  EXPECT_EQ(softplus_f(25.0f), 25.0f);  // threshold 20: identity above
}

TEST(VMath, SiluAndArrays) {
  double worst = 0.0;
  std::vector<float> in, out(4001);
  for (int i = 0; i <= 4000; ++i) in.push_back(-100.0f + 0.05f * float(i));
  silu_array(out.data(), in.data(), int64_t(in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    const double x = in[i];
    const double ref = x / (1.0 + std::exp(-x));
    worst = std::max(worst, std::fabs(out[i] - ref) / std::max(1.0, std::fabs(ref)));
    EXPECT_EQ(out[i], silu_f(in[i]));  // array form = scalar form, bit for bit
  }
  EXPECT_LT(worst, 1e-6);
}
