// The vision commands on the Vim fixture: predict, explain (patch map .npy, PNGs, JSON) and attention (class row)
// carry the library's numbers; mixing up text and image inputs fails with one-line messages and exit code 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/explain.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "models/vim.h"

using namespace ssmx;

namespace {
const std::string kVim = test::data_dir() + "/vim/vim-tiny-random.pth";

Tensor reference_pixels() {
  const SafetensorsFile f = read_safetensors(test::data_dir() + "/vim/reference.safetensors");
  for (const auto& e : f.tensors)
    if (e.first == "pixels") return Tensor(e.second.shape, to_f32(e.second));
  return Tensor();
}
}  // namespace

TEST(VimCli, PredictExplainAndAttention) {
  test::TempDir td;
  const Tensor px = reference_pixels();
  const std::string pfile = td.file("px.npy");
  write_npy(pfile, px.ptr(), px.shape);
  const Checkpoint ck = open_checkpoint(kVim);
  auto m = VimModel::load(ck);

  auto r = test::run_cli({"predict", kVim, "--pixels", pfile, "--logits-out", td.file("l.npy"), "-k", "3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_npy_f32(td.file("l.npy")).data, m->forward(px).logits.data);
  EXPECT_NE(r.out.find("top 3 of 10 classes"), std::string::npos) << r.out;

  r = test::run_cli({"explain", kVim, "--pixels", pfile, "--method", "mamba-lrp,rollout", "--out", td.file("e.npy"),
                     "--json", td.file("e.json"), "--figure", td.file("f.png"), "--overlay", td.file("o.png"),
                     "--class", "2", "--start-layer", "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const Tensor maps = read_npy_f32(td.file("e.npy"));
  ASSERT_EQ(maps.shape, (std::vector<int64_t>{2, 4, 4}));
  ExplainOptions o;
  o.method = Method::MambaLrp;
  o.target.kind = Target::Kind::Class;
  o.target.cls = 2;
  o.start_layer = 1;
  const std::vector<float> want = patch_map(*m, explain_image(*m, px, o).relevance);
  EXPECT_EQ(std::vector<float>(maps.data.begin(), maps.data.begin() + 16), want);
  const auto j = nlohmann::json::parse(test::read_file(td.file("e.json")));
  EXPECT_EQ(j["target"]["class"], 2);
  EXPECT_EQ(j["class_token"], 8);
  EXPECT_EQ(j["explanations"][0]["patch_map"].size(), 16u);
  EXPECT_EQ(j["explanations"][0]["token_relevance"].size(), 17u);
  EXPECT_TRUE(j["explanations"][0].contains("conservation"));
  EXPECT_GT(test::read_file(td.file("f.png")).size(), 100u);
  EXPECT_GT(test::read_file(td.file("o.png")).size(), 100u);

  r = test::run_cli({"attention", kVim, "--pixels", pfile, "--class-row", "--layers", "1", "--no-png", "--out", td.file("a")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const Tensor row = read_npy_f32(td.file("a") + "/layer01.s6.row8.npy");
  EXPECT_EQ(row.shape, (std::vector<int64_t>{64, 17}));
}

TEST(VimCli, TextAndImageInputsAreNotMixedUp) {
  test::TempDir td;
  const Tensor px = reference_pixels();
  write_npy(td.file("px.npy"), px.ptr(), px.shape);
  const std::string text_model = test::data_dir() + "/models/mamba-f32-safetensors";
  auto r = test::run_cli({"explain", kVim, "--text", "hello"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("Vision Mamba"), std::string::npos) << r.err;
  r = test::run_cli({"explain", kVim, "--pixels", td.file("px.npy"), "--target", "3"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--class"), std::string::npos) << r.err;
  r = test::run_cli({"predict", text_model, "--pixels", td.file("px.npy")});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("language model"), std::string::npos) << r.err;
  write_npy(td.file("small.npy"), px.ptr(), {3, 16, 64});
  r = test::run_cli({"predict", kVim, "--pixels", td.file("small.npy")});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = test::run_cli({"attention", text_model, "--ids", "1,2,3", "--class-row", "--out", td.file("x")});
  EXPECT_EQ(r.rc, 2);
}
