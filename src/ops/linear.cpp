#include "ops/linear.h"

#include <cblas.h>

#include <algorithm>

#include "core/parallel.h"

namespace ssmx {

namespace {
// Output tiles of fixed size, each computed by one single-threaded sgemm call. The tiling never depends on the thread
// count, so neither does any output element: OpenBLAS's own threading changes the summation order with the number of
// threads (measured: 1 and 2 threads differ in the last bits on every shape we use), ours does not.
constexpr int64_t kTileM = 128;
constexpr int64_t kTileN = 512;
}  // namespace

void linear_forward(float* out, const float* inp, const float* w, const float* b, int64_t T, int64_t I, int64_t O,
                    int64_t ld_in, int64_t ld_out) {
  if (T == 0 || O == 0) return;
  const int64_t tm = (T + kTileM - 1) / kTileM, tn = (O + kTileN - 1) / kTileN;
  parallel_for(tm * tn, [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t r0 = (tile / tn) * kTileM, c0 = (tile % tn) * kTileN;
      const int64_t m = std::min(kTileM, T - r0), n = std::min(kTileN, O - c0);
      float* o = out + r0 * ld_out + c0;
      if (b != nullptr)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) o[r * ld_out + c] = b[c0 + c];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(I), 1.0f, inp + r0 * ld_in, int(ld_in),
                  w + c0 * I, int(I), b != nullptr ? 1.0f : 0.0f, o, int(ld_out));
    }
  });
}

}  // namespace ssmx
