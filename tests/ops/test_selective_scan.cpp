// The selective scan against the naive unrolled formula in double, and its thread-count invariance.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>

#include "../test_util.h"
#include "core/runtime.h"
#include "ops/selective_scan.h"

using namespace ssmx;

namespace {

struct ScanCase {
  int64_t T, E, N;
  std::vector<float> u, delta, A, BC, D, z;  // BC: (T, 2N) interleaved rows [B | C]
};

ScanCase make_case(int64_t T, int64_t E, int64_t N, uint64_t seed) {
  ScanCase c{T, E, N, {}, {}, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  for (int64_t i = 0; i < T * E; ++i) c.u.push_back(nd(rng));
  for (int64_t i = 0; i < T * E; ++i) c.delta.push_back(std::log1p(std::exp(nd(rng) - 1.0f)));  // softplus, > 0
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) c.A.push_back(-(1.0f + float(n)) * (0.5f + ud(rng)));
  for (int64_t i = 0; i < T * 2 * N; ++i) c.BC.push_back(nd(rng));
  for (int64_t e = 0; e < E; ++e) c.D.push_back(nd(rng));
  for (int64_t i = 0; i < T * E; ++i) c.z.push_back(nd(rng));
  return c;
}

// y_t = (Σ_n Σ_{s≤t} C_t[n] · Π_{s<r≤t} exp(Δ_r A[n]) · Δ_s B_s[n] u_s + D u_t) · silu(z_t), in double.
void naive(const ScanCase& c, std::vector<double>& ssm, std::vector<double>& y) {
  const int64_t T = c.T, E = c.E, N = c.N;
  ssm.assign(size_t(T * E), 0.0);
  y.assign(size_t(T * E), 0.0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0.0;
      for (int64_t s = 0; s <= t; ++s)
        for (int64_t n = 0; n < N; ++n) {
          double decay = 0.0;
          for (int64_t r = s + 1; r <= t; ++r) decay += double(c.delta[r * E + e]) * double(c.A[e * N + n]);
          acc += double(c.BC[t * 2 * N + N + n]) * std::exp(decay) * double(c.delta[s * E + e]) *
                 double(c.BC[s * 2 * N + n]) * double(c.u[s * E + e]);
        }
      ssm[t * E + e] = acc;
      const double zz = c.z[t * E + e];
      y[t * E + e] = (acc + double(c.D[e]) * double(c.u[t * E + e])) * (zz / (1.0 + std::exp(-zz)));
    }
}

ScanArgs args_of(const ScanCase& c) {
  ScanArgs a;
  a.T = c.T, a.E = c.E, a.N = c.N;
  a.u = c.u.data(), a.delta = c.delta.data(), a.A = c.A.data();
  a.B = c.BC.data(), a.C = c.BC.data() + c.N, a.ld_bc = 2 * c.N;
  a.D = c.D.data(), a.z = c.z.data(), a.ld_z = c.E;
  return a;
}

}  // namespace

TEST(SelectiveScan, MatchesNaiveUnrolledFormulaInDouble) {
  // Odd sizes: E not a multiple of the 16 lanes, N = 1, T = 1.
  for (auto [T, E, N] : {std::tuple<int64_t, int64_t, int64_t>{23, 37, 5}, {1, 16, 16}, {40, 3, 1}, {17, 33, 16}}) {
    ScanCase c = make_case(T, E, N, uint64_t(T * 1000 + E * 10 + N));
    std::vector<float> ssm(size_t(T * E)), y(size_t(T * E)), h(size_t(E * N));
    selective_scan_forward(ssm.data(), y.data(), h.data(), args_of(c));
    std::vector<double> ssm_ref, y_ref;
    naive(c, ssm_ref, y_ref);
    EXPECT_LT(test::parity_error(ssm, ssm_ref), 2e-6) << "T=" << T << " E=" << E << " N=" << N;
    EXPECT_LT(test::parity_error(y, y_ref), 2e-6) << "T=" << T << " E=" << E << " N=" << N;
    // The final state reproduces the last output: ssm[T-1, e] = Σ_n h[e, n] C[T-1, n].
    for (int64_t e = 0; e < E; ++e) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) s += double(h[e * N + n]) * double(c.BC[(T - 1) * 2 * N + N + n]);
      EXPECT_NEAR(s, ssm[(T - 1) * E + e], 1e-5 * std::max(1.0, std::fabs(s)));
    }
  }
}

TEST(SelectiveScan, OneAndTwoThreadsAreBitwiseIdentical) {
  ScanCase c = make_case(64, 200, 16, 7);
  std::vector<float> y1(size_t(64 * 200)), y2(size_t(64 * 200));
  set_num_threads(1);
  selective_scan_forward(nullptr, y1.data(), nullptr, args_of(c));
  set_num_threads(2);
  selective_scan_forward(nullptr, y2.data(), nullptr, args_of(c));
  set_num_threads(0);
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4));
}
