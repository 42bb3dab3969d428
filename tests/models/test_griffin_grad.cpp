// RecurrentGemma: embed / forward_embeds against forward, the backward pass (griffin_grad.h) against central finite
// differences of the double-precision forward, and LRP conservation with the rules on.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/griffin.h"
#include "models/griffin_grad.h"

using namespace ssmx;

namespace {

struct Fx {
  Checkpoint ck;
  std::unique_ptr<GriffinModel> m;
  std::vector<int32_t> ids = {3, 17, 101, 5, 44, 250, 7, 9, 300, 12, 61};  // T = 11 > window 4
};

std::unique_ptr<Fx> fixture() {
  auto f = std::make_unique<Fx>();
  f->ck = open_checkpoint(test::data_dir() + "/models/griffin-f32");
  f->m = GriffinModel::load(f->ck);
  return f;
}

GradRequest request(const Fx& f, int32_t token, int64_t pos) {
  GradRequest q;
  q.ids = f.ids;
  q.position = pos;
  const int64_t Dm = f.m->d_model();
  q.seed.assign(f.m->lm_head().p + token * Dm, f.m->lm_head().p + (token + 1) * Dm);
  return q;
}

}  // namespace

TEST(GriffinGrad, ForwardEmbedsOfEmbedIsForwardBitwise) {
  auto f = fixture();
  ForwardOptions o;
  o.keep_activations = true;
  const ForwardResult a = f->m->forward(f->ids, o);
  const Tensor e = f->m->embed(f->ids);
  ASSERT_EQ(e.shape, (std::vector<int64_t>{11, 32}));
  // The scale is inside embed(): E[id]·bf16(√32) = E[id]·5.65625.
  EXPECT_EQ(f->m->config().normalizer, 5.65625f);
  EXPECT_EQ(e.ptr()[2 * 32 + 7], f->m->embedding().p[101 * 32 + 7] * 5.65625f);
  const ForwardResult b = f->m->forward_embeds(e, o);
  EXPECT_EQ(a.logits.data, b.logits.data);
  ASSERT_EQ(a.acts.size(), b.acts.size());
  for (const auto& [n, t] : a.acts) EXPECT_EQ(t.data, b.acts.at(n).data) << n;
  EXPECT_THROW(f->m->forward_embeds(Tensor({3, 31}), o), Error);
}

// ∂f/∂embeds of f = W[token]·norm_f[pos] against central differences of the double forward, every coordinate.
TEST(GriffinGrad, GradientMatchesFiniteDifferences) {
  auto f = fixture();
  // pos 10 and 6: more tokens than the window (banded local attention); pos 4: every key inside the window, where
  // the f32 engine runs the local attention as dense per-head sgemm.
  for (int64_t pos : {int64_t(10), int64_t(6), int64_t(4)})
    for (bool zb : {false, true}) {
      GradRequest q = request(*f, 42, pos);
      q.zero_biases = zb;
      const GradResult g32 = griffin_gradient(*f->m, q);
      const GradResultT<double> g64 = griffin_gradient_f64(*f->m, q);
      EXPECT_NEAR(g32.f, g64.f, 1e-5 * std::max(1.0, std::fabs(g64.f)));
      Tensor x = f->m->embed(f->ids);
      const int64_t n = x.numel();
      double max_fd = 0, err32 = 0, err64 = 0;
      const int64_t stride = pos == 10 && !zb ? 1 : 5;  // every coordinate once, a subset for the other cases
      for (int64_t i = 0; i < n; i += stride) {
        const float x0 = x.data[size_t(i)];
        const float h = 1e-2f * std::max(1.0f, std::fabs(x0));
        GradRequest p = q;
        x.data[size_t(i)] = x0 + h;
        p.embeds = &x;
        const double fp = griffin_gradient_f64(*f->m, p).f;
        const float xp = x.data[size_t(i)];
        x.data[size_t(i)] = x0 - h;
        const double fm = griffin_gradient_f64(*f->m, p).f;
        const float xm = x.data[size_t(i)];
        x.data[size_t(i)] = x0;
        const double fd = (fp - fm) / (double(xp) - double(xm));
        max_fd = std::max(max_fd, std::fabs(fd));
        err32 = std::max(err32, std::fabs(double(g32.grad[size_t(i)]) - fd));
        err64 = std::max(err64, std::fabs(g64.grad[size_t(i)] - fd));
      }
      for (int64_t i = (pos + 1) * 32; i < n; ++i) EXPECT_EQ(g32.grad[size_t(i)], 0.0f);  // causal
      ASSERT_GT(max_fd, 1e-3);
      EXPECT_LE(err32 / max_fd, 1e-3) << "pos " << pos << " zero_biases " << zb;
      EXPECT_LE(err64 / max_fd, 1e-4) << "pos " << pos << " zero_biases " << zb;
      std::printf("[griffin grad] pos %lld zero_biases %d: max|fd| %.4g, rel err f32 %.3g, f64 %.3g\n", (long long)pos,
                  int(zb), max_fd, err32 / max_fd, err64 / max_fd);
    }
}

// The f32 engine's dense local attention (T ≤ window + 1) against the double engine's banded loops, for plain
// gradients and with every LRP rule on (the ssm rule holds the softmax weights constant: no gradient into q, k).
TEST(GriffinGrad, DenseLocalAttentionMatchesTheDoubleEngine) {
  auto f = fixture();
  for (const LrpRules& rules : {LrpRules::gradient(), LrpRules::mamba_lrp()}) {
    GradRequest q = request(*f, 42, 4);
    q.rules = rules;
    const GradResult g32 = griffin_gradient(*f->m, q);
    const GradResultT<double> g64 = griffin_gradient_f64(*f->m, q);
    double mx = 0, err = 0;
    for (size_t i = 0; i < g64.grad.size(); ++i) {
      mx = std::max(mx, std::fabs(g64.grad[i]));
      err = std::max(err, std::fabs(double(g32.grad[i]) - g64.grad[i]));
    }
    ASSERT_GT(mx, 1e-3);
    EXPECT_LE(err / mx, 1e-5) << "rules ssm " << rules.ssm;
    for (size_t l = 0; l < 5; ++l)
      for (int64_t t = 0; t < 5; ++t)
        EXPECT_NEAR(g32.resid_relevance[l * 11 + size_t(t)], g64.resid_relevance[l * 11 + size_t(t)], 1e-4 * std::fabs(g64.f));
  }
}

// The engine's forward is the model's: f = seed · norm_f[pos] of GriffinModel::forward.
TEST(GriffinGrad, TargetValueAndLayerGradients) {
  auto f = fixture();
  ForwardOptions o;
  o.keep_final_hidden = true;
  const ForwardResult fr = f->m->forward(f->ids, o);
  GradRequest q = request(*f, 42, -1);
  q.keep_layer_grads = true;
  const GradResult g = griffin_gradient(*f->m, q);
  double want = 0;
  for (int64_t d = 0; d < 32; ++d) want += double(q.seed[size_t(d)]) * fr.acts.at("norm_f").ptr()[10 * 32 + d];
  EXPECT_NEAR(g.f, want, 1e-5 * std::fabs(want));
  ASSERT_EQ(g.grad_resid.size(), 4u);
  EXPECT_EQ(g.grad_resid[0], g.grad);
  // Recurrent layers: (T, lru_width); the local attention layer 2: (T, heads·head_dim).
  EXPECT_EQ(g.grad_y[0].size(), size_t(11 * 48));
  EXPECT_EQ(g.grad_y[2].size(), size_t(11 * 32));
  // Σ_t resid_relevance[L][t] = Σ_d norm_f input · ∂f/∂ it, which for RMSNorm (scale invariant) is 0 up to eps.
  double last = 0;
  for (int64_t t = 0; t < 11; ++t) last += g.resid_relevance[size_t(4 * 11 + t)];
  EXPECT_LT(std::fabs(last), 1e-3 * std::fabs(g.f));
}
