// ssmx attention and ssmx explain on an RWKV-4 model: the files reproduce the library's implicit attention.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/rwkv_attention.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "models/rwkv.h"

using namespace ssmx;

namespace {
const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/rwkv-f32-safetensors";
const std::vector<int32_t> kIdv = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
const std::string kIds = "3,1,4,1,5,9,2,6,5,3";
}  // namespace

TEST(RwkvAttentionCli, RowAndFullFilesEqualTheLibrary) {
  Checkpoint ck = open_checkpoint(kModel);
  auto m = RwkvModel::load(ck);
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m->forward(kIdv, fo);
  const int64_t A = m->config().att;

  test::TempDir td;
  auto r = test::run_cli({"attention", kModel, "--ids", kIds, "--row", "-1", "--kind", "unified", "--out", td.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  EXPECT_EQ(idx["family"], "rwkv");
  ASSERT_EQ(idx["files"].size(), size_t(m->config().n_layer));
  const auto& f = idx["files"][1];
  EXPECT_EQ(f["layer"], 1);
  EXPECT_EQ(f["shape"], (std::vector<int64_t>{A, 10}));
  EXPECT_TRUE(std::filesystem::exists(td.file(f["png"].get<std::string>())));
  const Tensor got = read_npy_f32(td.file(f["file"].get<std::string>()));
  const Tensor want = rwkv_attention_row(rwkv_attn_input(*m, 1, fr.acts, true), 9);
  EXPECT_EQ(got.data, want.data);

  test::TempDir t2;
  auto r2 = test::run_cli({"attention", kModel, "--ids", kIds, "--layers", "2", "--channels", "2:5", "--no-png", "--out", t2.path()});
  ASSERT_EQ(r2.rc, 0) << r2.err;
  auto idx2 = nlohmann::json::parse(test::read_file(t2.file("index.json")));
  const Tensor full = read_npy_f32(t2.file(idx2["files"][0]["file"].get<std::string>()));
  EXPECT_EQ(full.shape, (std::vector<int64_t>{3, 10, 10}));
  const Tensor wfull = rwkv_attention_channels(rwkv_attn_input(*m, 2, fr.acts, false), {2, 3, 4});
  EXPECT_EQ(full.data, wfull.data);

  auto bad = test::run_cli({"attention", kModel, "--ids", kIds, "--kind", "unified-noconv", "--out", t2.path()});
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("--kind"), std::string::npos) << bad.err;
}
