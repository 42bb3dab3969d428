// Bidirectional (Vim) hidden attention: the combined operator reproduces the layer's output, rows and reductions
// agree with the full matrices, and the two published stitched rows are what they claim to be.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../test_util.h"
#include "attribution/bidirectional.h"
#include "core/error.h"
#include "ops/vmath.h"

using namespace ssmx;

namespace {

double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// One direction's mixer on input x (T, E) and gate z, with its own random conv, Δ, A, B, C, D.
struct Direction {
  int64_t T, E, N, K = 4;
  std::vector<float> x, z, w, b, conv, u, delta, A, BC, D;
  std::vector<double> y;  // (T, E) the mixer output before out_proj: (scan(u) + D·u)·SiLU(z), in double
  MixerTrace tr;
  Direction(const std::vector<float>& x_in, const std::vector<float>& z_in, int64_t T_, int64_t E_, int64_t N_,
            uint64_t seed)
      : T(T_), E(E_), N(N_), x(x_in), z(z_in) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t k = 0; k < E * K; ++k) w.push_back(0.5f * nd(rng));
    for (int64_t k = 0; k < E; ++k) b.push_back(0.3f * nd(rng)), D.push_back(nd(rng));
    for (int64_t k = 0; k < T * E; ++k) delta.push_back(softplus_f(nd(rng) - 1.0f));
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n = 0; n < N; ++n) A.push_back(-float(n + 1) * (0.3f + 0.1f * float(e % 3)));
    for (int64_t k = 0; k < T * 2 * N; ++k) BC.push_back(nd(rng));
    conv.assign(size_t(T * E), 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        float s = b[size_t(e)];
        for (int64_t k = 0; k < K; ++k)
          if (t - (K - 1) + k >= 0) s += w[size_t(e * K + k)] * x[size_t((t - (K - 1) + k) * E + e)];
        conv[size_t(t * E + e)] = s;
      }
    for (float c : conv) u.push_back(silu_f(c));
    y.assign(size_t(T * E), 0.0);
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> h(size_t(N), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const double d = delta[size_t(t * E + e)], ut = u[size_t(t * E + e)];
        double s = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[size_t(n)] = std::exp(d * A[size_t(e * N + n)]) * h[size_t(n)] + d * BC[size_t(t * 2 * N + n)] * ut;
          s += BC[size_t(t * 2 * N + N + n)] * h[size_t(n)];
        }
        const double zz = z[size_t(t * E + e)];
        y[size_t(t * E + e)] = (s + D[size_t(e)] * ut) * zz * sigm(zz);
      }
    }
    tr.T = T, tr.E = E, tr.N = N, tr.K = K;
    tr.delta = delta.data(), tr.A = A.data(), tr.B = BC.data(), tr.C = BC.data() + N, tr.ld_bc = 2 * N;
    tr.conv = conv.data(), tr.z = z.data(), tr.conv_w = w.data(), tr.conv_b = b.data(), tr.D = D.data();
    tr.u = u.data(), tr.x = x.data();
  }
};

std::vector<float> flip_time(const std::vector<float>& v, int64_t T, int64_t E) {
  std::vector<float> r(v.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) r[size_t(t * E + e)] = v[size_t((T - 1 - t) * E + e)];
  return r;
}

struct BidirMixer {
  int64_t T = 37, E = 11, N = 6;
  std::vector<float> x, z;
  std::unique_ptr<Direction> f, b;
  BidirTrace tr;
  explicit BidirMixer(float scale) {
    std::mt19937_64 rng(17);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t k = 0; k < T * E; ++k) x.push_back(nd(rng)), z.push_back(nd(rng));
    f = std::make_unique<Direction>(x, z, T, E, N, 1);
    b = std::make_unique<Direction>(flip_time(x, T, E), flip_time(z, T, E), T, E, N, 2);
    tr.fwd = f->tr, tr.bwd = b->tr, tr.scale = scale;
  }
};

const AttnKind kKinds[] = {AttnKind::S6, AttnKind::Unified, AttnKind::UnifiedNoConv, AttnKind::UnifiedNoGate,
                           AttnKind::UnifiedNoAct};

}  // namespace

TEST(BidirectionalAttention, UnifiedOperatorReproducesTheLayerOutput) {
  // y = s·(y_fwd + flip(y_bwd)) = α̂·x + s·(D and conv-bias terms of both directions, the backward ones flipped)
  for (float scale : {0.5f, 1.0f}) {
    BidirMixer m(scale);
    const int64_t T = m.T, E = m.E;
    const Tensor full = bidir_attention_full(m.tr, AttnKind::Unified, 0, E);
    Tensor df, bf, db, bb;
    hidden_attention_extra_terms(m.f->tr, &df, &bf);
    hidden_attention_extra_terms(m.b->tr, &db, &bb);
    double worst = 0, mx = 0;
    for (int64_t i = 0; i < T; ++i)
      for (int64_t e = 0; e < E; ++e) {
        double got = 0;
        for (int64_t j = 0; j < T; ++j) got += double(full.data[size_t((e * T + i) * T + j)]) * m.x[size_t(j * E + e)];
        const int64_t ir = T - 1 - i;
        got += scale * (double(df.data[size_t(i * E + e)]) + bf.data[size_t(i * E + e)] + db.data[size_t(ir * E + e)] +
                        bb.data[size_t(ir * E + e)]);
        const double want = scale * (m.f->y[size_t(i * E + e)] + m.b->y[size_t(ir * E + e)]);
        worst = std::max(worst, std::fabs(got - want));
        mx = std::max(mx, std::fabs(want));
      }
    EXPECT_LT(worst / mx, 2e-5) << "scale " << scale;
  }
}

TEST(BidirectionalAttention, LowerPartIsForwardUpperPartIsBackward) {
  BidirMixer m(0.5f);
  const int64_t T = m.T, E = m.E;
  const Tensor full = bidir_attention_full(m.tr, AttnKind::S6, 0, E);
  const Tensor f = hidden_attention_full(m.f->tr, AttnKind::S6, 0, E), b = hidden_attention_full(m.b->tr, AttnKind::S6, 0, E);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        const float got = full.data[size_t((e * T + i) * T + j)];
        const float fw = f.data[size_t((e * T + i) * T + j)], bw = b.data[size_t((e * T + T - 1 - i) * T + T - 1 - j)];
        if (j < i) {
          ASSERT_EQ(bw, 0.0f);
        }
        if (j > i) {
          ASSERT_EQ(fw, 0.0f);
        }
        ASSERT_FLOAT_EQ(got, 0.5f * (fw + bw));
      }
}

TEST(BidirectionalAttention, RowsAndReductionsMatchTheFullMatrices) {
  BidirMixer m(0.5f);
  const int64_t T = m.T;
  for (AttnKind kind : kKinds) {
    const Tensor full = bidir_attention_full(m.tr, kind, 2, 9);
    for (int64_t i : {int64_t(0), int64_t(18), T - 1}) {
      const Tensor row = bidir_attention_row(m.tr, kind, i, 2, 9);
      for (int64_t c = 0; c < 7; ++c)
        EXPECT_LT(test::parity_error(row.ptr() + c * T, full.ptr() + (c * T + i) * T, T), 2e-6) << attn_kind_name(kind);
    }
    for (AttnReduce red : {AttnReduce::Mean, AttnReduce::AbsMean, AttnReduce::Max}) {
      const Tensor r = bidir_attention_reduce(m.tr, kind, red, 2, 9);
      std::vector<float> want(size_t(T * T));
      for (int64_t k = 0; k < T * T; ++k) {
        double s = red == AttnReduce::Max ? -1e30 : 0.0;
        for (int64_t c = 0; c < 7; ++c) {
          const double v = full.data[size_t(c * T * T + k)];
          s = red == AttnReduce::Mean ? s + v : red == AttnReduce::AbsMean ? s + std::fabs(v) : std::max(s, v);
        }
        want[size_t(k)] = float(red == AttnReduce::Max ? s : s / 7);
      }
      EXPECT_LT(test::parity_error(r.ptr(), want.data(), T * T), 2e-6) << attn_kind_name(kind) << " " << attn_reduce_name(red);
      const Tensor rr = bidir_attention_row_reduce(m.tr, kind, red, 18, 2, 9);
      EXPECT_LT(test::parity_error(rr.ptr(), want.data() + 18 * T, T), 2e-6);
    }
  }
}

TEST(BidirectionalAttention, PublishedStitchedRows) {
  BidirMixer m(0.5f);
  const int64_t T = m.T, E = m.E, cls = 18;
  const Tensor full = bidir_attention_full(m.tr, AttnKind::Unified, 0, E);
  const Tensor fw = hidden_attention_full(m.f->tr, AttnKind::Unified, 0, E);
  // "unified" repository: exact rows, forward up to and including the query, backward after it, no 1/2.
  const Tensor st = bidir_attention_row(m.tr, AttnKind::Unified, cls, 0, E, BidirCompat::Stitched);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t j = 0; j < T; ++j) {
      const float got = st.data[size_t(e * T + j)];
      const float want = j == cls ? fw.data[size_t((e * T + cls) * T + cls)] : full.data[size_t((e * T + cls) * T + j)] / 0.5f;
      EXPECT_NEAR(got, want, 1e-5f * std::max(1.0f, std::fabs(want))) << e << " " << j;
    }
  // Ali et al.'s xai_b: both rows with the decay quirk, the diagonal zero.
  const Tensor hs = bidir_attention_row(m.tr, AttnKind::S6, cls, 0, E, BidirCompat::HiddenAttnStitched);
  const Tensor qf = hidden_attention_row(m.f->tr, AttnKind::S6, cls, 0, E, AttnCompat::HiddenAttnRow);
  const Tensor qb = hidden_attention_row(m.b->tr, AttnKind::S6, T - 1 - cls, 0, E, AttnCompat::HiddenAttnRow);
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_EQ(hs.data[size_t(e * T + cls)], 0.0f);
    for (int64_t j = 0; j < cls; ++j) EXPECT_EQ(hs.data[size_t(e * T + j)], qf.data[size_t(e * T + j)]);
    for (int64_t j = cls + 1; j < T; ++j) EXPECT_EQ(hs.data[size_t(e * T + j)], qb.data[size_t(e * T + T - 1 - j)]);
  }
  // and the quirk really differs from the exact row
  const Tensor ex = bidir_attention_row(m.tr, AttnKind::S6, cls, 0, E, BidirCompat::Stitched);
  EXPECT_GT(test::parity_error(hs.ptr(), ex.ptr(), E * T), 1e-3);
  EXPECT_EQ(parse_bidir_compat("stitched"), BidirCompat::Stitched);
  EXPECT_THROW(parse_bidir_compat("hiddenattn-row"), Error);
}
