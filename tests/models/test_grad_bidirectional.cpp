// The gradient engine on a bidirectional (Vision Mamba "v2") stack: its forward value against a naive double forward
// written here, its gradient against central finite differences in double, MambaLRP's conservation per direction,
// and the plain gradient × input as the negative control.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "../test_util.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/mamba.h"
#include "models/mamba_grad.h"

using namespace ssmx;

namespace {

// Two fixture models of equal shape (2 layers, Dm 32, E 64, N 8, K 4, R 4; scripts/make_fixtures.py): the first
// gives each layer's norm, projections and forward direction, the second the backward direction's conv, x_proj,
// dt_proj, A and D.
struct Bidir {
  Checkpoint cf = open_checkpoint(test::data_dir() + "/models/mamba-f32-safetensors");
  Checkpoint cb = open_checkpoint(test::data_dir() + "/models/mamba-f16-sharded");
  std::unique_ptr<MambaModel> f = MambaModel::load(cf, false), b = MambaModel::load(cb, false);
  GradStack stack(bool divide_out) const {
    GradStack st = grad_stack(*f);
    st.embedding = nullptr;
    for (int64_t l = 0; l < f->config().n_layer; ++l) st.backward.push_back(&b->layer(l));
    st.divide_out = divide_out;
    return st;
  }
};
const Bidir& bidir() {
  static Bidir m;
  return m;
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }
double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }

// One direction of the mixer in double: x, z (T, E) → gated output (T, E).
std::vector<double> direction(const MambaLayer& w, const MambaConfig& c, const std::vector<double>& x,
                              const std::vector<double>& z, int64_t T, bool biases) {
  const int64_t E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, XW = R + 2 * N;
  std::vector<double> u(size_t(T * E)), y(size_t(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      double s = biases && w.conv_b ? w.conv_b.p[e] : 0.0;
      for (int64_t k = 0; k < K; ++k)
        if (t - (K - 1) + k >= 0) s += double(w.conv_w.p[e * K + k]) * x[size_t((t - (K - 1) + k) * E + e)];
      u[size_t(t * E + e)] = silu(s);
    }
  std::vector<double> xd(size_t(T * XW), 0.0), delta(size_t(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < XW; ++o)
      for (int64_t e = 0; e < E; ++e) xd[size_t(t * XW + o)] += double(w.x_proj_w.p[o * E + e]) * u[size_t(t * E + e)];
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      double s = biases && w.dt_proj_b ? w.dt_proj_b.p[e] : 0.0;
      for (int64_t r = 0; r < R; ++r) s += double(w.dt_proj_w.p[e * R + r]) * xd[size_t(t * XW + r)];
      delta[size_t(t * E + e)] = softplus(s);
    }
  for (int64_t e = 0; e < E; ++e) {
    std::vector<double> h(size_t(N), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const double d = delta[size_t(t * E + e)], ut = u[size_t(t * E + e)];
      double s = 0;
      for (int64_t n = 0; n < N; ++n) {
        h[size_t(n)] = std::exp(d * w.A.p[e * N + n]) * h[size_t(n)] + d * xd[size_t(t * XW + R + n)] * ut;
        s += xd[size_t(t * XW + R + N + n)] * h[size_t(n)];
      }
      y[size_t(t * E + e)] = (s + double(w.D.p[e]) * ut) * silu(z[size_t(t * E + e)]);
    }
  }
  return y;
}

// f = seed · RMSNorm_f(h_L)[pos] of the bidirectional stack, in double.
double naive_f(const GradStack& st, const std::vector<double>& emb, int64_t T, int64_t pos, const std::vector<float>& seed,
               bool biases) {
  const MambaConfig& c = st.cfg;
  const int64_t Dm = c.d_model, E = c.d_inner;
  std::vector<double> h = emb;
  auto rms = [&](const double* v, const float* w, double* out) {
    double ss = 0;
    for (int64_t d = 0; d < Dm; ++d) ss += v[d] * v[d];
    const double r = 1.0 / std::sqrt(ss / double(Dm) + double(c.norm_eps));
    for (int64_t d = 0; d < Dm; ++d) out[d] = v[d] * r * w[d];
  };
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const MambaLayer& w = *st.layers[size_t(l)];
    std::vector<double> nrm(size_t(T * Dm)), x(size_t(T * E)), z(size_t(T * E));
    for (int64_t t = 0; t < T; ++t) rms(h.data() + t * Dm, w.norm.p, nrm.data() + t * Dm);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < 2 * E; ++o) {
        double s = biases && w.in_proj_b ? w.in_proj_b.p[o] : 0.0;
        for (int64_t d = 0; d < Dm; ++d) s += double(w.in_proj_w.p[o * Dm + d]) * nrm[size_t(t * Dm + d)];
        (o < E ? x : z)[size_t(t * E + (o % E))] = s;
      }
    std::vector<double> xr(x.size()), zr(z.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) xr[size_t(t * E + e)] = x[size_t((T - 1 - t) * E + e)], zr[size_t(t * E + e)] = z[size_t((T - 1 - t) * E + e)];
    const std::vector<double> yf = direction(w, c, x, z, T, biases), yb = direction(*st.backward[size_t(l)], c, xr, zr, T, biases);
    const double s = st.divide_out ? 0.5 : 1.0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) {
        double o = biases && w.out_proj_b ? w.out_proj_b.p[d] : 0.0;
        for (int64_t e = 0; e < E; ++e)
          o += double(w.out_proj_w.p[d * E + e]) * s * (yf[size_t(t * E + e)] + yb[size_t((T - 1 - t) * E + e)]);
        h[size_t(t * Dm + d)] += o;
      }
  }
  std::vector<double> nf(static_cast<size_t>(Dm));
  rms(h.data() + pos * Dm, st.norm_f->p, nf.data());
  double f = 0;
  for (int64_t d = 0; d < Dm; ++d) f += double(seed[size_t(d)]) * nf[size_t(d)];
  return f;
}

struct Input {
  int64_t T = 9, pos = 4;
  Tensor emb;
  std::vector<float> seed;
  explicit Input(const MambaModel& m) {
    const int64_t Dm = m.config().d_model;
    emb = Tensor({T, Dm});
    const int32_t ids[] = {3, 1, 4, 1, 5, 9, 2, 6, 5};
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) emb.data[size_t(t * Dm + d)] = m.embedding().p[int64_t(ids[t]) * Dm + d];
    seed.assign(m.lm_head().p + 7 * Dm, m.lm_head().p + 8 * Dm);
  }
  GradRequest request(LrpRules rules, bool zero_biases) const {
    GradRequest q;
    q.embeds = &emb;
    q.position = pos;  // the middle: tokens on both sides matter
    q.seed = seed;
    q.rules = rules;
    q.zero_biases = zero_biases;
    return q;
  }
};

}  // namespace

TEST(GradBidirectional, ForwardValueAndGradientMatchNaiveDouble) {
  const Bidir& m = bidir();
  const Input in(*m.f);
  for (bool div : {true, false}) {
    const GradStack st = m.stack(div);
    const GradResultT<double> g = stack_gradient_f64(st, in.request(LrpRules::gradient(), false));
    std::vector<double> e(in.emb.data.begin(), in.emb.data.end());
    const double f0 = naive_f(st, e, in.T, in.pos, in.seed, true);
    EXPECT_NEAR(g.f, f0, 1e-10 * std::max(1.0, std::fabs(f0))) << "divide_out " << div;
    const GradResult g32 = stack_gradient(st, in.request(LrpRules::gradient(), false));
    EXPECT_NEAR(g32.f, f0, 1e-4 * std::max(1.0, std::fabs(f0)));
    // Central differences at coordinates before, at and after the seed position.
    const int64_t Dm = st.cfg.d_model;
    double worst = 0, scale = 0;
    for (int64_t t : {int64_t(0), in.pos, in.T - 1})
      for (int64_t d : {int64_t(0), int64_t(5), Dm - 1}) {
        const size_t k = size_t(t * Dm + d);
        const double hstep = 1e-5;
        std::vector<double> ep = e, em = e;
        ep[k] += hstep, em[k] -= hstep;
        const double fd = (naive_f(st, ep, in.T, in.pos, in.seed, true) - naive_f(st, em, in.T, in.pos, in.seed, true)) / (2 * hstep);
        worst = std::max(worst, std::fabs(fd - g.grad[k]));
        scale = std::max(scale, std::fabs(fd));
        EXPECT_NEAR(g32.grad[k], g.grad[k], 1e-4 * std::max(1.0, std::fabs(g.grad[k])));
      }
    EXPECT_GT(scale, 1e-3);
    EXPECT_LT(worst / scale, 1e-6) << "divide_out " << div;
    // a token after the seed position has a gradient here (it would be zero in a causal stack)
    double after = 0;
    for (int64_t d = 0; d < Dm; ++d) after += std::fabs(g.grad[size_t((in.T - 1) * Dm + d)]);
    EXPECT_GT(after, 1e-6);
  }
}

TEST(GradBidirectional, MambaLrpConservesPerDirectionGradInputDoesNot) {
  const Bidir& m = bidir();
  const Input in(*m.f);
  const GradStack st = m.stack(true);
  auto sum0 = [&](const GradResultT<double>& g) {
    double s = 0;
    for (int64_t t = 0; t < in.T; ++t) s += g.resid_relevance[size_t(t)];
    return s;
  };
  const GradResultT<double> lrp = stack_gradient_f64(st, in.request(LrpRules::mamba_lrp(), true));
  EXPECT_LT(std::fabs(sum0(lrp) - lrp.f) / std::fabs(lrp.f), 1e-8);
  const GradResultT<double> lrpb = stack_gradient_f64(st, in.request(LrpRules::mamba_lrp(), false));
  EXPECT_LT(std::fabs(sum0(lrpb) + lrpb.bias_absorbed - lrpb.f) / std::fabs(lrpb.f), 1e-8);
  EXPECT_NE(lrpb.bias_absorbed, 0.0);
  const GradResultT<double> gi = stack_gradient_f64(st, in.request(LrpRules::gradient(), true));
  EXPECT_GT(std::fabs(sum0(gi) - gi.f) / std::fabs(gi.f), 1e-3);
  const GradResult lrp32 = stack_gradient(st, in.request(LrpRules::mamba_lrp(), true));
  double s32 = 0;
  for (int64_t t = 0; t < in.T; ++t) s32 += lrp32.resid_relevance[size_t(t)];
  EXPECT_LT(std::fabs(s32 - lrp32.f) / std::fabs(lrp32.f), 1e-5);
}

TEST(GradBidirectional, CausalStackIsTheModel) {
  // Without backward layers the stack is exactly the model: bitwise the same as mamba_gradient.
  const Bidir& m = bidir();
  const Input in(*m.f);
  GradRequest q = in.request(LrpRules::mamba_lrp(), false);
  const GradResult a = mamba_gradient(*m.f, q), b = stack_gradient(grad_stack(*m.f), q);
  EXPECT_EQ(a.grad, b.grad);
  EXPECT_EQ(a.f, b.f);
  GradStack no_emb = grad_stack(*m.f);
  no_emb.embedding = nullptr;
  q.embeds = nullptr;
  q.ids = {1, 2, 3};
  EXPECT_THROW(stack_gradient(no_emb, q), Error);
}
