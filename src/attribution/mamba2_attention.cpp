#include "attribution/mamba2_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "models/mamba2.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

struct Prepared {
  std::vector<double> S;   // (H, T) prefix sums of δ per head
  std::vector<float> Bt;   // (G, N, T): B transposed per group, so that row dot products vectorise over j
};

Prepared prepare(const Mamba2AttnInputs& in) {
  const int64_t T = in.T, H = in.H, G = in.G, N = in.N;
  if (T <= 0 || H <= 0 || G <= 0 || H % G != 0 || N <= 0 || !in.delta || !in.A || !in.B || !in.C)
    throw Error("mamba2 attention", "inconsistent inputs");
  Prepared pr;
  pr.S.resize(size_t(H * T));
  for (int64_t h = 0; h < H; ++h) {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) {
      s += double(in.delta[t * H + h]);
      pr.S[size_t(h * T + t)] = s;
    }
  }
  pr.Bt.resize(size_t(G * N * T));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < G * N; ++k) pr.Bt[size_t(k * T + t)] = in.B[t * in.ld_bc + k];
  return pr;
}

// cb[j] = C_i · B_j of group g for j ≤ i (fixed summation order over n).
void cb_row(float* cb, const Mamba2AttnInputs& in, const Prepared& pr, int64_t g, int64_t i) {
  const int64_t T = in.T, N = in.N;
  std::fill(cb, cb + i + 1, 0.0f);
  const float* ci = in.C + i * in.ld_bc + g * N;
  for (int64_t n = 0; n < N; ++n) {
    const float c = ci[n];
    const float* b = pr.Bt.data() + (g * N + n) * T;
    for (int64_t j = 0; j <= i; ++j) cb[j] += c * b[j];
  }
}

// alpha_h[i, 0..i] from the group's cb row; out[j > i] = 0.
void head_row(float* out, const Mamba2AttnInputs& in, const Prepared& pr, const float* cb, int64_t h, int64_t i,
              float* tmp) {
  const int64_t T = in.T, H = in.H;
  const double* S = pr.S.data() + h * T;
  const double Si = S[i], Ah = double(in.A[h]);
  for (int64_t j = 0; j <= i; ++j) tmp[j] = float(Ah * (Si - S[j]));
  exp_array(tmp, tmp, i + 1);
  for (int64_t j = 0; j <= i; ++j) out[j] = tmp[j] * in.delta[j * H + h] * cb[j];
  std::fill(out + i + 1, out + T, 0.0f);
}

void reduce_row(float* out, const Mamba2AttnInputs& in, const Prepared& pr, int64_t i, HeadReduce how,
                std::vector<float>& cb, std::vector<float>& row, std::vector<float>& tmp) {
  const int64_t T = in.T, H = in.H, hpg = H / in.G;
  std::fill(out, out + T, how == HeadReduce::Max ? -INFINITY : 0.0f);
  for (int64_t h = 0; h < H; ++h) {
    if (h % hpg == 0) cb_row(cb.data(), in, pr, h / hpg, i);
    head_row(row.data(), in, pr, cb.data(), h, i, tmp.data());
    for (int64_t j = 0; j <= i; ++j) {
      const float v = row[size_t(j)];
      if (how == HeadReduce::Mean) out[j] += v;
      else if (how == HeadReduce::AbsMean) out[j] += std::abs(v);
      else out[j] = std::max(out[j], v);
    }
  }
  if (how != HeadReduce::Max)
    for (int64_t j = 0; j <= i; ++j) out[j] /= float(H);
  std::fill(out + i + 1, out + T, 0.0f);
}

}  // namespace

Mamba2AttnInputs mamba2_attention_inputs(const Mamba2Model& model, int64_t layer, const std::map<std::string, Tensor>& acts) {
  const Mamba2Config& c = model.config();
  if (layer < 0 || layer >= c.n_layer)
    throw Error("--layers", "layer " + std::to_string(layer) + " is out of range (the model has " + std::to_string(c.n_layer) + ")");
  const std::string p = "layers." + std::to_string(layer) + ".";
  auto get = [&](const char* n) -> const Tensor& {
    auto it = acts.find(p + n);
    if (it == acts.end()) throw Error("mamba2 attention", "missing activation '" + p + n + "'");
    return it->second;
  };
  const Tensor &d = get("delta"), &B = get("B"), &C = get("C");
  Mamba2AttnInputs in;
  in.T = d.dim(0), in.H = c.n_heads, in.P = c.head_dim, in.G = c.n_groups, in.N = c.d_state;
  if (d.dim(1) != in.H || B.dim(1) != in.G * in.N || C.shape != B.shape || B.dim(0) != in.T)
    throw Error("mamba2 attention", "activation shapes do not match the model");
  in.delta = d.ptr(), in.A = model.layer(layer).A.p, in.B = B.ptr(), in.C = C.ptr(), in.ld_bc = in.G * in.N;
  return in;
}

void mamba2_attention_full(float* out, const Mamba2AttnInputs& in, const std::vector<int64_t>& heads) {
  const Prepared pr = prepare(in);
  const int64_t T = in.T, hpg = in.H / in.G;
  for (int64_t h : heads)
    if (h < 0 || h >= in.H) throw Error("--heads", "head " + std::to_string(h) + " is out of range (" + std::to_string(in.H) + " heads)");
  parallel_for(T, [&](int64_t i0, int64_t i1) {
    std::vector<float> cb(static_cast<size_t>(T)), tmp(static_cast<size_t>(T));
    for (int64_t i = i0; i < i1; ++i) {
      int64_t have = -1;
      for (size_t k = 0; k < heads.size(); ++k) {
        const int64_t g = heads[k] / hpg;
        if (g != have) cb_row(cb.data(), in, pr, g, i), have = g;
        head_row(out + (int64_t(k) * T + i) * T, in, pr, cb.data(), heads[k], i, tmp.data());
      }
    }
  }, 8);
}

void mamba2_attention_row(float* out, const Mamba2AttnInputs& in, int64_t i) {
  if (i < 0 || i >= in.T) throw Error("--row", "row " + std::to_string(i) + " is out of range (" + std::to_string(in.T) + " tokens)");
  const Prepared pr = prepare(in);
  const int64_t T = in.T, hpg = in.H / in.G;
  std::vector<std::vector<float>> cbs(size_t(in.G), std::vector<float>(static_cast<size_t>(T)));
  for (int64_t g = 0; g < in.G; ++g) cb_row(cbs[size_t(g)].data(), in, pr, g, i);
  parallel_for(in.H, [&](int64_t h0, int64_t h1) {
    std::vector<float> tmp(static_cast<size_t>(T));
    for (int64_t h = h0; h < h1; ++h) head_row(out + h * T, in, pr, cbs[size_t(h / hpg)].data(), h, i, tmp.data());
  });
}

void mamba2_attention_reduce(float* out, const Mamba2AttnInputs& in, HeadReduce how) {
  const Prepared pr = prepare(in);
  const int64_t T = in.T;
  parallel_for(T, [&](int64_t i0, int64_t i1) {
    std::vector<float> cb(static_cast<size_t>(T)), row(static_cast<size_t>(T)), tmp(static_cast<size_t>(T));
    for (int64_t i = i0; i < i1; ++i) reduce_row(out + i * T, in, pr, i, how, cb, row, tmp);
  }, 8);
}

void mamba2_attention_reduce_row(float* out, const Mamba2AttnInputs& in, int64_t i, HeadReduce how) {
  if (i < 0 || i >= in.T) throw Error("--row", "row " + std::to_string(i) + " is out of range (" + std::to_string(in.T) + " tokens)");
  const Prepared pr = prepare(in);
  std::vector<float> cb(size_t(in.T)), row(size_t(in.T)), tmp(size_t(in.T));
  reduce_row(out, in, pr, i, how, cb, row, tmp);
}

}  // namespace ssmx
