// Token flipping (MoRF/LeRF, activation, pruning): curves against direct forwards of the perturbed inputs, the
// fraction schedule, the areas; the random-vs-MambaLRP anchor on the demo model; shards, merge and resume.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "core/error.h"
#include "eval/flipping.h"
#include "eval/runner.h"
#include "eval/text_data.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/mamba_grad.h"

using namespace ssmx;

namespace {

const std::string kTiny = std::string(SSMX_TEST_DATA) + "/models/mamba-f32-safetensors";
const std::string kDemo = std::string(SSMX_SOURCE_DIR) + "/models/sentiment-mamba";
const std::vector<int32_t> kIds = {3, 1, 4, 1, 5, 9, 2, 6};
// relevance: MoRF order 5, 2, 7, 0, 3, 6, 1, 4 (ties: 0 and 3 both 0.5, earlier first)
const std::vector<float> kRel = {0.5f, -1.0f, 2.0f, 0.5f, -3.0f, 4.0f, 0.0f, 1.0f};
const std::vector<int64_t> kMorf = {5, 2, 7, 0, 3, 6, 1, 4};
const std::vector<int64_t> kLerf = {4, 1, 6, 0, 3, 7, 2, 5};

struct Model {
  Checkpoint ck = open_checkpoint(kTiny);
  std::unique_ptr<MambaModel> m = MambaModel::load(ck, false);
};

// The target logit with the positions in `masked` zeroed, through the gradient engine (an independent forward).
double zero_masked_logit(const MambaModel& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& masked,
                         int32_t target) {
  const int64_t Dm = m.config().d_model, T = int64_t(ids.size());
  Tensor e({T, Dm});
  for (int64_t t = 0; t < T; ++t)
    if (std::find(masked.begin(), masked.end(), t) == masked.end())
      for (int64_t d = 0; d < Dm; ++d) e.data[size_t(t * Dm + d)] = m.embedding().p[int64_t(ids[size_t(t)]) * Dm + d];
  GradRequest rq;
  rq.embeds = &e;
  rq.seed.assign(m.lm_head().p + int64_t(target) * Dm, m.lm_head().p + int64_t(target + 1) * Dm);
  return mamba_gradient(m, rq).f;
}

double logit_of(const MambaModel& m, const std::vector<int32_t>& ids, int32_t target) {
  ForwardOptions fo;
  fo.all_logits = false;
  return m.forward(ids, fo).logits.data[size_t(target)];
}

std::string slurp(const std::string& p) { return test::read_file(p); }

}  // namespace

TEST(Flipping, OrderAndTrapezoid) {
  EXPECT_EQ(relevance_order(kRel, 0, 8, true, false), kMorf);
  EXPECT_EQ(relevance_order(kRel, 0, 8, false, false), kLerf);
  EXPECT_EQ(relevance_order(kRel, 2, 6, true, false), (std::vector<int64_t>{5, 2, 3, 4}));
  EXPECT_EQ(relevance_order(kRel, 0, 8, true, true), (std::vector<int64_t>{5, 4, 2, 1, 7, 0, 3, 6}));
  EXPECT_DOUBLE_EQ(trapezoid({0, 0.5, 1}, {2, 4, 0}), 0.5 * 0.5 * 6 + 0.5 * 0.5 * 4);
}

TEST(Flipping, ForwardFromEmbeddingsEqualsForwardFromIds) {
  Model M;
  const int64_t Dm = M.m->config().d_model;
  Tensor e({int64_t(kIds.size()), Dm});
  for (size_t t = 0; t < kIds.size(); ++t)
    std::copy_n(M.m->embedding().p + int64_t(kIds[t]) * Dm, Dm, e.ptr() + int64_t(t) * Dm);
  ForwardOptions fo;
  const Tensor a = M.m->forward(kIds, fo).logits, b = M.m->forward_embeds(e, fo).logits;
  ASSERT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.data, b.data);
  EXPECT_THROW(M.m->forward_embeds(Tensor({2, Dm + 1}), fo), Error);
}

TEST(Flipping, ZeroMaskCurvesEqualDirectForwards) {
  Model M;
  const MambaModel& m = *M.m;
  const int32_t target = 7;
  FlipOptions o;
  const FlipCurves c = flip_curves(m, kIds, target, kRel, o);
  ASSERT_EQ(c.x.size(), 9u);
  ASSERT_EQ(c.morf_order, kMorf);
  const double full = logit_of(m, kIds, target);
  EXPECT_NEAR(c.full, full, 1e-5 * std::max(1.0, std::fabs(full)));
  double a_morf = 0, a_lerf = 0, auac = 0, a_il = 0;
  std::vector<double> ym, yl, ya, yal;
  for (int k = 0; k <= 8; ++k) {
    EXPECT_DOUBLE_EQ(c.x[size_t(k)], k / 8.0);
    const std::vector<int64_t> mf(kMorf.begin(), kMorf.begin() + k), lf(kLerf.begin(), kLerf.begin() + k);
    const std::vector<int64_t> mr(kMorf.begin() + k, kMorf.end()), lr(kLerf.begin() + k, kLerf.end());
    ym.push_back(zero_masked_logit(m, kIds, mf, target));
    yl.push_back(zero_masked_logit(m, kIds, lf, target));
    ya.push_back(zero_masked_logit(m, kIds, mr, target));   // inserted: the first k of MoRF; masked: the rest
    yal.push_back(zero_masked_logit(m, kIds, lr, target));
    for (auto [got, want] : {std::pair{c.morf[size_t(k)], ym.back()}, {c.lerf[size_t(k)], yl.back()},
                             {c.act[size_t(k)], ya.back()}, {c.act_lerf[size_t(k)], yal.back()}})
      EXPECT_NEAR(got, want, 2e-4 * std::max(1.0, std::fabs(want))) << "k=" << k;
    if (k > 0) {
      a_morf += (ym[size_t(k)] + ym[size_t(k - 1)]) / 16.0;
      a_lerf += (yl[size_t(k)] + yl[size_t(k - 1)]) / 16.0;
      auac += (ya[size_t(k)] + ya[size_t(k - 1)]) / 16.0;
      a_il += (yal[size_t(k)] + yal[size_t(k - 1)]) / 16.0;
    }
  }
  // the endpoints: nothing / everything masked
  EXPECT_EQ(c.morf[0], c.lerf[0]);
  EXPECT_NEAR(c.morf[8], c.lerf[8], 1e-6);
  EXPECT_NEAR(c.act[0], c.morf[8], 1e-6);
  EXPECT_NEAR(c.act[8], c.morf[0], 1e-4);
  EXPECT_NEAR(c.a_morf, a_morf, 2e-4);
  EXPECT_NEAR(c.a_lerf, a_lerf, 2e-4);
  EXPECT_NEAR(c.delta_af, a_lerf - a_morf, 4e-4);
  EXPECT_NEAR(c.auac, auac, 2e-4);
  EXPECT_NEAR(c.delta_ai, auac - a_il, 4e-4);
  EXPECT_GT(std::fabs(c.delta_af), 1e-3);  // the curves differ, so the test can tell orders apart
}

TEST(Flipping, TokenAndRemoveMasksAndPruning) {
  Model M;
  const MambaModel& m = *M.m;
  const int32_t target = 2;
  FlipOptions o;
  o.mask = MaskMode::Token;
  o.mask_token = 0;
  o.classes = {2, 5};
  FlipCurves c = flip_curves(m, kIds, target, kRel, o);
  auto probs = [&](const std::vector<int32_t>& ids) {
    ForwardOptions fo;
    fo.all_logits = false;
    const auto lg = m.forward(ids, fo).logits.data;
    const double a = lg[2], b = lg[5], mx = std::max(a, b);
    const double ea = std::exp(a - mx), eb = std::exp(b - mx);
    return std::pair{ea / (ea + eb), eb / (ea + eb)};
  };
  const auto p0 = probs(kIds);
  for (int k = 0; k <= 8; ++k) {
    std::vector<int32_t> x = kIds, xl = kIds;
    for (int j = 0; j < k; ++j) x[size_t(kMorf[size_t(j)])] = 0, xl[size_t(kLerf[size_t(j)])] = 0;
    EXPECT_NEAR(c.morf[size_t(k)], logit_of(m, x, target), 1e-5);
    EXPECT_NEAR(c.lerf[size_t(k)], logit_of(m, xl, target), 1e-5);
    const auto p = probs(xl);
    const double mse = ((p.first - p0.first) * (p.first - p0.first) + (p.second - p0.second) * (p.second - p0.second)) / 2;
    EXPECT_NEAR(c.prune_mse[size_t(k)], mse, 1e-7);
  }
  EXPECT_EQ(c.prune_mse[0], 0.0);
  EXPECT_GT(c.prune_mse[8], 1e-6);

  // removal with steps = 3 (counts round(i·8/3) = 0, 3, 5, 8) and a kept prefix/suffix of one token each
  o = FlipOptions{};
  o.mask = MaskMode::Remove;
  o.steps = 3;
  o.skip_first = 1, o.skip_last = 1;
  c = flip_curves(m, kIds, target, kRel, o);
  const std::vector<int64_t> order = {5, 2, 3, 6, 1, 4};  // candidates 1..6
  EXPECT_EQ(c.morf_order, order);
  const std::vector<int> counts = {0, 2, 4, 6};
  ASSERT_EQ(c.x.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(c.x[i], double(i) / 3.0);
    std::vector<int32_t> kept;
    for (int64_t t = 0; t < 8; ++t)
      if (std::find(order.begin(), order.begin() + counts[i], t) == order.begin() + counts[i]) kept.push_back(kIds[size_t(t)]);
    EXPECT_NEAR(c.morf[i], logit_of(m, kept, target), 1e-5) << i;
  }
  // errors
  o = FlipOptions{};
  o.skip_first = 4, o.skip_last = 4;
  EXPECT_THROW(flip_curves(m, kIds, target, kRel, o), Error);
  EXPECT_THROW(flip_curves(m, kIds, target, {1.0f}, FlipOptions{}), Error);
  EXPECT_THROW(parse_mask("token:x", o), Error);
  EXPECT_THROW(parse_mask("blank", o), Error);
  parse_mask("token:17", o);
  EXPECT_EQ(o.mask_token, 17);
  EXPECT_EQ(mask_name(o), "token:17");
}

namespace {

struct Demo {
  Demo() { set_num_threads(1); }  // the demo model is tiny: one thread avoids OpenMP waits on a loaded machine
  Checkpoint ck = open_checkpoint(kDemo);
  std::unique_ptr<MambaModel> m = MambaModel::load(ck, false);
  Tokenizer tok = Tokenizer::from_file(kDemo + "/tokenizer.json");
  std::vector<FlipExample> data(int64_t n) {
    auto recs = read_text_data(kDemo + "/heldout.jsonl", TextFormat::Jsonl);
    recs.resize(size_t(n));
    std::vector<int32_t> classes;
    return prepare_examples(tok, recs, "heldout", "", {}, classes);
  }
};

}  // namespace

TEST(Flipping, RandomNearZeroMambaLrpClearlyPositiveOnTheDemoModel) {
  Demo d;
  const auto data = d.data(60);
  RunSpec spec;
  spec.methods = {Method::Random, Method::MambaLrp, Method::GradInput};
  const auto s = summarize(run_flipping(*d.m, data, spec));
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].method, "random");
  EXPECT_EQ(s[0].examples, 60);
  std::printf("dAF random %.4f mamba-lrp %.4f grad-input %.4f\n", s[0].delta_af, s[1].delta_af, s[2].delta_af);
  // measured: random 0.179, grad-input 1.973, mamba-lrp 13.913
  EXPECT_LT(std::fabs(s[0].delta_af), 1.0);
  EXPECT_GT(s[1].delta_af, 10.0);
  EXPECT_GT(s[2].delta_af, s[0].delta_af + 1.0);
  EXPECT_GT(s[1].auac, s[0].auac + 5.0);
  EXPECT_LT(s[1].au_mse, 0.5 * s[0].au_mse);
  // deleting the least relevant first is the mirror of inserting the most relevant first (same masks), so with
  // one token per step AUAC equals A_LeRF
  EXPECT_NEAR(s[1].auac, s[1].a_lerf, 1e-9);
}

TEST(Flipping, ShardsMergeToTheSingleRunAndResumeAfterTruncation) {
  Demo d;
  const auto data = d.data(7);
  test::TempDir td;
  RunSpec spec;
  spec.methods = {Method::Random, Method::GradInput};
  spec.out = td.file("all.jsonl");
  run_flipping(*d.m, data, spec);
  std::vector<std::string> shards;
  for (int i = 0; i < 3; ++i) {
    RunSpec sp = spec;
    sp.shard = i, sp.shards = 3;
    sp.out = td.file("s" + std::to_string(i) + ".jsonl");
    const auto r = run_flipping(*d.m, data, sp);
    EXPECT_EQ(r.size(), size_t(2 * (i == 0 ? 3 : 2)));
    shards.push_back(sp.out);
  }
  const auto single = summarize(read_records({spec.out}));
  const auto merged = summarize(read_records(shards));
  EXPECT_EQ(summary_json(single).dump(), summary_json(merged).dump());
  EXPECT_EQ(summary_csv(single), summary_csv(merged));
  EXPECT_EQ(single[0].examples, 7);
  // duplicates that agree are fine; the merge of everything twice is the same
  shards.push_back(spec.out);
  EXPECT_EQ(summary_json(summarize(read_records(shards))).dump(), summary_json(single).dump());

  // resume: keep 5 complete lines and half of the 6th
  const std::string full = slurp(spec.out);
  size_t cut = 0;
  for (int i = 0; i < 5; ++i) cut = full.find('\n', cut) + 1;
  const size_t half = cut + (full.find('\n', cut) - cut) / 2;
  test::write_file(td.file("part.jsonl"), full.substr(0, half));
  EXPECT_EQ(completed_records(td.file("part.jsonl")).size(), 5u);
  EXPECT_EQ(slurp(td.file("part.jsonl")), full.substr(0, cut));  // the partial line was cut off
  RunSpec rs = spec;
  rs.out = td.file("part.jsonl");
  rs.resume = true;
  const auto again = run_flipping(*d.m, data, rs);
  EXPECT_EQ(again.size(), 14u - 5u);
  EXPECT_EQ(slurp(rs.out), full);
  // resuming a complete file runs nothing
  EXPECT_TRUE(run_flipping(*d.m, data, rs).empty());
  EXPECT_EQ(slurp(rs.out), full);
  // a broken line that is not the last one is an error
  test::write_file(td.file("bad.jsonl"), "{\"x\": 1}\n" + full);
  EXPECT_THROW(completed_records(td.file("bad.jsonl")), Error);
  EXPECT_THROW(read_records({td.file("bad.jsonl")}), Error);
}

TEST(FlippingCli, ShardMergeResumeAndErrors) {
  test::TempDir td;
  const std::vector<std::string> common = {"--threads", "1", "eval", "flipping", kDemo, "--data", kDemo + "/heldout.jsonl", "--method",
                                           "random,grad-input", "--limit", "5", "--skip-first", "2", "--skip-last", "2",
                                           "--steps", "4"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return test::run_cli(a);
  };
  auto r = with({"--out", td.file("all.jsonl")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("| grad-input |"), std::string::npos) << r.out;
  for (int i = 0; i < 2; ++i) {
    r = with({"--shard", std::to_string(i) + "/2", "--out", td.file("s" + std::to_string(i) + ".jsonl")});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  r = test::run_cli({"eval", "merge", td.file("all.jsonl"), "--csv", td.file("all.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = test::run_cli({"eval", "merge", td.file("s0.jsonl"), td.file("s1.jsonl"), "--csv", td.file("sh.csv"), "--json",
                     td.file("sh.json"), "--markdown", td.file("sh.md"), "--plot", td.file("plots")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(td.file("all.csv")), test::read_file(td.file("sh.csv")));
  EXPECT_NE(test::read_file(td.file("sh.md")).find("| random |"), std::string::npos);
  for (const char* f : {"flipping_morf.png", "flipping_lerf.svg", "flipping_activation.png", "flipping_pruning.svg"})
    EXPECT_TRUE(std::filesystem::file_size(td.file(std::string("plots/") + f)) > 100) << f;
  // resume after a cut
  const std::string full = test::read_file(td.file("all.jsonl"));
  test::write_file(td.file("cut.jsonl"), full.substr(0, full.size() / 2));
  r = with({"--out", td.file("cut.jsonl"), "--resume"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(test::read_file(td.file("cut.jsonl")), full);
  // bad input: exit code 2 and a message naming the problem
  r = with({"--mask", "blank"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--mask"), std::string::npos) << r.err;
  r = with({"--shard", "2/2"});
  EXPECT_EQ(r.rc, 2);
  r = test::run_cli({"eval", "flipping", kDemo, "--data", test::data_dir() + "/eval/sst2_dev.tsv", "--labels", "0: bad"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("sst2_dev.tsv:2: label '1' is not in the label map"), std::string::npos) << r.err;
}
