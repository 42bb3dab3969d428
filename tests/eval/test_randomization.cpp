// The cascading randomisation test: Spearman's ρ (with ties), the tensor re-drawing, and the test's two anchors on the
// demo model — a method that reads the weights decorrelates, the weight-blind `random` method does not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "../test_util.h"
#include "core/error.h"
#include "eval/randomization.h"
#include "io/checkpoint.h"

using namespace ssmx;

namespace {
const std::string kDemo = std::string(SSMX_SOURCE_DIR) + "/models/sentiment-mamba";
}

TEST(Randomization, SpearmanWithTies) {
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 100, 1000, 1e6}), 1.0, 1e-15);  // ranks only
  // ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): ρ = 4.5 / sqrt(4.5 · 5)
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(22.5), 1e-12);
  EXPECT_EQ(spearman({1, 1, 1}, {1, 2, 3}), 0.0);
  EXPECT_THROW(spearman({1, 2}, {1, 2, 3}), Error);
}

TEST(Randomization, RedrawsOnlyThePickedTensorsWithTheirMoments) {
  const Checkpoint ck = open_checkpoint(kDemo);
  const std::string name = "backbone.layers.2.mixer.in_proj.weight";
  RandomizedCheckpoint rc = randomize_tensors(ck, [&](const std::string& n) { return n == name; }, 7);
  for (const auto& [n, t] : ck.tensors) {
    const std::vector<float> a = to_f32(t), b = to_f32(rc.ck.tensors.at(n));
    if (n != name) {
      EXPECT_EQ(a, b) << n;
      continue;
    }
    ASSERT_EQ(a.size(), b.size());
    double ma = 0, mb = 0, va = 0, vb = 0, same = 0;
    for (size_t k = 0; k < a.size(); ++k) ma += a[k], mb += b[k], same += a[k] == b[k];
    ma /= double(a.size()), mb /= double(b.size());
    for (size_t k = 0; k < a.size(); ++k) va += (a[k] - ma) * (a[k] - ma), vb += (b[k] - mb) * (b[k] - mb);
    const double sa = std::sqrt(va / double(a.size())), sb = std::sqrt(vb / double(b.size()));
    EXPECT_LT(same, 10);
    EXPECT_NEAR(mb, ma, 0.05 * sa);
    EXPECT_NEAR(sb / sa, 1.0, 0.05);
  }
  RandomizedCheckpoint again = randomize_tensors(ck, [&](const std::string& n) { return n == name; }, 7);
  EXPECT_EQ(to_f32(again.ck.tensors.at(name)), to_f32(rc.ck.tensors.at(name)));
}

TEST(Randomization, CascadeOnTheDemoModel) {
  const Checkpoint ck = open_checkpoint(kDemo);
  const Tokenizer tok = Tokenizer::from_file(ck.tokenizer_path);
  std::vector<TextExample> data = read_text_jsonl(kDemo + "/heldout.jsonl");
  data.resize(16);
  const RandomizationScores sc =
      evaluate_randomization(ck, tok, data, {Method::GradInput, Method::Random}, ExplainOptions{}, 3);
  ASSERT_EQ(sc.stages, (std::vector<std::string>{"trained", "norm_f", "layer 3", "layer 2", "layer 1", "layer 0"}));
  ASSERT_EQ(sc.examples, 16);
  for (size_t k = 0; k < 2; ++k) EXPECT_DOUBLE_EQ(sc.rho[k][0], 1.0);
  for (size_t s = 0; s < sc.stages.size(); ++s) EXPECT_DOUBLE_EQ(sc.rho[1][s], 1.0) << "random ignores the weights";
  EXPECT_LT(sc.rho[0].back(), 0.5) << "grad-input must decorrelate when every layer is random";
  EXPECT_LT(sc.rho[0].back(), sc.rho[0][1]);
}

TEST(Randomization, ReaderErrorsNameTheLine) {
  const std::string p = testing::TempDir() + "/rand.jsonl";
  {
    std::ofstream f(p);
    f << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  }
  try {
    read_text_jsonl(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(":2: missing string field 'text'"), std::string::npos) << e.what();
  }
}

// Every language family: the stages name that family's head, final norm and blocks, and each stage really redraws
// the named tensors (the explanations change), on the tiny fixture models.
TEST(Randomization, CascadeCoversEveryLanguageFamily) {
  struct Case {
    const char* dir;
    std::vector<std::string> stages;
    const char* block0_tensor;  // a tensor that the "layer 0" stage must redraw
  };
  const std::vector<Case> cases = {
      {"mamba2-f32-safetensors", {"trained", "head", "norm_f", "layer 1", "layer 0"}, "backbone.layers.0.mixer.in_proj.weight"},
      {"rwkv-f32-safetensors", {"trained", "head", "norm_f", "layer 2", "layer 1", "layer 0"}, "rwkv.blocks.0.attention.key.weight"},
      {"griffin-f32", {"trained", "norm_f", "layer 3", "layer 2", "layer 1", "layer 0"}, "model.layers.0.temporal_block.linear_x.weight"},
  };
  for (const Case& c : cases) {
    const std::string dir = test::data_dir() + "/models/" + c.dir;
    const Checkpoint ck = open_checkpoint(dir);
    ASSERT_TRUE(ck.find(c.block0_tensor)) << c.dir << ": fixture lacks " << c.block0_tensor;
    const int64_t n_layer = std::count_if(c.stages.begin(), c.stages.end(), [](const std::string& s) { return s.rfind("layer ", 0) == 0; });
    const std::vector<RandomizationStage> st = randomization_stages(ck, n_layer);
    std::vector<std::string> names = {"trained"};
    for (const auto& s : st) names.push_back(s.name);
    EXPECT_EQ(names, c.stages) << c.dir;
    EXPECT_TRUE(st.back().selects(c.block0_tensor)) << c.dir;
    EXPECT_FALSE(st[st.size() - 2].selects(c.block0_tensor)) << c.dir;
    const Tokenizer tok = Tokenizer::from_file(ck.tokenizer_path);
    const std::vector<TextExample> data = {{"the cat sat on the mat", ""}, {"a b c d e f g", ""}};
    const RandomizationScores sc = evaluate_randomization(ck, tok, data, {Method::Gradient}, ExplainOptions{}, 5);
    ASSERT_EQ(sc.stages, c.stages) << c.dir;
    EXPECT_DOUBLE_EQ(sc.rho[0][0], 1.0) << c.dir;
    EXPECT_LT(sc.rho[0].back(), 0.999) << c.dir << ": a fully random model must change the gradient map";
  }
}
