#include "attribution/rwkv_attention.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

void check(const RwkvAttnInput& in) {
  if (!in.k || !in.wneg || !in.u || in.T <= 0 || in.A <= 0) throw Error("rwkv attention", "incomplete input");
}

// The (gated) weight of value j in output i of channel c, given log Z of (i, c). Shared by every mode so that the
// modes agree bitwise.
inline float weight(const RwkvAttnInput& in, const float* logz, int64_t c, int64_t i, int64_t j) {
  const int64_t A = in.A;
  float e;
  if (j == i) e = in.u[c] + in.k[i * A + c];
  else e = in.k[j * A + c] + float(i - 1 - j) * in.wneg[c];
  const float a = exp_clamped(e - logz[i * A + c]);
  return in.r ? in.r[i * A + c] * a : a;
}

}  // namespace

RwkvAttnInput rwkv_attn_input(const RwkvModel& m, int64_t layer, const std::map<std::string, Tensor>& acts, bool gate) {
  if (layer < 0 || layer >= m.config().n_layer)
    throw Error("rwkv attention", "layer " + std::to_string(layer) + " is out of range (the model has " +
                                      std::to_string(m.config().n_layer) + ")");
  const std::string p = "layers." + std::to_string(layer) + ".";
  auto it = acts.find(p + "k");
  if (it == acts.end()) throw Error("rwkv attention", "missing activation '" + p + "k'");
  RwkvAttnInput in;
  in.k = it->second.ptr();
  in.T = it->second.dim(0);
  in.A = it->second.dim(1);
  if (gate) {
    auto ir = acts.find(p + "r");
    if (ir == acts.end()) throw Error("rwkv attention", "missing activation '" + p + "r'");
    in.r = ir->second.ptr();
  }
  const RwkvLayer& ly = m.layer(layer);
  in.wneg = ly.wneg.data();
  in.u = ly.time_first.p;
  return in;
}

std::vector<float> rwkv_log_normaliser(const RwkvAttnInput& in) {
  check(in);
  std::vector<float> logz(size_t(in.T * in.A)), scratch(size_t(in.T * in.A));
  rwkv_wkv_forward(scratch.data(), logz.data(), in.k, in.k, in.wneg, in.u, in.T, in.A);
  return logz;
}

Tensor rwkv_attention_channels(const RwkvAttnInput& in, const std::vector<int64_t>& channels) {
  check(in);
  for (int64_t c : channels)
    if (c < 0 || c >= in.A)
      throw Error("rwkv attention", "channel " + std::to_string(c) + " is out of range (0.." + std::to_string(in.A - 1) + ")");
  const std::vector<float> logz = rwkv_log_normaliser(in);
  const int64_t T = in.T, nc = int64_t(channels.size());
  Tensor out({nc, T, T});
  parallel_for(nc * T, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; ++q) {
      const int64_t ci = q / T, i = q % T, c = channels[size_t(ci)];
      float* row = out.ptr() + (ci * T + i) * T;
      for (int64_t j = 0; j <= i; ++j) row[j] = weight(in, logz.data(), c, i, j);
    }
  }, 8);
  return out;
}

Tensor rwkv_attention_row(const RwkvAttnInput& in, int64_t row) {
  check(in);
  if (row < 0 || row >= in.T)
    throw Error("rwkv attention", "row " + std::to_string(row) + " is out of range (0.." + std::to_string(in.T - 1) + ")");
  const std::vector<float> logz = rwkv_log_normaliser(in);
  const int64_t T = in.T, A = in.A;
  Tensor out({A, T});
  parallel_for(A, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      for (int64_t j = 0; j <= row; ++j) out.ptr()[c * T + j] = weight(in, logz.data(), c, row, j);
  }, 16);
  return out;
}

Tensor rwkv_attention_reduced(const RwkvAttnInput& in, RwkvReduce how) {
  check(in);
  const std::vector<float> logz = rwkv_log_normaliser(in);
  const int64_t T = in.T, A = in.A;
  Tensor out({T, T});
  // One query row per work item; the channel loop is the inner, vectorisable one (contiguous in k, r, logz).
  parallel_for(T, [&](int64_t b, int64_t e) {
    std::vector<float> vals(static_cast<size_t>(A), 0.0f);
    for (int64_t i = b; i < e; ++i) {
      const float* lz = logz.data() + i * A;
      const float* ri = in.r ? in.r + i * A : nullptr;
      for (int64_t j = 0; j <= i; ++j) {
        const float* kj = in.k + j * A;
        const float dist = float(i - 1 - j);
        if (j == i) {
          for (int64_t c = 0; c < A; ++c) vals[c] = exp_clamped(in.u[c] + kj[c] - lz[c]);
        } else {
          for (int64_t c = 0; c < A; ++c) vals[c] = exp_clamped(kj[c] + dist * in.wneg[c] - lz[c]);
        }
        if (ri)
          for (int64_t c = 0; c < A; ++c) vals[c] *= ri[c];
        double acc = 0;
        float mx = -INFINITY;
        switch (how) {
          case RwkvReduce::Mean:
            for (int64_t c = 0; c < A; ++c) acc += vals[c];
            out.ptr()[i * T + j] = float(acc / double(A));
            break;
          case RwkvReduce::AbsMean:
            for (int64_t c = 0; c < A; ++c) acc += std::fabs(vals[c]);
            out.ptr()[i * T + j] = float(acc / double(A));
            break;
          case RwkvReduce::Max:
            for (int64_t c = 0; c < A; ++c) mx = std::max(mx, vals[c]);
            out.ptr()[i * T + j] = mx;
            break;
        }
      }
    }
  });
  return out;
}

}  // namespace ssmx
