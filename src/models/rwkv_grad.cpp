#include "models/rwkv_grad.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/linear.h"

#include <cblas.h>

namespace ssmx {

namespace {

template <typename R>
struct LnCache {
  std::vector<R> xhat, rstd;
};

// out (T, C) = LayerNorm(x) with weight w and bias b (nullptr: zero bias); caches x̂ and 1/σ.
template <typename R>
void ln_fwd(std::vector<R>& out, LnCache<R>& c, const R* x, const float* w, const float* b, int64_t T, int64_t C,
            double eps) {
  out.resize(size_t(T * C));
  c.xhat.resize(size_t(T * C));
  c.rstd.resize(size_t(T));
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const R* xr = x + t * C;
      double s = 0;
      for (int64_t d = 0; d < C; ++d) s += double(xr[d]);
      const double mu = s / double(C);
      double ss = 0;
      for (int64_t d = 0; d < C; ++d) ss += (double(xr[d]) - mu) * (double(xr[d]) - mu);
      const R rstd = R(1.0 / std::sqrt(ss / double(C) + eps));
      c.rstd[size_t(t)] = rstd;
      for (int64_t d = 0; d < C; ++d) {
        const R xh = (xr[d] - R(mu)) * rstd;
        c.xhat[size_t(t * C + d)] = xh;
        out[size_t(t * C + d)] = xh * R(w[d]) + (b ? R(b[d]) : R(0));
      }
    }
  }, 16);
}

// gx (T, C) from gn = ∂f/∂(LayerNorm output); norm rule: 1/σ held constant. Adds Σ b·gn to *absorbed.
template <typename R>
void ln_bwd(std::vector<R>& gx, const std::vector<R>& gn, const LnCache<R>& c, const float* w, const float* b,
            int64_t T, int64_t C, bool norm_rule, double* absorbed) {
  gx.assign(size_t(T * C), R(0));
  std::vector<double> absorb(size_t(T), 0.0);
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      double m1 = 0, m2 = 0, ab = 0;
      for (int64_t d = 0; d < C; ++d) {
        const double g = double(gn[size_t(t * C + d)]);
        const double gh = g * double(w[d]);
        m1 += gh;
        m2 += gh * double(c.xhat[size_t(t * C + d)]);
        if (b) ab += double(b[d]) * g;
      }
      m1 /= double(C), m2 /= double(C);
      absorb[size_t(t)] = ab;
      const double rs = double(c.rstd[size_t(t)]);
      for (int64_t d = 0; d < C; ++d) {
        const double gh = double(gn[size_t(t * C + d)]) * double(w[d]);
        const double v = norm_rule ? gh - m1 : gh - m1 - double(c.xhat[size_t(t * C + d)]) * m2;
        gx[size_t(t * C + d)] = R(rs * v);
      }
    }
  }, 16);
  for (double a : absorb) *absorbed += a;
}

// y (T, O) = x (T, I)·Wᵀ with W (O, I).
template <typename R>
void mm(std::vector<R>& y, const R* x, const float* W, int64_t T, int64_t I, int64_t O) {
  y.assign(size_t(T * O), R(0));
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t o = 0; o < O; ++o) {
        R s = 0;
        const float* wr = W + o * I;
        const R* xr = x + t * I;
        for (int64_t i = 0; i < I; ++i) s += xr[i] * R(wr[i]);
        y[size_t(t * O + o)] = s;
      }
  }, 4);
}

// gx (T, I) = gy (T, O)·W.
template <typename R>
void mm_back(std::vector<R>& gx, const R* gy, const float* W, int64_t T, int64_t I, int64_t O) {
  gx.assign(size_t(T * I), R(0));
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      R* g = gx.data() + t * I;
      for (int64_t o = 0; o < O; ++o) {
        const R go = gy[t * O + o];
        if (go == R(0)) continue;
        const float* wr = W + o * I;
        for (int64_t i = 0; i < I; ++i) g[i] += go * R(wr[i]);
      }
    }
  }, 4);
}

// f32: OpenBLAS (the same sgemm as the forward pass).
template <>
void mm<float>(std::vector<float>& y, const float* x, const float* W, int64_t T, int64_t I, int64_t O) {
  y.resize(size_t(T * O));
  linear_forward(y.data(), x, W, nullptr, T, I, O);
}
template <>
void mm_back<float>(std::vector<float>& gx, const float* gy, const float* W, int64_t T, int64_t I, int64_t O) {
  gx.assign(size_t(T * I), 0.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(I), int(O), 1.0f, gy, int(O), W, int(I), 0.0f,
              gx.data(), int(I));
}

// m = n·μ + shift(n)·(1−μ).
template <typename R>
void mix_fwd(std::vector<R>& out, const std::vector<R>& n, const float* mu, int64_t T, int64_t C) {
  out.resize(size_t(T * C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c)
      out[size_t(t * C + c)] = n[size_t(t * C + c)] * R(mu[c]) + (t > 0 ? n[size_t((t - 1) * C + c)] * R(1.0f - mu[c]) : R(0));
}

template <typename R>
void mix_bwd_add(std::vector<R>& gn, const std::vector<R>& gm, const float* mu, int64_t T, int64_t C) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const R g = gm[size_t(t * C + c)];
      gn[size_t(t * C + c)] += g * R(mu[c]);
      if (t > 0) gn[size_t((t - 1) * C + c)] += g * R(1.0f - mu[c]);
    }
}

constexpr double kNegBig = -1e38;

// WKV forward with max tracking; also log Z (T, A).
template <typename R>
void wkv_fwd(std::vector<R>& out, std::vector<R>& logz, const std::vector<R>& k, const std::vector<R>& v,
             const float* wneg, const float* u, int64_t T, int64_t A) {
  out.resize(size_t(T * A));
  logz.resize(size_t(T * A));
  parallel_for(A, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      R num = 0, den = 0, p = R(kNegBig);
      const R wn = R(wneg[c]), uu = R(u[c]);
      for (int64_t t = 0; t < T; ++t) {
        const R kt = k[size_t(t * A + c)], vt = v[size_t(t * A + c)];
        const R ku = uu + kt;
        const R q = std::max(p, ku);
        const R e1 = std::exp(p - q), e2 = std::exp(ku - q);
        const R d = e1 * den + e2;
        out[size_t(t * A + c)] = (e1 * num + e2 * vt) / d;
        logz[size_t(t * A + c)] = q + std::log(d);
        const R pw = p + wn;
        const R q2 = std::max(pw, kt);
        const R f1 = std::exp(pw - q2), f2 = std::exp(kt - q2);
        num = f1 * num + f2 * vt;
        den = f1 * den + f2;
        p = q2;
      }
    }
  }, 4);
}

// Reverse recurrence: gv_j = Σ_{i≥j} g_i α_ij, gk_j = Σ_{i≥j} g_i α_ij (v_j − wkv_i) (gk zero when ssm_rule).
// S_j = Σ_{i>j} g_i e^{(i−1−j)·wneg − log Z_i} is kept as s·e^m (and S'_j with g_i·wkv_i); e^{k_j + m} ≤ 1.
template <typename R>
void wkv_bwd(std::vector<R>& gk, std::vector<R>& gv, const std::vector<R>& g, const std::vector<R>& k,
             const std::vector<R>& v, const std::vector<R>& wkv, const std::vector<R>& logz, const float* wneg,
             const float* u, int64_t T, int64_t A, bool ssm_rule) {
  gk.assign(size_t(T * A), R(0));
  gv.assign(size_t(T * A), R(0));
  parallel_for(A, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      R s = 0, s2 = 0, m = R(kNegBig);
      const R wn = R(wneg[c]), uu = R(u[c]);
      for (int64_t j = T - 1; j >= 0; --j) {
        const size_t q = size_t(j * A + c);
        const R ajj = std::exp(uu + k[q] - logz[q]);
        const R ekm = std::exp(k[q] + m);
        gv[q] = g[q] * ajj + ekm * s;
        if (!ssm_rule) gk[q] = g[q] * ajj * (v[q] - wkv[q]) + ekm * (v[q] * s - s2);
        const R a = -logz[q], b = wn + m;
        const R m2 = std::max(a, b);
        const R ea = std::exp(a - m2), eb = std::exp(b - m2);
        s = g[q] * ea + s * eb;
        s2 = g[q] * wkv[q] * ea + s2 * eb;
        m = m2;
      }
    }
  }, 4);
}

template <typename R>
R sigmoid(R x) {
  return R(1) / (R(1) + std::exp(-x));
}

// ∂f/∂x for a sigmoid gate y = σ(x) given gy: exact, or the identity rule σ(x) = x·[σ(x)/x].
template <typename R>
R sigmoid_back(R gy, R x, R y, bool identity) {
  if (!identity) return gy * y * (R(1) - y);
  return std::fabs(x) > R(1e-30) ? gy * y / x : R(0);
}

template <typename R>
struct LayerCache {
  std::vector<R> xin, n1, k, v, prer, r, wkv, logz, hmid, n2, pk, fk, prefr, fr, fv;
  LnCache<R> ln1, ln2;
};

template <typename R>
GradResultT<R> run(const RwkvModel& m, const GradRequest& req) {
  const RwkvConfig& cfg = m.config();
  const int64_t H = cfg.hidden, A = cfg.att, I = cfg.ffn, L = cfg.n_layer;
  if (req.rules.linear != LrpRules::Linear::Zero)
    throw Error("--linear-rule", "only lrp0 is defined for RWKV (the epsilon and gamma rules are Mamba's)");
  Tensor e_in;
  const Tensor* ep = req.embeds;
  if (!ep) {
    if (req.ids.empty()) throw Error("input", "no tokens to explain");
    e_in = m.embed(req.ids);
    ep = &e_in;
  }
  if (ep->shape.size() != 2 || ep->shape[1] != H || ep->shape[0] == 0)
    throw Error("input", "embeddings of shape " + shape_str(ep->shape) + ", expected (T, " + std::to_string(H) + ")");
  const int64_t T = ep->shape[0];
  const int64_t pos = req.position < 0 ? T + req.position : req.position;
  if (pos < 0 || pos >= T)
    throw Error("--position", "position " + std::to_string(req.position) + " is outside the " + std::to_string(T) + " input tokens");
  check_seed(req, H);
  const int64_t Tp = pos + 1;  // later tokens cannot influence f
  const bool zb = req.zero_biases;
  const LrpRules& ru = req.rules;
  auto bias = [&](const Param& p) -> const float* { return zb ? nullptr : p.p; };
  const double eps = double(cfg.norm_eps);

  GradResultT<R> res;
  res.shape = {T, H};
  res.embeds.assign(ep->data.begin(), ep->data.end());
  std::vector<R> e(res.embeds.begin(), res.embeds.begin() + Tp * H);

  // ---- forward ----
  LnCache<R> lnp, lno;
  std::vector<R> h, tmp, mixed;
  ln_fwd(h, lnp, e.data(), m.pre_ln_w().p, bias(m.pre_ln_b()), Tp, H, eps);
  std::vector<LayerCache<R>> cache(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const RwkvLayer& ly = m.layer(l);
    LayerCache<R>& c = cache[size_t(l)];
    const R scale = cfg.rescale_every > 0 ? R(std::ldexp(1.0, -int(l / cfg.rescale_every))) : R(1);
    c.xin = h;
    ln_fwd(c.n1, c.ln1, h.data(), ly.ln1_w.p, bias(ly.ln1_b), Tp, H, eps);
    mix_fwd(mixed, c.n1, ly.att_mix_k.p, Tp, H);
    mm(c.k, mixed.data(), ly.att_k.p, Tp, H, A);
    mix_fwd(mixed, c.n1, ly.att_mix_v.p, Tp, H);
    mm(c.v, mixed.data(), ly.att_v.p, Tp, H, A);
    mix_fwd(mixed, c.n1, ly.att_mix_r.p, Tp, H);
    mm(c.prer, mixed.data(), ly.att_r.p, Tp, H, A);
    c.r.resize(c.prer.size());
    for (size_t q = 0; q < c.prer.size(); ++q) c.r[q] = sigmoid(c.prer[q]);
    wkv_fwd(c.wkv, c.logz, c.k, c.v, ly.wneg.data(), ly.time_first.p, Tp, A);
    std::vector<R> y(c.r.size());
    for (size_t q = 0; q < y.size(); ++q) y[q] = c.r[q] * c.wkv[q];
    mm(tmp, y.data(), ly.att_o.p, Tp, A, H);
    for (size_t q = 0; q < h.size(); ++q) h[q] += tmp[q] * scale;
    c.hmid = h;
    ln_fwd(c.n2, c.ln2, h.data(), ly.ln2_w.p, bias(ly.ln2_b), Tp, H, eps);
    mix_fwd(mixed, c.n2, ly.ffn_mix_k.p, Tp, H);
    mm(c.pk, mixed.data(), ly.ffn_k.p, Tp, H, I);
    c.fk.resize(c.pk.size());
    for (size_t q = 0; q < c.pk.size(); ++q) {
      const R x = c.pk[q] > R(0) ? c.pk[q] : R(0);
      c.fk[q] = x * x;
    }
    mix_fwd(mixed, c.n2, ly.ffn_mix_r.p, Tp, H);
    mm(c.prefr, mixed.data(), ly.ffn_r.p, Tp, H, H);
    c.fr.resize(c.prefr.size());
    for (size_t q = 0; q < c.prefr.size(); ++q) c.fr[q] = sigmoid(c.prefr[q]);
    mm(c.fv, c.fk.data(), ly.ffn_v.p, Tp, I, H);
    for (R& x : c.fv) x *= scale;
    const bool halve = cfg.rescale_every > 0 && (l + 1) % cfg.rescale_every == 0;
    for (size_t q = 0; q < h.size(); ++q) {
      const R x = h[q] + c.fr[q] * c.fv[q];
      h[q] = halve ? x * R(0.5) : x;
    }
  }
  std::vector<R> nout;
  ln_fwd(nout, lno, h.data(), m.ln_out_w().p, bias(m.ln_out_b()), Tp, H, 1e-5);
  const std::vector<float> seed = seed_for(req, nout.data() + pos * H, H);
  double f = 0;
  for (int64_t d = 0; d < H; ++d) f += double(seed[size_t(d)]) * double(nout[size_t(pos * H + d)]);
  res.f = f;
  res.norm_f_at_pos.assign(nout.begin() + pos * H, nout.begin() + (pos + 1) * H);

  // ---- backward ----
  res.resid_relevance.assign(size_t((L + 1) * T), R(0));
  auto relevance_row = [&](int64_t row, const std::vector<R>& x, const std::vector<R>& g) {
    for (int64_t t = 0; t < Tp; ++t) {
      double s = 0;
      for (int64_t d = 0; d < H; ++d) s += double(x[size_t(t * H + d)]) * double(g[size_t(t * H + d)]);
      res.resid_relevance[size_t(row * T + t)] = R(s);
    }
  };
  auto full_rows = [&](const std::vector<R>& g, int64_t C) {  // pad (Tp, C) to (T, C) with zero rows
    std::vector<R> out(size_t(T * C), R(0));
    std::copy(g.begin(), g.end(), out.begin());
    return out;
  };
  if (req.keep_layer_grads) {
    res.grad_resid.resize(size_t(L));
    res.grad_y.resize(size_t(L));
  }
  double absorbed = 0;
  const R hf = ru.gate ? R(0.5) : R(1);
  std::vector<R> gn(size_t(Tp * H), R(0)), G, gx, g1, g2;
  for (int64_t d = 0; d < H; ++d) gn[size_t(pos * H + d)] = R(seed[size_t(d)]);
  ln_bwd(G, gn, lno, m.ln_out_w().p, bias(m.ln_out_b()), Tp, H, ru.norm, &absorbed);
  relevance_row(L, h, G);
  for (int64_t l = L - 1; l >= 0; --l) {
    const RwkvLayer& ly = m.layer(l);
    LayerCache<R>& c = cache[size_t(l)];
    const R scale = cfg.rescale_every > 0 ? R(std::ldexp(1.0, -int(l / cfg.rescale_every))) : R(1);
    const bool halve = cfg.rescale_every > 0 && (l + 1) % cfg.rescale_every == 0;
    // channel mix: h = (hmid + fr ⊙ fv)·(½ if halve)
    if (halve)
      for (R& x : G) x *= R(0.5);
    std::vector<R> gpfr(size_t(Tp * H)), gfv(size_t(Tp * H));
    for (size_t q = 0; q < gfv.size(); ++q) {
      gfv[q] = hf * G[q] * c.fr[q] * scale;  // ∂/∂(fk·W_v'ᵀ), scale folded in
      gpfr[q] = sigmoid_back(hf * G[q] * c.fv[q], c.prefr[q], c.fr[q], ru.gate);
    }
    std::vector<R> gpk;
    mm_back(gpk, gfv.data(), ly.ffn_v.p, Tp, I, H);
    for (size_t q = 0; q < gpk.size(); ++q) {
      const R p = c.pk[q];
      gpk[q] = p > R(0) ? gpk[q] * (ru.silu ? p : R(2) * p) : R(0);
    }
    std::vector<R> gn2(size_t(Tp * H), R(0));
    mm_back(g1, gpk.data(), ly.ffn_k.p, Tp, H, I);
    mix_bwd_add(gn2, g1, ly.ffn_mix_k.p, Tp, H);
    mm_back(g1, gpfr.data(), ly.ffn_r.p, Tp, H, H);
    mix_bwd_add(gn2, g1, ly.ffn_mix_r.p, Tp, H);
    ln_bwd(gx, gn2, c.ln2, ly.ln2_w.p, bias(ly.ln2_b), Tp, H, ru.norm, &absorbed);
    for (size_t q = 0; q < G.size(); ++q) G[q] += gx[q];
    // time mix: h = xin + scale·(r⊙wkv)·W_oᵀ
    std::vector<R> gy;
    mm_back(gy, G.data(), ly.att_o.p, Tp, A, H);
    for (R& x : gy) x *= scale;
    if (req.keep_layer_grads) res.grad_y[size_t(l)] = full_rows(gy, A);
    std::vector<R> gw(gy.size()), gpr(gy.size()), gk, gv;
    for (size_t q = 0; q < gy.size(); ++q) {
      gw[q] = hf * gy[q] * c.r[q];
      gpr[q] = sigmoid_back(hf * gy[q] * c.wkv[q], c.prer[q], c.r[q], ru.gate);
    }
    wkv_bwd(gk, gv, gw, c.k, c.v, c.wkv, c.logz, ly.wneg.data(), ly.time_first.p, Tp, A, ru.ssm);
    std::vector<R> gn1(size_t(Tp * H), R(0));
    mm_back(g1, gk.data(), ly.att_k.p, Tp, H, A);
    mix_bwd_add(gn1, g1, ly.att_mix_k.p, Tp, H);
    mm_back(g1, gv.data(), ly.att_v.p, Tp, H, A);
    mix_bwd_add(gn1, g1, ly.att_mix_v.p, Tp, H);
    mm_back(g1, gpr.data(), ly.att_r.p, Tp, H, A);
    mix_bwd_add(gn1, g1, ly.att_mix_r.p, Tp, H);
    ln_bwd(gx, gn1, c.ln1, ly.ln1_w.p, bias(ly.ln1_b), Tp, H, ru.norm, &absorbed);
    for (size_t q = 0; q < G.size(); ++q) G[q] += gx[q];
    if (req.keep_layer_grads) res.grad_resid[size_t(l)] = full_rows(G, H);
    if (l >= 1) relevance_row(l, c.xin, G);
  }
  ln_bwd(gx, G, lnp, m.pre_ln_w().p, bias(m.pre_ln_b()), Tp, H, ru.norm, &absorbed);
  relevance_row(0, e, gx);
  res.grad = full_rows(gx, H);
  res.bias_absorbed = absorbed;
  return res;
}

}  // namespace

GradResult rwkv_gradient(const RwkvModel& m, const GradRequest& req) { return run<float>(m, req); }
GradResultT<double> rwkv_gradient_f64(const RwkvModel& m, const GradRequest& req) { return run<double>(m, req); }

}  // namespace ssmx
