// Gradient-based explanation methods through explain(): each against an independent computation — the gradient
// engine, completeness of integrated gradients, linearity in the target for contrastive explanations, MambaLRP's
// conservation (and gradient × input's lack of it), classification heads read from the checkpoint, and
// Mamba-Attribution against its formula built from explicit matrices.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "attribution/explain.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/class_head.h"
#include "models/mamba.h"
#include "models/mamba_grad.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

const std::string kModel = std::string(SSMX_TEST_DATA) + "/models/mamba-f32-safetensors";
const std::vector<int32_t> kIds = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};

struct Model {
  Checkpoint ck = open_checkpoint(kModel);
  std::unique_ptr<MambaModel> m = MambaModel::load(ck, false);
};

double sum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s;
}

Explanation run(const MambaModel& m, Method me, ExplainOptions o = {}) {
  o.method = me;
  return explain(m, nullptr, kIds, o);
}

}  // namespace

TEST(ExplainGradient, GradInputIsEmbeddingTimesGradient) {
  Model md;
  const Explanation e = run(*md.m, Method::GradInput);
  GradRequest q;
  q.ids = kIds;
  const float* W = md.m->lm_head().p;
  const int64_t Dm = md.m->config().d_model;
  q.seed.assign(W + int64_t(e.target.token) * Dm, W + int64_t(e.target.token + 1) * Dm);
  const GradResultT<double> g = mamba_gradient_f64(*md.m, q);
  for (size_t t = 0; t < kIds.size(); ++t) {
    double r = 0;
    for (int64_t d = 0; d < Dm; ++d) r += g.embeds[t * size_t(Dm) + size_t(d)] * g.grad[t * size_t(Dm) + size_t(d)];
    EXPECT_NEAR(e.relevance[t], r, 1e-4 * std::max(1.0, std::fabs(r))) << t;
  }
  // gradient: the per-token norm of the same gradient
  const Explanation s = run(*md.m, Method::Gradient);
  for (size_t t = 0; t < kIds.size(); ++t) {
    double n = 0;
    for (int64_t d = 0; d < Dm; ++d) n += g.grad[t * size_t(Dm) + size_t(d)] * g.grad[t * size_t(Dm) + size_t(d)];
    EXPECT_NEAR(s.relevance[t], std::sqrt(n), 1e-4 * std::max(1.0, std::sqrt(n)));
  }
}

TEST(ExplainGradient, MambaLrpConservesAndGradInputDoesNot) {
  Model md;
  ExplainOptions o;
  o.zero_biases = true;
  const Explanation lrp = run(*md.m, Method::MambaLrp, o);
  ASSERT_TRUE(lrp.has_conservation);
  EXPECT_LT(std::fabs(lrp.relevance_sum - lrp.target_value) / std::fabs(lrp.target_value), 1e-3);
  EXPECT_NEAR(lrp.relevance_sum, sum(lrp.relevance), 1e-9);
  const Explanation gi = run(*md.m, Method::GradInput, o);
  EXPECT_GT(std::fabs(gi.relevance_sum - gi.target_value) / std::fabs(gi.target_value), 1e-2);
  // With the biases kept, the absorbed amount closes the balance.
  const Explanation lb = run(*md.m, Method::MambaLrp);
  EXPECT_LT(std::fabs(lb.relevance_sum + lb.bias_absorbed - lb.target_value) / std::fabs(lb.target_value), 1e-3);
  // Per-layer relevance sums to f at every depth (zero biases).
  ASSERT_EQ(lrp.layer_relevance.size(), size_t(md.m->config().n_layer + 1));
  for (const auto& row : lrp.layer_relevance)
    EXPECT_LT(std::fabs(sum(row) - lrp.target_value) / std::fabs(lrp.target_value), 1e-3);
  // lrp-ln is a different method from both.
  const Explanation ln = run(*md.m, Method::LrpLn, o);
  EXPECT_NE(ln.relevance, lrp.relevance);
  EXPECT_NE(ln.relevance, gi.relevance);
  EXPECT_EQ(ln.settings["lrp_rules"], nlohmann::json::array({"norm"}));
}

TEST(ExplainGradient, ContrastIsTheDifferenceOfTheTwoTargets) {
  Model md;
  ExplainOptions a, b, c;
  a.target.token = 11;
  b.target.token = 29;
  c.target.kind = Target::Kind::Contrast;
  c.target.token = 11;
  c.target.contrast = 29;
  for (Method me : {Method::GradInput, Method::MambaLrp}) {
    const Explanation ea = run(*md.m, me, a), eb = run(*md.m, me, b), ec = run(*md.m, me, c);
    EXPECT_NEAR(ec.target_value, ea.target_value - eb.target_value, 1e-4);
    for (size_t t = 0; t < kIds.size(); ++t)
      EXPECT_NEAR(ec.relevance[t], ea.relevance[t] - eb.relevance[t], 1e-4 * std::max(1.0f, std::fabs(ec.relevance[t])));
  }
}

TEST(ExplainGradient, IntegratedGradientsIsComplete) {
  Model md;
  ExplainOptions o;
  o.ig_steps = 256;
  o.ig_baseline = "token:0";
  const Explanation t = run(*md.m, Method::IntegratedGradients, o);
  ASSERT_TRUE(t.has_conservation);
  // Σ R = f(x) − f(b) up to the Riemann error (small with 256 midpoint steps on this smooth path)
  EXPECT_LT(std::fabs(t.relevance_sum - t.reference_value), 2e-3 * std::max(1.0, std::fabs(t.reference_value)));
  EXPECT_GT(std::fabs(t.reference_value), 0.1);
  o.ig_baseline = "token:99999";
  EXPECT_THROW(run(*md.m, Method::IntegratedGradients, o), Error);
  o.ig_baseline = "ones";
  EXPECT_THROW(run(*md.m, Method::IntegratedGradients, o), Error);
}

// The zero baseline sits on the model's singular point (all gates off, f(0) = 0, RMSNorms blow up tiny residuals),
// so completeness needs very many steps (docs/methods.md); check the midpoint sum itself against the f64 engine.
TEST(ExplainGradient, IntegratedGradientsZeroBaselineIsTheMidpointSum) {
  Model md;
  ExplainOptions o;
  o.ig_steps = 4;
  const Explanation e = run(*md.m, Method::IntegratedGradients, o);
  const int64_t Dm = md.m->config().d_model, T = int64_t(kIds.size());
  const float* W = md.m->lm_head().p;
  const float* Emb = md.m->embedding().p;
  std::vector<double> want(size_t(T), 0.0);
  for (int k = 0; k < o.ig_steps; ++k) {
    const float a = float((k + 0.5) / o.ig_steps);
    Tensor p({T, Dm});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) p.data[size_t(t * Dm + d)] = a * Emb[int64_t(kIds[size_t(t)]) * Dm + d];
    GradRequest q;
    q.ids = kIds;
    q.embeds = &p;
    q.seed.assign(W + int64_t(e.target.token) * Dm, W + int64_t(e.target.token + 1) * Dm);
    const GradResultT<double> g = mamba_gradient_f64(*md.m, q);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d)
        want[size_t(t)] += double(Emb[int64_t(kIds[size_t(t)]) * Dm + d]) * g.grad[size_t(t * Dm + d)] / o.ig_steps;
  }
  for (int64_t t = 0; t < T; ++t)
    EXPECT_NEAR(e.relevance[size_t(t)], want[size_t(t)], 1e-3 * std::max(1.0, std::fabs(want[size_t(t)]))) << t;
  // f(0) = 0 exactly: every gate SiLU(0) closes the mixers, the residual stream and the final norm stay 0.
  EXPECT_NEAR(e.reference_value, e.target_value, 1e-6 * std::max(1.0, std::fabs(e.target_value)));
}

TEST(ExplainGradient, SmoothGradWithoutNoiseIsGradInput) {
  Model md;
  ExplainOptions o;
  o.sg_noise = 0;
  o.sg_samples = 3;
  const Explanation s = run(*md.m, Method::SmoothGrad, o), g = run(*md.m, Method::GradInput);
  for (size_t t = 0; t < kIds.size(); ++t) EXPECT_NEAR(s.relevance[t], g.relevance[t], 1e-5 * std::max(1.0f, std::fabs(g.relevance[t])));
  o.sg_noise = 0.2;
  o.seed = 3;
  const Explanation n1 = run(*md.m, Method::SmoothGrad, o), n2 = run(*md.m, Method::SmoothGrad, o);
  EXPECT_EQ(n1.relevance, n2.relevance);
  EXPECT_NE(n1.relevance, g.relevance);
}

TEST(ExplainGradient, MambaAttrFollowsItsFormula) {
  Model md;
  ExplainOptions o;
  o.start_layer = 0;
  const Explanation e = run(*md.m, Method::MambaAttr, o);
  const int64_t T = int64_t(kIds.size()), L = md.m->config().n_layer, E = md.m->config().d_inner;
  // ḡ_ℓ from the gradient engine, ᾱ_ℓ from full matrices; ρ = Π (I + (ḡ ⊙ ᾱ)⁺), row T−1.
  GradRequest q;
  q.ids = kIds;
  const int64_t Dm = md.m->config().d_model;
  const float* W = md.m->lm_head().p;
  q.seed.assign(W + int64_t(e.target.token) * Dm, W + int64_t(e.target.token + 1) * Dm);
  q.keep_layer_grads = true;
  const GradResultT<double> g = mamba_gradient_f64(*md.m, q);
  ForwardOptions fo;
  fo.keep_activations = true;
  const auto acts = md.m->forward(kIds, fo).acts;
  std::vector<double> r(size_t(T), 0.0);
  r[size_t(T - 1)] = 1.0;
  for (int64_t l = L - 1; l >= 0; --l) {
    const MixerTrace tr = make_mixer_trace(*md.m, acts, l);
    const Tensor full = hidden_attention_full(tr, AttnKind::S6, 0, E);
    std::vector<double> y(size_t(T), 0.0);
    for (int64_t i = 0; i < T; ++i) {
      double gb = 0;
      for (int64_t c = 0; c < E; ++c) gb += g.grad_y[size_t(l)][size_t(i * E + c)];
      gb /= double(E);
      for (int64_t j = 0; j < T; ++j) {
        double a = 0;
        for (int64_t c = 0; c < E; ++c) a += full.data[size_t(c * T * T + i * T + j)];
        const double m = std::max(0.0, gb * a / double(E)) + (i == j ? 1.0 : 0.0);
        y[size_t(j)] += r[size_t(i)] * m;
      }
    }
    r = y;
  }
  double scale = 0;
  for (double v : r) scale = std::max(scale, std::fabs(v));
  for (int64_t j = 0; j < T; ++j) EXPECT_NEAR(e.relevance[size_t(j)], r[size_t(j)], 1e-4 * scale) << j;
}

TEST(ExplainGradient, ClassHeadFromTheCheckpoint) {
  // The tiny model plus a 3-class head named as transformers' sequence classifiers name it.
  test::TempDir td;
  for (const char* f : {"config.json", "tokenizer.json"}) fs::copy_file(kModel + "/" + f, td.file(f));
  SafetensorsFile src = read_safetensors(kModel + "/model.safetensors");
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : src.tensors) {
    const std::vector<float> v = to_f32(t);
    entries.push_back(make_f32_entry(name, t.shape, v.data()));
  }
  Model base;
  const int64_t Dm = base.m->config().d_model;
  const std::vector<float> w = test::random_normal(3 * Dm, 17, 0.3f), b = {0.5f, -0.25f, 1.0f};
  entries.push_back(make_f32_entry("classifier.weight", {3, Dm}, w.data()));
  entries.push_back(make_f32_entry("classifier.bias", {3}, b.data()));
  write_safetensors(td.file("model.safetensors"), std::move(entries));
  Checkpoint ck = open_checkpoint(td.path());
  auto m = MambaModel::load(ck, false);
  const auto head = load_class_head(ck, Dm, m->config().vocab);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->tensor_name, "classifier.weight");
  EXPECT_EQ(head->n_classes, 3);
  ExplainOptions o;
  o.method = Method::MambaLrp;
  o.target.kind = Target::Kind::Class;
  o.target.cls = 2;
  const Explanation e = explain(*m, &*head, kIds, o);
  EXPECT_EQ(e.target.cls, 2);
  EXPECT_EQ(e.target.position, int64_t(kIds.size()) - 1);
  // f = w_2 · norm_f[last] + b_2
  ForwardOptions fo;
  fo.keep_final_hidden = true;
  const auto fr = m->forward(kIds, fo);
  const float* h = fr.acts.at("norm_f").ptr() + (int64_t(kIds.size()) - 1) * Dm;
  double f = b[2];
  for (int64_t d = 0; d < Dm; ++d) f += double(w[size_t(2 * Dm + d)]) * h[d];
  EXPECT_NEAR(e.target_value, f, 1e-4 * std::max(1.0, std::fabs(f)));
  ASSERT_EQ(e.output_logits.size(), 3u);
  // The class bias is reported as absorbed; the balance still closes.
  EXPECT_LT(std::fabs(e.relevance_sum + e.bias_absorbed - e.target_value), 1e-3 * std::max(1.0, std::fabs(f)));
  EXPECT_EQ(head->parse_class("1"), 1);
  EXPECT_THROW(head->parse_class("7"), Error);
}
