// The ImageNet-Segmentation metrics against NumPy values (scripts/make_eval_data_fixtures.py) and hand-computed cases.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/segmentation.h"
#include "../test_util.h"

namespace ssmx {
namespace {

nlohmann::json load_json(const std::string& name) {
  std::ifstream f(test::data_dir() + "/eval/" + name);
  EXPECT_TRUE(f.good()) << name;
  return nlohmann::json::parse(f);
}

TEST(AveragePrecision, HandComputedStepwise) {
  // scores 0.9(+) 0.8(-) 0.7(+) 0.6(-): P at the positives 1 and 2/3 → AP = (1 + 2/3) / 2.
  EXPECT_NEAR(average_precision({1, 0, 1, 0}, {0.9f, 0.8f, 0.7f, 0.6f}), (1.0 + 2.0 / 3.0) / 2.0, 1e-15);
  // A tie between a positive and a negative is one threshold: precision 1/2 at recall 1/2.
  // y = [1, 0, 1], s = [0.5, 0.5, 0.2]: thresholds 0.5 → (tp 1, fp 1), 0.2 → (2, 1): AP = 0.5·0.5 + 0.5·2/3.
  EXPECT_NEAR(average_precision({1, 0, 1}, {0.5f, 0.5f, 0.2f}), 0.25 + 1.0 / 3.0, 1e-15);
  // All scores tied: AP = prevalence.
  EXPECT_NEAR(average_precision({1, 0, 0, 0}, {0.3f, 0.3f, 0.3f, 0.3f}), 0.25, 1e-15);
  // Perfect ranking and no positives (nan → 0).
  EXPECT_DOUBLE_EQ(average_precision({0, 1, 1}, {0.1f, 0.5f, 0.7f}), 1.0);
  EXPECT_DOUBLE_EQ(average_precision({0, 0}, {0.1f, 0.5f}), 0.0);
  EXPECT_THROW(average_precision({0, 1}, {0.1f}), Error);
}

TEST(F1Binary, HandComputed) {
  const uint8_t t[] = {1, 1, 0, 0}, p[] = {1, 0, 1, 0}, z[] = {0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(f1_binary(t, p, 4), 0.5);
  EXPECT_DOUBLE_EQ(f1_binary(z, z, 4), 0.0);  // undefined → 0
  EXPECT_DOUBLE_EQ(f1_binary(t, t, 4), 1.0);
}

TEST(Segmentation, HandComputedTwoByTwo) {
  // map [[4, 2], [1, 0]] → normalised [1, 1/2, 1/4, 0] (exact in float32), mean 7/16 → fg = top row.
  // Mask: fg = left column.
  const std::vector<float> map = {4, 2, 1, 0};
  const std::vector<uint8_t> mask = {1, 0, 1, 0};
  const auto s = segmentation_image_stats(map.data(), mask.data(), 2, 2);
  EXPECT_EQ(s.correct, 2);
  EXPECT_EQ(s.labelled, 4);
  EXPECT_EQ(s.inter[0], 1);
  EXPECT_EQ(s.inter[1], 1);
  EXPECT_EQ(s.uni[0], 3);
  EXPECT_EQ(s.uni[1], 3);
  // rows: [1,0] vs pred [1,1] → F1 2/3; [1,0] vs [0,0] → 0. Mean 1/3.
  EXPECT_NEAR(s.f1, 1.0 / 3.0, 1e-15);
  // Pooled scores: bg part 1 − r = [0, 1/2, 3/4, 1] with targets [0,1,0,1]; fg part r = [1, 1/2, 1/4, 0] with
  // targets [1,0,1,0]. Distinct scores 1: (tp 2, fp 0); 3/4: (2, 1); 1/2 (a tie of a positive and a negative):
  // (3, 2); 1/4: (4, 2); 0: (4, 4). AP = 2/4·1 + 1/4·3/5 + 1/4·4/6.
  const double want_ap = 0.5 + 0.15 + 1.0 / 6.0;
  EXPECT_NEAR(s.ap, want_ap, 1e-12);
  SegmentationAccumulator acc;
  acc.add(map, mask, 2, 2);
  const auto r = acc.result();
  EXPECT_NEAR(r.pixel_accuracy, 0.5, 1e-12);
  EXPECT_NEAR(r.miou, 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(r.map, want_ap, 1e-12);
}

TEST(Segmentation, AllForegroundAndEmptyMasks) {
  const std::vector<float> map = {0.9f, 0.1f, 0.1f, 0.1f};
  // All foreground: only the top pixel is predicted fg.
  auto s = segmentation_image_stats(map.data(), std::vector<uint8_t>{1, 1, 1, 1}.data(), 2, 2);
  EXPECT_EQ(s.correct, 1);
  EXPECT_EQ(s.inter[0], 0);
  EXPECT_EQ(s.uni[0], 3);  // predicted bg, no bg in the mask
  EXPECT_EQ(s.inter[1], 1);
  EXPECT_EQ(s.uni[1], 4);
  // Empty mask: nothing is fg; F1 is undefined in every row → 0.
  s = segmentation_image_stats(map.data(), std::vector<uint8_t>{0, 0, 0, 0}.data(), 2, 2);
  EXPECT_EQ(s.correct, 3);
  EXPECT_EQ(s.inter[1], 0);
  EXPECT_EQ(s.uni[1], 1);
  EXPECT_DOUBLE_EQ(s.f1, 0.0);
  // Constant map: everything background (the threshold uses >).
  const std::vector<float> flat = {0.5f, 0.5f, 0.5f, 0.5f};
  s = segmentation_image_stats(flat.data(), std::vector<uint8_t>{1, 0, 0, 0}.data(), 2, 2);
  EXPECT_EQ(s.correct, 3);
  // Normalised to zeros: pooled scores 1 for the bg half (3 positives, 1 negative), 0 for the fg half (1, 3):
  // AP = 3/4 · 3/4 + 1/4 · 4/8 = 11/16.
  EXPECT_NEAR(s.ap, 11.0 / 16.0, 1e-15);
}

TEST(Segmentation, RejectsBadInput) {
  const std::vector<float> map = {1, 2, 3, 4};
  EXPECT_THROW(segmentation_image_stats(map.data(), std::vector<uint8_t>{0, 2, 0, 0}.data(), 2, 2), Error);
  SegmentationAccumulator acc;
  EXPECT_THROW(acc.add(map, {0, 1, 0}, 2, 2), Error);
  const std::vector<float> bad = {1, NAN, 3, 4};
  EXPECT_THROW(segmentation_image_stats(bad.data(), std::vector<uint8_t>{0, 1, 0, 0}.data(), 2, 2), Error);
}

TEST(Segmentation, MatchesNumpyReference) {
  const auto j = load_json("seg_cases.json");
  for (const auto& res : j["results"]) {
    SegmentationOptions opt;
    opt.compat_unnormalised_ap = !res["normalise"].get<bool>();
    SegmentationAccumulator acc(opt);
    for (size_t i = 0; i < j["images"].size(); ++i) {
      const auto& im = j["images"][i];
      const int64_t h = im["h"], w = im["w"];
      const auto map = im["map"].get<std::vector<float>>();
      const auto mask = im["mask"].get<std::vector<uint8_t>>();
      const auto s = segmentation_image_stats(map.data(), mask.data(), h, w, opt);
      const auto& e = res["per_image"][i];
      EXPECT_EQ(s.correct, e["correct"].get<int64_t>()) << i;
      EXPECT_EQ(s.inter[0], e["inter"][0].get<int64_t>()) << i;
      EXPECT_EQ(s.inter[1], e["inter"][1].get<int64_t>()) << i;
      EXPECT_EQ(s.uni[0], e["union"][0].get<int64_t>()) << i;
      EXPECT_EQ(s.uni[1], e["union"][1].get<int64_t>()) << i;
      EXPECT_NEAR(s.ap, e["ap"].get<double>(), 1e-12) << i;
      EXPECT_NEAR(s.f1, e["f1"].get<double>(), 1e-12) << i;
      acc.add(map, mask, h, w);
    }
    const auto r = acc.result();
    EXPECT_EQ(r.images, 4);
    EXPECT_NEAR(r.pixel_accuracy, res["pixel_accuracy"].get<double>(), 1e-12);
    EXPECT_NEAR(r.iou_bg, res["iou"][0].get<double>(), 1e-12);
    EXPECT_NEAR(r.iou_fg, res["iou"][1].get<double>(), 1e-12);
    EXPECT_NEAR(r.miou, res["miou"].get<double>(), 1e-12);
    EXPECT_NEAR(r.map, res["map"].get<double>(), 1e-12);
    EXPECT_NEAR(r.mf1, res["mf1"].get<double>(), 1e-12);
  }
  // The two variants differ in mAP only (the fixture maps are tiny like rollout rows).
  EXPECT_NE(j["results"][0]["map"].get<double>(), j["results"][1]["map"].get<double>());
  EXPECT_EQ(j["results"][0]["miou"].get<double>(), j["results"][1]["miou"].get<double>());
}

TEST(Segmentation, NearestResizeMatchesPillow) {
  const auto j = load_json("resize_cases.json");
  const auto src = j["mask"].get<std::vector<uint8_t>>();
  ASSERT_EQ(j["resized"].size(), 3u);
  for (const auto& r : j["resized"]) {
    const int64_t h = r["h"], w = r["w"];
    EXPECT_EQ(resize_mask_nearest(src.data(), j["h"], j["w"], h, w), r["mask"].get<std::vector<uint8_t>>())
        << h << "x" << w;
  }
  const auto g = plain_resize_geometry(375, 500);
  EXPECT_EQ(g.out_h, 224);
  EXPECT_EQ(g.out_w, 224);
  EXPECT_DOUBLE_EQ(g.scale_y, 375.0 / 224.0);
  EXPECT_DOUBLE_EQ(g.scale_x, 500.0 / 224.0);
}

}  // namespace
}  // namespace ssmx
