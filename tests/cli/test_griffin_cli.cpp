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
  ASSERT_EQ(idx["files"].size(), 3u);  // layers 0, 1, 3; layer 2 is local attention
  EXPECT_EQ(idx["skipped_layers"], nlohmann::json::array({2}));
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
  // Bad compat / kind for this family: a one-line error.
  auto bad = test::run_cli({"attention", kModel, "--ids", "3,4", "--compat", "hiddenattn-row", "--row", "-1", "--out", td.path()});
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("tracing"), std::string::npos) << bad.err;
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
