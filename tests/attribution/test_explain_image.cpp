// explain_image on the Vim fixture: gradient methods against the gradient engine used directly, MambaLRP's
// conservation with the head bias, the attention methods against the bidirectional hidden attention built from the
// forward pass, the published compat rows, and the target rules.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "attribution/bidirectional.h"
#include "attribution/explain.h"
#include "attribution/vim_trace.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/mamba_grad.h"
#include "models/vim.h"

using namespace ssmx;

namespace {

struct VimFixture {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/vim/vim-tiny-random.safetensors");
  std::unique_ptr<VimModel> m = VimModel::load(ck);
  Tensor pixels;
  VimFixture() {
    const SafetensorsFile f = read_safetensors(test::data_dir() + "/vim/reference.safetensors");
    for (const auto& e : f.tensors)
      if (e.first == "pixels") pixels = Tensor(e.second.shape, to_f32(e.second));
  }
};
const VimFixture& fx() {
  static VimFixture f;
  return f;
}

Explanation run(Method me, ExplainOptions o = {}) {
  o.method = me;
  o.target.kind = Target::Kind::Class;
  return explain_image(*fx().m, fx().pixels, o);
}

}  // namespace

TEST(ExplainImage, TargetIsThePredictedClassAndGradInputIsTokensTimesGradient) {
  const VimFixture& f = fx();
  const VimModel& m = *f.m;
  const VimForwardResult fr = m.forward(f.pixels);
  const int64_t best = int64_t(std::max_element(fr.logits.data.begin(), fr.logits.data.end()) - fr.logits.data.begin());
  const Explanation e = run(Method::GradInput);
  EXPECT_EQ(e.target.cls, best);
  EXPECT_NEAR(e.target_value, fr.logits.data[size_t(best)], 1e-5);
  ASSERT_EQ(int64_t(e.relevance.size()), m.config().n_tokens);
  // independently: the gradient engine in double on the stack, tokens · ∂f/∂tokens
  const Tensor tok = m.embed(f.pixels);
  GradRequest q;
  q.embeds = &tok;
  q.position = m.config().cls_index;
  const int64_t D = m.config().d_model;
  q.seed.assign(m.head_w().p + best * D, m.head_w().p + (best + 1) * D);
  const GradResultT<double> g = stack_gradient_f64(grad_stack(m), q);
  for (int64_t t = 0; t < m.config().n_tokens; ++t) {
    double r = 0;
    for (int64_t d = 0; d < D; ++d) r += g.embeds[size_t(t * D + d)] * g.grad[size_t(t * D + d)];
    EXPECT_NEAR(e.relevance[size_t(t)], r, 1e-4 * std::max(1.0, std::fabs(r))) << t;
  }
  ExplainOptions o;
  o.target.cls = 3;
  EXPECT_EQ(run(Method::GradInput, o).target.cls, 3);
  o.target.cls = 10;
  EXPECT_THROW(run(Method::GradInput, o), Error);
  ExplainOptions tokt;
  tokt.method = Method::GradInput;
  tokt.target.token = 5;
  EXPECT_THROW(explain_image(m, f.pixels, tokt), Error);
}

TEST(ExplainImage, MambaLrpConservesWithTheHeadBias) {
  const Explanation e = run(Method::MambaLrp);
  ASSERT_TRUE(e.has_conservation);
  EXPECT_LT(std::fabs(e.relevance_sum + e.bias_absorbed - e.target_value), 2e-5 * std::max(1.0, std::fabs(e.target_value)));
  ExplainOptions zb;
  zb.zero_biases = true;
  const Explanation z = run(Method::MambaLrp, zb);
  EXPECT_LT(std::fabs(z.relevance_sum - z.target_value), 2e-5 * std::max(1.0, std::fabs(z.target_value)));
  const Explanation gi = run(Method::GradInput, zb);
  EXPECT_GT(std::fabs(gi.relevance_sum - gi.target_value), 1e-2 * std::fabs(gi.target_value));  // negative control
  EXPECT_EQ(patch_map(*fx().m, e.relevance).size(), 16u);
}

TEST(ExplainImage, AttentionMethodsUseTheBidirectionalClassRow) {
  const VimFixture& f = fx();
  const VimModel& m = *f.m;
  const VimConfig& c = m.config();
  const int64_t T = c.n_tokens, E = c.d_inner, cls = c.cls_index;
  ExplainOptions o;
  o.start_layer = 0;
  const Explanation raw = run(Method::RawAttention, o);
  // The class-token row of (α_fwd + flip α_bwd)/2, channel mean, averaged over layers, from the activations.
  VimForwardOptions fo;
  fo.keep_activations = true;
  const VimForwardResult fr = m.forward(f.pixels, fo);
  std::vector<double> want(size_t(T), 0.0);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    VimLayerTrace vt;
    make_vim_trace(vt, m, fr.acts, l);
    const BidirTrace& bt = vt.bt;
    const Tensor full = bidir_attention_full(bt, AttnKind::S6, 0, E);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t j = 0; j < T; ++j) want[size_t(j)] += full.data[size_t((e * T + cls) * T + j)] / double(E) / double(c.n_layer);
  }
  double mx = 0;
  for (double v : want) mx = std::max(mx, std::fabs(v));
  for (int64_t j = 0; j < T; ++j) EXPECT_NEAR(raw.relevance[size_t(j)], want[size_t(j)], 1e-5 * mx) << j;
  // tokens on both sides of the class token take part
  double before = 0, after = 0;
  for (int64_t j = 0; j < cls; ++j) before += std::fabs(raw.relevance[size_t(j)]);
  for (int64_t j = cls + 1; j < T; ++j) after += std::fabs(raw.relevance[size_t(j)]);
  EXPECT_GT(before, 0.0);
  EXPECT_GT(after, 0.0);
  // published variants: class token dropped (0), clamped at 0
  o.compat = "official";
  for (Method me : {Method::RawAttention, Method::Rollout, Method::MambaAttr, Method::UnifiedAttr}) {
    const Explanation e = run(me, o);
    EXPECT_EQ(e.relevance[size_t(cls)], 0.0f) << method_name(me);
    for (float v : e.relevance) EXPECT_GE(v, 0.0f);
  }
}
