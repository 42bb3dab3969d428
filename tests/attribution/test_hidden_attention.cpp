// Hidden attention: every mode against the naive double-precision formulas, the layer identities (y = α·u,
// y = α̂·x + D term + bias term), the published-code compatibility row, and thread-count invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "../test_util.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "ops/selective_scan.h"
#include "ops/vmath.h"

using namespace ssmx;

namespace {

// A random mixer with T = 70 (two bands), E = 19 (not a multiple of 16), N = 5, K = 4.
struct RandomMixer {
  int64_t T = 70, E = 19, N = 5, K = 4;
  std::vector<float> delta, A, BC, conv, z, w, b, D, u, x;
  MixerTrace tr;
  RandomMixer() {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& v, int64_t n, float s) {
      for (int64_t k = 0; k < n; ++k) v.push_back(s * nd(rng));
    };
    for (int64_t k = 0; k < T * E; ++k) delta.push_back(softplus_f(nd(rng) - 1.5f));
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < N; ++n) A.push_back(-float(n + 1) * (0.5f + 0.05f * float(e)));
    fill(BC, T * 2 * N, 1.0f);
    fill(x, T * E, 1.0f);
    fill(w, E * K, 0.5f);
    fill(b, E, 0.3f);
    fill(z, T * E, 1.0f);
    fill(D, E, 1.0f);
    // c = conv(x) + b, u = SiLU(c), consistent with x.
    conv.assign(size_t(T * E), 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        float s = b[e];
        for (int64_t k = 0; k < K; ++k) {
          int64_t tau = t - (K - 1) + k;
          if (tau >= 0) s += w[e * K + k] * x[tau * E + e];
        }
        conv[t * E + e] = s;
      }
    for (float c : conv) u.push_back(silu_f(c));
    tr.T = T, tr.E = E, tr.N = N, tr.K = K;
    tr.delta = delta.data(), tr.A = A.data(), tr.B = BC.data(), tr.C = BC.data() + N, tr.ld_bc = 2 * N;
    tr.conv = conv.data(), tr.z = z.data(), tr.conv_w = w.data(), tr.conv_b = b.data(), tr.D = D.data();
    tr.u = u.data(), tr.x = x.data();
  }
};

// α_e in double, straight from the definition (product of decays).
std::vector<double> naive_s6(const MixerTrace& tr, int64_t e, bool compat_row = false) {
  const int64_t T = tr.T, N = tr.N, E = tr.E;
  std::vector<double> a(size_t(T * T), 0.0);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      if (compat_row && j >= i) continue;
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        double prod = 1.0;
        const int64_t kend = compat_row ? i - 1 : i;
        for (int64_t k = j + 1; k <= kend; ++k) prod *= std::exp(double(tr.delta[k * E + e]) * tr.A[e * N + n]);
        s += double(tr.C[i * tr.ld_bc + n]) * prod * double(tr.delta[j * E + e]) * double(tr.B[j * tr.ld_bc + n]);
      }
      a[size_t(i * T + j)] = s;
    }
  return a;
}

double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// diag(g)·α·diag(σ)·M as dense double matrices, with factors dropped per kind.
std::vector<double> naive_kind(const MixerTrace& tr, int64_t e, AttnKind kind) {
  const int64_t T = tr.T, E = tr.E, K = tr.K;
  std::vector<double> a = naive_s6(tr, e);
  if (kind == AttnKind::S6) return a;
  if (kind != AttnKind::UnifiedNoAct)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) a[size_t(i * T + j)] *= sig(tr.conv[j * E + e]);
  if (kind != AttnKind::UnifiedNoConv) {
    std::vector<double> m(size_t(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j)
        for (int64_t q = j; q < std::min(T, j + K); ++q)  // M[q, j] = w[K-1-(q-j)]
          m[size_t(i * T + j)] += a[size_t(i * T + q)] * double(tr.conv_w[e * K + K - 1 - (q - j)]);
    a = m;
  }
  if (kind != AttnKind::UnifiedNoGate)
    for (int64_t i = 0; i < T; ++i) {
      const double zz = tr.z[i * E + e];
      for (int64_t j = 0; j < T; ++j) a[size_t(i * T + j)] *= zz * sig(zz);
    }
  return a;
}

const AttnKind kKinds[] = {AttnKind::S6, AttnKind::Unified, AttnKind::UnifiedNoConv, AttnKind::UnifiedNoGate,
                           AttnKind::UnifiedNoAct};

}  // namespace

TEST(HiddenAttention, FullMatricesMatchNaiveDoubleForEveryKind) {
  RandomMixer m;
  for (AttnKind kind : kKinds) {
    Tensor full = hidden_attention_full(m.tr, kind, 3, 9);
    ASSERT_EQ(full.shape, (std::vector<int64_t>{6, m.T, m.T}));
    for (int64_t e = 3; e < 9; ++e) {
      std::vector<double> ref = naive_kind(m.tr, e, kind);
      std::vector<float> got(full.data.begin() + (e - 3) * m.T * m.T, full.data.begin() + (e - 2) * m.T * m.T);
      EXPECT_LT(test::parity_error(got, ref), 2e-6) << attn_kind_name(kind) << " channel " << e;
    }
  }
}

TEST(HiddenAttention, S6ReproducesTheScanOutput) {
  // y − D·u = α·u per channel, and the gated form: (ssm + D u)·SiLU(z).
  RandomMixer m;
  std::vector<float> ssm(size_t(m.T * m.E)), y(size_t(m.T * m.E));
  ScanArgs a;
  a.T = m.T, a.E = m.E, a.N = m.N, a.u = m.u.data(), a.delta = m.delta.data(), a.A = m.A.data();
  a.B = m.tr.B, a.C = m.tr.C, a.ld_bc = m.tr.ld_bc, a.D = m.D.data(), a.z = m.z.data(), a.ld_z = m.E;
  selective_scan_forward(ssm.data(), y.data(), nullptr, a);
  Tensor full = hidden_attention_full(m.tr, AttnKind::S6, 0, m.E);
  Tensor uni = hidden_attention_full(m.tr, AttnKind::Unified, 0, m.E);
  Tensor dterm, bterm;
  hidden_attention_extra_terms(m.tr, &dterm, &bterm);
  double worst_s6 = 0.0, worst_uni = 0.0;
  for (int64_t e = 0; e < m.E; ++e)
    for (int64_t i = 0; i < m.T; ++i) {
      double s = 0.0, r = 0.0;
      for (int64_t j = 0; j < m.T; ++j) {
        s += double(full.data[size_t((e * m.T + i) * m.T + j)]) * m.u[j * m.E + e];
        r += double(uni.data[size_t((e * m.T + i) * m.T + j)]) * m.x[j * m.E + e];
      }
      r += dterm.data[size_t(i * m.E + e)] + bterm.data[size_t(i * m.E + e)];
      worst_s6 = std::max(worst_s6, std::fabs(s - ssm[i * m.E + e]) / std::max(1.0, std::fabs(s)));
      worst_uni = std::max(worst_uni, std::fabs(r - y[i * m.E + e]) / std::max(1.0, std::fabs(r)));
    }
  EXPECT_LT(worst_s6, 1e-5);
  EXPECT_LT(worst_uni, 1e-5);
  // Without the conv bias the bias term vanishes.
  MixerTrace nb = m.tr;
  nb.conv_b = nullptr;
  Tensor bt0;
  hidden_attention_extra_terms(nb, nullptr, &bt0);
  for (float v : bt0.data) EXPECT_EQ(v, 0.0f);
}

TEST(HiddenAttention, RowModeEqualsTheMatrixRow) {
  RandomMixer m;
  for (AttnKind kind : kKinds)
    for (int64_t i : {int64_t(0), int64_t(37), m.T - 1}) {
      Tensor full = hidden_attention_full(m.tr, kind, 0, m.E);
      Tensor row = hidden_attention_row(m.tr, kind, i, 0, m.E);
      ASSERT_EQ(row.shape, (std::vector<int64_t>{m.E, m.T}));
      for (int64_t e = 0; e < m.E; ++e)
        EXPECT_LT(test::parity_error(row.ptr() + e * m.T, full.ptr() + (e * m.T + i) * m.T, m.T), 2e-6)
            << attn_kind_name(kind) << " row " << i << " channel " << e;
    }
}

TEST(HiddenAttention, CompatRowReproducesThePublishedQuirk) {
  RandomMixer m;
  const int64_t i = 50;
  Tensor row = hidden_attention_row(m.tr, AttnKind::S6, i, 0, m.E, AttnCompat::HiddenAttnRow);
  Tensor exact = hidden_attention_row(m.tr, AttnKind::S6, i, 0, m.E);
  double diff = 0.0;
  for (int64_t e = 0; e < m.E; ++e) {
    std::vector<double> ref = naive_s6(m.tr, e, /*compat_row=*/true);
    std::vector<float> got(row.data.begin() + e * m.T, row.data.begin() + (e + 1) * m.T);
    std::vector<double> ref_row(ref.begin() + i * m.T, ref.begin() + (i + 1) * m.T);
    EXPECT_LT(test::parity_error(got, ref_row), 2e-6) << "channel " << e;
    EXPECT_EQ(got[size_t(i)], 0.0f);  // the diagonal is zero in the published row
    for (int64_t j = 0; j < m.T; ++j) diff = std::max(diff, double(std::fabs(got[size_t(j)] - exact.data[size_t(e * m.T + j)])));
  }
  EXPECT_GT(diff, 1e-3);  // and it really differs from the exact row
}

TEST(HiddenAttention, ReductionsMatchReducedFullMatrices) {
  RandomMixer m;
  for (AttnKind kind : {AttnKind::S6, AttnKind::Unified})
    for (AttnReduce red : {AttnReduce::Mean, AttnReduce::AbsMean, AttnReduce::Max}) {
      Tensor full = hidden_attention_full(m.tr, kind, 2, 17);
      Tensor map = hidden_attention_reduce(m.tr, kind, red, 2, 17);
      std::vector<double> ref(size_t(m.T * m.T));
      for (int64_t p = 0; p < m.T * m.T; ++p) {
        const int64_t i = p / m.T, j = p % m.T;
        double s = red == AttnReduce::Max ? -1e300 : 0.0;
        for (int64_t k = 0; k < 15; ++k) {
          const double v = full.data[size_t(k * m.T * m.T + p)];
          if (red == AttnReduce::Mean) s += v / 15.0;
          else if (red == AttnReduce::AbsMean) s += std::fabs(v) / 15.0;
          else s = std::max(s, v);
        }
        ref[size_t(p)] = j > i ? 0.0 : s;
      }
      EXPECT_LT(test::parity_error(map.data, ref), 2e-6) << attn_kind_name(kind) << " " << attn_reduce_name(red);
      Tensor rr = hidden_attention_row_reduce(m.tr, kind, red, 44, 2, 17);
      std::vector<double> ref_row(ref.begin() + 44 * m.T, ref.begin() + 45 * m.T);
      EXPECT_LT(test::parity_error(rr.data, ref_row), 2e-6) << attn_kind_name(kind) << " row " << attn_reduce_name(red);
    }
}

TEST(HiddenAttention, LongSequencesStayAccurate) {
  // T = 300 with strong decays: band starts are computed in log space with double partial sums.
  RandomMixer m;
  const int64_t T = 300, E = 3, N = 4;
  std::mt19937_64 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> delta, A, BC, u;
  for (int64_t k = 0; k < T * E; ++k) delta.push_back(softplus_f(nd(rng) + 0.5f));
  for (int64_t k = 0; k < E * N; ++k) A.push_back(-0.05f * float(k + 1));
  for (int64_t k = 0; k < T * 2 * N; ++k) BC.push_back(nd(rng));
  MixerTrace tr;
  tr.T = T, tr.E = E, tr.N = N, tr.K = 4, tr.delta = delta.data(), tr.A = A.data(), tr.B = BC.data(),
  tr.C = BC.data() + N, tr.ld_bc = 2 * N;
  Tensor full = hidden_attention_full(tr, AttnKind::S6, 0, E);
  for (int64_t e = 0; e < E; ++e) {
    std::vector<double> ref = naive_s6(tr, e);
    std::vector<float> got(full.data.begin() + e * T * T, full.data.begin() + (e + 1) * T * T);
    EXPECT_LT(test::parity_error(got, ref), 1e-5) << "channel " << e;
  }
}

TEST(HiddenAttention, OneAndTwoThreadsAreBitwiseIdentical) {
  RandomMixer m;
  set_num_threads(1);
  Tensor a = hidden_attention_reduce(m.tr, AttnKind::Unified, AttnReduce::Mean, 0, m.E);
  Tensor b = hidden_attention_full(m.tr, AttnKind::S6, 0, m.E);
  Tensor c = hidden_attention_row(m.tr, AttnKind::Unified, 69, 0, m.E);
  set_num_threads(2);
  Tensor a2 = hidden_attention_reduce(m.tr, AttnKind::Unified, AttnReduce::Mean, 0, m.E);
  Tensor b2 = hidden_attention_full(m.tr, AttnKind::S6, 0, m.E);
  Tensor c2 = hidden_attention_row(m.tr, AttnKind::Unified, 69, 0, m.E);
  set_num_threads(0);
  EXPECT_EQ(0, std::memcmp(a.ptr(), a2.ptr(), a.data.size() * 4));
  EXPECT_EQ(0, std::memcmp(b.ptr(), b2.ptr(), b.data.size() * 4));
  EXPECT_EQ(0, std::memcmp(c.ptr(), c2.ptr(), c.data.size() * 4));
}

TEST(HiddenAttention, ReconstructsEveryLayerOfARealModel) {
  // On the fixture models (Mamba and Falcon-Mamba), the unified matrices plus the D and bias terms rebuild the
  // mixer output y before out_proj, and the S6 matrices rebuild ssm = y_scan − D·u.
  for (const char* name : {"mamba-f32-safetensors", "falcon-f32-safetensors"}) {
    Checkpoint ck = open_checkpoint(test::data_dir() + "/models/" + name);
    auto model = MambaModel::load(ck, std::string(name).rfind("falcon", 0) == 0);
    std::vector<int32_t> ids = {0, 5, 17, 300, 42, 42, 7, 99, 123, 4, 8, 15, 16, 23};
    ForwardOptions fo;
    fo.keep_activations = true;
    ForwardResult r = model->forward(ids, fo);
    for (int64_t l = 0; l < model->config().n_layer; ++l) {
      MixerTrace tr = make_mixer_trace(*model, r.acts, l);
      const int64_t T = tr.T, E = tr.E;
      Tensor s6 = hidden_attention_full(tr, AttnKind::S6, 0, E);
      Tensor uni = hidden_attention_full(tr, AttnKind::Unified, 0, E);
      Tensor dterm, bterm;
      hidden_attention_extra_terms(tr, &dterm, &bterm);
      const Tensor& ssm = r.acts.at("layers." + std::to_string(l) + ".ssm");
      const Tensor& y = r.acts.at("layers." + std::to_string(l) + ".y");
      std::vector<double> s_ref(size_t(T * E)), y_ref(size_t(T * E));
      std::vector<float> s_got(size_t(T * E)), y_got(size_t(T * E));
      for (int64_t e = 0; e < E; ++e)
        for (int64_t i = 0; i < T; ++i) {
          double s = 0.0, q = dterm.data[size_t(i * E + e)] + double(bterm.data[size_t(i * E + e)]);
          for (int64_t j = 0; j <= i; ++j) {
            s += double(s6.data[size_t((e * T + i) * T + j)]) * tr.u[j * E + e];
            q += double(uni.data[size_t((e * T + i) * T + j)]) * tr.x[j * E + e];
          }
          s_ref[size_t(i * E + e)] = s;
          y_ref[size_t(i * E + e)] = q;
          s_got[size_t(i * E + e)] = ssm.data[size_t(i * E + e)];
          y_got[size_t(i * E + e)] = y.data[size_t(i * E + e)];
        }
      EXPECT_LT(test::parity_error(s_got, s_ref), 1e-5) << name << " layer " << l;
      EXPECT_LT(test::parity_error(y_got, y_ref), 1e-5) << name << " layer " << l;
    }
  }
}
