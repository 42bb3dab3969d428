// ssmx attention / explain on RecurrentGemma: files, index.json, and that the numbers are the library's.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/griffin_attention.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "models/griffin.h"

using namespace ssmx;

namespace {
const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/griffin-f32";
}

TEST(GriffinCli, AttentionRowsAreTheLibrarys) {
  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", "3,17,101,5,44,250,7,9", "--row", "-1", "--kind", "unified",
                          "--compat", "tracing", "--out", td.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  ASSERT_EQ(idx["files"].size(), 4u);  // layers 0, 1, 3 (RG-LRU) and 2 (local attention, softmax per head)
  const auto& f = idx["files"][1];
  EXPECT_EQ(f["layer"], 1);
  EXPECT_EQ(f["shape"], (std::vector<int64_t>{48, 8}));
  EXPECT_TRUE(test::read_file(td.file(f["png"].get<std::string>())).size() > 100);
  const Tensor got = read_npy_f32(td.file(f["file"].get<std::string>()));
  Checkpoint ck = open_checkpoint(kModel);
  auto m = GriffinModel::load(ck);
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m->forward({3, 17, 101, 5, 44, 250, 7, 9}, fo);
  GriffinAttnOptions go;
  go.compat = true;
  const GriffinLayer& ly = m->layer(1);
  const Tensor want = griffin_attention_row(griffin_trace(fr.acts, 1, ly.conv_w.p, ly.conv_b.p, 4), go, 7, 0, 48);
  EXPECT_EQ(got.data, want.data);
  // Layer 2 is local attention: its softmax row per query head, the library's griffin_local_attention.
  const auto& f2 = idx["files"][2];
  EXPECT_EQ(f2["layer"], 2);
  EXPECT_EQ(f2["kind"], "softmax");
  EXPECT_EQ(f2["channels"], (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(f2["shape"], (std::vector<int64_t>{4, 8}));
  const Tensor got2 = read_npy_f32(td.file(f2["file"].get<std::string>()));
  const Tensor p = griffin_local_attention(fr.acts, 2, 4, 1, 8, 4);
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t j = 0; j < 8; ++j) EXPECT_EQ(got2.ptr()[h * 8 + j], p.ptr()[(h * 8 + 7) * 8 + j]) << h << " " << j;
  // Bad compat / kind for this family: a one-line error.
  auto bad = test::run_cli({"attention", kModel, "--ids", "3,4", "--compat", "hiddenattn-row", "--row", "-1", "--out", td.path()});
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("tracing"), std::string::npos) << bad.err;
}

// Full matrices reduced over channels / heads: every layer written, the local layer's map is the head mean of its
// softmax weights (rows sum to 1).
TEST(GriffinCli, AttentionMeanMapsIncludeTheLocalAttentionLayer) {
  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", "3,17,101,5,44,250,7,9", "--reduce", "mean", "--layers", "1,2",
                          "--no-png", "--out", td.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  ASSERT_EQ(idx["files"].size(), 2u);
  EXPECT_EQ(idx["files"][1]["file"], "layer02.softmax.full.mean.npy");
  const Tensor m = read_npy_f32(td.file("layer02.softmax.full.mean.npy"));
  ASSERT_EQ(m.shape, (std::vector<int64_t>{8, 8}));
  for (int64_t i = 0; i < 8; ++i) {
    double s = 0;
    for (int64_t j = 0; j < 8; ++j) s += m.ptr()[i * 8 + j];
    EXPECT_NEAR(s, 1.0, 1e-6) << i;
    EXPECT_EQ(m.ptr()[i * 8 + std::min<int64_t>(i + 1, 7)] == 0.0f, i < 7) << i;  // causal
  }
}

TEST(GriffinCli, ExplainAttentionAndGradientMethods) {
  test::TempDir td;
  auto r = test::run_cli({"explain", kModel, "--ids", "3,17,101,5,44,250,7,9", "--method",
                          "raw-attention,rollout,grad-input,mamba-lrp", "--out", td.file("r.npy")});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto off = test::run_cli({"explain", kModel, "--ids", "3,17,101", "--method", "rollout", "--compat", "official"});
  EXPECT_NE(off.rc, 0);
  EXPECT_NE(off.err.find("recurrent_gemma"), std::string::npos) << off.err;
}
