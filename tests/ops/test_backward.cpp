// The op-level backward passes (ops/backward.h): every exact gradient against central finite differences in double,
// the MambaLRP variants against their defining identities (relevance conserved op-locally), the f32 kernels against
// the double ones, and 1 vs 2 threads bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "../test_util.h"
#include "core/runtime.h"
#include "ops/backward.h"
#include "ops/f64.h"

using namespace ssmx;

namespace {

std::vector<double> rnd(int64_t n, uint64_t seed, double scale = 1.0, double shift = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = shift + scale * nd(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max_i |fd_i − g_i| / max(1, max |g|) where fd is the central difference of f with respect to x[i] (x restored).
double fd_error(std::vector<double>& x, const std::vector<double>& g, const std::function<double()>& f,
                double h = 1e-5) {
  double mx = 1.0, err = 0.0;
  for (double v : g) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f();
    x[i] = x0 - h;
    const double fm = f();
    x[i] = x0;
    err = std::max(err, std::fabs((fp - fm) / (2 * h) - g[i]));
  }
  return err / mx;
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

}  // namespace

TEST(LinearBackward, IsDoutTimesWInBothPrecisionsWithStridesAndAccumulate) {
  const int64_t T = 130, I = 37, O = 530, ld_dout = O + 3, ld_dinp = I + 2;  // more than one tile each way
  auto dout = rnd(T * ld_dout, 1), w = rnd(O * I, 2), base = rnd(T * ld_dinp, 3);
  for (bool acc : {false, true}) {
    std::vector<double> d = base;
    linear_backward(d.data(), dout.data(), w.data(), T, I, O, ld_dout, ld_dinp, acc);
    auto df = to_f(base);
    auto doutf = to_f(dout), wf = to_f(w);
    linear_backward(df.data(), doutf.data(), wf.data(), T, I, O, ld_dout, ld_dinp, acc);
    double worst = 0, worstf = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) {
        double s = acc ? base[t * ld_dinp + i] : 0.0;
        for (int64_t o = 0; o < O; ++o) s += dout[t * ld_dout + o] * w[o * I + i];
        worst = std::max(worst, std::fabs(s - d[t * ld_dinp + i]) / std::max(1.0, std::fabs(s)));
        double sf = acc ? double(float(base[t * ld_dinp + i])) : 0.0;
        for (int64_t o = 0; o < O; ++o) sf += double(doutf[t * ld_dout + o]) * wf[o * I + i];
        worstf = std::max(worstf, std::fabs(sf - df[t * ld_dinp + i]) / std::max(std::sqrt(double(O)), std::fabs(sf)));
      }
    EXPECT_LT(worst, 1e-13);
    EXPECT_LT(worstf, 1e-5);  // relative to the size of a sum of O unit terms
    EXPECT_EQ(d[I], base[I]);  // padding columns untouched
  }
}

TEST(RMSNormBackward, ExactMatchesFiniteDifferencesWithAndWithoutWeight) {
  const int64_t T = 5, C = 13, ld_in = 16, ld_d = 15;
  auto x = rnd(T * ld_in, 4, 2.0), w = rnd(C, 5, 0.5, 1.0), gy = rnd(T * ld_d, 6);
  for (bool weighted : {true, false}) {
    const double* wp = weighted ? w.data() : nullptr;
    auto f = [&] {
      std::vector<double> y(size_t(T * ld_d), 0.0), r(static_cast<size_t>(T));
      rmsnorm_forward(y.data(), r.data(), x.data(), wp, T, C, 1e-5, ld_in, ld_d);
      double s = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) s += y[t * ld_d + c] * gy[t * ld_d + c];
      return s;
    };
    std::vector<double> y(size_t(T * ld_d)), r(static_cast<size_t>(T)), dx(size_t(T * ld_in), 0.0);
    rmsnorm_forward(y.data(), r.data(), x.data(), wp, T, C, 1e-5, ld_in, ld_d);
    rmsnorm_backward(dx.data(), gy.data(), x.data(), r.data(), wp, T, C, false, false, ld_in, ld_d, ld_in);
    EXPECT_LT(fd_error(x, dx, f), 1e-8) << weighted;
    // Scale invariance: Σ_c x·dx = Σ_c y·dy · eps/(ms + eps), nearly zero. The LN rule conserves instead:
    std::vector<double> dh(size_t(T * ld_in), 0.0);
    rmsnorm_backward(dh.data(), gy.data(), x.data(), r.data(), wp, T, C, true, false, ld_in, ld_d, ld_in);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        // Held 1/rms: dx = r·w·dy, so x·dx = y·dy elementwise.
        EXPECT_NEAR(x[t * ld_in + c] * dh[t * ld_in + c], y[t * ld_d + c] * gy[t * ld_d + c], 1e-13);
      }
    // Accumulate adds; in place (dinp == dout, same strides) works.
    std::vector<double> acc(size_t(T * ld_in), 1.0);
    rmsnorm_backward(acc.data(), gy.data(), x.data(), r.data(), wp, T, C, false, true, ld_in, ld_d, ld_in);
    EXPECT_NEAR(acc[2 * ld_in + 3], 1.0 + dx[2 * ld_in + 3], 1e-14);
    std::vector<double> inplace(size_t(T * ld_in), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) inplace[t * ld_in + c] = gy[t * ld_d + c];
    rmsnorm_backward(inplace.data(), inplace.data(), x.data(), r.data(), wp, T, C, false, false, ld_in, ld_in, ld_in);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(inplace[t * ld_in + c], dx[t * ld_in + c], 1e-14);
  }
}

TEST(Conv1dBackward, MatchesFiniteDifferencesIncludingTheEdges) {
  const int64_t T = 9, C = 6, K = 4, ld = 2 * C;
  auto x = rnd(T * ld, 7), w = rnd(C * K, 8), b = rnd(C, 9), gy = rnd(T * C, 10);
  auto f = [&] {
    std::vector<double> y(size_t(T * C));
    conv1d_causal_forward(y.data(), x.data(), w.data(), b.data(), T, C, K, ld);
    return dot(y, gy);
  };
  std::vector<double> dx(size_t(T * ld), 7.0);
  conv1d_causal_backward(dx.data(), gy.data(), w.data(), T, C, K, ld);
  std::vector<double> dxf(size_t(T * ld), 0.0);  // the padding half of each row stays 0 in the comparison
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) dxf[t * ld + c] = dx[t * ld + c];
  EXPECT_LT(fd_error(x, dxf, f), 1e-9);
  EXPECT_EQ(dx[C], 7.0);  // the z half of the row is not written
  // The last token's x only reaches the last output through the current-token tap.
  EXPECT_NEAR(dx[(T - 1) * ld + 2], w[2 * K + K - 1] * gy[(T - 1) * C + 2], 1e-15);
  // f32 agrees.
  auto gyf = to_f(gy), wf = to_f(w);
  std::vector<float> dx32(size_t(T * ld));
  conv1d_causal_backward(dx32.data(), gyf.data(), wf.data(), T, C, K, ld);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(dx32[t * ld + c], dx[t * ld + c], 1e-5);
}

TEST(SiluSoftplusBackward, ExactMatchFiniteDifferencesIdentityRuleConserves) {
  const int64_t n = 40;
  auto x = rnd(n, 11, 4.0), gy = rnd(n, 12);
  x[0] = 0.0, x[1] = 25.0, x[2] = -30.0, x[3] = 19.5;
  auto fs = [&] {
    std::vector<double> y(static_cast<size_t>(n));
    silu_array(y.data(), x.data(), n);
    return dot(y, gy);
  };
  auto fp = [&] {
    std::vector<double> y(static_cast<size_t>(n));
    softplus_array(y.data(), x.data(), n);
    return dot(y, gy);
  };
  std::vector<double> ds(static_cast<size_t>(n)), dp(static_cast<size_t>(n)), di(static_cast<size_t>(n));
  silu_backward(ds.data(), gy.data(), x.data(), n, SiluRule::Exact);
  softplus_backward(dp.data(), gy.data(), x.data(), n);
  EXPECT_LT(fd_error(x, ds, fs), 1e-8);
  EXPECT_LT(fd_error(x, dp, fp), 1e-8);
  EXPECT_EQ(dp[1], gy[1]);  // above the threshold softplus is the identity
  // Identity rule: x·din = SiLU(x)·dout elementwise.
  silu_backward(di.data(), gy.data(), x.data(), n, SiluRule::Identity);
  std::vector<double> y(static_cast<size_t>(n));
  silu_array(y.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(x[i] * di[i], y[i] * gy[i], 1e-13 * std::max(1.0, std::fabs(y[i] * gy[i])));
  // f32 versions agree with double.
  auto xf = to_f(x), gf = to_f(gy);
  std::vector<float> o(static_cast<size_t>(n));
  silu_backward(o.data(), gf.data(), xf.data(), n, SiluRule::Exact);
  EXPECT_LT(test::parity_error(o, ds), 1e-6);
  silu_backward(o.data(), gf.data(), xf.data(), n, SiluRule::Identity);
  EXPECT_LT(test::parity_error(o, di), 1e-6);
  softplus_backward(o.data(), gf.data(), xf.data(), n);
  EXPECT_LT(test::parity_error(o, dp), 1e-6);
}

TEST(GateBackward, ExactMatchesFiniteDifferencesHalfRuleSplitsRelevance) {
  const int64_t T = 4, E = 7, ld_z = 9, ld_dz = 11;
  auto ssm = rnd(T * E, 13), u = rnd(T * E, 14), D = rnd(E, 15), z = rnd(T * ld_z, 16, 2.0), dy = rnd(T * E, 17);
  auto f = [&] {
    double s = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const double zz = z[t * ld_z + e];
        s += dy[t * E + e] * (ssm[t * E + e] + D[e] * u[t * E + e]) * zz / (1 + std::exp(-zz));
      }
    return s;
  };
  std::vector<double> dpre(size_t(T * E)), dz(size_t(T * ld_dz), 0.0);
  gate_backward(dpre.data(), dz.data(), dy.data(), ssm.data(), u.data(), D.data(), z.data(), T, E, ld_z, ld_dz, 1.0,
                SiluRule::Exact);
  EXPECT_LT(fd_error(ssm, dpre, f), 1e-8);
  std::vector<double> dzz(size_t(T * ld_z), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) dzz[t * ld_z + e] = dz[t * ld_dz + e];
  EXPECT_LT(fd_error(z, dzz, f), 1e-8);
  // Half rule with the identity rule on SiLU(z): R(pre) = R(SiLU z) = R(z) = ½ R(y), elementwise.
  gate_backward(dpre.data(), dz.data(), dy.data(), ssm.data(), u.data(), D.data(), z.data(), T, E, ld_z, ld_dz, 0.5,
                SiluRule::Identity);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const int64_t k = t * E + e;
      const double zz = z[t * ld_z + e], sz = zz / (1 + std::exp(-zz)), pre = ssm[k] + D[e] * u[k];
      const double Ry = pre * sz * dy[k];
      EXPECT_NEAR(pre * dpre[k], 0.5 * Ry, 1e-14);
      EXPECT_NEAR(zz * dz[t * ld_dz + e], 0.5 * Ry, 1e-14);
    }
  // In place (dpre aliasing dy).
  auto dy2 = dy;
  gate_backward(dy2.data(), dz.data(), dy2.data(), ssm.data(), u.data(), D.data(), z.data(), T, E, ld_z, ld_dz, 0.5,
                SiluRule::Identity);
  for (int64_t k = 0; k < T * E; ++k) EXPECT_EQ(dy2[k], dpre[k]);
}

namespace {

struct ScanData {
  int64_t T, E, N;
  std::vector<double> u, delta, A, BC, D, dpre;  // BC: rows [B | C], stride 2N + 3
  int64_t ld() const { return 2 * N + 3; }
};

ScanData scan_data(int64_t T, int64_t E, int64_t N, uint64_t seed) {
  ScanData s{T, E, N, {}, {}, {}, {}, {}, {}};
  s.u = rnd(T * E, seed + 1);
  s.delta = rnd(T * E, seed + 2);
  for (double& d : s.delta) d = std::log1p(std::exp(d - 1.0));
  std::mt19937_64 rng(seed + 3);
  std::uniform_real_distribution<double> ud(0.5, 1.5);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) s.A.push_back(-(1.0 + double(n)) * ud(rng));
  s.BC = rnd(T * s.ld(), seed + 4);
  s.D = rnd(E, seed + 5);
  s.dpre = rnd(T * E, seed + 6);
  return s;
}

double scan_objective(const ScanData& s) {
  ScanArgsF64 a;
  a.T = s.T, a.E = s.E, a.N = s.N, a.u = s.u.data(), a.delta = s.delta.data(), a.A = s.A.data();
  a.B = s.BC.data(), a.C = s.BC.data() + s.N, a.ld_bc = s.ld(), a.D = s.D.data();
  std::vector<double> y(size_t(s.T * s.E));
  selective_scan_forward(nullptr, y.data(), nullptr, a);  // y = ssm + D·u (no gate)
  return dot(y, s.dpre);
}

template <typename Real>
struct ScanGrads {
  std::vector<Real> u, delta, B, C;
};

template <typename Real>
ScanGrads<Real> scan_grads(const ScanData& s, bool hold) {
  const std::vector<Real> u(s.u.begin(), s.u.end()), delta(s.delta.begin(), s.delta.end()), A(s.A.begin(), s.A.end()),
      BC(s.BC.begin(), s.BC.end()), D(s.D.begin(), s.D.end()), dpre(s.dpre.begin(), s.dpre.end());
  ScanGrads<Real> g;
  g.u.assign(size_t(s.T * s.E), Real(0)), g.delta.assign(size_t(s.T * s.E), Real(0));
  std::vector<Real> dbc(size_t(s.T * s.ld()), Real(0));
  ScanBackwardArgs<Real> a;
  a.T = s.T, a.E = s.E, a.N = s.N, a.u = u.data(), a.delta = delta.data(), a.A = A.data();
  a.B = BC.data(), a.C = BC.data() + s.N, a.ld_bc = s.ld(), a.D = D.data(), a.dpre = dpre.data();
  a.hold_params = hold, a.du = g.u.data(), a.ddelta = g.delta.data();
  a.dB = dbc.data(), a.dC = dbc.data() + s.N, a.ld_dbc = s.ld();
  selective_scan_backward(a);
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t n = 0; n < s.N; ++n) {
      g.B.push_back(dbc[t * s.ld() + n]);
      g.C.push_back(dbc[t * s.ld() + s.N + n]);
    }
  return g;
}

}  // namespace

TEST(SelectiveScanBackward, MatchesFiniteDifferencesInDouble) {
  for (auto [T, E, N] : {std::tuple<int64_t, int64_t, int64_t>{9, 5, 3}, {1, 3, 4}, {12, 2, 16}}) {
    SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " N=" << N);
    ScanData s = scan_data(T, E, N, uint64_t(T * 100 + E * 10 + N));
    auto g = scan_grads<double>(s, false);
    auto f = [&] { return scan_objective(s); };
    EXPECT_LT(fd_error(s.u, g.u, f), 1e-8);
    EXPECT_LT(fd_error(s.delta, g.delta, f), 1e-8);
    // B and C: finite differences over the strided rows.
    std::vector<double> gbc(size_t(T * s.ld()), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) gbc[t * s.ld() + n] = g.B[t * N + n], gbc[t * s.ld() + N + n] = g.C[t * N + n];
    EXPECT_LT(fd_error(s.BC, gbc, f), 1e-8);
  }
}

TEST(SelectiveScanBackward, HeldParametersConserveRelevanceAndLeaveDuUnchanged) {
  ScanData s = scan_data(15, 6, 4, 77);
  auto full = scan_grads<double>(s, false);
  auto held = scan_grads<double>(s, true);
  for (size_t k = 0; k < full.u.size(); ++k) EXPECT_NEAR(held.u[k], full.u[k], 1e-13);
  for (double v : held.delta) EXPECT_EQ(v, 0.0);  // outputs not written with held parameters
  // Linear in u once Ā, B̄, C are constants: Σ u·du = Σ (ssm + D·u)·dpre.
  EXPECT_NEAR(dot(s.u, held.u), scan_objective(s), 1e-12 * std::max(1.0, std::fabs(scan_objective(s))));
}

TEST(SelectiveScanBackward, F32KernelsMatchDoubleAndAreThreadInvariant) {
  // N = 16 and 8 take the 8-lane register kernels (E = 300: two 128-channel chunks, a partial one, 4 leftover
  // channels); N = 5 the generic kernel.
  for (auto [T, E, N] : {std::tuple<int64_t, int64_t, int64_t>{40, 300, 16}, {33, 20, 8}, {21, 13, 5}}) {
    SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " N=" << N);
    ScanData s = scan_data(T, E, N, uint64_t(T + E + N));
    auto ref = scan_grads<double>(s, false);
    for (bool hold : {false, true}) {
      set_num_threads(1);
      auto a = scan_grads<float>(s, hold);
      set_num_threads(2);
      auto b = scan_grads<float>(s, hold);
      set_num_threads(0);
      EXPECT_EQ(0, std::memcmp(a.u.data(), b.u.data(), a.u.size() * 4));
      EXPECT_LT(test::parity_error(a.u, ref.u), 2e-5);
      if (!hold) {
        EXPECT_EQ(0, std::memcmp(a.delta.data(), b.delta.data(), a.delta.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.B.data(), b.B.data(), a.B.size() * 4));
        EXPECT_EQ(0, std::memcmp(a.C.data(), b.C.data(), a.C.size() * 4));
        EXPECT_LT(test::parity_error(a.delta, ref.delta), 2e-5);
        EXPECT_LT(test::parity_error(a.B, ref.B), 2e-5);
        EXPECT_LT(test::parity_error(a.C, ref.C), 2e-5);
      }
    }
  }
}

TEST(LinearRules, EpsilonRescalesByZOverStabilisedZ) {
  const int64_t T = 6, I = 5, O = 7;
  auto x = rnd(T * I, 21), w = rnd(O * I, 22), b = rnd(O, 23), gy = rnd(T * O, 24);
  std::vector<double> z(size_t(T * O));
  linear_forward(z.data(), x.data(), w.data(), b.data(), T, I, O);
  const double eps = 0.3;
  auto g = gy;
  epsilon_rescale(g.data(), z.data(), T, O, O, O, eps);
  std::vector<double> dx(size_t(T * I));
  linear_backward(dx.data(), g.data(), w.data(), T, I, O, O, I, false);
  // R_j = x_j Σ_k w_kj R_k / (z_k + ε sign z_k), R_k = z_k·gy_k.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      double r = 0;
      for (int64_t o = 0; o < O; ++o) {
        const double zz = z[t * O + o];
        r += x[t * I + i] * w[o * I + i] * zz * gy[t * O + o] / (zz + (zz >= 0 ? eps : -eps));
      }
      EXPECT_NEAR(x[t * I + i] * dx[t * I + i], r, 1e-13);
    }
}

TEST(LinearRules, GammaMatchesTheDenseFormulaAndConserves) {
  const int64_t T = 5, I = 9, O = 6;
  auto x = rnd(T * I, 31), w = rnd(O * I, 32), b = rnd(O, 33, 0.3), gy = rnd(T * O, 34);
  x[3] = 0.0;
  for (double gamma : {0.0, 0.25, 1.0}) {
    SCOPED_TRACE(gamma);
    for (bool with_b : {true, false}) {
      const double* bp = with_b ? b.data() : nullptr;
      std::vector<double> dx(size_t(T * I), 0.0), z(size_t(T * O));
      double brel = 0.0;
      linear_gamma_backward(dx.data(), gy.data(), x.data(), w.data(), bp, T, I, O, I, O, I, gamma, false, &brel);
      linear_forward(z.data(), x.data(), w.data(), bp, T, I, O);
      // Dense: for each output k the selected copy contributes x_j·M_kj with M depending on sign(x_j) and on z_k.
      double sum_in = 0, sum_out = 0;
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> R(static_cast<size_t>(I), 0.0);
        for (int64_t o = 0; o < O; ++o) {
          const double zz = z[t * O + o];
          const bool pos = zz > 1e-6;
          double zp = 0;
          std::vector<double> c(static_cast<size_t>(I));
          for (int64_t i = 0; i < I; ++i) {
            const double wv = w[o * I + i], xv = x[t * I + i];
            const double wp = wv + gamma * std::max(wv, 0.0), wn = wv + gamma * std::min(wv, 0.0);
            c[size_t(i)] = xv * (pos == (xv > 0) ? wp : wn);
            zp += c[size_t(i)];
          }
          if (with_b) zp += b[o] + gamma * (pos ? std::max(b[o], 0.0) : std::min(b[o], 0.0));
          const double Rk = zz * gy[t * O + o];
          sum_out += Rk;
          for (int64_t i = 0; i < I; ++i) R[size_t(i)] += c[size_t(i)] * Rk / zp;
        }
        for (int64_t i = 0; i < I; ++i) {
          EXPECT_NEAR(x[t * I + i] * dx[t * I + i], R[size_t(i)], 1e-12);
          sum_in += x[t * I + i] * dx[t * I + i];
        }
      }
      EXPECT_NEAR(sum_in + brel, sum_out, 1e-12);
      if (!with_b) {
        EXPECT_EQ(brel, 0.0);
      }
      if (gamma == 0.0) {  // γ = 0 is LRP-0: the plain gradient
        std::vector<double> plain(size_t(T * I));
        linear_backward(plain.data(), gy.data(), w.data(), T, I, O, O, I, false);
        for (int64_t k = 0; k < T * I; ++k) {
          if (x[size_t(k)] != 0.0) {
            EXPECT_NEAR(dx[size_t(k)], plain[size_t(k)], 1e-12);
          }
        }
      }
    }
  }
}
