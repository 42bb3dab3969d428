// The vision runner (eval/vision_runner.h) on the bundled colours-vim: data lists, one perturbation record against
// direct forwards of the perturbed image, one segmentation record against the metric library and a hand count of the
// pointing game; hand-made records through the summaries; shards merging bit-identically to the single run; resume
// after a truncated last line.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../test_util.h"
#include "core/error.h"
#include "eval/runner.h"
#include "eval/vision_runner.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "render/overlay.h"

using namespace ssmx;

namespace {

const std::string kDemo = std::string(SSMX_SOURCE_DIR) + "/models/colours-vim";
const std::vector<std::string> kNames = {"red", "green", "blue", "yellow"};

struct Demo {
  Checkpoint ck = open_checkpoint(kDemo);
  std::unique_ptr<VimModel> m = VimModel::load(ck);
};
Demo& demo() {
  static Demo d;
  return d;
}

VisionData demo_data(size_t n) {
  VisionData d = read_vision_data(kDemo + "/heldout.jsonl", "", kNames);
  d.examples.resize(n);
  return d;
}

int classify(const VimModel& m, const Tensor& px) {
  const auto& l = m.forward(px).logits.data;
  return int(std::max_element(l.begin(), l.end()) - l.begin());
}

nlohmann::json pert(int64_t index, const std::string& method, int label, std::vector<int> pos, std::vector<int> neg) {
  return {{"kind", "perturbation"}, {"index", index}, {"method", method}, {"label", label}, {"pred", label},
          {"x", {0.25, 0.5, 0.75}}, {"positive", pos}, {"negative", neg}};
}

}  // namespace

TEST(VisionRunner, ReadsTheHeldOutListAndReportsBadLines) {
  const VisionData d = read_vision_data(kDemo + "/heldout.jsonl", "", kNames);
  ASSERT_EQ(d.examples.size(), 64u);
  EXPECT_EQ(d.examples[0].image, kDemo + "/heldout/000.png");
  EXPECT_EQ(d.examples[0].mask, kDemo + "/heldout/000.mask.png");
  EXPECT_EQ(d.examples[0].label, 0);
  EXPECT_EQ(d.examples[2].label, 3);  // yellow
  EXPECT_EQ(d.examples[63].index, 63);
  test::TempDir td;
  test::write_file(td.file("a.jsonl"), "{\"image\": \"x.png\", \"label\": \"green\"}\n{\"image\": \"y.png\", \"label\": \"mauve\"}\n");
  try {
    read_vision_data(td.file("a.jsonl"), "", kNames);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.jsonl:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mauve"), std::string::npos) << e.what();
  }
  test::write_file(td.file("b.jsonl"), "{\"mask\": \"x.png\"}\n");
  EXPECT_THROW(read_vision_data(td.file("b.jsonl"), "", kNames), Error);
  EXPECT_THROW(read_vision_data(td.file("none.txt"), "", kNames), Error);
  EXPECT_THROW(read_vision_data(td.file("a.jsonl"), "labels.txt", kNames), Error);  // --labels only for a folder
}

TEST(VisionRunner, PerturbationRecordEqualsDirectForwardsOfThePerturbedImage) {
  const VimModel& m = *demo().m;
  const VisionData d = demo_data(1);
  const VisionSample s = load_vision_sample(m, d, d.examples[0], false);
  ASSERT_EQ(s.image.w, 32);  // the model's size, from the model
  VisionRunSpec spec;
  spec.steps = {0.25, 0.5, 0.75};
  spec.include_zero = true;
  const nlohmann::json j = perturbation_record(m, d.examples[0], s.image, Method::GradInput, spec);
  EXPECT_EQ(j["x"].get<std::vector<double>>(), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  const ImageTransform t;
  const Tensor px = image_to_tensor(s.image, t.mean, t.std);
  const int pred = classify(m, px);
  EXPECT_EQ(j["pred"].get<int>(), pred);
  EXPECT_EQ(j["label"].get<int>(), 0);
  // the relevance map: grad-input of the predicted class, 8×8 patches upsampled bilinearly to 32×32
  ExplainOptions o;
  o.method = Method::GradInput;
  o.target.kind = Target::Kind::Class;
  o.target.cls = pred;
  const std::vector<float> pm = patch_map(m, explain_image(m, px, o).relevance);
  ASSERT_EQ(pm.size(), 64u);
  EXPECT_EQ(j["patch_map"].get<std::vector<float>>(), pm);
  const std::vector<float> rel = upsample_bilinear(pm.data(), 8, 8, 32, 32);
  for (int mode = 0; mode < 2; ++mode) {
    const auto preds = j[mode == 0 ? "positive" : "negative"].get<std::vector<int>>();
    ASSERT_EQ(preds.size(), 4u);
    EXPECT_EQ(preds[0], pred);  // x = 0: the unperturbed image
    // x = 0.5: remove the 512 most (least) relevant pixels by hand and classify
    std::vector<int64_t> idx(1024);
    for (int64_t i = 0; i < 1024; ++i) idx[size_t(i)] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
      return mode == 0 ? rel[size_t(a)] > rel[size_t(b)] : rel[size_t(a)] < rel[size_t(b)];
    });
    Image cut = s.image;
    for (int k = 0; k < 512; ++k)
      for (int c = 0; c < 3; ++c) cut.px[size_t(idx[size_t(k)] * 3 + c)] = 0;
    EXPECT_EQ(preds[2], classify(m, image_to_tensor(cut, t.mean, t.std))) << mode;
  }
}

TEST(VisionRunner, SummariesOfHandMadeRecords) {
  // two images (labels 1 and 2), x = 0.25, 0.5, 0.75
  const std::vector<nlohmann::json> recs = {pert(0, "a", 1, {1, 1, 0}, {1, 1, 1}), pert(1, "a", 2, {2, 0, 0}, {2, 2, 0})};
  const auto s = summarize_perturbation(recs);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].images, 2);
  EXPECT_EQ(s[0].positive_accuracy, (std::vector<double>{100, 50, 0}));
  EXPECT_EQ(s[0].negative_accuracy, (std::vector<double>{100, 100, 50}));
  // trapezoid: 0.25·(100+50)/2 + 0.25·(50+0)/2 = 25;  0.25·(100+100)/2 + 0.25·(100+50)/2 = 43.75
  EXPECT_DOUBLE_EQ(s[0].positive_auc, 25.0);
  EXPECT_DOUBLE_EQ(s[0].negative_auc, 43.75);
  EXPECT_NE(perturbation_markdown(s).find("| a | 25.00 | 43.75 | 2 |"), std::string::npos) << perturbation_markdown(s);
  EXPECT_NE(perturbation_csv(s).find("a,negative,2,43.75,100,100,50\n"), std::string::npos) << perturbation_csv(s);
  // mixing fractions is an error
  auto bad = recs;
  bad[1]["x"] = {0.1, 0.5, 0.9};
  EXPECT_THROW(summarize_perturbation(bad), Error);

  // segmentation: 2 images of 4 pixels
  nlohmann::json s0 = {{"kind", "segmentation"}, {"index", 0}, {"method", "a"}, {"correct", 3}, {"labelled", 4},
                       {"inter", {1, 2}}, {"union", {2, 2}}, {"ap", 0.5}, {"f1", 1.0}, {"pointing", 1},
                       {"energy", 0.75}, {"mask_fraction", 0.5}};
  nlohmann::json s1 = {{"kind", "segmentation"}, {"index", 1}, {"method", "a"}, {"correct", 1}, {"labelled", 4},
                       {"inter", {1, 0}}, {"union", {3, 3}}, {"ap", 1.0}, {"f1", 0.0}, {"pointing", 0},
                       {"energy", 0.25}, {"mask_fraction", 0.25}};
  const auto g = summarize_segmentation({s0, s1});
  ASSERT_EQ(g.size(), 1u);
  EXPECT_NEAR(g[0].r.pixel_accuracy, 0.5, 1e-12);
  EXPECT_NEAR(g[0].r.iou_bg, 2.0 / 5.0, 1e-12);
  EXPECT_NEAR(g[0].r.iou_fg, 2.0 / 5.0, 1e-12);
  EXPECT_NEAR(g[0].r.map, 0.75, 1e-12);
  EXPECT_NEAR(g[0].r.mf1, 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(g[0].pointing, 0.5);
  EXPECT_DOUBLE_EQ(g[0].energy, 0.5);
  EXPECT_DOUBLE_EQ(g[0].mask_fraction, 0.375);
}

TEST(VisionRunner, SegmentationRecordAgreesWithTheMetricsAndAHandPointingCount) {
  const VimModel& m = *demo().m;
  const VisionData d = demo_data(1);
  const VisionSample s = load_vision_sample(m, d, d.examples[0], true);
  ASSERT_EQ(s.mask.size(), 1024u);
  VisionRunSpec spec;
  const nlohmann::json j = segmentation_record(m, d.examples[0], s, Method::MambaLrp, spec);
  const ImageTransform t;
  const Tensor px = image_to_tensor(s.image, t.mean, t.std);
  const std::vector<float> pm = j["patch_map"].get<std::vector<float>>();
  const std::vector<float> rel = upsample_bilinear(pm.data(), 8, 8, 32, 32);
  EXPECT_EQ(pixel_relevance(m, px, j["pred"].get<int64_t>(), Method::MambaLrp, ExplainOptions{}), rel);
  const SegmentationImageStats st = segmentation_image_stats(rel.data(), s.mask.data(), 32, 32);
  EXPECT_EQ(j["correct"].get<int64_t>(), st.correct);
  EXPECT_EQ(j["inter"][1].get<int64_t>(), st.inter[1]);
  EXPECT_EQ(j["ap"].get<double>(), st.ap);
  EXPECT_EQ(j["f1"].get<double>(), st.f1);
  // pointing by hand: the top patch's 16 pixels, at least 8 in the mask
  const int top = int(std::max_element(pm.begin(), pm.end()) - pm.begin());
  int in = 0;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) in += s.mask[size_t(((top / 8) * 4 + y) * 32 + (top % 8) * 4 + x)];
  EXPECT_EQ(j["top_patch"].get<int>(), top);
  EXPECT_EQ(j["pointing"].get<int>(), in >= 8 ? 1 : 0);
  double pin = 0, pall = 0, mp = 0;
  for (size_t i = 0; i < rel.size(); ++i) {
    const double v = std::max(0.0f, rel[i]);
    pall += v, pin += s.mask[i] ? v : 0, mp += s.mask[i];
  }
  EXPECT_NEAR(j["energy"].get<double>(), pin / pall, 1e-12);
  EXPECT_NEAR(j["mask_fraction"].get<double>(), mp / 1024, 1e-15);
  // MambaLRP finds the object on this image (energy above the mask's share)
  EXPECT_GT(j["energy"].get<double>(), j["mask_fraction"].get<double>());
}

TEST(VisionRunner, ShardsMergeBitIdenticallyAndResumeAfterTruncation) {
  const VimModel& m = *demo().m;
  const VisionData d = demo_data(5);
  test::TempDir td;
  for (const std::string kind : {"perturbation", "segmentation"}) {
    VisionRunSpec spec;
    spec.methods = {Method::Random, Method::GradInput};
    spec.steps = {0.2, 0.6};
    spec.out = td.file(kind + ".all.jsonl");
    auto run = [&](const VisionRunSpec& sp) {
      return kind == "perturbation" ? run_perturbation(m, d, sp) : run_segmentation(m, d, sp);
    };
    EXPECT_EQ(run(spec).size(), 10u);
    std::vector<std::string> shards;
    for (int i = 0; i < 3; ++i) {
      VisionRunSpec sp = spec;
      sp.shard = i, sp.shards = 3;
      sp.out = td.file(kind + ".s" + std::to_string(i) + ".jsonl");
      EXPECT_EQ(run(sp).size(), size_t(i < 2 ? 4 : 2));
      shards.push_back(sp.out);
    }
    EXPECT_EQ(result_file_kind(spec.out), kind);
    const auto single = read_vision_records({spec.out}, kind);
    const auto merged = read_vision_records(shards, kind);
    if (kind == "perturbation") {
      EXPECT_EQ(perturbation_json(summarize_perturbation(single)).dump(),
                perturbation_json(summarize_perturbation(merged)).dump());
      EXPECT_EQ(summarize_perturbation(single)[0].images, 5);
    } else {
      EXPECT_EQ(segmentation_csv(summarize_segmentation(single)), segmentation_csv(summarize_segmentation(merged)));
      EXPECT_EQ(summarize_segmentation(single)[1].r.images, 5);
    }
    // a flipping reader refuses these records, and a merge of two kinds is an error
    EXPECT_THROW(read_vision_records({spec.out}, kind == "perturbation" ? "segmentation" : "perturbation"), Error);
    // resume: keep 3 complete lines and half of the 4th
    const std::string full = test::read_file(spec.out);
    size_t cut = 0;
    for (int i = 0; i < 3; ++i) cut = full.find('\n', cut) + 1;
    const size_t half = cut + (full.find('\n', cut) - cut) / 2;
    VisionRunSpec rs = spec;
    rs.out = td.file(kind + ".part.jsonl");
    test::write_file(rs.out, full.substr(0, half));
    rs.resume = true;
    EXPECT_EQ(run(rs).size(), 7u);
    EXPECT_EQ(test::read_file(rs.out), full);
    EXPECT_TRUE(run(rs).empty());
  }
}
