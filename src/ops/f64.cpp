#include "ops/f64.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace ssmx {

namespace {

// Rows per thread so that a thread gets at least ~4096 elements of work (tiny problems run without a parallel region:
// with two processes on two cores, OpenMP's spinning makes needless regions very slow).
inline int64_t min_rows(int64_t work_per_row, int64_t at_least) {
  return std::max<int64_t>(at_least, 4096 / std::max<int64_t>(1, work_per_row));
}
constexpr int64_t kTileM = 128;
constexpr int64_t kTileN = 512;
}  // namespace

void linear_forward(double* out, const double* inp, const double* w, const double* b, int64_t T, int64_t I, int64_t O,
                    int64_t ld_in, int64_t ld_out) {
  if (T == 0 || O == 0) return;
  const int64_t tm = (T + kTileM - 1) / kTileM, tn = (O + kTileN - 1) / kTileN;
  parallel_for(tm * tn, [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t r0 = (tile / tn) * kTileM, c0 = (tile % tn) * kTileN;
      const int64_t m = std::min(kTileM, T - r0), n = std::min(kTileN, O - c0);
      double* o = out + r0 * ld_out + c0;
      if (b != nullptr)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) o[r * ld_out + c] = b[c0 + c];
      if (I == 0) {
        if (b == nullptr)
          for (int64_t r = 0; r < m; ++r)
            for (int64_t c = 0; c < n; ++c) o[r * ld_out + c] = 0.0;
        continue;
      }
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(I), 1.0, inp + r0 * ld_in, int(ld_in),
                  w + c0 * I, int(I), b != nullptr ? 1.0 : 0.0, o, int(ld_out));
    }
  });
}

void rmsnorm_forward(double* out, double* rstd, const double* inp, const double* w, int64_t T, int64_t C, double eps,
                     int64_t ld_in, int64_t ld_out) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const double* x = inp + t * ld_in;
      double* y = out + t * ld_out;
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += x[c] * x[c];
      const double r = 1.0 / std::sqrt(ss / double(C) + eps);
      if (rstd) rstd[t] = r;
      for (int64_t c = 0; c < C; ++c) y[c] = w ? (x[c] * r) * w[c] : x[c] * r;
    }
  }, min_rows(C, 16));
}

void conv1d_causal_forward(double* out, const double* x, const double* w, const double* b, int64_t T, int64_t C,
                           int64_t K, int64_t ld_x) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double s = b ? b[c] : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t tau = t - (K - 1) + k;
          if (tau >= 0) s += w[c * K + k] * x[tau * ld_x + c];
        }
        out[t * C + c] = s;
      }
  }, min_rows(C * K, 8));
}

void silu_array(double* out, const double* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] / (1.0 + std::exp(-in[i]));
}

void softplus_array(double* out, const double* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 20.0 ? in[i] : std::log1p(std::exp(in[i]));
}

void selective_scan_forward(double* ssm, double* y, double* h_last, const ScanArgsF64& a) {
  const int64_t T = a.T, E = a.E, N = a.N;
  parallel_for(E, [&](int64_t e0, int64_t e1) {
    std::vector<double> h(static_cast<size_t>(N));
    for (int64_t e = e0; e < e1; ++e) {
      std::fill(h.begin(), h.end(), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const double d = a.delta[t * E + e], uu = a.u[t * E + e];
        const double* Bt = a.B + t * a.ld_bc;
        const double* Ct = a.C + t * a.ld_bc;
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(d * a.A[e * N + n]) * h[n] + d * Bt[n] * uu;
          acc += h[n] * Ct[n];
        }
        if (ssm) ssm[t * E + e] = acc;
        if (y) {
          double v = acc;
          if (a.D) v += a.D[e] * uu;
          if (a.z) {
            const double zz = a.z[t * a.ld_z + e];
            v *= zz / (1.0 + std::exp(-zz));
          }
          y[t * E + e] = v;
        }
      }
      if (h_last)
        for (int64_t n = 0; n < N; ++n) h_last[e * N + n] = h[n];
    }
  }, min_rows(T * N, 1));
}

}  // namespace ssmx
