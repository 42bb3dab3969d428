// ssmx attention: the documented files, shapes and index.json, and that the .npy content equals the library's.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "models/mamba.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {
const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/mamba-f32-safetensors";
const std::string kIds = "3,1,4,1,5,9,2,6,5,3";
}  // namespace

TEST(AttentionCli, FullMatricesOfAChannelRange) {
  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", kIds, "--layers", "1", "--channels", "2:6", "--out", td.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  ASSERT_EQ(idx["files"].size(), 1u);
  const auto& f = idx["files"][0];
  EXPECT_EQ(f["layer"], 1);
  EXPECT_EQ(f["kind"], "s6");
  EXPECT_EQ(f["shape"], (std::vector<int64_t>{4, 10, 10}));
  EXPECT_EQ(idx["tokens"].size(), 10u);
  EXPECT_TRUE(fs::exists(td.file(f["png"].get<std::string>())));
  Tensor got = read_npy_f32(td.file(f["file"].get<std::string>()));
  // Same numbers as the library on the same forward.
  Checkpoint ck = open_checkpoint(kModel);
  auto m = MambaModel::load(ck, false);
  ForwardOptions fo;
  fo.keep_activations = true;
  ForwardResult fr = m->forward({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, fo);
  Tensor want = hidden_attention_full(make_mixer_trace(*m, fr.acts, 1), AttnKind::S6, 2, 6);
  EXPECT_EQ(got.data, want.data);
}

TEST(AttentionCli, RowsReductionsAndKinds) {
  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", kIds, "--row", "-1", "--kind", "unified", "--reduce", "mean",
                          "--out", td.path(), "--no-png"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  ASSERT_EQ(idx["files"].size(), 2u);  // both layers by default
  EXPECT_EQ(idx["row"], 9);
  for (const auto& f : idx["files"]) {
    EXPECT_EQ(f["shape"], (std::vector<int64_t>{10}));
    EXPECT_FALSE(f.contains("png"));
    EXPECT_EQ(read_npy_f32(td.file(f["file"].get<std::string>())).shape, (std::vector<int64_t>{10}));
  }
  test::TempDir t2;
  auto r2 = test::run_cli({"attention", kModel, "--ids", kIds, "--reduce", "absmean", "--terms", "--out", t2.path()});
  ASSERT_EQ(r2.rc, 0) << r2.err;
  auto idx2 = nlohmann::json::parse(test::read_file(t2.file("index.json")));
  EXPECT_EQ(idx2["files"][0]["shape"], (std::vector<int64_t>{10, 10}));
  EXPECT_EQ(read_npy_f32(t2.file(idx2["files"][0]["d_term"].get<std::string>())).shape, (std::vector<int64_t>{10, 64}));
  EXPECT_TRUE(fs::exists(t2.file("overview.png")));
}

TEST(AttentionCli, RefusesWhatDoesNotFitAndBadOptions) {
  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", kIds, "--out", td.path(), "--max-memory", "0.000001"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("needs about"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--row"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(td.file("index.json")));
  EXPECT_EQ(test::run_cli({"attention", kModel, "--ids", kIds, "--out", td.path(), "--kind", "softmax"}).rc, 2);
  EXPECT_EQ(test::run_cli({"attention", kModel, "--ids", kIds, "--out", td.path(), "--layers", "7"}).rc, 2);
  EXPECT_EQ(test::run_cli({"attention", kModel, "--ids", kIds, "--out", td.path(), "--channels", "60:70"}).rc, 2);
  EXPECT_EQ(test::run_cli({"attention", kModel, "--ids", kIds, "--out", td.path(), "--compat", "hiddenattn-row"}).rc, 2);
}
