// Mamba-2 explanations: input embeddings, the backend's implicit attention (S6 and unified, checked by reconstructing
// the layer's tensors), the attention methods through explain(), the CLI's attention files, and (mamba2_grad) the
// gradient engine against central finite differences in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/backend.h"
#include "attribution/explain.h"
#include "attribution/mamba2_attention.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "models/mamba2.h"

using namespace ssmx;

namespace {

std::string fixture(const std::string& name) { return test::data_dir() + "/models/" + name; }

struct Loaded2 {
  Checkpoint ck;
  std::unique_ptr<Mamba2Model> model;
};
Loaded2 load2(const std::string& name) {
  Loaded2 r;
  r.ck = open_checkpoint(fixture(name));
  r.model = Mamba2Model::load(r.ck);
  return r;
}

const std::vector<int32_t> kIds = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};

class Mamba2Explain : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(Mamba2Explain, ForwardEmbedsOfEmbedIsForwardBitwise) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult a = m.forward(kIds, fo);
  const Tensor e = m.embed(kIds);
  ASSERT_EQ(e.shape, (std::vector<int64_t>{int64_t(kIds.size()), m.d_model()}));
  EXPECT_EQ(0, std::memcmp(e.ptr() + 2 * m.d_model(), m.embedding().p + 4 * m.d_model(), size_t(m.d_model()) * 4));
  const ForwardResult b = m.forward_embeds(e, fo);
  ASSERT_EQ(a.logits.shape, b.logits.shape);
  EXPECT_EQ(0, std::memcmp(a.logits.ptr(), b.logits.ptr(), a.logits.data.size() * 4));
  ASSERT_EQ(a.acts.size(), b.acts.size());
  for (const auto& [k, v] : a.acts) EXPECT_EQ(0, std::memcmp(v.ptr(), b.acts.at(k).ptr(), v.data.size() * 4)) << k;
  EXPECT_THROW(m.forward_embeds(Tensor({3, m.d_model() + 1}), fo), Error);
}

// S6 rows reconstruct ssm; unified rows reconstruct y·silu(z) up to the D-skip and conv-bias terms.
TEST_P(Mamba2Explain, LayerAttentionReconstructsTheLayer) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const Mamba2Config& c = m.config();
  const int64_t T = int64_t(kIds.size()), Di = c.d_inner, P = c.head_dim, CD = c.conv_dim();
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m.forward(kIds, fo);
  for (int64_t layer = 0; layer < c.n_layer; ++layer) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    const auto la = mamba2_layer_attention(m, layer, fr.acts);
    EXPECT_EQ(la->channels(), Di);
    const Tensor &x = fr.acts.at(p + "x"), &ssm = fr.acts.at(p + "ssm"), &y = fr.acts.at(p + "y"), &z = fr.acts.at(p + "z"),
                 &xbc = fr.acts.at(p + "xbc"), &conv = fr.acts.at(p + "conv");
    const Mamba2Layer& ly = m.layer(layer);
    double err_s6 = 0, err_u = 0, scale = 0;
    for (int64_t i = 0; i < T; ++i) {
      const Tensor s6 = la->rows(AttnKind::S6, i, false), un = la->rows(AttnKind::Unified, i, false);
      ASSERT_EQ(un.shape, (std::vector<int64_t>{Di, T}));
      for (int64_t ch = 0; ch < Di; ++ch) {
        double r6 = 0, ru = 0, bias = 0;
        for (int64_t j = 0; j < T; ++j) {
          r6 += double(s6.ptr()[ch * T + j]) * x.ptr()[j * Di + ch];  // x is kept as (T, Di)
          ru += double(un.ptr()[ch * T + j]) * xbc.ptr()[j * CD + ch];
          if (j > i) {
            EXPECT_EQ(un.ptr()[ch * T + j], 0.0f);
            continue;
          }
          const double cv = conv.ptr()[j * CD + ch];
          if (ly.conv_b.p) bias += double(s6.ptr()[ch * T + j]) * (1.0 / (1.0 + std::exp(-cv))) * ly.conv_b.p[ch];
        }
        const double zz = z.ptr()[i * Di + ch], gate = zz / (1.0 + std::exp(-zz));
        const double want_u = gate * double(y.ptr()[i * Di + ch]);
        ru += gate * (double(ly.D.p[ch / P]) * x.ptr()[i * Di + ch] + bias);
        err_s6 = std::max(err_s6, std::fabs(r6 - ssm.ptr()[i * Di + ch]));
        err_u = std::max(err_u, std::fabs(ru - want_u));
        scale = std::max(scale, std::fabs(want_u));
      }
    }
    EXPECT_LT(err_s6, 2e-5 * std::max(1.0, scale)) << "layer " << layer;
    EXPECT_LT(err_u, 2e-5 * std::max(1.0, scale)) << "layer " << layer;
    EXPECT_GT(scale, 0.01);
    // Channel means: the S6 mean row is the mean over heads (the library's reduction); mean_map rows = mean_row.
    std::vector<float> lib(static_cast<size_t>(T));
    const Mamba2AttnInputs in = mamba2_attention_inputs(m, layer, fr.acts);
    mamba2_attention_reduce_row(lib.data(), in, T - 1, HeadReduce::Mean);
    const Tensor mr = la->mean_row(AttnKind::S6, T - 1);
    for (int64_t j = 0; j < T; ++j) EXPECT_FLOAT_EQ(mr.ptr()[j], lib[size_t(j)]);
    const Tensor mu = la->mean_map(AttnKind::Unified), ru = la->mean_row(AttnKind::Unified, 4);
    for (int64_t j = 0; j < T; ++j) EXPECT_NEAR(mu.ptr()[4 * T + j], ru.ptr()[j], 1e-6 * (1 + std::fabs(ru.ptr()[j])));
  }
}

TEST_P(Mamba2Explain, RawAttentionIsTheMeanOfTheLibraryRows) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const int64_t T = int64_t(kIds.size()), L = m.config().n_layer;
  ExplainOptions o;
  o.method = Method::RawAttention;
  o.start_layer = 1;
  const Explanation ex = explain(m, nullptr, kIds, o);
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m.forward(kIds, fo);
  std::vector<double> want(size_t(T), 0.0);
  for (int64_t layer = 1; layer < L; ++layer) {
    std::vector<float> row(static_cast<size_t>(T));
    mamba2_attention_reduce_row(row.data(), mamba2_attention_inputs(m, layer, fr.acts), T - 1, HeadReduce::Mean);
    for (int64_t j = 0; j < T; ++j) want[size_t(j)] += row[size_t(j)] / double(L - 1);
  }
  ASSERT_EQ(ex.relevance.size(), size_t(T));
  double mx = 0;
  for (int64_t j = 0; j < T; ++j) {
    EXPECT_NEAR(ex.relevance[size_t(j)], want[size_t(j)], 1e-6 * (1 + std::fabs(want[size_t(j)])));
    mx = std::max(mx, std::fabs(want[size_t(j)]));
  }
  EXPECT_GT(mx, 1e-3);
  EXPECT_EQ(ex.layer_relevance.size(), size_t(L - 1));
  // Rollout and the unified kind run; rollout rows are normalised, so the row sums to 1.
  o.method = Method::Rollout;
  const Explanation ro = explain(m, nullptr, kIds, o);
  double s = 0;
  for (float v : ro.relevance) s += v;
  EXPECT_NEAR(s, 1.0, 1e-4);
  o.compat = "official";
  try {
    explain(m, nullptr, kIds, o);
    ADD_FAILURE() << "official accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--compat"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Mamba2Explain,
                         ::testing::Values("mamba2-f32-safetensors", "mamba2-bf16-bias-clamp", "mamba2-f16-mamba-ssm"));

TEST(Mamba2AttentionCli, RowFileIsTheLibraryRow) {
  test::TempDir td;
  const std::string model = fixture("mamba2-f32-safetensors");
  auto r = test::run_cli({"attention", model, "--ids", "3,1,4,1,5,9,2,6,5,3,5", "--layers", "1", "--row", "-1", "--out", td.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto idx = nlohmann::json::parse(test::read_file(td.file("index.json")));
  EXPECT_EQ(idx["family"], "mamba2");
  ASSERT_EQ(idx["files"].size(), 1u);
  const auto& f = idx["files"][0];
  Loaded2 l = load2("mamba2-f32-safetensors");
  const Mamba2Config& c = l.model->config();
  const int64_t T = int64_t(kIds.size());
  EXPECT_EQ(f["shape"], (std::vector<int64_t>{c.d_inner, T}));
  EXPECT_TRUE(std::filesystem::exists(td.file(f["png"].get<std::string>())));
  const Tensor got = read_npy_f32(td.file(f["file"].get<std::string>()));
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = l.model->forward(kIds, fo);
  std::vector<float> heads(size_t(c.n_heads * T));
  mamba2_attention_row(heads.data(), mamba2_attention_inputs(*l.model, 1, fr.acts), T - 1);
  for (int64_t ch = 0; ch < c.d_inner; ++ch)
    for (int64_t j = 0; j < T; ++j) ASSERT_EQ(got.ptr()[ch * T + j], heads[size_t((ch / c.head_dim) * T + j)]) << ch << " " << j;
  // Unified, reduced, full: (T, T) lower triangular, equal to the backend's mean map.
  test::TempDir td2;
  r = test::run_cli({"attention", model, "--ids", "3,1,4,1,5,9,2,6,5,3,5", "--layers", "0", "--kind", "unified", "--reduce",
                     "mean", "--no-png", "--out", td2.path()});
  ASSERT_EQ(r.rc, 0) << r.err;
  idx = nlohmann::json::parse(test::read_file(td2.file("index.json")));
  const Tensor full = read_npy_f32(td2.file(idx["files"][0]["file"].get<std::string>()));
  ASSERT_EQ(full.shape, (std::vector<int64_t>{T, T}));
  const Tensor mm = mamba2_layer_attention(*l.model, 0, fr.acts)->mean_map(AttnKind::Unified);
  for (int64_t k = 0; k < T * T; ++k) EXPECT_NEAR(full.ptr()[k], mm.ptr()[k], 1e-6 * (1 + std::fabs(mm.ptr()[k])));
  r = test::run_cli({"attention", model, "--ids", "3,1,4", "--kind", "unified-noconv", "--out", td2.path()});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--kind"), std::string::npos) << r.err;
}

// ---- gradient engine (models/mamba2_grad.h) ----

#include <random>

#include "models/mamba2_grad.h"

namespace {

GradRequest request(const Mamba2Model& m, const Tensor* embeds, int64_t pos, uint64_t seed) {
  GradRequest q;
  q.ids = kIds;
  q.embeds = embeds;
  q.position = pos;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  q.seed.resize(size_t(m.d_model()));
  for (float& v : q.seed) v = float(nd(rng));
  return q;
}

}  // namespace

// Central finite differences of the double engine's f, entry by entry, against its gradient; the f32 engine against
// the double one; f against the model's forward.
TEST_P(Mamba2Explain, GradientMatchesFiniteDifferences) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const int64_t T = int64_t(kIds.size()), Dm = m.d_model();
  for (int64_t pos : {int64_t(T - 1), int64_t(6)}) {
    const Tensor e = m.embed(kIds);
    GradRequest q = request(m, &e, pos, 7 + uint64_t(pos));
    const GradResultT<double> g = mamba2_gradient_f64(m, q);
    const GradResult g32 = mamba2_gradient(m, q);
    // f equals seed · norm_f of the model's forward.
    ForwardOptions fo;
    fo.keep_final_hidden = true;
    fo.all_logits = false;
    const ForwardResult fr = m.forward(kIds, fo);
    double f_model = 0;
    for (int64_t d = 0; d < Dm; ++d) f_model += double(q.seed[size_t(d)]) * fr.acts.at("norm_f").ptr()[pos * Dm + d];
    EXPECT_NEAR(g.f, f_model, 1e-4 * std::max(1.0, std::fabs(f_model)));
    double gmax = 0, err32 = 0;
    for (size_t i = 0; i < g.grad.size(); ++i) {
      gmax = std::max(gmax, std::fabs(g.grad[i]));
      err32 = std::max(err32, std::fabs(double(g32.grad[i]) - g.grad[i]));
    }
    ASSERT_GT(gmax, 1e-3);
    EXPECT_LT(err32 / gmax, 1e-3) << "f32 vs f64, pos " << pos;
    // tokens after pos have no influence
    for (int64_t t = pos + 1; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) ASSERT_EQ(g.grad[size_t(t * Dm + d)], 0.0);
    std::mt19937_64 rng(3);
    double worst = 0;
    for (int k = 0; k < 32; ++k) {
      const int64_t t = int64_t(rng() % uint64_t(pos + 1)), d = int64_t(rng() % uint64_t(Dm));
      Tensor ep = e, em = e;
      const float h = 2e-4f;
      ep.data[size_t(t * Dm + d)] += h;
      em.data[size_t(t * Dm + d)] -= h;
      const double step = double(ep.data[size_t(t * Dm + d)]) - double(em.data[size_t(t * Dm + d)]);
      GradRequest qp = q, qm = q;
      qp.embeds = &ep, qm.embeds = &em;
      const double fd = (mamba2_gradient_f64(m, qp).f - mamba2_gradient_f64(m, qm).f) / step;
      worst = std::max(worst, std::fabs(fd - g.grad[size_t(t * Dm + d)]) / gmax);
    }
    EXPECT_LT(worst, 1e-5) << "finite differences, pos " << pos;
    RecordProperty(std::string("fd_rel_err_pos") + std::to_string(pos), std::to_string(worst));
    RecordProperty(std::string("f32_rel_err_pos") + std::to_string(pos), std::to_string(err32 / gmax));
    std::printf("[%s pos %lld] FD rel err %.3g, f32 vs f64 rel err %.3g\n", GetParam(), (long long)pos, worst, err32 / gmax);
  }
}

// A sequence longer than the scan backward's checkpoint interval (16 tokens), so the states are recomputed across
// several chunks: finite differences at tokens in the first chunks, and the f32 engine against the double one.
TEST_P(Mamba2Explain, GradientAcrossScanChunks) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  std::vector<int32_t> ids;
  for (int i = 0; i < 41; ++i) ids.push_back(int32_t((i * 7 + 3) % 10));
  const int64_t T = int64_t(ids.size()), Dm = m.d_model();
  const Tensor e = m.embed(ids);
  GradRequest q = request(m, &e, T - 1, 11);
  q.ids = ids;
  const GradResultT<double> g = mamba2_gradient_f64(m, q);
  const GradResult g32 = mamba2_gradient(m, q);
  double gmax = 0, err32 = 0;
  for (size_t i = 0; i < g.grad.size(); ++i) {
    gmax = std::max(gmax, std::fabs(g.grad[i]));
    err32 = std::max(err32, std::fabs(double(g32.grad[i]) - g.grad[i]));
  }
  ASSERT_GT(gmax, 1e-6);
  EXPECT_LT(err32 / gmax, 1e-3);
  std::mt19937_64 rng(5);
  double worst = 0;
  for (int k = 0; k < 12; ++k) {
    const int64_t t = (k % 3 == 0) ? int64_t(k % 16) : int64_t(rng() % uint64_t(T)), d = int64_t(rng() % uint64_t(Dm));
    Tensor ep = e, em = e;
    const float h = 2e-4f;
    ep.data[size_t(t * Dm + d)] += h;
    em.data[size_t(t * Dm + d)] -= h;
    const double step = double(ep.data[size_t(t * Dm + d)]) - double(em.data[size_t(t * Dm + d)]);
    GradRequest qp = q, qm = q;
    qp.embeds = &ep, qm.embeds = &em;
    const double fd = (mamba2_gradient_f64(m, qp).f - mamba2_gradient_f64(m, qm).f) / step;
    worst = std::max(worst, std::fabs(fd - g.grad[size_t(t * Dm + d)]) / gmax);
  }
  EXPECT_LT(worst, 1e-5);
  std::printf("[%s T %lld] FD rel err %.3g, f32 vs f64 rel err %.3g\n", GetParam(), (long long)T, worst, err32 / gmax);
}

TEST_P(Mamba2Explain, GradientMethodsRunThroughExplain) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const int64_t T = int64_t(kIds.size());
  for (Method me : {Method::Gradient, Method::GradInput, Method::IntegratedGradients, Method::SmoothGrad, Method::MambaAttr,
                    Method::UnifiedAttr}) {
    ExplainOptions o;
    o.method = me;
    o.ig_steps = 4;
    o.sg_samples = 2;
    const Explanation ex = explain(m, nullptr, kIds, o);
    ASSERT_EQ(ex.relevance.size(), size_t(T)) << method_name(me);
    double s = 0;
    for (float v : ex.relevance) s += std::fabs(v);
    EXPECT_GT(s, 0.0) << method_name(me);
  }
  // Integrated gradients from a token baseline (a smooth path; the zero baseline is not, docs/methods.md): completeness
  // Σ R ≈ f(x) − f(baseline).
  ExplainOptions o;
  o.method = Method::IntegratedGradients;
  o.ig_steps = 64;
  o.ig_baseline = "token:0";
  const Explanation ig = explain(m, nullptr, kIds, o);
  EXPECT_NEAR(ig.relevance_sum, ig.reference_value, 1e-2 * std::max(1.0, std::fabs(ig.reference_value)));
  EXPECT_GT(std::fabs(ig.reference_value), 0.1);
  std::printf("[%s] IG(64, token:0) sum %.6g vs f(x)-f(b) %.6g\n", GetParam(), ig.relevance_sum, ig.reference_value);
}

// ---- LRP rules ----

// With every rule on and zero biases, each layer's residual relevance sums to f; with biases, Σ R + bias_absorbed = f.
// Plain gradient × input does not conserve (negative control).
TEST_P(Mamba2Explain, LrpConservation) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const int64_t T = int64_t(kIds.size()), L = m.config().n_layer;
  GradRequest q = request(m, nullptr, -1, 11);
  q.rules = LrpRules::mamba_lrp();
  q.zero_biases = true;
  const GradResultT<double> g = mamba2_gradient_f64(m, q);
  const GradResult g32 = mamba2_gradient(m, q);
  ASSERT_GT(std::fabs(g.f), 1e-3);
  double worst = 0, worst32 = 0;
  for (int64_t layer = 0; layer <= L; ++layer) {
    double s = 0, s32 = 0;
    for (int64_t t = 0; t < T; ++t) s += g.resid_relevance[size_t(layer * T + t)], s32 += g32.resid_relevance[size_t(layer * T + t)];
    worst = std::max(worst, std::fabs(s - g.f) / std::fabs(g.f));
    worst32 = std::max(worst32, std::fabs(s32 - g32.f) / std::fabs(g32.f));
  }
  EXPECT_LT(worst, 1e-9);
  EXPECT_LT(worst32, 1e-4);
  std::printf("[%s] LRP zero biases: f %.6g, worst layer |ΣR − f|/|f| f64 %.3g, f32 %.3g\n", GetParam(), g.f, worst, worst32);
  // With biases: the absorbed relevance closes the gap.
  q.zero_biases = false;
  const GradResultT<double> gb = mamba2_gradient_f64(m, q);
  double s = 0;
  for (int64_t t = 0; t < T; ++t) s += gb.resid_relevance[size_t(t)];
  EXPECT_NEAR(s + gb.bias_absorbed, gb.f, 1e-9 * std::max(1.0, std::fabs(gb.f)));
  // Negative control: the exact gradient does not conserve.
  q.rules = LrpRules::gradient();
  q.zero_biases = true;
  const GradResultT<double> gp = mamba2_gradient_f64(m, q);
  double sp = 0;
  for (int64_t t = 0; t < T; ++t) sp += gp.resid_relevance[size_t(t)];
  EXPECT_GT(std::fabs(sp - gp.f), 1e-3 * std::fabs(gp.f));
  // Through explain: mamba-lrp with zero biases reports Σ R = f.
  ExplainOptions o;
  o.method = Method::MambaLrp;
  o.zero_biases = true;
  const Explanation ex = explain(m, nullptr, kIds, o);
  EXPECT_NEAR(ex.relevance_sum, ex.reference_value, 1e-4 * std::max(1.0, std::fabs(ex.reference_value)));
  o.method = Method::LrpLn;
  EXPECT_NO_THROW(explain(m, nullptr, kIds, o));
  o.method = Method::MambaLrp;
  o.rules.linear = LrpRules::Linear::Epsilon;
  EXPECT_THROW(explain(m, nullptr, kIds, o), Error);
}

// grad_y is ∂̃f/∂(y ⊙ silu(z)): under the norm rule the mixer's share of the relevance entering layer l + 1 is
// Σ (y ⊙ silu z) · grad_y (+ the out_proj bias share).
TEST_P(Mamba2Explain, LayerGradYIsTheGradientOfTheGatedTensor) {
  Loaded2 l = load2(GetParam());
  const Mamba2Model& m = *l.model;
  const Mamba2Config& c = m.config();
  const int64_t T = int64_t(kIds.size()), L = c.n_layer, Dm = c.d_model, Di = c.d_inner;
  GradRequest q = request(m, nullptr, -1, 5);
  q.rules = LrpRules::ln_only();
  q.keep_layer_grads = true;
  const GradResultT<double> g = mamba2_gradient_f64(m, q);
  ASSERT_EQ(g.grad_y.size(), size_t(L));
  ASSERT_EQ(g.grad_y[0].size(), size_t(T * Di));
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m.forward(kIds, fo);
  for (int64_t layer = 0; layer + 1 < L; ++layer) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    const Tensor &hin = fr.acts.at(p + "residual_in"), &y = fr.acts.at(p + "y"), &z = fr.acts.at(p + "z");
    const std::vector<double>& dh = g.grad_resid[size_t(layer + 1)];
    double lhs = 0, rhs = 0, scale = 0;
    for (int64_t t = 0; t < T; ++t) lhs += g.resid_relevance[size_t((layer + 1) * T + t)];
    for (int64_t k = 0; k < T * Dm; ++k) {
      lhs -= double(hin.ptr()[k]) * dh[size_t(k)];
      if (m.layer(layer).out_proj_b.p) lhs -= double(m.layer(layer).out_proj_b.p[k % Dm]) * dh[size_t(k)];
    }
    for (int64_t k = 0; k < T * Di; ++k) {
      const double zz = z.ptr()[k], v = double(y.ptr()[k]) * zz / (1 + std::exp(-zz)) * g.grad_y[size_t(layer)][size_t(k)];
      rhs += v, scale += std::fabs(v);
    }
    EXPECT_NEAR(lhs, rhs, 1e-4 * std::max(1.0, scale)) << "layer " << layer;
    EXPECT_GT(scale, 1e-4);
  }
}
