// The gradient / MambaLRP engine (models/mamba_grad.h): exact gradients against finite differences, against PyTorch
// autograd fixtures (scripts/make_grad_fixtures.py), conservation (global, layer-wise, and broken by each rule
// switched off), forward invariance, thread invariance, request errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "../test_util.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/mamba.h"
#include "models/mamba_grad.h"
#include "models/mamba_random.h"

using namespace ssmx;

namespace {

// A tiny random model written once per test binary (mambalrp.md §6: D=8, E=16, N=4, K=4, 2 layers).
struct TinyModel {
  test::TempDir dir;
  Checkpoint ck;
  std::unique_ptr<MambaModel> m;
  TinyModel(bool falcon, bool biases, uint64_t seed) {
    MambaConfig c;
    c.falcon = falcon;
    c.n_layer = 2, c.d_model = 8, c.d_inner = 16, c.d_state = 4, c.d_conv = 4, c.dt_rank = 2, c.vocab = 50;
    c.conv_bias = true, c.in_proj_bias = biases, c.out_proj_bias = biases, c.tied = !falcon;
    write_random_mamba(dir.path(), c, seed);
    ck = open_checkpoint(dir.path());
    m = MambaModel::load(ck, falcon);
  }
};

const MambaModel& tiny(bool falcon, bool biases = false) {
  static TinyModel mamba(false, false, 5), mamba_b(false, true, 6), falcon_m(true, false, 7), falcon_b(true, true, 8);
  return *(falcon ? (biases ? falcon_b.m : falcon_m.m) : (biases ? mamba_b.m : mamba.m));
}

// The committed fixture models (scripts/make_fixtures.py): their scan carries a real share of the output (dt up to
// 0.5, B and C of unit size), so every MambaLRP rule matters. "mamba-f16-sharded" has in_proj and out_proj biases.
const MambaModel& fixture(const std::string& name) {
  static std::map<std::string, std::pair<Checkpoint, std::unique_ptr<MambaModel>>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    Checkpoint ck = open_checkpoint(test::data_dir() + "/models/" + name);
    auto m = MambaModel::load(ck, name.rfind("falcon", 0) == 0);
    it = cache.emplace(name, std::make_pair(std::move(ck), std::move(m))).first;
  }
  return *it->second.second;
}
const char* const kFixtures[] = {"mamba-f32-safetensors", "mamba-f16-sharded", "falcon-f32-safetensors"};

const std::vector<int32_t> kIds = {3, 17, 42, 8, 0, 29, 11};

GradRequest request(const MambaModel& m, LrpRules rules, int32_t token = 5, int64_t position = -1) {
  GradRequest q;
  q.ids = kIds;
  q.position = position;
  const int64_t Dm = m.config().d_model;
  q.seed.assign(m.lm_head().p + token * Dm, m.lm_head().p + (token + 1) * Dm);
  q.rules = rules;
  return q;
}

template <typename Real>
double sum_relevance(const GradResultT<Real>& g) {
  double s = 0;
  for (size_t k = 0; k < g.grad.size(); ++k) s += double(g.embeds[k]) * double(g.grad[k]);
  return s;
}

template <typename Real>
double conservation_gap(const GradResultT<Real>& g, bool with_bias = true) {
  return std::fabs(sum_relevance(g) + (with_bias ? g.bias_absorbed : 0.0) - g.f) / std::fabs(g.f);
}

// f of the f64 path as a function of explicit embeddings.
double f_of(const MambaModel& m, GradRequest q, const Tensor& emb) {
  q.embeds = &emb;
  q.ids.clear();
  return mamba_gradient_f64(m, q).f;
}

double parity(const std::vector<double>& a, const std::vector<double>& b) {
  double mx = 1.0, err = 0.0;
  for (double v : b) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(a[i] - b[i]));
  return err / mx;
}

}  // namespace

TEST(MambaGradient, ExactGradientMatchesFiniteDifferencesInDouble) {
  for (bool falcon : {false, true})
    for (bool biases : {false, true}) {
      SCOPED_TRACE(testing::Message() << (falcon ? "falcon" : "mamba") << (biases ? " with biases" : ""));
      const MambaModel& m = tiny(falcon, biases);
      for (int64_t position : {int64_t(-1), int64_t(4)}) {
        GradRequest q = request(m, LrpRules::gradient(), 5, position);
        const GradResultT<double> g = mamba_gradient_f64(m, q);
        const int64_t T = g.shape[0], Dm = g.shape[1];
        Tensor emb({T, Dm});
        for (int64_t k = 0; k < T * Dm; ++k) emb.data[size_t(k)] = float(g.embeds[size_t(k)]);
        // Fourth-order central differences with steps that are exact in f32 (the embeddings are a float tensor).
        const float h = 1.0f / 2048.0f;
        double mx = 1.0, err = 0.0;
        for (double v : g.grad) mx = std::max(mx, std::fabs(v));
        for (int64_t k = 0; k < T * Dm; ++k) {
          const float x0 = emb.data[size_t(k)];
          auto at = [&](float dx) {
            emb.data[size_t(k)] = x0 + dx;
            return f_of(m, q, emb);
          };
          const double fd = (8.0 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12.0 * double(h));
          emb.data[size_t(k)] = x0;
          err = std::max(err, std::fabs(fd - g.grad[size_t(k)]));
        }
        EXPECT_LT(err / mx, 1e-7) << "position " << position;
        // Tokens after the seed position get nothing.
        if (position >= 0) {
          for (int64_t k = (position + 1) * Dm; k < T * Dm; ++k) EXPECT_EQ(g.grad[size_t(k)], 0.0);
        }
        // The f32 path agrees.
        const GradResult gf = mamba_gradient(m, q);
        EXPECT_LT(test::parity_error(gf.grad, g.grad), 1e-4);
      }
    }
}

TEST(MambaGradient, ForwardIsTheModelsForward) {
  for (bool falcon : {false, true}) {
    const MambaModel& m = tiny(falcon, true);
    ForwardOptions fo;
    fo.keep_activations = true;
    const ForwardResult fr = m.forward(kIds, fo);
    const Tensor& nf = fr.acts.at("norm_f");
    const int64_t T = int64_t(kIds.size()), Dm = m.config().d_model, V = m.config().vocab;
    for (LrpRules rules : {LrpRules::gradient(), LrpRules::mamba_lrp(), LrpRules::ln_only()}) {
      for (auto lin : {LrpRules::Linear::Zero, LrpRules::Linear::Epsilon, LrpRules::Linear::Gamma}) {
        rules.linear = lin;
        const int32_t token = 9;
        const GradResult g = mamba_gradient(m, request(m, rules, token));
        // Bitwise the same final hidden state as MambaModel::forward (the same kernels in the same order).
        EXPECT_EQ(0, std::memcmp(g.norm_f_at_pos.data(), nf.ptr() + (T - 1) * Dm, size_t(Dm) * 4));
        const double logit = fr.logits.data[size_t((T - 1) * V + token)];
        EXPECT_NEAR(g.f, logit, 1e-5 * std::max(1.0, std::fabs(logit)));
        const GradResultT<double> gd = mamba_gradient_f64(m, request(m, rules, token));
        EXPECT_NEAR(gd.f, logit, 1e-4 * std::max(1.0, std::fabs(logit)));
      }
    }
  }
}

TEST(MambaGradient, MambaLrpConservesRelevanceInDouble) {
  for (int k = 0; k < 4; ++k) {
    const bool falcon = k >= 2;
    const MambaModel& m = k < 3 ? fixture(kFixtures[k]) : tiny(true, true);
    SCOPED_TRACE(k < 3 ? kFixtures[k] : "random falcon with biases");
    // Zero biases: Σ_t R_t = f.
    GradRequest q = request(m, LrpRules::mamba_lrp());
    q.zero_biases = true;
    const GradResultT<double> g0 = mamba_gradient_f64(m, q);
    EXPECT_EQ(g0.bias_absorbed, 0.0);
    EXPECT_LT(conservation_gap(g0), 1e-8) << "Σ R = " << sum_relevance(g0) << ", f = " << g0.f;
    std::printf("[ conserve] %-26s f64 MambaLRP |ΣR - f|/|f|: zero biases %.1e", k < 3 ? kFixtures[k] : "random falcon + biases",
                conservation_gap(g0));
    // With biases (conv, in_proj, out_proj; dt_proj's gets no gradient under the SSM rule): Σ R + Σ b·∂̃f/∂b = f.
    q.zero_biases = false;
    const GradResultT<double> g1 = mamba_gradient_f64(m, q);
    EXPECT_GT(std::fabs(g1.bias_absorbed), 1e-3 * std::fabs(g1.f));
    EXPECT_LT(conservation_gap(g1), 1e-8);
    EXPECT_GT(conservation_gap(g1, false), 1e-3);  // the biases really absorb something
    std::printf(", with biases (ΣR + bias_absorbed) %.1e (without the bias term %.1e)\n", conservation_gap(g1),
                conservation_gap(g1, false));
    // Layer-wise: Σ_t R(x^ℓ) equal at every depth (zero biases), and equal to f.
    const int64_t L = m.config().n_layer, T = g0.shape[0];
    (void)falcon;
    for (int64_t l = 0; l <= L; ++l) {
      double s = 0;
      for (int64_t t = 0; t < T; ++t) s += g0.resid_relevance[size_t(l * T + t)];
      EXPECT_NEAR(s, g0.f, 1e-9 * std::fabs(g0.f)) << "depth " << l;
    }
    // resid_relevance[0] is the per-token relevance of the embeddings.
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int64_t d = 0; d < g0.shape[1]; ++d) s += g0.embeds[size_t(t * g0.shape[1] + d)] * g0.grad[size_t(t * g0.shape[1] + d)];
      EXPECT_NEAR(g0.resid_relevance[size_t(t)], s, 1e-12 * std::max(1.0, std::fabs(s)));
    }
  }
}

TEST(MambaGradient, MambaLrpConservesInF32) {
  for (const char* name : kFixtures) {
    const MambaModel& m = fixture(name);
    GradRequest q = request(m, LrpRules::mamba_lrp());
    q.zero_biases = true;
    const double g0 = conservation_gap(mamba_gradient(m, q));
    EXPECT_LT(g0, 1e-3) << name;
    q.zero_biases = false;
    const double g1 = conservation_gap(mamba_gradient(m, q));
    EXPECT_LT(g1, 1e-3) << name;
    std::printf("[ conserve] %-26s f32 MambaLRP gap: zero biases %.1e, with biases %.1e\n", name, g0, g1);
  }
}

TEST(MambaGradient, EveryRuleIsNeededForConservation) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const MambaModel& m = fixture(name);
    const bool falcon = m.config().falcon;
    auto run = [&](LrpRules r) {
      GradRequest q = request(m, r);
      q.zero_biases = true;
      return mamba_gradient_f64(m, q);
    };
    auto gap = [&](LrpRules r) { return conservation_gap(run(r)); };
    // Negative control: plain gradient×input.
    EXPECT_GT(gap(LrpRules::gradient()), 1e-2);
    EXPECT_GT(gap(LrpRules::ln_only()), 1e-2);
    std::printf("[ conserve] %-26s gap (zero biases): gradient×input %.2e, LN-only %.2e", name, gap(LrpRules::gradient()),
                gap(LrpRules::ln_only()));
    LrpRules r = LrpRules::mamba_lrp();
    EXPECT_LT(gap(r), 1e-8);
    const GradResultT<double> all = run(r);
    for (bool LrpRules::*rule : {&LrpRules::silu, &LrpRules::ssm, &LrpRules::gate, &LrpRules::norm}) {
      const char* what = rule == &LrpRules::silu ? "silu" : rule == &LrpRules::ssm ? "ssm" : rule == &LrpRules::gate ? "gate" : "norm";
      LrpRules off = r;
      off.*rule = false;
      if (falcon && rule == &LrpRules::ssm) {
        // Falcon-Mamba normalises dt_low, B and C by a weightless RMSNorm: as functions of u they are homogeneous of
        // degree 0 (up to eps), so by Euler's theorem the relevance leaking through them sums to ~0. Switching the
        // SSM rule off keeps the total but moves relevance between tokens.
        const GradResultT<double> g = run(off);
        EXPECT_LT(conservation_gap(g), 1e-5) << what;
        EXPECT_GT(parity(g.grad, all.grad), 1e-3) << what;
        std::printf(", no %s %.2e (grad moves by %.2e)", what, conservation_gap(g), parity(g.grad, all.grad));
        continue;
      }
      EXPECT_GT(gap(off), 1e-3) << "rule " << what;
      std::printf(", no %s %.2e", what, gap(off));
    }
    std::printf("\n");
  }
}

TEST(MambaGradient, LinearRulesKeepFAndBehave) {
  const MambaModel& m = fixture("mamba-f16-sharded");
  GradRequest q = request(m, LrpRules::mamba_lrp());
  q.zero_biases = true;
  const GradResultT<double> zero = mamba_gradient_f64(m, q);
  // γ with zero biases still conserves (z/zp rescaling, mambalrp.md §4.1 item 5); γ = 0 is LRP-0.
  q.rules.linear = LrpRules::Linear::Gamma;
  q.rules.gamma = 0.25;
  const GradResultT<double> gam = mamba_gradient_f64(m, q);
  EXPECT_EQ(gam.f, zero.f);
  EXPECT_LT(conservation_gap(gam), 1e-8);
  EXPECT_GT(parity(gam.grad, zero.grad), 1e-3);  // it does change the explanation
  q.rules.gamma = 0.0;
  EXPECT_LT(parity(mamba_gradient_f64(m, q).grad, zero.grad), 1e-10);
  // With biases: Σ R + the biases' share (of the selected γ copies) = f.
  q.zero_biases = false;
  q.rules.gamma = 0.25;
  EXPECT_LT(conservation_gap(mamba_gradient_f64(m, q)), 1e-8);
  // f32 γ agrees with f64 γ.
  EXPECT_LT(test::parity_error(mamba_gradient(m, q).grad, mamba_gradient_f64(m, q).grad), 1e-4);
  // ε: a tiny ε is LRP-0; a large one absorbs relevance (|Σ R| shrinks) but never changes f.
  q.zero_biases = true;
  q.rules.linear = LrpRules::Linear::Epsilon;
  q.rules.epsilon = 1e-9;
  const GradResultT<double> e0 = mamba_gradient_f64(m, q);
  EXPECT_LT(parity(e0.grad, zero.grad), 1e-6);
  q.rules.epsilon = 1.0;
  const GradResultT<double> e1 = mamba_gradient_f64(m, q);
  EXPECT_EQ(e1.f, zero.f);
  EXPECT_GT(conservation_gap(e1), 1e-3);
  EXPECT_LT(std::fabs(sum_relevance(e1)), std::fabs(sum_relevance(zero)));
  EXPECT_LT(test::parity_error(mamba_gradient(m, q).grad, e1.grad), 1e-4);
}

TEST(MambaGradient, LayerGradientsAreConsistent) {
  const MambaModel& m = fixture("mamba-f16-sharded");
  GradRequest q = request(m, LrpRules::mamba_lrp());
  q.zero_biases = false;
  q.keep_layer_grads = true;
  const GradResultT<double> g = mamba_gradient_f64(m, q);
  const int64_t L = m.config().n_layer, T = g.shape[0], Dm = g.shape[1], E = m.config().d_inner;
  ASSERT_EQ(int64_t(g.grad_resid.size()), L);
  ASSERT_EQ(int64_t(g.grad_y.size()), L);
  EXPECT_EQ(g.grad_resid[0], g.grad);
  ForwardOptions fo;
  fo.keep_activations = true;
  const ForwardResult fr = m.forward(kIds, fo);
  for (int64_t l = 0; l < L; ++l) {
    ASSERT_EQ(int64_t(g.grad_y[size_t(l)].size()), T * E);
    // resid_relevance[ℓ] = Σ_d x^ℓ·g^ℓ with x^ℓ the residual stream entering layer ℓ.
    const Tensor& x = fr.acts.at("layers." + std::to_string(l) + ".residual_in");
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int64_t d = 0; d < Dm; ++d) s += double(x.data[size_t(t * Dm + d)]) * g.grad_resid[size_t(l)][size_t(t * Dm + d)];
      EXPECT_NEAR(g.resid_relevance[size_t(l * T + t)], s, 1e-5 * std::max(1.0, std::fabs(s)));
    }
    // out_proj is linear: Σ y·∂̃f/∂y + Σ b_out·g = Σ mixer_out·g, with g = ∂̃f/∂x^{ℓ+1}.
    if (l + 1 < L) {
      const Tensor& y = fr.acts.at("layers." + std::to_string(l) + ".y");
      const Tensor& mo = fr.acts.at("layers." + std::to_string(l) + ".mixer_out");
      double ry = 0, rm = 0, rb = 0;
      const float* b = m.layer(l).out_proj_b.p;
      for (int64_t k = 0; k < T * E; ++k) ry += double(y.data[size_t(k)]) * g.grad_y[size_t(l)][size_t(k)];
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < Dm; ++d) {
          const double gg = g.grad_resid[size_t(l + 1)][size_t(t * Dm + d)];
          rm += double(mo.data[size_t(t * Dm + d)]) * gg;
          rb += double(b[d]) * gg;
        }
      EXPECT_NEAR(ry + rb, rm, 1e-5 * std::max(1.0, std::fabs(rm)));
    }
  }
}

TEST(MambaGradient, OneAndTwoThreadsGiveBitwiseIdenticalGradients) {
  test::TempDir td;
  MambaConfig c;
  c.n_layer = 2, c.d_model = 192, c.d_inner = 384, c.d_state = 16, c.d_conv = 4, c.dt_rank = 12, c.vocab = 1000;
  c.conv_bias = true;
  write_random_mamba(td.path(), c, 11);
  Checkpoint ck = open_checkpoint(td.path());
  auto m = MambaModel::load(ck, false);
  GradRequest q;
  for (int i = 0; i < 300; ++i) q.ids.push_back((i * 37 + 5) % 1000);
  q.seed.assign(m->lm_head().p + 7 * 192, m->lm_head().p + 8 * 192);
  q.keep_layer_grads = true;
  for (LrpRules rules : {LrpRules::gradient(), LrpRules::mamba_lrp()}) {
    q.rules = rules;
    set_num_threads(1);
    const GradResult a = mamba_gradient(*m, q);
    set_num_threads(2);
    const GradResult b = mamba_gradient(*m, q);
    set_num_threads(0);
    EXPECT_EQ(0, std::memcmp(a.grad.data(), b.grad.data(), a.grad.size() * 4));
    EXPECT_EQ(a.f, b.f);
    EXPECT_EQ(a.bias_absorbed, b.bias_absorbed);
    EXPECT_EQ(a.resid_relevance, b.resid_relevance);
    EXPECT_EQ(a.grad_y, b.grad_y);
  }
}

TEST(MambaGradient, RejectsBadRequests) {
  const MambaModel& m = tiny(false);
  auto fails = [&](GradRequest q, const std::string& what) {
    try {
      mamba_gradient(m, q);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  GradRequest q = request(m, LrpRules::mamba_lrp());
  q.position = 7;
  fails(q, "position");
  q.position = -2;
  fails(q, "position");
  q = request(m, LrpRules::mamba_lrp());
  q.seed.pop_back();
  fails(q, "seed");
  q = request(m, LrpRules::mamba_lrp());
  Tensor bad({7, 9});
  q.embeds = &bad;
  fails(q, "embeds");
  Tensor rows({6, 8});
  q.embeds = &rows;
  fails(q, "embeds");  // 6 rows but 7 ids
  q = request(m, LrpRules::mamba_lrp());
  q.ids[2] = 50;
  fails(q, "out of range");
  q.ids.clear();
  fails(q, "no tokens");
}

TEST(MambaGradient, ExplicitEmbeddingsEqualTheLookup) {
  const MambaModel& m = tiny(true);
  GradRequest q = request(m, LrpRules::mamba_lrp());
  const GradResult a = mamba_gradient(m, q);
  Tensor emb({7, 8}, std::vector<float>(a.embeds.begin(), a.embeds.end()));
  q.embeds = &emb;
  q.ids.clear();
  const GradResult b = mamba_gradient(m, q);
  EXPECT_EQ(a.grad, b.grad);
  EXPECT_EQ(a.f, b.f);
}

TEST(MambaGradient, MatchesPyTorchAutograd) {
  // tests/data/grad/*.safetensors: scripts/make_grad_fixtures.py (float64 autograd, MambaLRP by .detach()).
  struct Case {
    const char* name;
    LrpRules rules;
    bool zero_biases;
  };
  const Case cases[] = {{"gradient", LrpRules::gradient(), false},
                        {"mamba_lrp", LrpRules::mamba_lrp(), false},
                        {"ln_only", LrpRules::ln_only(), false},
                        {"mamba_lrp_zero_bias", LrpRules::mamba_lrp(), true},
                        {"gradient_mid", LrpRules::gradient(), false}};
  double worst32 = 0, worst64 = 0;
  for (const char* model : kFixtures) {
    const std::string path = test::data_dir() + "/grad/" + model + ".safetensors";
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    const SafetensorsFile fx = read_safetensors(path);
    const MambaModel& m = fixture(model);
    std::vector<int32_t> ids;
    for (const auto& [n, t] : fx.tensors)
      if (n == "input_ids")
        for (float v : to_f32(t)) ids.push_back(int32_t(v));
    const std::vector<double> seed = test::f64_tensor(path, "seed");
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message() << model << " " << c.name);
      GradRequest q;
      q.ids = ids;
      q.seed.assign(seed.begin(), seed.end());
      q.rules = c.rules;
      q.zero_biases = c.zero_biases;
      for (const auto& [n, t] : fx.tensors)
        if (n == std::string(c.name) + ".position") q.position = int64_t(to_f32(t)[0]);
      const std::vector<double> want = test::f64_tensor(path, std::string(c.name) + ".grad");
      const double f = test::f64_tensor(path, std::string(c.name) + ".f")[0];
      const GradResult g32 = mamba_gradient(m, q);
      const GradResultT<double> g64 = mamba_gradient_f64(m, q);
      const double e32 = test::parity_error(g32.grad, want), e64 = parity(g64.grad, want);
      EXPECT_LE(e32, 1e-4);
      EXPECT_LE(e64, 1e-10);
      EXPECT_NEAR(g32.f, f, 1e-5 * std::max(1.0, std::fabs(f)));
      EXPECT_NEAR(g64.f, f, 1e-10 * std::max(1.0, std::fabs(f)));  // eps is stored as f32 (1e-5f): ~5e-12
      worst32 = std::max(worst32, e32), worst64 = std::max(worst64, e64);
    }
  }
  std::printf("[ parity  ] worst vs PyTorch autograd: f32 %.2e, f64 %.2e\n", worst32, worst64);
}
