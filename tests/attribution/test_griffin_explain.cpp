// explain() on RecurrentGemma (attribution/griffin_explain.cpp): the attention methods against the implicit
// attention library, every gradient method through explain_core, LRP conservation, and the refused modes.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "attribution/explain.h"
#include "attribution/griffin_attention.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/griffin.h"

using namespace ssmx;

namespace {

const std::vector<int32_t> kIds = {3, 17, 101, 5, 44, 250, 7, 9, 300, 12, 61};

struct Fx {
  Checkpoint ck;
  std::unique_ptr<GriffinModel> m;
};
std::unique_ptr<Fx> fixture() {
  auto f = std::make_unique<Fx>();
  f->ck = open_checkpoint(test::data_dir() + "/models/griffin-f32");
  f->m = GriffinModel::load(f->ck);
  return f;
}

ExplainOptions opts(Method m) {
  ExplainOptions o;
  o.method = m;
  o.target.token = 42;
  return o;
}

}  // namespace

// raw-attention = mean over layers of each layer's channel-mean row of the last token: recurrent layers from
// griffin_attention_row (S6: no gate), the local attention layer from its softmax weights (mean over heads).
TEST(GriffinExplain, RawAttentionIsTheMeanOfTheLibraryRows) {
  auto f = fixture();
  const GriffinConfig& c = f->m->config();
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = f->m->forward(kIds, fo);
  const int64_t T = 11, pos = 10;
  std::vector<double> want(size_t(T), 0.0);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const GriffinLayer& ly = f->m->layer(l);
    if (ly.recurrent) {
      GriffinAttnOptions go;
      go.gate = false;
      const Tensor r = griffin_attention_row(griffin_trace(fr.acts, l, ly.conv_w.p, ly.conv_b.p, c.conv_width), go, pos, 0, c.lru_width);
      for (int64_t ch = 0; ch < c.lru_width; ++ch)
        for (int64_t j = 0; j < T; ++j) want[size_t(j)] += r.ptr()[ch * T + j] / double(c.lru_width) / double(c.n_layer);
    } else {
      const Tensor& q = fr.acts.at("layers." + std::to_string(l) + ".q");
      const Tensor& k = fr.acts.at("layers." + std::to_string(l) + ".k");
      for (int64_t h = 0; h < c.heads; ++h) {
        std::vector<double> s;
        double den = 0;
        for (int64_t j = pos - c.window; j <= pos; ++j) {
          double d = 0;
          for (int64_t e = 0; e < c.head_dim; ++e) d += double(q.ptr()[(pos * c.heads + h) * c.head_dim + e]) * k.ptr()[j * c.head_dim + e];
          s.push_back(std::exp(d / std::sqrt(double(c.head_dim))));
          den += s.back();
        }
        for (int64_t j = pos - c.window; j <= pos; ++j)
          want[size_t(j)] += s[size_t(j - pos + c.window)] / den / double(c.heads) / double(c.n_layer);
      }
    }
  }
  const Explanation ex = explain(*f->m, nullptr, kIds, opts(Method::RawAttention));
  ASSERT_EQ(ex.relevance.size(), size_t(T));
  ASSERT_EQ(ex.layer_relevance.size(), 4u);
  for (int64_t j = 0; j < T; ++j) EXPECT_NEAR(ex.relevance[size_t(j)], want[size_t(j)], 1e-5) << j;
  // The window: the attention layer's row is zero before pos − window.
  EXPECT_EQ(ex.layer_relevance[2][0], 0.0f);
  EXPECT_GT(ex.layer_relevance[2][size_t(pos - 1)], 0.0f);
}

TEST(GriffinExplain, EveryMethodRuns) {
  auto f = fixture();
  for (Method m : all_methods()) {
    ExplainOptions o = opts(m);
    o.ig_steps = 8, o.sg_samples = 4;
    const Explanation ex = explain(*f->m, nullptr, kIds, o);
    ASSERT_EQ(ex.relevance.size(), 11u) << method_name(m);
    for (float v : ex.relevance) ASSERT_TRUE(std::isfinite(v)) << method_name(m);
    EXPECT_EQ(ex.target.token, 42);
  }
  // Integrated gradients: completeness Σ R ≈ f(x) − f(b) for a token baseline (a path that avoids 0, where every
  // RMSNorm is singular; the zero baseline converges slowly). The baseline is the *scaled* row of token 0.
  ExplainOptions ig = opts(Method::IntegratedGradients);
  ig.ig_steps = 64;
  ig.ig_baseline = "token:0";
  const Explanation e = explain(*f->m, nullptr, kIds, ig);
  EXPECT_NEAR(e.relevance_sum, e.reference_value, 1e-3 * std::fabs(e.reference_value));
  std::printf("[griffin ig] sum %.6g vs f(x)-f(b) %.6g\n", e.relevance_sum, e.reference_value);
}

// With zero biases and every rule, relevance is conserved: Σ_t R_t = f, at every layer's residual stream.
TEST(GriffinExplain, LrpConservesWithZeroBiases) {
  auto f = fixture();
  ExplainOptions o = opts(Method::MambaLrp);
  o.zero_biases = true;
  const Explanation ex = explain(*f->m, nullptr, kIds, o);
  ASSERT_TRUE(ex.has_conservation);
  std::printf("[griffin lrp] sum %.8g f %.8g\n", ex.relevance_sum, ex.reference_value);
  EXPECT_GT(std::fabs(ex.reference_value), 0.1);
  EXPECT_NEAR(ex.relevance_sum, ex.reference_value, 1e-4 * std::fabs(ex.reference_value));
  for (size_t l = 0; l + 1 < ex.layer_relevance.size(); ++l) {
    double s = 0;
    for (float v : ex.layer_relevance[l]) s += v;
    EXPECT_NEAR(s, ex.reference_value, 1e-4 * std::fabs(ex.reference_value)) << "layer " << l;
  }
  // With biases: Σ R + bias_absorbed = f.
  ExplainOptions ob = opts(Method::MambaLrp);
  const Explanation eb = explain(*f->m, nullptr, kIds, ob);
  EXPECT_NEAR(eb.relevance_sum + eb.bias_absorbed, eb.reference_value, 1e-4 * std::fabs(eb.reference_value));
  // The plain gradient is not conservative here.
  ExplainOptions og = opts(Method::GradInput);
  og.zero_biases = true;
  const Explanation eg = explain(*f->m, nullptr, kIds, og);
  EXPECT_GT(std::fabs(eg.relevance_sum - eg.reference_value), 1e-3 * std::fabs(eg.reference_value));
}

TEST(GriffinExplain, RefusedModes) {
  auto f = fixture();
  ExplainOptions o = opts(Method::RawAttention);
  o.compat = "official";
  EXPECT_THROW(explain(*f->m, nullptr, kIds, o), Error);
  ExplainOptions e = opts(Method::MambaLrp);
  e.rules.linear = LrpRules::Linear::Epsilon;
  EXPECT_THROW(explain(*f->m, nullptr, kIds, e), Error);
}

// The explained target is the logit before the soft cap (linear in the head's input), but the reported output logits
// (and so the probabilities a report prints) are the model's own, capped ones — through both target resolutions.
TEST(GriffinExplain, OutputLogitsAreTheCappedModelLogits) {
  auto f = fixture();
  ForwardOptions fo;
  fo.all_logits = false;
  fo.keep_final_hidden = true;
  const ForwardResult fr = f->m->forward(kIds, fo);
  const float cap = f->m->config().soft_cap;
  ASSERT_GT(cap, 0.0f);
  const int64_t Dm = f->m->d_model(), T = int64_t(kIds.size());
  double raw42 = 0;  // W[42] · norm_f[T-1]
  for (int64_t k = 0; k < Dm; ++k)
    raw42 += double(f->m->lm_head().p[42 * Dm + k]) * fr.acts.at("norm_f").ptr()[(T - 1) * Dm + k];
  ASSERT_GT(std::fabs(raw42 - fr.logits.data[42]), 1e-3) << "the fixture's cap must matter";
  for (Method m : {Method::GradInput, Method::RawAttention}) {
    const Explanation ex = explain(*f->m, nullptr, kIds, opts(m));
    ASSERT_EQ(ex.output_logits.size(), fr.logits.data.size()) << method_name(m);
    EXPECT_LT(test::parity_error(ex.output_logits.data(), fr.logits.data.data(), fr.logits.numel()), 1e-6)
        << method_name(m);
    EXPECT_NEAR(ex.target_value, raw42, 1e-4 * std::max(1.0, std::fabs(raw42))) << method_name(m);
    EXPECT_EQ(ex.settings.value("target_value", std::string()), "logit before the soft cap") << method_name(m);
  }
}
