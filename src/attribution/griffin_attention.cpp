#include "attribution/griffin_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace ssmx {

namespace {

void check(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t c0, int64_t c1) {
  if (!tr.a || !tr.gate_x || (o.gate && !tr.y) || (o.conv && !tr.conv_w) || tr.T <= 0 || tr.W <= 0)
    throw Error("griffin attention", "incomplete trace (need a, gate_x, y and the conv weights)");
  if (c0 < 0 || c1 > tr.W || c0 >= c1)
    throw Error("griffin attention", "channel range [" + std::to_string(c0) + ", " + std::to_string(c1) +
                                         ") is outside [0, " + std::to_string(tr.W) + ")");
}

// Row i of channels [c0, c1), written j-major into out[j·C + (c - c0)] for j ≤ i (entries j > i untouched).
// scratch: (i + 1)·C floats.
void row_block(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t i, int64_t c0, int64_t c1, float* out,
               std::vector<float>& alpha) {
  const int64_t W = tr.W, C = c1 - c0, K = tr.K;
  alpha.assign(size_t((i + 1) * C), 0.0f);
  std::vector<float> prod(size_t(C), 1.0f);
  for (int64_t j = i; j >= 0; --j) {
    const float* aj = tr.a + j * W + c0;
    const float* gj = tr.gate_x + j * W + c0;
    float* al = alpha.data() + j * C;
    for (int64_t c = 0; c < C; ++c) {
      float m = 1.0f;
      if (!o.compat && j > 0) m = std::sqrt(std::max(0.0f, 1.0f - aj[c] * aj[c]));
      al[c] = prod[size_t(c)] * m * gj[c];
      prod[size_t(c)] *= aj[c];
    }
  }
  const float* yi = tr.y ? tr.y + i * W + c0 : nullptr;
  for (int64_t j = 0; j <= i; ++j) {
    float* dst = out + j * C;
    if (o.conv) {
      for (int64_t c = 0; c < C; ++c) dst[c] = 0.0f;
      for (int64_t d = 0; d < K && j + d <= i; ++d) {
        const float* al = alpha.data() + (j + d) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += al[c] * tr.conv_w[(c0 + c) * K + K - 1 - d];
      }
    } else {
      std::copy(alpha.data() + j * C, alpha.data() + (j + 1) * C, dst);
    }
    if (o.gate)
      for (int64_t c = 0; c < C; ++c) dst[c] *= yi[c];
  }
}

}  // namespace

GriffinTrace griffin_trace(const std::map<std::string, Tensor>& acts, int64_t layer, const float* conv_w,
                           const float* conv_b, int64_t K) {
  const std::string p = "layers." + std::to_string(layer) + ".";
  auto get = [&](const char* n) -> const Tensor& {
    auto it = acts.find(p + n);
    if (it == acts.end()) throw Error("griffin attention", "layer " + std::to_string(layer) + " has no activation '" + n + "' (not a recurrent layer?)");
    return it->second;
  };
  GriffinTrace tr;
  const Tensor& a = get("a");
  tr.T = a.dim(0), tr.W = a.dim(1), tr.K = K;
  tr.a = a.ptr(), tr.gate_x = get("gate_x").ptr(), tr.y = get("y").ptr(), tr.x = get("x").ptr();
  tr.conv_w = conv_w, tr.conv_b = conv_b;
  return tr;
}

Tensor griffin_attention_full(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t c0, int64_t c1) {
  check(tr, o, c0, c1);
  const int64_t T = tr.T, C = c1 - c0;
  Tensor out({C, T, T});
  float* dst = out.ptr();
  parallel_for(T, [&](int64_t i0, int64_t i1) {
    std::vector<float> alpha, row(size_t(T * C));
    for (int64_t i = i0; i < i1; ++i) {
      row_block(tr, o, i, c0, c1, row.data(), alpha);
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t c = 0; c < C; ++c) dst[(c * T + i) * T + j] = row[size_t(j * C + c)];
    }
  });
  return out;
}

Tensor griffin_attention_row(const GriffinTrace& tr, const GriffinAttnOptions& o, int64_t i, int64_t c0, int64_t c1) {
  check(tr, o, c0, c1);
  if (i < 0 || i >= tr.T) throw Error("griffin attention", "row " + std::to_string(i) + " is outside [0, " + std::to_string(tr.T) + ")");
  const int64_t T = tr.T, C = c1 - c0;
  constexpr int64_t kBlock = 64;
  const int64_t nb = (C + kBlock - 1) / kBlock;
  Tensor out({C, T});
  float* dst = out.ptr();
  parallel_for(nb, [&](int64_t b0, int64_t b1) {
    std::vector<float> alpha, row;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = c0 + b * kBlock, e = std::min(c1, s + kBlock), n = e - s;
      row.assign(size_t(T * n), 0.0f);
      row_block(tr, o, i, s, e, row.data(), alpha);
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t c = 0; c < n; ++c) dst[(s - c0 + c) * T + j] = row[size_t(j * n + c)];
    }
  });
  return out;
}

Tensor griffin_attention_reduce(const GriffinTrace& tr, const GriffinAttnOptions& o, AttnReduce red, int64_t c0,
                                int64_t c1) {
  check(tr, o, c0, c1);
  const int64_t T = tr.T, C = c1 - c0;
  Tensor out({T, T});
  float* dst = out.ptr();
  parallel_for(T, [&](int64_t i0, int64_t i1) {
    std::vector<float> alpha, row(size_t(T * C));
    for (int64_t i = i0; i < i1; ++i) {
      row_block(tr, o, i, c0, c1, row.data(), alpha);
      for (int64_t j = 0; j <= i; ++j) {
        const float* r = row.data() + j * C;
        double acc = red == AttnReduce::Max ? -INFINITY : 0.0;
        for (int64_t c = 0; c < C; ++c) {
          if (red == AttnReduce::Mean) acc += r[c];
          else if (red == AttnReduce::AbsMean) acc += std::fabs(r[c]);
          else acc = std::max(acc, double(r[c]));
        }
        dst[i * T + j] = red == AttnReduce::Max ? float(acc) : float(acc / double(C));
      }
    }
  });
  return out;
}

Tensor griffin_local_attention(const std::map<std::string, Tensor>& acts, int64_t layer, int64_t heads,
                               int64_t kv_heads, int64_t head_dim, int64_t window) {
  const std::string pre = "layers." + std::to_string(layer) + ".";
  auto qi = acts.find(pre + "q"), ki = acts.find(pre + "k");
  if (qi == acts.end() || ki == acts.end())
    throw Error("griffin attention", "layer " + std::to_string(layer) + " is not a local attention layer (no q / k)");
  const Tensor& q = qi->second;
  const Tensor& k = ki->second;
  const int64_t T = q.dim(0), H = heads, KV = kv_heads, hd = head_dim;
  if (KV < 1 || H % KV != 0 || q.numel() != T * H * hd || k.numel() != T * KV * hd || window < 1)
    throw Error("griffin attention", "layer " + std::to_string(layer) + ": q / k do not match " + std::to_string(H) +
                                         " heads of " + std::to_string(hd) + " with " + std::to_string(KV) + " KV heads");
  const int64_t group = H / KV;
  const double scale = 1.0 / std::sqrt(double(hd));
  Tensor p({H, T, T});
  parallel_for(H * T, [&](int64_t b, int64_t e) {
    std::vector<double> sc(static_cast<size_t>(T));
    for (int64_t r = b; r < e; ++r) {
      const int64_t hh = r / T, i = r % T, kh = hh / group, j0 = std::max<int64_t>(0, i - window);
      const float* qv = q.ptr() + (i * H + hh) * hd;
      double mx = -INFINITY, den = 0;
      for (int64_t j = j0; j <= i; ++j) {
        const float* kv = k.ptr() + (j * KV + kh) * hd;
        double s = 0;
        for (int64_t d = 0; d < hd; ++d) s += double(qv[d]) * double(kv[d]);
        sc[size_t(j)] = s * scale;
        mx = std::max(mx, sc[size_t(j)]);
      }
      for (int64_t j = j0; j <= i; ++j) den += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
      float* row = p.ptr() + (hh * T + i) * T;
      for (int64_t j = j0; j <= i; ++j) row[j] = float(sc[size_t(j)] / den);
    }
  }, 16);
  return p;
}

}  // namespace ssmx
