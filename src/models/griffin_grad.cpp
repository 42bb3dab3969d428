#include "models/griffin_grad.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/backward.h"
#include "ops/linear.h"

namespace ssmx {

namespace {

template <typename R>
using Vec = std::vector<R>;

// Rows per task: about 2^20 multiply-adds, so that small models run on one thread.
inline int64_t grain(int64_t I, int64_t O) { return std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, I * O)); }

// y (T, O) = x (T, I) · wᵀ + b   (w: (O, I) row-major)
template <typename R>
void lin(Vec<R>& y, const R* x, const float* w, const float* b, int64_t T, int64_t I, int64_t O) {
  if constexpr (std::is_same_v<R, float>) {
    // f32: sgemm over fixed tiles (ops/linear.cpp), independent of the thread count.
    y.resize(size_t(T * O));
    linear_forward(y.data(), x, w, b, T, I, O);
    return;
  }
  y.assign(size_t(T * O), R(0));
  // Rows are independent: threads only pay off on real model sizes (bitwise the same either way).
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t o = 0; o < O; ++o) {
        const float* wr = w + o * I;
        const R* xr = x + t * I;
        R s = 0;
        for (int64_t i = 0; i < I; ++i) s += xr[i] * R(wr[i]);
        y[size_t(t * O + o)] = s + (b ? R(b[o]) : R(0));
      }
  }, grain(I, O));
}

// dx (T, I) += dy (T, O) · w
template <typename R>
void lin_back(R* dx, const R* dy, const float* w, int64_t T, int64_t I, int64_t O) {
  if constexpr (std::is_same_v<R, float>) {
    // f32: sgemm over fixed tiles (ops/backward.cpp), independent of the thread count.
    linear_backward<float>(dx, dy, w, T, I, O, O, I, true);
    return;
  }
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t o = 0; o < O; ++o) {
        const R g = dy[t * O + o];
        if (g == R(0)) continue;
        const float* wr = w + o * I;
        R* d = dx + t * I;
        for (int64_t i = 0; i < I; ++i) d[i] += g * R(wr[i]);
      }
  }, grain(I, O));
}

// Σ_o b[o]·Σ_t dy[t, o]
template <typename R>
double bias_dot(const float* b, const R* dy, int64_t T, int64_t O) {
  if (!b) return 0;
  double s = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) s += double(b[o]) * double(dy[t * O + o]);
  return s;
}

// Gemma RMSNorm out = x·r·w (w = 1 + weight), r = (mean x² + eps)^-½
template <typename R>
void norm_fwd(Vec<R>& out, Vec<R>& r, const Vec<R>& x, const float* w, int64_t T, int64_t D, float eps) {
  out.resize(size_t(T * D));
  r.resize(size_t(T));
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      R ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += x[size_t(t * D + d)] * x[size_t(t * D + d)];
      const R rr = R(1) / std::sqrt(ss / R(D) + R(eps));
      r[size_t(t)] = rr;
      for (int64_t d = 0; d < D; ++d) out[size_t(t * D + d)] = x[size_t(t * D + d)] * rr * R(w[d]);
    }
  }, 16);
}

// dx += ∂(x·r·w)/∂x applied to g; with `frozen`, r is a constant.
template <typename R>
void norm_back(R* dx, const R* g, const Vec<R>& x, const Vec<R>& r, const float* w, int64_t T, int64_t D, bool frozen) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const R rr = r[size_t(t)];
      R s = 0;
      if (!frozen)
        for (int64_t d = 0; d < D; ++d) s += x[size_t(t * D + d)] * R(w[d]) * g[t * D + d];
      const R c = s * rr * rr * rr / R(D);
      for (int64_t d = 0; d < D; ++d) dx[t * D + d] += rr * R(w[d]) * g[t * D + d] - x[size_t(t * D + d)] * c;
    }
  }, 16);
}

// fn(i) for i in [0, n), split over threads in fixed blocks (each i is independent: any thread count gives the same
// result).
template <typename Fn>
void each(int64_t n, Fn&& fn) {
  parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i);
  }, 4096);
}

constexpr double kGeluC = 0.7978845608028654, kGeluA = 0.044715;
template <typename R>
R gelu(R x) {
  return R(0.5) * x * (R(1) + std::tanh(R(kGeluC) * (x + R(kGeluA) * x * x * x)));
}
// d gelu / dx, or with `identity` the identity rule's gelu(x)/x = ½(1 + tanh u) (no division).
template <typename R>
R gelu_grad(R x, bool identity) {
  const R th = std::tanh(R(kGeluC) * (x + R(kGeluA) * x * x * x));
  if (identity) return R(0.5) * (R(1) + th);
  return R(0.5) * (R(1) + th) + R(0.5) * x * (R(1) - th * th) * R(kGeluC) * (R(1) + R(3 * kGeluA) * x * x);
}
template <typename R>
R sigm(R x) {
  return R(1) / (R(1) + std::exp(-x));
}

// out[t, h·bw + j] = Σ_i x[t, h·bw + i]·w[h, i, j] + b[h, j]   (pre-sigmoid)
// f32: one sgemm per head (BLAS is single-threaded; heads are split over threads, each head's result is the same
// for any thread count).
template <typename R>
void bd_fwd(Vec<R>& out, const Vec<R>& x, const float* w, const float* b, int64_t T, int64_t W, int64_t H) {
  const int64_t bw = W / H;
  out.assign(size_t(T * W), R(0));
  if constexpr (std::is_same_v<R, float>) {
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        if (b)
          for (int64_t t = 0; t < T; ++t) std::copy_n(b + h * bw, bw, out.data() + t * W + h * bw);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(bw), int(bw), 1.0f, x.data() + h * bw,
                    int(W), w + h * bw * bw, int(bw), b ? 1.0f : 0.0f, out.data() + h * bw, int(W));
      }
    });
    return;
  }
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < bw; ++j) {
          R s = b ? R(b[h * bw + j]) : R(0);
          for (int64_t i = 0; i < bw; ++i) s += x[size_t(t * W + h * bw + i)] * R(w[(h * bw + i) * bw + j]);
          out[size_t(t * W + h * bw + j)] = s;
        }
  }, 8);
}
template <typename R>
void bd_back(Vec<R>& dx, const Vec<R>& dout, const float* w, int64_t T, int64_t W, int64_t H) {
  const int64_t bw = W / H;
  if constexpr (std::is_same_v<R, float>) {
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(bw), int(bw), 1.0f, dout.data() + h * bw,
                    int(W), w + h * bw * bw, int(bw), 1.0f, dx.data() + h * bw, int(W));
    });
    return;
  }
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < bw; ++i) {
          R s = 0;
          for (int64_t j = 0; j < bw; ++j) s += dout[size_t(t * W + h * bw + j)] * R(w[(h * bw + i) * bw + j]);
          dx[size_t(t * W + h * bw + i)] += s;
        }
  }, 8);
}

template <typename R>
struct LayerCache {
  Vec<R> x_in, r1, v;
  // recurrent
  Vec<R> yp, y, xl, c, gx, ga, a, mult, h;
  // attention: q, k after RoPE, values, softmax weights per (i, head) over keys j0..i (stride S), head outputs
  Vec<R> q, k, vv, p, att;
  // MLP
  Vec<R> res, r2, n, gp, up, ge;
};

// Local attention with every key of a row inside the window (T ≤ window + 1), f32: per head h (key/value head
// h / (H / KV)), S = Q_h·K^T·scale by sgemm, causal softmax per row (c.p = (H, T, T), zero above the diagonal), and
// att_h = P_h·V by sgemm. Heads are split over threads; BLAS is single-threaded, so the result does not depend on
// the thread count.
template <typename R>
void attention_forward_dense(LayerCache<R>& c, int64_t T, int64_t H, int64_t KV, int64_t hd, R scale) {
  if constexpr (std::is_same_v<R, float>) {
    const int64_t group = H / KV;
    c.p.assign(size_t(H * T * T), 0.0f);
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t hh = h0; hh < h1; ++hh) {
        const int64_t kh = hh / group;
        float* P = c.p.data() + hh * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(hd), scale, c.q.data() + hh * hd,
                    int(H * hd), c.k.data() + kh * hd, int(KV * hd), 0.0f, P, int(T));
        for (int64_t i = 0; i < T; ++i) {
          float* row = P + i * T;
          float mx = -INFINITY;
          for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, row[j]);
          float den = 0.0f;
          for (int64_t j = 0; j <= i; ++j) den += (row[j] = std::exp(row[j] - mx));
          for (int64_t j = 0; j <= i; ++j) row[j] /= den;
          std::fill(row + i + 1, row + T, 0.0f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(hd), int(T), 1.0f, P, int(T),
                    c.vv.data() + kh * hd, int(KV * hd), 0.0f, c.att.data() + hh * hd, int(H * hd));
      }
    });
  } else {
    (void)c, (void)T, (void)H, (void)KV, (void)hd, (void)scale;
    throw Error("griffin gradient", "dense attention is the f32 path");
  }
}

// The backward of attention_forward_dense for the head outputs' gradient datt (T, H·hd): dV = P^T·dO, and unless
// `through_scores` is false (the ssm rule holds the softmax weights constant) dS = P ⊙ (dO·V^T − rowsum), dQ = dS·K·
// scale, dK = dS^T·Q·scale. Per-head contributions to the shared K/V heads are summed in head order.
template <typename R>
void attention_backward_dense(const LayerCache<R>& c, const Vec<R>& datt, Vec<R>& dq, Vec<R>& dk, Vec<R>& dvv,
                              int64_t T, int64_t H, int64_t KV, int64_t hd, R scale, bool through_scores) {
  if constexpr (std::is_same_v<R, float>) {
    const int64_t group = H / KV;
    Vec<float> dv_h(size_t(H * T * hd)), dk_h(size_t(H * T * hd), 0.0f);
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      Vec<float> dS(size_t(T * T));
      for (int64_t hh = h0; hh < h1; ++hh) {
        const int64_t kh = hh / group;
        const float* P = c.p.data() + hh * T * T;
        const float* dO = datt.data() + hh * hd;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(hd), int(T), 1.0f, P, int(T), dO, int(H * hd),
                    0.0f, dv_h.data() + hh * T * hd, int(hd));
        if (!through_scores) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(hd), 1.0f, dO, int(H * hd),
                    c.vv.data() + kh * hd, int(KV * hd), 0.0f, dS.data(), int(T));
        for (int64_t i = 0; i < T; ++i) {
          float* row = dS.data() + i * T;
          const float* pr = P + i * T;
          float sdp = 0.0f;
          for (int64_t j = 0; j <= i; ++j) sdp += pr[j] * row[j];
          for (int64_t j = 0; j <= i; ++j) row[j] = pr[j] * (row[j] - sdp) * scale;
          std::fill(row + i + 1, row + T, 0.0f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(hd), int(T), 1.0f, dS.data(), int(T),
                    c.k.data() + kh * hd, int(KV * hd), 0.0f, dq.data() + hh * hd, int(H * hd));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(hd), int(T), 1.0f, dS.data(), int(T),
                    c.q.data() + hh * hd, int(H * hd), 0.0f, dk_h.data() + hh * T * hd, int(hd));
      }
    });
    for (int64_t hh = 0; hh < H; ++hh) {
      const int64_t kh = hh / group;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < hd; ++d) {
          dvv[size_t((t * KV + kh) * hd + d)] += dv_h[size_t((hh * T + t) * hd + d)];
          dk[size_t((t * KV + kh) * hd + d)] += dk_h[size_t((hh * T + t) * hd + d)];
        }
    }
  } else {
    (void)c, (void)datt, (void)dq, (void)dk, (void)dvv, (void)T, (void)H, (void)KV, (void)hd, (void)scale,
        (void)through_scores;
    throw Error("griffin gradient", "dense attention is the f32 path");
  }
}

template <typename R>
GradResultT<R> run(const GriffinModel& m, const GradRequest& req) {
  const GriffinConfig& cfg = m.config();
  const int64_t Dm = cfg.d_model, W = cfg.lru_width, H = cfg.heads, KV = cfg.kv_heads, hd = cfg.head_dim,
                F = cfg.mlp_width, K = cfg.conv_width, L = cfg.n_layer;
  const LrpRules& ru = req.rules;
  if (ru.linear != LrpRules::Linear::Zero)
    throw Error("--linear-rule", "the epsilon and gamma rules are not implemented for recurrent_gemma (lrp-0 only)");
  Tensor emb_t;
  const Tensor* emb = req.embeds;
  if (!emb) {
    emb_t = m.embed(req.ids);
    emb = &emb_t;
  }
  if (emb->shape.size() != 2 || emb->shape[1] != Dm || emb->shape[0] == 0)
    throw Error("input embeddings", "shape " + shape_str(emb->shape) + " is not [T, " + std::to_string(Dm) + "]");
  const int64_t T = emb->shape[0];
  const int64_t pos = req.position < 0 ? T + req.position : req.position;
  if (pos < 0 || pos >= T) throw Error("--position", "position " + std::to_string(req.position) + " is outside the " + std::to_string(T) + " tokens");
  check_seed(req, Dm);
  const int64_t Tp = pos + 1;  // causal: later tokens do not reach f
  const bool zb = req.zero_biases;
  auto B = [&](const Param& p) -> const float* { return zb ? nullptr : p.p; };

  GradResultT<R> out;
  out.shape = {T, Dm};
  out.embeds.assign(emb->data.begin(), emb->data.end());
  out.grad.assign(size_t(T * Dm), R(0));
  out.resid_relevance.assign(size_t((L + 1) * T), R(0));

  // ---- forward ----
  std::vector<LayerCache<R>> cache(static_cast<size_t>(L));
  Vec<R> x(size_t(Tp * Dm));
  for (int64_t i = 0; i < Tp * Dm; ++i) x[size_t(i)] = R(emb->data[size_t(i)]);
  const int64_t half = cfg.rot_dims / 2, win = cfg.window, S = std::min(Tp, win + 1), group = KV > 0 ? H / KV : 1;
  // f32 with every key inside the window (T ≤ window + 1, the usual case): the local attention runs as per-head
  // sgemm on dense causal (T, T) weights (attention_forward_dense / attention_backward_dense); otherwise banded loops.
  const bool dense_attention = std::is_same_v<R, float> && Tp <= win + 1;
  Vec<R> cosv(size_t(Tp * half)), sinv(size_t(Tp * half));
  for (int64_t t = 0; t < Tp; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = double(t) * std::pow(double(cfg.rope_theta), -double(2 * i) / double(cfg.rot_dims));
      cosv[size_t(t * half + i)] = R(float(std::cos(ang)));
      sinv[size_t(t * half + i)] = R(float(std::sin(ang)));
      if constexpr (std::is_same_v<R, double>) cosv[size_t(t * half + i)] = std::cos(ang), sinv[size_t(t * half + i)] = std::sin(ang);
    }
  auto rope = [&](Vec<R>& z, int64_t nh, bool inverse) {
    for (int64_t t = 0; t < Tp; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        R* p = z.data() + (t * nh + hh) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const R a = p[i], b = p[i + half], cs = cosv[size_t(t * half + i)],
                  sn = inverse ? -sinv[size_t(t * half + i)] : sinv[size_t(t * half + i)];
          p[i] = a * cs - b * sn;
          p[i + half] = b * cs + a * sn;
        }
      }
  };
  const R scale = R(1) / std::sqrt(R(hd));

  for (int64_t l = 0; l < L; ++l) {
    const GriffinLayer& ly = m.layer(l);
    LayerCache<R>& c = cache[size_t(l)];
    c.x_in = x;
    norm_fwd(c.v, c.r1, x, ly.temporal_norm.data(), Tp, Dm, cfg.eps);
    Vec<R> tout;
    if (ly.recurrent) {
      lin(c.yp, c.v.data(), ly.linear_y_w.p, B(ly.linear_y_b), Tp, Dm, W);
      c.y.resize(c.yp.size());
      each(int64_t(c.yp.size()), [&](int64_t i) { c.y[size_t(i)] = gelu(c.yp[size_t(i)]); });
      lin(c.xl, c.v.data(), ly.linear_x_w.p, B(ly.linear_x_b), Tp, Dm, W);
      c.c.assign(size_t(Tp * W), R(0));
      parallel_for(Tp, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t ch = 0; ch < W; ++ch) {
            R s = zb ? R(0) : R(ly.conv_b.p[ch]);
            for (int64_t d = 0; d < K && d <= t; ++d) s += R(ly.conv_w.p[ch * K + K - 1 - d]) * c.xl[size_t((t - d) * W + ch)];
            c.c[size_t(t * W + ch)] = s;
          }
      }, 16);
      bd_fwd(c.gx, c.c, ly.gate_x_w.p, B(ly.gate_x_b), Tp, W, H);
      bd_fwd(c.ga, c.c, ly.gate_a_w.p, B(ly.gate_a_b), Tp, W, H);
      each(Tp * W, [&](int64_t i) {
        c.gx[size_t(i)] = sigm(c.gx[size_t(i)]);
        c.ga[size_t(i)] = sigm(c.ga[size_t(i)]);
      });
      c.a.assign(size_t(Tp * W), R(0));
      c.mult.assign(size_t(Tp * W), R(1));
      c.h.assign(size_t(Tp * W), R(0));
      each(Tp * W, [&](int64_t r) {
        if (r < W) return;  // position 0: a = 0, mult = 1 (the reset)
        const R la = c.ga[size_t(r)] * R(ly.neg_c_softplus[size_t(r % W)]);
        c.a[size_t(r)] = std::exp(la);
        c.mult[size_t(r)] = std::sqrt(std::max(R(0), R(1) - std::exp(R(2) * la)));
      });
      // The scan: channels are independent, split over threads in fixed 64-channel blocks.
      parallel_for((W + 63) / 64, [&](int64_t b0, int64_t b1) {
        const int64_t ch0 = b0 * 64, ch1 = std::min(W, b1 * 64);
        for (int64_t t = 0; t < Tp; ++t)
          for (int64_t ch = ch0; ch < ch1; ++ch) {
            const size_t r = size_t(t * W + ch);
            const R prev = t > 0 ? c.h[r - size_t(W)] : R(0);
            c.h[r] = c.a[r] * prev + c.c[r] * c.gx[r] * c.mult[r];
          }
      });
      Vec<R> gated(size_t(Tp * W));
      each(Tp * W, [&](int64_t i) { gated[size_t(i)] = c.h[size_t(i)] * c.y[size_t(i)]; });
      lin(tout, gated.data(), ly.linear_out_w.p, B(ly.linear_out_b), Tp, W, Dm);
    } else {
      lin(c.q, c.v.data(), ly.q_w.p, nullptr, Tp, Dm, H * hd);
      lin(c.k, c.v.data(), ly.k_w.p, nullptr, Tp, Dm, KV * hd);
      lin(c.vv, c.v.data(), ly.v_w.p, nullptr, Tp, Dm, KV * hd);
      rope(c.q, H, false);
      rope(c.k, KV, false);
      c.att.assign(size_t(Tp * H * hd), R(0));
      if (dense_attention) {
        attention_forward_dense(c, Tp, H, KV, hd, scale);
      } else {
      c.p.assign(size_t(Tp * H * S), R(0));
      for (int64_t i = 0; i < Tp; ++i)
        for (int64_t hh = 0; hh < H; ++hh) {
          const int64_t kh = hh / group, j0 = std::max<int64_t>(0, i - win);
          R* pr = c.p.data() + (i * H + hh) * S;
          const R* qi = c.q.data() + (i * H + hh) * hd;
          R mx = -INFINITY;
          for (int64_t j = j0; j <= i; ++j) {
            const R* kj = c.k.data() + (j * KV + kh) * hd;
            R s = 0;
            for (int64_t d = 0; d < hd; ++d) s += qi[d] * kj[d];
            pr[j - j0] = s * scale;
            mx = std::max(mx, pr[j - j0]);
          }
          R den = 0;
          for (int64_t j = j0; j <= i; ++j) den += (pr[j - j0] = std::exp(pr[j - j0] - mx));
          R* o = c.att.data() + (i * H + hh) * hd;
          for (int64_t j = j0; j <= i; ++j) {
            pr[j - j0] /= den;
            const R* vj = c.vv.data() + (j * KV + kh) * hd;
            for (int64_t d = 0; d < hd; ++d) o[d] += pr[j - j0] * vj[d];
          }
        }
      }
      lin(tout, c.att.data(), ly.o_w.p, B(ly.o_b), Tp, H * hd, Dm);
    }
    c.res.resize(size_t(Tp * Dm));
    for (size_t i = 0; i < c.res.size(); ++i) c.res[i] = x[i] + tout[i];
    norm_fwd(c.n, c.r2, c.res, ly.channel_norm.data(), Tp, Dm, cfg.eps);
    lin(c.gp, c.n.data(), ly.gate_w.p, B(ly.gate_b), Tp, Dm, F);
    lin(c.up, c.n.data(), ly.up_w.p, B(ly.up_b), Tp, Dm, F);
    c.ge.resize(c.gp.size());
    Vec<R> z(c.gp.size());
    each(int64_t(z.size()), [&](int64_t i) {
      c.ge[size_t(i)] = gelu(c.gp[size_t(i)]);
      z[size_t(i)] = c.ge[size_t(i)] * c.up[size_t(i)];
    });
    Vec<R> mlp;
    lin(mlp, z.data(), ly.down_w.p, B(ly.down_b), Tp, F, Dm);
    each(int64_t(x.size()), [&](int64_t i) { x[size_t(i)] = c.res[size_t(i)] + mlp[size_t(i)]; });
  }
  Vec<R> nf, rf;
  norm_fwd(nf, rf, x, m.final_norm().data(), Tp, Dm, cfg.eps);
  double f = 0;
  const std::vector<float> seed = seed_for(req, nf.data() + pos * Dm, Dm);
  out.norm_f_at_pos.resize(size_t(Dm));
  for (int64_t d = 0; d < Dm; ++d) {
    out.norm_f_at_pos[size_t(d)] = nf[size_t(pos * Dm + d)];
    f += double(seed[size_t(d)]) * double(nf[size_t(pos * Dm + d)]);
  }
  out.f = f;

  // ---- backward ----
  Vec<R> gnf(size_t(Tp * Dm), R(0)), g(size_t(Tp * Dm), R(0));
  for (int64_t d = 0; d < Dm; ++d) gnf[size_t(pos * Dm + d)] = R(seed[size_t(d)]);
  norm_back(g.data(), gnf.data(), x, rf, m.final_norm().data(), Tp, Dm, ru.norm);
  auto relevance = [&](int64_t l, const Vec<R>& xx, const Vec<R>& gg) {
    for (int64_t t = 0; t < Tp; ++t) {
      R s = 0;
      for (int64_t d = 0; d < Dm; ++d) s += xx[size_t(t * Dm + d)] * gg[size_t(t * Dm + d)];
      out.resid_relevance[size_t(l * T + t)] = s;
    }
  };
  relevance(L, x, g);
  if (req.keep_layer_grads) out.grad_resid.resize(size_t(L)), out.grad_y.resize(size_t(L));
  double babs = 0;
  for (int64_t l = L - 1; l >= 0; --l) {
    const GriffinLayer& ly = m.layer(l);
    LayerCache<R>& c = cache[size_t(l)];
    // MLP: x_out = res + down(gelu(gp) ⊙ up)
    Vec<R> dz(size_t(Tp * F), R(0)), dgp(size_t(Tp * F)), dup(size_t(Tp * F)), dn(size_t(Tp * Dm), R(0));
    lin_back(dz.data(), g.data(), ly.down_w.p, Tp, F, Dm);
    babs += bias_dot(B(ly.down_b), g.data(), Tp, Dm);
    const R hf = ru.gate ? R(0.5) : R(1);
    each(int64_t(dz.size()), [&](int64_t k) {
      const size_t i = size_t(k);
      dgp[i] = hf * dz[i] * c.up[i] * gelu_grad(c.gp[i], ru.silu);
      dup[i] = hf * dz[i] * c.ge[i];
    });
    babs += bias_dot(B(ly.gate_b), dgp.data(), Tp, F) + bias_dot(B(ly.up_b), dup.data(), Tp, F);
    lin_back(dn.data(), dgp.data(), ly.gate_w.p, Tp, Dm, F);
    lin_back(dn.data(), dup.data(), ly.up_w.p, Tp, Dm, F);
    Vec<R> dres = g;
    norm_back(dres.data(), dn.data(), c.res, c.r2, ly.channel_norm.data(), Tp, Dm, ru.norm);
    // temporal block: res = x_in + tout
    Vec<R> dv(size_t(Tp * Dm), R(0));
    if (ly.recurrent) {
      Vec<R> dgated(size_t(Tp * W), R(0));
      lin_back(dgated.data(), dres.data(), ly.linear_out_w.p, Tp, W, Dm);
      babs += bias_dot(B(ly.linear_out_b), dres.data(), Tp, Dm);
      if (req.keep_layer_grads) {
        auto& gy = out.grad_y[size_t(l)];
        gy.assign(size_t(T * W), R(0));
        std::copy(dgated.begin(), dgated.end(), gy.begin());
      }
      Vec<R> dh(size_t(Tp * W)), dyp(size_t(Tp * W));
      each(int64_t(dh.size()), [&](int64_t k) {
        const size_t i = size_t(k);
        dh[i] = hf * dgated[i] * c.y[i];
        dyp[i] = hf * dgated[i] * c.h[i] * gelu_grad(c.yp[i], ru.silu);
      });
      Vec<R> dc(size_t(Tp * W), R(0)), dgxp(size_t(Tp * W), R(0)), dgap(size_t(Tp * W), R(0));
      // Reverse scan: channels are independent, split over threads in fixed 64-channel blocks.
      parallel_for((W + 63) / 64, [&](int64_t b0, int64_t b1) {
        const int64_t ch0 = b0 * 64, ch1 = std::min(W, b1 * 64);
        Vec<R> carry(size_t(ch1 - ch0), R(0));
        for (int64_t t = Tp - 1; t >= 0; --t)
          for (int64_t ch = ch0; ch < ch1; ++ch) {
            const size_t r = size_t(t * W + ch);
            const R G = dh[r] + carry[size_t(ch - ch0)];
            carry[size_t(ch - ch0)] = c.a[r] * G;
            dc[r] += G * c.gx[r] * c.mult[r];
            if (ru.ssm) continue;
            const R dgx = G * c.c[r] * c.mult[r];
            dgxp[r] = dgx * c.gx[r] * (R(1) - c.gx[r]);
            if (t > 0) {
              const R da = G * c.h[r - size_t(W)];
              const R dmult = G * c.c[r] * c.gx[r];
              R dla = da * c.a[r];
              if (c.mult[r] > R(0)) dla -= dmult * c.a[r] * c.a[r] / c.mult[r];
              const R dga = dla * R(ly.neg_c_softplus[size_t(ch)]);
              dgap[r] = dga * c.ga[r] * (R(1) - c.ga[r]);
            }
          }
      });
      if (!ru.ssm) {
        bd_back(dc, dgxp, ly.gate_x_w.p, Tp, W, H);
        bd_back(dc, dgap, ly.gate_a_w.p, Tp, W, H);
        babs += bias_dot(B(ly.gate_x_b), dgxp.data(), Tp, W) + bias_dot(B(ly.gate_a_b), dgap.data(), Tp, W);
      }
      babs += bias_dot(B(ly.conv_b), dc.data(), Tp, W);
      // dxl[s] = Σ_d w[K-1-d]·dc[s + d] (d < K, s + d < Tp): rows are independent.
      Vec<R> dxl(size_t(Tp * W), R(0));
      parallel_for(Tp, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s)
          for (int64_t d = 0; d < K && s + d < Tp; ++d)
            for (int64_t ch = 0; ch < W; ++ch)
              dxl[size_t(s * W + ch)] += R(ly.conv_w.p[ch * K + K - 1 - d]) * dc[size_t((s + d) * W + ch)];
      }, 16);
      babs += bias_dot(B(ly.linear_x_b), dxl.data(), Tp, W) + bias_dot(B(ly.linear_y_b), dyp.data(), Tp, W);
      lin_back(dv.data(), dxl.data(), ly.linear_x_w.p, Tp, Dm, W);
      lin_back(dv.data(), dyp.data(), ly.linear_y_w.p, Tp, Dm, W);
    } else {
      Vec<R> datt(size_t(Tp * H * hd), R(0));
      lin_back(datt.data(), dres.data(), ly.o_w.p, Tp, H * hd, Dm);
      babs += bias_dot(B(ly.o_b), dres.data(), Tp, Dm);
      if (req.keep_layer_grads) {
        auto& gy = out.grad_y[size_t(l)];
        gy.assign(size_t(T * H * hd), R(0));
        std::copy(datt.begin(), datt.end(), gy.begin());
      }
      Vec<R> dq(size_t(Tp * H * hd), R(0)), dk(size_t(Tp * KV * hd), R(0)), dvv(size_t(Tp * KV * hd), R(0));
      Vec<R> dp(static_cast<size_t>(S));
      if (dense_attention) attention_backward_dense(c, datt, dq, dk, dvv, Tp, H, KV, hd, scale, !ru.ssm);
      else
      for (int64_t i = 0; i < Tp; ++i)
        for (int64_t hh = 0; hh < H; ++hh) {
          const int64_t kh = hh / group, j0 = std::max<int64_t>(0, i - win);
          const R* pr = c.p.data() + (i * H + hh) * S;
          const R* go = datt.data() + (i * H + hh) * hd;
          R sdp = 0;
          for (int64_t j = j0; j <= i; ++j) {
            const R* vj = c.vv.data() + (j * KV + kh) * hd;
            R* dvj = dvv.data() + (j * KV + kh) * hd;
            R s = 0;
            for (int64_t d = 0; d < hd; ++d) dvj[d] += pr[j - j0] * go[d], s += go[d] * vj[d];
            dp[size_t(j - j0)] = s;
            sdp += pr[j - j0] * s;
          }
          if (ru.ssm) continue;
          const R* qi = c.q.data() + (i * H + hh) * hd;
          R* dqi = dq.data() + (i * H + hh) * hd;
          for (int64_t j = j0; j <= i; ++j) {
            const R ds = pr[j - j0] * (dp[size_t(j - j0)] - sdp) * scale;
            const R* kj = c.k.data() + (j * KV + kh) * hd;
            R* dkj = dk.data() + (j * KV + kh) * hd;
            for (int64_t d = 0; d < hd; ++d) dqi[d] += ds * kj[d], dkj[d] += ds * qi[d];
          }
        }
      if (!ru.ssm) {
        rope(dq, H, true);
        rope(dk, KV, true);
        lin_back(dv.data(), dq.data(), ly.q_w.p, Tp, Dm, H * hd);
        lin_back(dv.data(), dk.data(), ly.k_w.p, Tp, Dm, KV * hd);
      }
      lin_back(dv.data(), dvv.data(), ly.v_w.p, Tp, Dm, KV * hd);
    }
    g = dres;
    norm_back(g.data(), dv.data(), c.x_in, c.r1, ly.temporal_norm.data(), Tp, Dm, ru.norm);
    relevance(l, c.x_in, g);
    if (req.keep_layer_grads) {
      auto& gr = out.grad_resid[size_t(l)];
      gr.assign(size_t(T * Dm), R(0));
      std::copy(g.begin(), g.end(), gr.begin());
    }
  }
  std::copy(g.begin(), g.end(), out.grad.begin());
  out.bias_absorbed = babs;
  return out;
}

}  // namespace

GradResult griffin_gradient(const GriffinModel& m, const GradRequest& req) { return run<float>(m, req); }
GradResultT<double> griffin_gradient_f64(const GriffinModel& m, const GradRequest& req) { return run<double>(m, req); }

}  // namespace ssmx
