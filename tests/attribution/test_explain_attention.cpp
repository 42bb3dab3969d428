// Attention-based explanation methods against explicit matrix computations in double: raw attention, true matrix
// rollout, the published class-row rollout (its matrices built literally as PyTorch broadcasting builds them), word
// grouping and the report renderers.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/explain.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/mamba.h"
#include "render/report.h"

using namespace ssmx;

namespace {

const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/mamba-f32-safetensors";
const std::vector<int32_t> kIds = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};

struct Fixture {
  Checkpoint ck = open_checkpoint(kModel);
  std::unique_ptr<MambaModel> m = MambaModel::load(ck, false);
  std::map<std::string, Tensor> acts;
  Fixture() {
    ForwardOptions fo;
    fo.keep_activations = true;
    acts = m->forward(kIds, fo).acts;
  }
  // Channel mean of the full matrices of a layer, in double, (T, T).
  std::vector<double> mean_map(int64_t layer, AttnKind kind) const {
    const MixerTrace tr = make_mixer_trace(*m, acts, layer);
    const Tensor full = hidden_attention_full(tr, kind, 0, tr.E);
    const int64_t T = tr.T;
    std::vector<double> mm(size_t(T * T), 0.0);
    for (int64_t e = 0; e < tr.E; ++e)
      for (int64_t k = 0; k < T * T; ++k) mm[size_t(k)] += full.data[size_t(e * T * T + k)] / double(tr.E);
    return mm;
  }
  int64_t layers() const { return m->config().n_layer; }
};

// r ← r · M for a dense (T, T) matrix in double.
std::vector<double> vecmat(const std::vector<double>& r, const std::vector<double>& M, int64_t T) {
  std::vector<double> y(size_t(T), 0.0);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) y[size_t(j)] += r[size_t(i)] * M[size_t(i * T + j)];
  return y;
}

double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0, s = 1e-30;
  for (size_t k = 0; k < b.size(); ++k) s = std::max(s, std::fabs(b[k]));
  for (size_t k = 0; k < b.size(); ++k) m = std::max(m, std::fabs(double(a[k]) - b[k]));
  return m / s;
}

}  // namespace

TEST(ExplainAttention, RawAttentionIsTheLayerMeanOfTheChannelMeanRow) {
  Fixture f;
  const int64_t T = int64_t(kIds.size());
  for (int64_t start : {0, 1}) {
    ExplainOptions o;
    o.method = Method::RawAttention;
    o.start_layer = start;
    const Explanation ex = explain(*f.m, nullptr, kIds, o);
    ASSERT_EQ(int64_t(ex.relevance.size()), T);
    std::vector<double> want(size_t(T), 0.0);
    for (int64_t l = start; l < f.layers(); ++l) {
      const auto mm = f.mean_map(l, AttnKind::S6);
      for (int64_t j = 0; j < T; ++j) want[size_t(j)] += mm[size_t((T - 1) * T + j)] / double(f.layers() - start);
    }
    EXPECT_LT(max_rel(ex.relevance, want), 1e-5) << "start " << start;
    EXPECT_EQ(int64_t(ex.layer_relevance.size()), f.layers() - start);
    EXPECT_FALSE(ex.has_conservation);
  }
}

TEST(ExplainAttention, RolloutIsTheRowOfTheProductOfNormalisedMatrices) {
  Fixture f;
  const int64_t T = int64_t(kIds.size());
  for (int64_t pos : {int64_t(-1), int64_t(6)}) {
    ExplainOptions o;
    o.method = Method::Rollout;
    o.target.position = pos;
    o.target.token = 7;
    o.keep_maps = true;
    const Explanation ex = explain(*f.m, nullptr, kIds, o);
    const int64_t p = pos < 0 ? T - 1 : pos;
    // R = M_{L-1} ... M_0 with M = rownorm(I + mean α); the explanation is row p of R.
    std::vector<double> R(size_t(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i) R[size_t(i * T + i)] = 1.0;
    for (int64_t l = 0; l < f.layers(); ++l) {
      auto M = f.mean_map(l, AttnKind::S6);
      for (int64_t i = 0; i < T; ++i) {
        M[size_t(i * T + i)] += 1.0;
        double s = 0;
        for (int64_t j = 0; j < T; ++j) s += M[size_t(i * T + j)];
        for (int64_t j = 0; j < T; ++j) M[size_t(i * T + j)] /= s;
      }
      // R ← M · R
      std::vector<double> N(size_t(T * T), 0.0);
      for (int64_t i = 0; i < T; ++i)
        for (int64_t k = 0; k < T; ++k)
          for (int64_t j = 0; j < T; ++j) N[size_t(i * T + j)] += M[size_t(i * T + k)] * R[size_t(k * T + j)];
      R = N;
    }
    std::vector<double> want(R.begin() + p * T, R.begin() + (p + 1) * T);
    EXPECT_LT(max_rel(ex.relevance, want), 1e-5) << "position " << pos;
    EXPECT_EQ(ex.target.position, p);
    EXPECT_EQ(ex.target.token, 7);
    EXPECT_EQ(int64_t(ex.maps.size()), f.layers());
    // Causal: nothing after the explained position.
    for (int64_t j = p + 1; j < T; ++j) EXPECT_EQ(ex.relevance[size_t(j)], 0.0f);
  }
}

TEST(ExplainAttention, OfficialRolloutEqualsBroadcastMatrices) {
  // The published code rolls out class-token rows v_ℓ that PyTorch broadcasting turns into matrices whose every
  // row r is v_ℓ + e_r, each normalised by its sum. Build exactly those matrices and multiply.
  Fixture f;
  const int64_t T = int64_t(kIds.size()), p = T - 1;
  ExplainOptions o;
  o.method = Method::Rollout;
  o.compat = "official";
  const Explanation ex = explain(*f.m, nullptr, kIds, o);
  std::vector<double> r(size_t(T), 0.0);
  r[size_t(p)] = 1.0;
  for (int64_t l = f.layers() - 1; l >= 0; --l) {
    const MixerTrace tr = make_mixer_trace(*f.m, f.acts, l);
    const Tensor rows = hidden_attention_row(tr, AttnKind::S6, p, 0, tr.E, AttnCompat::HiddenAttnRow);
    std::vector<double> v(size_t(T), 0.0);
    for (int64_t e = 0; e < tr.E; ++e)
      for (int64_t j = 0; j < T; ++j) v[size_t(j)] += rows.data[size_t(e * T + j)] / double(tr.E);
    std::vector<double> M(size_t(T * T));
    for (int64_t i = 0; i < T; ++i) {
      double s = 0;
      for (int64_t j = 0; j < T; ++j) s += M[size_t(i * T + j)] = v[size_t(j)] + (i == j ? 1.0 : 0.0);
      for (int64_t j = 0; j < T; ++j) M[size_t(i * T + j)] /= s;
    }
    r = vecmat(r, M, T);
  }
  for (double& x : r) x = std::max(x, 0.0);
  r[size_t(p)] = 0.0;
  EXPECT_LT(max_rel(ex.relevance, r), 1e-5);
}

TEST(ExplainAttention, OptionsAreChecked) {
  Fixture f;
  ExplainOptions o;
  o.method = Method::RawAttention;
  o.start_layer = 7;
  EXPECT_THROW(explain(*f.m, nullptr, kIds, o), Error);
  o.start_layer = 0;
  o.compat = "paper";
  EXPECT_THROW(explain(*f.m, nullptr, kIds, o), Error);
  o.compat = "none";
  o.target.position = 40;
  EXPECT_THROW(explain(*f.m, nullptr, kIds, o), Error);
  o.target.position = -1;
  o.target.token = 100000;
  EXPECT_THROW(explain(*f.m, nullptr, kIds, o), Error);
  o.target.token = -1;
  o.target.kind = Target::Kind::Class;
  EXPECT_THROW(explain(*f.m, nullptr, kIds, o), Error);  // no class head
  EXPECT_THROW(parse_method("lrp"), Error);
  EXPECT_EQ(parse_method("mamba-lrp"), Method::MambaLrp);
  for (Method m : all_methods()) EXPECT_EQ(parse_method(method_name(m)), m);
}

TEST(ExplainAttention, RandomIsSeededAndPredictedTargetIsTheArgmax) {
  Fixture f;
  ExplainOptions o;
  o.method = Method::Random;
  o.seed = 11;
  const Explanation a = explain(*f.m, nullptr, kIds, o), b = explain(*f.m, nullptr, kIds, o);
  EXPECT_EQ(a.relevance, b.relevance);
  o.seed = 12;
  EXPECT_NE(explain(*f.m, nullptr, kIds, o).relevance, a.relevance);
  // The default target is the arg-max of the next-token logits at the last position, and f is its logit.
  ForwardOptions fo;
  fo.all_logits = false;
  const Tensor lg = f.m->forward(kIds, fo).logits;
  int64_t best = 0;
  for (int64_t v = 1; v < lg.dim(1); ++v)
    if (lg.data[size_t(v)] > lg.data[size_t(best)]) best = v;
  EXPECT_EQ(a.target.token, best);
  EXPECT_NEAR(a.target_value, lg.data[size_t(best)], 1e-4 * std::max(1.0f, std::fabs(lg.data[size_t(best)])));
  ASSERT_EQ(a.output_logits.size(), lg.data.size());
  EXPECT_LT(test::parity_error(a.output_logits.data(), lg.data.data(), lg.numel()), 1e-5);
}

TEST(ExplainWords, SubwordsJoinTheWordBefore) {
  const auto s = word_spans({"the", " mov", "ie", " was", "n't", " good", "."});
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0], (std::pair<int64_t, int64_t>{0, 1}));
  EXPECT_EQ(s[1], (std::pair<int64_t, int64_t>{1, 3}));
  EXPECT_EQ(s[2], (std::pair<int64_t, int64_t>{3, 5}));
  EXPECT_EQ(s[3], (std::pair<int64_t, int64_t>{5, 7}));
  EXPECT_TRUE(word_spans({}).empty());
}

TEST(ExplainReport, JsonHtmlAndTerminalCarryTheNumbers) {
  Report r;
  r.model = "m";
  r.input_text = "a <b> c";
  r.tokens = {{1, "a", 0, 1}, {2, " <b", 1, 4}, {3, ">", 4, 5}, {4, " c", 5, 7}};
  r.target_label = "' c' (id 4)";
  r.prediction_label = "' c' (id 4)";
  r.prediction_prob = r.target_prob = 0.5;
  r.words = true;
  Explanation e;
  e.method = "mamba-lrp";
  e.relevance = {1.0f, -2.0f, 0.5f, 0.25f};
  e.target.position = 3;
  e.target.token = 4;
  e.target_value = 0.5;
  e.has_conservation = true;
  e.relevance_sum = -0.25;
  e.reference_value = 0.5;
  e.bias_absorbed = 0.75;
  e.settings["lrp_rules"] = {"silu"};
  r.explanations.push_back(e);
  const nlohmann::json j = report_json(r);
  EXPECT_EQ(j["tokens"].size(), 4u);
  EXPECT_EQ(j["ids"][2], 3);
  EXPECT_EQ(j["offsets"][1][1], 4);
  EXPECT_EQ(j["target"]["token"], 4);
  EXPECT_EQ(j["target"]["position"], 3);
  EXPECT_DOUBLE_EQ(j["logit"].get<double>(), 0.5);
  const auto& m = j["explanations"][0];
  EXPECT_EQ(m["relevance"].size(), 4u);
  EXPECT_DOUBLE_EQ(m["words"][1]["relevance"].get<double>(), -1.5);  // " <b" + ">"
  EXPECT_EQ(m["words"][1]["tokens"][1], 3);
  EXPECT_DOUBLE_EQ(m["conservation"]["gap"].get<double>(), 0.0);
  const std::string html = render_html(r);
  EXPECT_NE(html.find("<!DOCTYPE html>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;"), std::string::npos);     // escaped
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);          // self-contained: nothing fetched
  EXPECT_NE(html.find("title=\"R = -1.5"), std::string::npos);
  const std::string plain = render_terminal(r, false);
  EXPECT_NE(plain.find("-1.5"), std::string::npos);
  EXPECT_EQ(plain.find("\x1b["), std::string::npos);
  EXPECT_NE(render_terminal(r, true).find("\x1b[48;2;"), std::string::npos);
}
