// ssmx explain: the documented outputs (.npy [T] or [M, T], JSON fields, self-contained HTML, terminal table) carry
// the library's numbers, and bad requests fail with a one-line message and exit code 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/explain.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "models/mamba.h"

using namespace ssmx;

namespace {
const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/mamba-f32-safetensors";
const std::string kIds = "3,1,4,1,5,9,2,6";
const std::vector<int32_t> kIdv = {3, 1, 4, 1, 5, 9, 2, 6};
}  // namespace

TEST(ExplainCli, NpyJsonAndHtmlCarryTheLibraryNumbers) {
  test::TempDir td;
  auto r = test::run_cli({"explain", kModel, "--ids", kIds, "--method", "rollout", "--out", td.file("r.npy"), "--json",
                          td.file("r.json"), "--html", td.file("r.html"), "--target", "17"});
  ASSERT_EQ(r.rc, 0) << r.err;
  Checkpoint ck = open_checkpoint(kModel);
  auto m = MambaModel::load(ck, false);
  ExplainOptions o;
  o.method = Method::Rollout;
  o.target.token = 17;
  const Explanation want = explain(*m, nullptr, kIdv, o);

  const Tensor got = read_npy_f32(td.file("r.npy"));
  EXPECT_EQ(got.shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(got.data, want.relevance);

  const auto j = nlohmann::json::parse(test::read_file(td.file("r.json")));
  EXPECT_EQ(j["ids"], kIdv);
  EXPECT_EQ(j["tokens"].size(), 8u);
  EXPECT_EQ(j["offsets"].size(), 8u);
  EXPECT_EQ(j["target"]["kind"], "token");
  EXPECT_EQ(j["target"]["token"], 17);
  EXPECT_EQ(j["target"]["position"], 7);
  EXPECT_NEAR(j["logit"].get<double>(), want.target_value, 1e-6);
  ASSERT_EQ(j["explanations"].size(), 1u);
  EXPECT_EQ(j["explanations"][0]["method"], "rollout");
  EXPECT_EQ(j["explanations"][0]["relevance"].get<std::vector<float>>(), want.relevance);
  EXPECT_EQ(j["explanations"][0]["settings"]["start_layer"], 0);

  const std::string html = test::read_file(td.file("r.html"));
  EXPECT_NE(html.find("<!DOCTYPE html>"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);  // per-layer maps embedded
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_NE(r.out.find("rollout"), std::string::npos);  // not a terminal: the plain table
}

TEST(ExplainCli, SeveralMethodsGiveOneRowEachAndWordsAreSummed) {
  test::TempDir td;
  auto r = test::run_cli({"explain", kModel, "--ids", kIds, "--method", "raw-attention,random,rollout", "--out",
                          td.file("r.npy"), "--json", td.file("r.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const Tensor got = read_npy_f32(td.file("r.npy"));
  EXPECT_EQ(got.shape, (std::vector<int64_t>{3, 8}));
  const auto j = nlohmann::json::parse(test::read_file(td.file("r.json")));
  ASSERT_EQ(j["explanations"].size(), 3u);
  EXPECT_EQ(j["explanations"][1]["method"], "random");
  const auto row1 = j["explanations"][1]["relevance"].get<std::vector<float>>();
  EXPECT_EQ(std::vector<float>(got.data.begin() + 8, got.data.begin() + 16), row1);
}

TEST(ExplainCli, TextInputWithWords) {
  test::TempDir td;
  auto r = test::run_cli({"explain", kModel, "--text", "hello world again", "--method", "raw-attention", "--words",
                          "--json", td.file("r.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(test::read_file(td.file("r.json")));
  const auto& words = j["explanations"][0]["words"];
  ASSERT_GE(words.size(), 1u);
  double total_words = 0, total_tokens = 0;
  for (const auto& w : words) total_words += w["relevance"].get<double>();
  for (const auto& v : j["explanations"][0]["relevance"]) total_tokens += v.get<double>();
  EXPECT_NEAR(total_words, total_tokens, 1e-5 * std::max(1.0, std::fabs(total_tokens)));
  EXPECT_EQ(words.back()["tokens"][1], j["tokens"].size());
}

TEST(ExplainCli, BadRequestsFailWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"explain", kModel, "--ids", kIds, "--method", "lrp"}, "unknown method 'lrp'"},
      {{"explain", kModel, "--ids", kIds, "--method", "rollout", "--target", "999999"}, "out of range"},
      {{"explain", kModel, "--ids", kIds, "--method", "rollout", "--position", "20"}, "--position"},
      {{"explain", kModel, "--ids", kIds, "--method", "rollout", "--class", "1"}, "no classification head"},
      {{"explain", kModel, "--ids", kIds, "--method", "mamba-lrp", "--lrp-rules", "silu,foo"}, "unknown rule 'foo'"},
      {{"explain", kModel, "--ids", kIds, "--method", "rollout", "--compat", "paper"}, "--compat"},
      {{"explain", kModel, "--ids", kIds, "--method", "rollout", "--out", "/nonexistent/dir/r.npy"}, "/nonexistent/dir/r.npy"},
      {{"explain", kModel + "/nope", "--ids", kIds}, "nope"},
  };
  for (const auto& c : cases) {
    auto r = test::run_cli(c.args);
    EXPECT_EQ(r.rc, 2) << c.needle << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  auto h = test::run_cli({"explain", "--help"});
  EXPECT_EQ(h.rc, 0);
  EXPECT_NE(h.out.find("--lrp-rules"), std::string::npos);
}
