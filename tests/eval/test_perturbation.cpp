// The perturbation test on a fake classifier whose answer depends on which pixels remain.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "eval/perturbation.h"
#include "../test_util.h"

namespace ssmx {
namespace {

constexpr int64_t H = 224, W = 224, N = H * W;

// Relevance = the row-major index (a strict order: pixel N−1 is the most relevant).
std::vector<float> index_map() {
  std::vector<float> m(N);
  for (int64_t i = 0; i < N; ++i) m[size_t(i)] = float(i);
  return m;
}

// The image is 1 everywhere; the fake classifier denormalises channel c and counts the surviving pixels (value 1),
// answering label 7 while more than `keep` survive in all three channels, else 3.
PixelClassifier survivors_classifier(int64_t keep, const PerturbationOptions& o, std::vector<int64_t>* seen) {
  return [keep, o, seen](const float* px) {
    int64_t alive[3] = {0, 0, 0};
    for (int c = 0; c < 3; ++c)
      for (int64_t i = 0; i < N; ++i) {
        const float v = px[c * N + i] * o.std[size_t(c)] + o.mean[size_t(c)];
        EXPECT_TRUE(std::fabs(v - 1.0f) < 1e-5f || std::fabs(v) < 1e-5f);
        alive[c] += v > 0.5f;
      }
    EXPECT_EQ(alive[0], alive[1]);
    EXPECT_EQ(alive[1], alive[2]);
    if (seen) seen->push_back(alive[0]);
    return alive[0] > keep ? 7 : 3;
  };
}

TEST(Perturbation, CountsAndOrder) {
  EXPECT_EQ(perturbation_count(0.1, N), 5017);
  EXPECT_EQ(perturbation_count(0.5, N), 25088);
  EXPECT_EQ(perturbation_count(0.9, N), 45158);
  EXPECT_THROW(perturbation_count(1.5, N), Error);
  // Ties: smaller index first, in both modes.
  const std::vector<float> m = {0.5f, 1.0f, 0.5f, 0.0f, 1.0f};
  EXPECT_EQ(perturbation_order(m, PerturbationMode::Positive), (std::vector<int64_t>{1, 4, 0, 2, 3}));
  EXPECT_EQ(perturbation_order(m, PerturbationMode::Negative), (std::vector<int64_t>{3, 0, 2, 1, 4}));
}

TEST(Perturbation, PositiveRemovesTheMostRelevantPixels) {
  PerturbationOptions o;
  PerturbationAccumulator acc(o);
  const std::vector<float> img(3 * N, 1.0f);
  std::vector<int64_t> seen;
  // The classifier keeps the label while at least 60 % of the pixels survive: correct at 10 … 40 %.
  const auto preds = acc.add(img, index_map(), 7, survivors_classifier(N - perturbation_count(0.45, N), o, &seen));
  ASSERT_EQ(seen.size(), 9u);
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(seen[i], N - perturbation_count(0.1 * double(i + 1), N)) << i;
  EXPECT_EQ(preds, (std::vector<int>{7, 7, 7, 7, 3, 3, 3, 3, 3}));
  const auto acc_pct = acc.accuracy_percent();
  EXPECT_EQ(acc_pct, (std::vector<double>{100, 100, 100, 100, 0, 0, 0, 0, 0}));
  // Trapezoid over 0.1 … 0.9: 3 full intervals of 0.1·100 + one half interval = 30 + 5.
  EXPECT_NEAR(acc.auc(), 35.0, 1e-9);
}

TEST(Perturbation, WhichPixelsGoDependsOnTheMode) {
  // The classifier answers 7 only while pixel 0 (the least relevant under index_map) survives.
  auto pixel0 = [](const float* px) { return px[0] > 0.0f ? 7 : 3; };  // (1 − 0.485)/0.229 > 0; removed → negative
  const std::vector<float> img(3 * N, 1.0f);
  PerturbationOptions pos;
  pos.include_zero = true;
  PerturbationAccumulator a(pos);
  a.add(img, index_map(), 7, pixel0);
  EXPECT_EQ(a.accuracy_percent(), std::vector<double>(10, 100.0));
  EXPECT_NEAR(a.auc(), 90.0, 1e-9);
  PerturbationOptions neg = pos;
  neg.mode = PerturbationMode::Negative;
  PerturbationAccumulator b(neg);
  b.add(img, index_map(), 7, pixel0);
  EXPECT_EQ(b.accuracy_percent(), (std::vector<double>{100, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_NEAR(b.auc(), 5.0, 1e-9);  // only the 0 → 0.1 interval: 0.1 · (100 + 0) / 2
  EXPECT_EQ(b.fractions().front(), 0.0);
}

TEST(Perturbation, AccumulatesOverImagesAndPatchMaps) {
  PerturbationOptions o;
  PerturbationAccumulator acc(o);
  const std::vector<float> img(3 * N, 1.0f);
  // Image 1: label 7, correct while ≥ 75 % survive (10, 20 %). Image 2: wrong label throughout.
  acc.add(img, index_map(), 7, survivors_classifier(N - perturbation_count(0.25, N), o, nullptr));
  // A 2×2 patch map upsampled by nearest blocks: the top-left block (value 9) is removed first.
  auto up = [](const std::vector<float>& p, int64_t ph, int64_t pw) {
    std::vector<float> m(N);
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) m[size_t(y * W + x)] = p[size_t((y * ph / H) * pw + x * pw / W)];
    return m;
  };
  std::vector<int64_t> seen;
  acc.add_patch_map(img, {9, 1, 2, 3}, 2, 2, up, 5, [&](const float* px) {
    seen.push_back(px[0] > 0 ? 1 : 0);  // pixel (0, 0) is in the top-left block: gone from the first step
    return 7;
  });
  EXPECT_EQ(seen, std::vector<int64_t>(9, 0));
  EXPECT_EQ(acc.images(), 2);
  EXPECT_EQ(acc.accuracy_percent(), (std::vector<double>{50, 50, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_NEAR(acc.auc(), 0.1 * 50 + 0.1 * 25, 1e-9);
  EXPECT_THROW(acc.add(std::vector<float>(10), index_map(), 0, [](const float*) { return 0; }), Error);
  EXPECT_THROW(acc.add_patch_map(img, {1, 2, 3}, 2, 2, up, 0, [](const float*) { return 0; }), Error);
  PerturbationOptions bad;
  bad.steps = {0.5, 0.2};
  EXPECT_THROW(PerturbationAccumulator{bad}, Error);
}

}  // namespace
}  // namespace ssmx
