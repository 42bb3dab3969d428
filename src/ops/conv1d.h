// ssmx/ops/conv1d.h — depthwise causal conv1d (PyTorch Conv1d(groups=C, padding=K-1), first T outputs kept).
//
//   out[t, c] = b[c] + Σ_{k=0}^{K-1} w[c, k] · x[t - (K-1) + k, c],   x[τ < 0, c] = 0
//
// Tap k = K-1 multiplies the current token.
#pragma once

#include <cstdint>

namespace ssmx {

// out: (T, C) contiguous; x: (T, C) with row stride ld_x; w: (C, K); b: (C) or nullptr.
void conv1d_causal_forward(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t C, int64_t K,
                           int64_t ld_x);

}  // namespace ssmx
