// `ssmx eval perturbation | segmentation`, the image pointing game of `eval evidence` and the vision half of
// `eval merge` on the bundled colours-vim (a few images): shards merge to the single run's tables byte for byte,
// resume completes a cut file, the tables carry the numbers of the JSONL records, and bad input gives one line naming
// the file or option with a non-zero exit code.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../test_util.h"

using namespace ssmx;

namespace {

const std::string kVimDemo = std::string(SSMX_SOURCE_DIR) + "/models/colours-vim";
const std::string kList = kVimDemo + "/heldout.jsonl";

bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

}  // namespace

TEST(EvalVisionCli, PerturbationShardsMergeAndResume) {
  test::TempDir td;
  const std::vector<std::string> common = {"--threads", "1", "eval", "perturbation", kVimDemo, "--data", kList,
                                           "--method", "random,grad-input", "--limit", "4", "--steps", "4"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return test::run_cli(a);
  };
  auto r = with({"--out", td.file("all.jsonl"), "--csv", td.file("run.csv"), "--plot", td.file("plots")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("| grad-input |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("32x32 pixels"), std::string::npos) << r.out;  // the size comes from the model
  for (const char* f : {"perturbation_positive.png", "perturbation_negative.svg"})
    EXPECT_GT(std::filesystem::file_size(td.file(std::string("plots/") + f)), 100u) << f;
  // the table from the records: accuracy at each step = share of the 4 images still classified as labelled
  std::vector<int> correct(3, 0);
  int lines = 0;
  for (const std::string& l : {test::read_file(td.file("all.jsonl"))}) {
    size_t p = 0;
    while (p < l.size()) {
      const size_t nl = l.find('\n', p);
      const auto j = nlohmann::json::parse(l.substr(p, nl - p));
      ++lines;
      EXPECT_EQ(j["x"].get<std::vector<double>>(), (std::vector<double>{0.25, 0.5, 0.75}));
      if (j["method"] == "grad-input")
        for (int i = 0; i < 3; ++i) correct[size_t(i)] += j["positive"][size_t(i)].get<int>() == j["label"].get<int>();
      p = nl + 1;
    }
  }
  EXPECT_EQ(lines, 8);
  const double auc = 0.25 * (correct[0] + correct[1]) / 2.0 * 25 + 0.25 * (correct[1] + correct[2]) / 2.0 * 25;
  char want[64];
  std::snprintf(want, sizeof want, "| grad-input | %.2f |", auc);
  EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;

  for (int i = 0; i < 2; ++i) {
    r = with({"--shard", std::to_string(i) + "/2", "--out", td.file("s" + std::to_string(i) + ".jsonl")});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  r = test::run_cli({"eval", "merge", td.file("all.jsonl"), "--csv", td.file("all.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = test::run_cli({"eval", "merge", td.file("s1.jsonl"), td.file("s0.jsonl"), "--csv", td.file("sh.csv"), "--json",
                     td.file("sh.json"), "--markdown", td.file("sh.md"), "--plot", td.file("mplots")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(td.file("all.csv")), test::read_file(td.file("sh.csv")));
  EXPECT_EQ(test::read_file(td.file("all.csv")), test::read_file(td.file("run.csv")));
  EXPECT_NE(test::read_file(td.file("sh.md")).find("| random |"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(test::read_file(td.file("sh.json")))[0]["images"], 4);
  EXPECT_TRUE(std::filesystem::exists(td.file("mplots/perturbation_positive.svg")));
  // resume after a cut
  const std::string full = test::read_file(td.file("all.jsonl"));
  test::write_file(td.file("cut.jsonl"), full.substr(0, full.size() / 2));
  r = with({"--out", td.file("cut.jsonl"), "--resume"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(td.file("cut.jsonl")), full);
}

TEST(EvalVisionCli, SegmentationAndImagePointingGame) {
  test::TempDir td;
  const std::vector<std::string> common = {"--threads", "1", "eval", "segmentation", kVimDemo, "--data", kList,
                                           "--method", "mamba-lrp,random", "--limit", "3"};
  auto a = common;
  a.insert(a.end(), {"--out", td.file("seg.jsonl"), "--json", td.file("seg.json")});
  auto r = test::run_cli(a);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("| mamba-lrp |"), std::string::npos) << r.out;
  const auto sj = nlohmann::json::parse(test::read_file(td.file("seg.json")));
  ASSERT_EQ(sj.size(), 2u);
  EXPECT_EQ(sj[0]["method"], "mamba-lrp");
  EXPECT_EQ(sj[0]["images"], 3);
  EXPECT_GT(sj[0]["miou"].get<double>(), 0.0);
  EXPECT_LE(sj[0]["miou"].get<double>(), 1.0);
  for (int i = 0; i < 3; ++i) {
    auto b = common;
    b.insert(b.end(), {"--shard", std::to_string(i) + "/3", "--out", td.file("s" + std::to_string(i) + ".jsonl")});
    ASSERT_EQ(test::run_cli(b).rc, 0);
  }
  r = test::run_cli({"eval", "merge", td.file("s0.jsonl"), td.file("s1.jsonl"), td.file("s2.jsonl"), "--json",
                     td.file("merged.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(td.file("merged.json")), test::read_file(td.file("seg.json")));
  // the pointing game of eval evidence equals the segmentation run's pointing and energy
  r = test::run_cli({"--threads", "1", "eval", "evidence", kVimDemo, "--data", kList, "--method", "mamba-lrp,random",
                     "--limit", "3", "--json", td.file("ev.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto ev = nlohmann::json::parse(test::read_file(td.file("ev.json")));
  EXPECT_EQ(ev["methods"][0]["pointing_game"], sj[0]["pointing"]);
  EXPECT_EQ(ev["methods"][0]["energy"], sj[0]["energy"]);
  EXPECT_EQ(ev["methods"][1]["mask_fraction"], sj[1]["mask_fraction"]);
}

TEST(EvalVisionCli, ErrorsAreOneLineNamingTheFileOrOption) {
  test::TempDir td;
  const std::string text_model = std::string(SSMX_SOURCE_DIR) + "/models/sentiment-mamba";
  auto check = [&](std::vector<std::string> args, const std::string& what) {
    const auto r = test::run_cli(args);
    EXPECT_NE(r.rc, 0) << what;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  };
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--mode", "sideways"}, "--mode");
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--steps", "0.5,0.2"}, "--steps");
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--shard", "3/2"}, "--shard");
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--resume"}, "--resume");
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--compat", "paper"}, "--compat");
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--method", "magic"}, "--method");
  check({"eval", "perturbation", kVimDemo, "--data", td.file("missing.jsonl")}, "missing.jsonl");
  check({"eval", "segmentation", text_model, "--data", kList}, "sentiment-mamba");
  test::write_file(td.file("bad.jsonl"), "{\"image\": \"" + kVimDemo + "/heldout/000.png\", \"class\": 0}\nnot json\n");
  check({"eval", "perturbation", kVimDemo, "--data", td.file("bad.jsonl")}, "bad.jsonl:2");
  // segmentation needs masks
  test::write_file(td.file("nomask.jsonl"), "{\"image\": \"" + kVimDemo + "/heldout/000.png\", \"class\": 0}\n");
  check({"eval", "segmentation", kVimDemo, "--data", td.file("nomask.jsonl")}, "000.png");
  // merging two kinds
  auto r = test::run_cli({"eval", "perturbation", kVimDemo, "--data", kList, "--limit", "1", "--method", "random",
                          "--steps", "2", "--out", td.file("p.jsonl")});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = test::run_cli({"eval", "segmentation", kVimDemo, "--data", kList, "--limit", "1", "--method", "random", "--out",
                     td.file("g.jsonl")});
  ASSERT_EQ(r.rc, 0) << r.err;
  check({"eval", "merge", td.file("p.jsonl"), td.file("g.jsonl")}, "g.jsonl:1");
  // resuming a segmentation file with the perturbation runner
  check({"eval", "perturbation", kVimDemo, "--data", kList, "--limit", "1", "--method", "random", "--out",
         td.file("g.jsonl"), "--resume"}, "g.jsonl: holds segmentation records");
  test::write_file(td.file("junk.jsonl"), "{\"a\": 1}\n");
  check({"eval", "merge", td.file("junk.jsonl")}, "junk.jsonl:1");
}

TEST(EvalVisionCli, ImagenetLayoutsAndTheSegmentationMatFile) {
  test::TempDir td;
  const std::string vim = test::data_dir() + "/vim/vim-tiny-random.pth";  // 32×32 input, 10 classes
  const std::string inet = test::data_dir() + "/eval/imagenet";
  // folder layout: 5 images of 3 classes; the fixtures are smaller than 32 px, so --transform resize
  auto r = test::run_cli({"--threads", "1", "eval", "perturbation", vim, "--data", inet + "/val", "--method", "random",
                          "--steps", "4", "--transform", "resize", "--out", td.file("f.jsonl"), "--json", td.file("f.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(test::read_file(td.file("f.json")));
  EXPECT_EQ(j[0]["images"], 5);
  // labels are the sorted wnid order: the record of image 0 has label 0, the last one label 2
  const std::string recs = test::read_file(td.file("f.jsonl"));
  EXPECT_EQ(nlohmann::json::parse(recs.substr(0, recs.find('\n')))["label"], 0);
  EXPECT_EQ(nlohmann::json::parse(recs.substr(recs.rfind('\n', recs.size() - 2) + 1))["label"], 2);
  for (double a : j[0]["positive"]["accuracy"].get<std::vector<double>>()) EXPECT_EQ(std::fmod(a, 20.0), 0.0) << a;
  // without --transform resize the DeiT rule (no resize at 32 px) refuses the 8-px crops, naming the file
  r = test::run_cli({"eval", "perturbation", vim, "--data", inet + "/val", "--method", "random"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("ILSVRC2012_val_00000293.JPEG"), std::string::npos) << r.err;
  // flat layout with a labels file
  r = test::run_cli({"--threads", "1", "eval", "perturbation", vim, "--data", inet + "/flat", "--labels",
                     inet + "/flat_labels.txt", "--method", "random", "--steps", "2", "--transform", "resize", "--json",
                     td.file("flat.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(test::read_file(td.file("flat.json")))[0]["images"], 4);
  // gtsegs_ijcv.mat: pixel accuracy of the table = Σ correct / Σ labelled over the records
  r = test::run_cli({"--threads", "1", "eval", "segmentation", vim, "--data", test::data_dir() + "/eval/gtsegs_ijcv.mat",
                     "--method", "mamba-lrp", "--out", td.file("s.jsonl"), "--json", td.file("s.json")});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = nlohmann::json::parse(test::read_file(td.file("s.json")));
  const std::string seg = test::read_file(td.file("s.jsonl"));
  int64_t correct = 0, labelled = 0, n = 0;
  for (size_t p = 0; p < seg.size();) {
    const size_t nl = seg.find('\n', p);
    const auto rec = nlohmann::json::parse(seg.substr(p, nl - p));
    correct += rec["correct"].get<int64_t>(), labelled += rec["labelled"].get<int64_t>(), ++n;
    EXPECT_EQ(rec["labelled"], 32 * 32);  // masks NEAREST-resized to the model's size
    p = nl + 1;
  }
  EXPECT_EQ(j[0]["images"], n);
  EXPECT_GT(n, 0);
  EXPECT_NEAR(j[0]["pixel_accuracy"].get<double>(), double(correct) / double(labelled), 1e-12);
  // a .mat has no labels: the perturbation test refuses it, naming the sample
  r = test::run_cli({"eval", "perturbation", vim, "--data", test::data_dir() + "/eval/gtsegs_ijcv.mat", "--method", "random"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("gtsegs_ijcv.mat[0]"), std::string::npos) << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;
}
