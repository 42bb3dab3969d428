// linear, RMSNorm and the causal conv against double-precision twins, on odd sizes and strided views.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "ops/conv1d.h"
#include "ops/linear.h"
#include "ops/norm.h"

using namespace ssmx;

TEST(Linear, MatchesDoubleWithBiasAndStrides) {
  for (auto [T, I, O] : {std::tuple<int64_t, int64_t, int64_t>{1, 3, 5}, {17, 33, 100}, {100, 64, 7}}) {
    const int64_t ld_in = I + 3, ld_out = O + 2;
    auto x = test::random_normal(T * ld_in, 1), w = test::random_normal(O * I, 2), b = test::random_normal(O, 3);
    std::vector<float> out(size_t(T * ld_out), 42.0f);
    linear_forward(out.data(), x.data(), w.data(), b.data(), T, I, O, ld_in, ld_out);
    double worst = 0.0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < O; ++o) {
        double s = b[o];
        for (int64_t i = 0; i < I; ++i) s += double(x[t * ld_in + i]) * double(w[o * I + i]);
        worst = std::max(worst, std::fabs(s - out[t * ld_out + o]) / std::max(1.0, std::fabs(s)));
      }
    EXPECT_LT(worst, 1e-5);
    // Padding columns of out are untouched.
    for (int64_t t = 0; t < T; ++t) EXPECT_EQ(out[t * ld_out + O], 42.0f);
  }
}

TEST(RMSNorm, MatchesDoubleWithAndWithoutWeight) {
  const int64_t T = 9, C = 37;
  auto x = test::random_normal(T * C, 4, 3.0f), w = test::random_normal(C, 5);
  for (bool weighted : {true, false}) {
    std::vector<float> y(size_t(T * C)), rstd(static_cast<size_t>(T));
    rmsnorm_forward(y.data(), rstd.data(), x.data(), weighted ? w.data() : nullptr, T, C, 1e-5f);
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += double(x[t * C + c]) * x[t * C + c];
      const double r = 1.0 / std::sqrt(ss / C + 1e-5);
      EXPECT_NEAR(rstd[t], r, 1e-6 * r);
      for (int64_t c = 0; c < C; ++c) {
        const double ref = double(x[t * C + c]) * r * (weighted ? double(w[c]) : 1.0);
        EXPECT_NEAR(y[t * C + c], ref, 2e-6 * std::max(1.0, std::fabs(ref)));
      }
    }
  }
}

TEST(Conv1dCausal, MatchesDefinitionIncludingLeftPadding) {
  const int64_t T = 13, C = 21, K = 4, ld = 2 * C;
  auto x = test::random_normal(T * ld, 6), w = test::random_normal(C * K, 7), b = test::random_normal(C, 8);
  std::vector<float> out(size_t(T * C));
  conv1d_causal_forward(out.data(), x.data(), w.data(), b.data(), T, C, K, ld);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double s = b[c];
      for (int64_t k = 0; k < K; ++k) {
        const int64_t tau = t - (K - 1) + k;
        if (tau >= 0) s += double(w[c * K + k]) * x[tau * ld + c];
      }
      EXPECT_NEAR(out[t * C + c], s, 1e-5 * std::max(1.0, std::fabs(s)));
    }
  // First token sees only the last tap: out[0, c] = b[c] + w[c, K-1] · x[0, c].
  EXPECT_NEAR(out[0], b[0] + w[K - 1] * x[0], 1e-6);
}
