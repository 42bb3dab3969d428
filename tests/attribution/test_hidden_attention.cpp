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

// ---- The chunked GEMM path of the linear reductions (mean, weighted) ----

namespace {

// A random mixer of any size; Δ = softplus(N(0,1)·dscale + dshift), A[e,n] = −(n+1)·(0.5 + 0.05 e).
struct SizedMixer {
  int64_t T, E, N, K = 4;
  std::vector<float> delta, A, BC, conv, z, w, b, D, u, x;
  MixerTrace tr;
  SizedMixer(int64_t T_, int64_t E_, int64_t N_, float dshift, float dscale, bool bias, uint64_t seed)
      : T(T_), E(E_), N(N_) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& v, int64_t n, float s) {
      for (int64_t k = 0; k < n; ++k) v.push_back(s * nd(rng));
    };
    for (int64_t k = 0; k < T * E; ++k) delta.push_back(softplus_f(dscale * nd(rng) + dshift));
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < N; ++n) A.push_back(-float(n + 1) * (0.5f + 0.05f * float(e)));
    fill(BC, T * 2 * N, 1.0f);
    fill(x, T * E, 1.0f);
    fill(w, E * K, 0.5f);
    fill(b, E, 0.3f);
    fill(z, T * E, 1.0f);
    fill(D, E, 1.0f);
    conv.assign(size_t(T * E), 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        float s = bias ? b[e] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t tau = t - (K - 1) + k;
          if (tau >= 0) s += w[e * K + k] * x[tau * E + e];
        }
        conv[t * E + e] = s;
      }
    for (float c : conv) u.push_back(silu_f(c));
    tr.T = T, tr.E = E, tr.N = N, tr.K = K;
    tr.delta = delta.data(), tr.A = A.data(), tr.B = BC.data(), tr.C = BC.data() + N, tr.ld_bc = 2 * N;
    tr.conv = conv.data(), tr.z = z.data(), tr.conv_w = w.data(), tr.conv_b = bias ? b.data() : nullptr;
    tr.D = D.data(), tr.u = u.data(), tr.x = x.data();
  }
};

// α^kind_e in double from the log-space formula with double cumulative sums (exact to about 1e-13 here; the literal
// product form above agrees with it), then the gate, activation and conv as dense matrices.
std::vector<double> naive_kind_fast(const MixerTrace& tr, int64_t e, AttnKind kind) {
  const int64_t T = tr.T, N = tr.N, E = tr.E, K = tr.K;
  std::vector<double> S(static_cast<size_t>(T)), a(size_t(T * T), 0.0);
  double acc = 0.0;
  for (int64_t t = 0; t < T; ++t) S[size_t(t)] = (acc += double(tr.delta[t * E + e]));
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n)
        s += double(tr.C[i * tr.ld_bc + n]) * std::exp(double(tr.A[e * N + n]) * (S[size_t(i)] - S[size_t(j)])) *
             double(tr.delta[j * E + e]) * double(tr.B[j * tr.ld_bc + n]);
      a[size_t(i * T + j)] = s;
    }
  if (kind == AttnKind::S6) return a;
  if (kind != AttnKind::UnifiedNoAct)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j) a[size_t(i * T + j)] *= sig(tr.conv[j * E + e]);
  if (kind != AttnKind::UnifiedNoConv) {
    std::vector<double> m(size_t(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t q = j; q < std::min(i + 1, j + K); ++q)
          m[size_t(i * T + j)] += a[size_t(i * T + q)] * double(tr.conv_w[e * K + K - 1 - (q - j)]);
    a = m;
  }
  if (kind != AttnKind::UnifiedNoGate)
    for (int64_t i = 0; i < T; ++i) {
      const double zz = tr.z[i * E + e];
      for (int64_t j = 0; j <= i; ++j) a[size_t(i * T + j)] *= zz * sig(zz);
    }
  return a;
}

// Σ_e w[e]·W[i,e]·α^kind_e[i,j]·V[j,e] in double (null = 1).
std::vector<double> naive_weighted(const MixerTrace& tr, AttnKind kind, const float* W, const float* V, const float* w,
                                   int64_t c0, int64_t c1) {
  const int64_t T = tr.T, E = tr.E;
  std::vector<double> ref(size_t(T * T), 0.0);
  for (int64_t e = c0; e < c1; ++e) {
    const std::vector<double> a = naive_kind_fast(tr, e, kind);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j)
        ref[size_t(i * T + j)] += (w ? double(w[e]) : 1.0) * (W ? double(W[i * E + e]) : 1.0) * a[size_t(i * T + j)] *
                                  (V ? double(V[j * E + e]) : 1.0);
  }
  return ref;
}

// Largest |got − ref| relative to the largest |ref| (no floor at 1: the maps can be small).
double rel_max_error(const Tensor& got, const std::vector<double>& ref) {
  double mx = 0.0, err = 0.0;
  for (double v : ref) mx = std::max(mx, std::fabs(v));
  for (size_t k = 0; k < ref.size(); ++k) {
    const double d = std::fabs(double(got.data[k]) - ref[k]);
    if (std::isnan(d)) return INFINITY;
    err = std::max(err, d);
  }
  return mx > 0.0 ? err / mx : err;
}

// Checks mean and a random weighting of every kind on one mixer.
void check_gemm_path(const MixerTrace& tr, const std::string& what, int64_t c0, int64_t c1, double tol = 1e-5) {
  const int64_t T = tr.T, E = tr.E;
  const std::vector<float> W = test::random_normal(T * E, 11), V = test::random_normal(T * E, 12),
                           wc = test::random_normal(E, 13);
  for (AttnKind kind : kKinds) {
    Tensor mean = hidden_attention_reduce(tr, kind, AttnReduce::Mean, c0, c1);
    ASSERT_EQ(mean.shape, (std::vector<int64_t>{T, T}));
    std::vector<double> ref = naive_weighted(tr, kind, nullptr, nullptr, nullptr, c0, c1);
    for (double& v : ref) v /= double(c1 - c0);
    EXPECT_LT(rel_max_error(mean, ref), tol) << what << " mean " << attn_kind_name(kind);
    Tensor wt = hidden_attention_weighted(tr, kind, W.data(), V.data(), wc.data(), c0, c1);
    std::vector<double> wref = naive_weighted(tr, kind, W.data(), V.data(), wc.data(), c0, c1);
    EXPECT_LT(rel_max_error(wt, wref), tol) << what << " weighted " << attn_kind_name(kind);
    if (std::getenv("SSMX_TEST_VERBOSE"))
      std::printf("%s %s mean %.2e weighted %.2e\n", what.c_str(), attn_kind_name(kind), rel_max_error(mean, ref), rel_max_error(wt, wref));
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = i + 1; j < T; ++j) ASSERT_EQ(wt.data[size_t(i * T + j)], 0.0f) << what << " above the diagonal";
  }
}

}  // namespace

TEST(HiddenAttentionGemm, MatchesNaiveDoubleForEveryKindAndChunking) {
  // The chunk is 64 tokens: T below it, equal, one more, and several chunks with a ragged end (spill of a chunk into
  // the previous one's last K−1 columns crosses chunk boundaries at 64, 128, 192).
  for (int64_t T : {int64_t(40), int64_t(64), int64_t(65), int64_t(200)})
    for (bool bias : {true, false}) {
      SizedMixer m(T, 7, 5, -1.5f, 1.0f, bias, uint64_t(100 + T));
      check_gemm_path(m.tr, "T=" + std::to_string(T) + (bias ? " bias" : " no bias"), 1, 7);
    }
}

TEST(HiddenAttentionGemm, SeveralChannelBlocks) {
  // Force K = 2 channels·N per sgemm so that 9 channels take 5 blocks (the last one short).
  SizedMixer m(150, 11, 16, -4.0f, 1.0f, true, 7);
  hidden_attention_set_gemm_block_for_testing(32);
  check_gemm_path(m.tr, "blocks of 2 channels", 1, 10);
  hidden_attention_set_gemm_block_for_testing(0);
}

TEST(HiddenAttentionGemm, StrongAndTinyDecays) {
  // Δ ≈ 3 with |A| up to 6: most inter-chunk factors underflow to 0 (the exact limit); Δ ≈ 1e-4: almost no decay.
  SizedMixer strong(200, 5, 8, 3.0f, 1.0f, true, 21);
  check_gemm_path(strong.tr, "strong decays", 0, 5);
  SizedMixer tiny(200, 5, 8, -9.0f, 0.3f, true, 22);
  check_gemm_path(tiny.tr, "tiny decays", 0, 5);
  // Long sequence with cumulative sums in the thousands: no cancellation (double partial sums).
  SizedMixer longm(700, 2, 4, 1.0f, 1.0f, false, 23);
  check_gemm_path(longm.tr, "T=700, S up to ~900", 0, 2);
}

TEST(HiddenAttentionGemm, FalconFixtureLayers) {
  // Real traces of the Falcon-Mamba fixture (E=64, N=8, RMS-normed B, C, Δ) at T=150: three chunks.
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/falcon-f32-safetensors");
  auto model = MambaModel::load(ck, true);
  std::vector<int32_t> ids;
  std::mt19937 rng(3);
  for (int k = 0; k < 150; ++k) ids.push_back(int32_t(rng() % 512));
  ForwardOptions fo;
  fo.keep_activations = true;
  ForwardResult r = model->forward(ids, fo);
  for (int64_t l = 0; l < model->config().n_layer; ++l) {
    MixerTrace tr = make_mixer_trace(*model, r.acts, l);
    check_gemm_path(tr, "falcon layer " + std::to_string(l), 0, tr.E);
  }
}

TEST(HiddenAttentionGemm, OneAndTwoThreadsAreBitwiseIdentical) {
  SizedMixer m(200, 19, 16, -1.5f, 1.0f, true, 31);
  const std::vector<float> W = test::random_normal(m.T * m.E, 1), V = test::random_normal(m.T * m.E, 2);
  for (int64_t kb : {int64_t(0), int64_t(48)}) {
    hidden_attention_set_gemm_block_for_testing(kb);
    for (AttnKind kind : kKinds) {
      set_num_threads(1);
      Tensor a = hidden_attention_reduce(m.tr, kind, AttnReduce::Mean, 0, m.E);
      Tensor b = hidden_attention_weighted(m.tr, kind, W.data(), V.data(), nullptr, 2, 17);
      set_num_threads(2);
      Tensor a2 = hidden_attention_reduce(m.tr, kind, AttnReduce::Mean, 0, m.E);
      Tensor b2 = hidden_attention_weighted(m.tr, kind, W.data(), V.data(), nullptr, 2, 17);
      set_num_threads(0);
      EXPECT_EQ(0, std::memcmp(a.ptr(), a2.ptr(), a.data.size() * 4)) << attn_kind_name(kind);
      EXPECT_EQ(0, std::memcmp(b.ptr(), b2.ptr(), b.data.size() * 4)) << attn_kind_name(kind);
    }
  }
  hidden_attention_set_gemm_block_for_testing(0);
}

TEST(HiddenAttentionGemm, GradientTimesValueIsTheTokenContribution) {
  // With W = g (any row weights) and V = u, row i of the s6 map sums to Σ_e g_i[e]·ssm_i[e] (ssm = α·u, the scan).
  SizedMixer m(150, 9, 16, -1.5f, 1.0f, true, 41);
  std::vector<float> ssm(size_t(m.T * m.E));
  ScanArgs a;
  a.T = m.T, a.E = m.E, a.N = m.N, a.u = m.u.data(), a.delta = m.delta.data(), a.A = m.A.data();
  a.B = m.tr.B, a.C = m.tr.C, a.ld_bc = m.tr.ld_bc;
  selective_scan_forward(ssm.data(), nullptr, nullptr, a);
  const std::vector<float> g = test::random_normal(m.T * m.E, 5);
  Tensor map = hidden_attention_weighted(m.tr, AttnKind::S6, g.data(), m.u.data(), nullptr, 0, m.E);
  double worst = 0.0, mx = 0.0;
  for (int64_t i = 0; i < m.T; ++i) {
    double row = 0.0, ref = 0.0;
    for (int64_t j = 0; j <= i; ++j) row += map.data[size_t(i * m.T + j)];
    for (int64_t e = 0; e < m.E; ++e) ref += double(g[i * m.E + e]) * ssm[i * m.E + e];
    worst = std::max(worst, std::fabs(row - ref));
    mx = std::max(mx, std::fabs(ref));
  }
  EXPECT_LT(worst / mx, 1e-5);
}

TEST(HiddenAttention, RowsThroughUnderflowMatchNaiveDouble) {
  // Long rows with decays strong enough that the running products would go subnormal and then to zero: the row walk
  // rescales them by powers of two and stops once the remaining entries round to zero. 70 channels: a full group of
  // 64 and a partial one.
  for (float shift : {-0.5f, -4.0f}) {
    SizedMixer m(1500, 70, 16, shift, 1.0f, true, 51);
    const int64_t T = m.T, E = m.E, N = m.N;
    for (int64_t i : {T - 1, int64_t(700)}) {
      Tensor row = hidden_attention_row(m.tr, AttnKind::S6, i, 0, E);
      Tensor uni = hidden_attention_row(m.tr, AttnKind::Unified, i, 0, E);
      for (int64_t e = 0; e < E; ++e) {
        std::vector<double> ref(static_cast<size_t>(T), 0.0), S(static_cast<size_t>(T));
        double acc = 0.0;
        for (int64_t t = 0; t < T; ++t) S[size_t(t)] = (acc += double(m.delta[t * E + e]));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t n = 0; n < N; ++n)
            ref[size_t(j)] += double(m.tr.C[i * m.tr.ld_bc + n]) * std::exp(double(m.A[e * N + n]) * (S[size_t(i)] - S[size_t(j)])) *
                              double(m.delta[j * E + e]) * double(m.tr.B[j * m.tr.ld_bc + n]);
        double mx = 0.0, err = 0.0;
        for (int64_t j = 0; j < T; ++j) {
          mx = std::max(mx, std::fabs(ref[size_t(j)]));
          err = std::max(err, std::fabs(double(row.data[size_t(e * T + j)]) - ref[size_t(j)]));
        }
        EXPECT_LT(err / mx, 1e-5) << "shift " << shift << " row " << i << " channel " << e;
        // Entries far below the row's scale are still right relative to themselves where they are normal floats.
        for (int64_t j = 0; j <= i; ++j) {
          if (std::fabs(ref[size_t(j)]) > 1e-30) {
            EXPECT_NEAR(row.data[size_t(e * T + j)] / ref[size_t(j)], 1.0, 1e-3) << "row " << i << " channel " << e << " j " << j;
          }
        }
      }
      // The unified row from the row walk equals the unified full-matrix path's row (GEMM-free exact kernel).
      Tensor full = hidden_attention_full(m.tr, AttnKind::Unified, 5, 7);
      for (int64_t e = 5; e < 7; ++e)
        EXPECT_LT(test::parity_error(uni.ptr() + e * T, full.ptr() + ((e - 5) * T + i) * T, T), 1e-5) << "unified " << e;
    }
  }
}
