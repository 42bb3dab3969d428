// The ssmx command line: help everywhere, the documented outputs, and bad input -> one line on stderr, exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/tokenizer.h"
#include "models/mamba_random.h"
#include "models/model.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

std::string bundled() { return std::string(SSMX_SOURCE_DIR) + "/models/tiny-mamba"; }

void expect_one_line_error(const test::CliResult& r, const std::string& must_contain) {
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "stderr must be one line: " << r.err;
  EXPECT_EQ(r.err.rfind("ssmx: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << r.err;
}

}  // namespace

TEST(Cli, HelpForEverySubcommand) {
  auto r = test::run_cli({"--help"});
  EXPECT_EQ(r.rc, 0);
  for (const char* sub : {"info", "tokenize", "predict"}) {
    EXPECT_NE(r.out.find(sub), std::string::npos) << sub;
    auto s = test::run_cli({sub, "--help"});
    EXPECT_EQ(s.rc, 0) << sub;
    EXPECT_NE(s.out.find("--"), std::string::npos) << sub;
  }
  auto p = test::run_cli({"predict", "--help"});
  for (const char* opt : {"--text", "--ids", "--top-k", "--logits-out"}) EXPECT_NE(p.out.find(opt), std::string::npos) << opt;
}

TEST(Cli, UsageErrorsExitWithOne) {
  EXPECT_EQ(test::run_cli({}).rc, 1);
  EXPECT_EQ(test::run_cli({"predict"}).rc, 1);
  EXPECT_EQ(test::run_cli({"predict", bundled(), "--text", "a", "--ids", "1"}).rc, 1);
}

TEST(Cli, InfoDescribesTheModel) {
  auto r = test::run_cli({"info", test::data_dir() + "/models/falcon-bf16-sharded"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("falcon_mamba"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BF16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sharded safetensors, 2 files"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters:"), std::string::npos);
  auto j = test::run_cli({"info", "--json", bundled()});
  ASSERT_EQ(j.rc, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  EXPECT_EQ(parsed["family"], "mamba");
  EXPECT_GT(parsed["parameters"].get<int64_t>(), 0);
}

TEST(Cli, PredictWritesTheSameLogitsAsTheLibrary) {
  test::TempDir td;
  const std::string model = test::data_dir() + "/models/mamba-f16-sharded";
  auto r = test::run_cli({"predict", model, "--ids", "3, 1,4,1,5", "--top-k", "3", "--logits-out", td.file("l.npy")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("1. "), std::string::npos);
  EXPECT_NE(r.out.find("3. "), std::string::npos);
  EXPECT_EQ(r.out.find("4. "), std::string::npos);
  Tensor l = read_npy_f32(td.file("l.npy"));
  Checkpoint ck = open_checkpoint(model);
  auto m = load_causal_lm(ck);
  ForwardResult ref = m->forward({3, 1, 4, 1, 5}, {});
  ASSERT_EQ(l.shape, ref.logits.shape);
  EXPECT_EQ(l.data, ref.logits.data);
}

TEST(Cli, PredictAndTokenizeTextWithTheBundledModel) {
  auto r = test::run_cli({"predict", bundled(), "--text", "the movie was"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("next-token prediction"), std::string::npos) << r.out;
  auto t = test::run_cli({"tokenize", bundled(), "--text", "the movie was not good"});
  ASSERT_EQ(t.rc, 0) << t.err;
  Tokenizer tok = Tokenizer::from_file(bundled() + "/tokenizer.json");
  std::string want;
  for (int32_t id : tok.encode_ids("the movie was not good")) want += (want.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(t.out, want + "\n");
}

TEST(Cli, VerboseNamesTheBlasCore) {
  auto r = test::run_cli({"--verbose", "predict", bundled(), "--ids", "1,2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("BLAS: OpenBLAS core"), std::string::npos) << r.err;
  // Global options also work after the subcommand.
  auto r2 = test::run_cli({"predict", bundled(), "--ids", "1,2", "--threads", "1", "--verbose"});
  ASSERT_EQ(r2.rc, 0) << r2.err;
  EXPECT_NE(r2.err.find("threads: 1"), std::string::npos) << r2.err;
}

TEST(Cli, BadInputGivesOneLineAndExitTwo) {
  test::TempDir td;
  expect_one_line_error(test::run_cli({"info", td.file("missing")}), td.file("missing"));
  expect_one_line_error(test::run_cli({"predict", bundled(), "--ids", "1,x,3"}), "'x' is not a token id");
  expect_one_line_error(test::run_cli({"predict", bundled(), "--ids", "99999"}), "out of range");
  // A model without tokenizer.json cannot take --text.
  MambaConfig c;
  c.n_layer = 1, c.d_model = 8, c.d_inner = 16, c.d_state = 2, c.d_conv = 2, c.dt_rank = 1, c.vocab = 20;
  write_random_mamba(td.file("m"), c, 3);
  expect_one_line_error(test::run_cli({"predict", td.file("m"), "--text", "hi"}), "no tokenizer.json");
  // Truncated weights: error, and no partial logits file.
  std::string raw = test::read_file(td.file("m/model.safetensors"));
  test::write_file(td.file("m/model.safetensors"), raw.substr(0, raw.size() / 3));
  expect_one_line_error(test::run_cli({"predict", td.file("m"), "--ids", "1", "--logits-out", td.file("out.npy")}),
                        td.file("m/model.safetensors"));
  EXPECT_FALSE(fs::exists(td.file("out.npy")));
}
