// The gradient / MambaLRP engine of models/mamba_grad.h: one forward pass that caches what the backward pass needs, one
// backward pass through norm_f and the layers in reverse. Written once as a template on the scalar type: float calls
// the optimised forward kernels (the same calls in the same order as MambaModel::forward, so the forward values are
// bitwise those of the plain forward), double calls the twins of ops/f64.h. See docs/architecture.md, "Backward passes
// and MambaLRP".
#include "models/mamba_grad.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/backward.h"
#include "ops/conv1d.h"
#include "ops/f64.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/selective_scan.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

// The pool of large buffers (mamba_grad.h: set_grad_workspace_limit). On the development VM a first touch of fresh
// memory runs at 1.6 GB/s (page faults) against 23 GB/s for memory already mapped: a call at T = 1024 on a
// mamba-130m shape maps ~0.7 GB of caches, 0.4 s of faults. Freed buffers of 1 MiB and more therefore go back to this
// pool (up to the limit) and the next call takes the smallest free block that fits.
class BufferPool {
 public:
  static BufferPool& get() {
    static BufferPool pool;
    return pool;
  }
  void* take(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    if (bytes >= kMinPooled) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= 2 * bytes) {
        void* p = it->second;
        held_ -= it->first;
        sizes_[p] = it->first;
        free_.erase(it);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    if (bytes >= kMinPooled) {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = bytes;
    }
    return p;
  }
  void give(void* p) {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        const size_t bytes = it->second;
        sizes_.erase(it);
        if (held_ + bytes <= limit_) {
          free_.emplace(bytes, p);
          held_ += bytes;
          return;
        }
      }
    }
    std::free(p);
  }
  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    while (held_ > limit_ && !free_.empty()) {  // drop the largest blocks first
      auto it = std::prev(free_.end());
      held_ -= it->first;
      std::free(it->second);
      free_.erase(it);
    }
  }

 private:
  static constexpr size_t kMinPooled = size_t(1) << 20;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;    // size -> block
  std::unordered_map<void*, size_t> sizes_;  // blocks handed out (pooled sizes only)
  size_t held_ = 0, limit_ = size_t(2) << 30;
};

// std::vector for the large activation buffers: no zero fill (they are always written before they are read), 64-byte
// aligned (glibc's malloc gives 16: the scans' 8-lane loads then split cache lines, measured 2x slower), from the pool.
template <typename T>
struct BufAlloc {
  using value_type = T;
  BufAlloc() = default;
  template <typename U>
  BufAlloc(const BufAlloc<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(BufferPool::get().take(n * sizeof(T))); }
  void deallocate(T* p, size_t) { BufferPool::get().give(p); }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) == 0) ::new (static_cast<void*>(p)) U;
    else ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const BufAlloc<U>&) const { return true; }
};
template <typename Real>
using Buf = std::vector<Real, BufAlloc<Real>>;

template <typename Real>
void release(Buf<Real>& b) {
  Buf<Real>().swap(b);
}

// A layer's parameters as Real: views of the model's f32 tensors, or double copies. Biases are nullptr when absent or
// when the request zeroes them.
template <typename Real>
struct LayerW {
  const Real *norm = nullptr, *in_w = nullptr, *in_b = nullptr, *conv_w = nullptr, *conv_b = nullptr, *x_w = nullptr,
             *dt_w = nullptr, *dt_b = nullptr, *A = nullptr, *D = nullptr, *out_w = nullptr, *out_b = nullptr;
  std::vector<std::vector<Real>> own;

  const Real* take(const Param& p) {
    if (!p) return nullptr;
    if constexpr (std::is_same_v<Real, float>) {
      return p.p;
    } else {
      const int64_t n = Tensor::count(p.shape);
      own.emplace_back(p.p, p.p + n);
      return own.back().data();
    }
  }
  LayerW(const MambaLayer& ly, bool zero_biases) {
    norm = take(ly.norm), in_w = take(ly.in_proj_w), conv_w = take(ly.conv_w), x_w = take(ly.x_proj_w);
    dt_w = take(ly.dt_proj_w), A = take(ly.A), D = take(ly.D), out_w = take(ly.out_proj_w);
    if (!zero_biases) {
      in_b = take(ly.in_proj_b), conv_b = take(ly.conv_b), dt_b = take(ly.dt_proj_b), out_b = take(ly.out_proj_b);
    }
  }
};

// What the backward pass needs of one layer's forward (Tr rows = tokens up to the seed position).
template <typename Real>
struct LayerCache {
  Buf<Real> h;      // (Tr, Dm) residual stream entering the layer
  Buf<Real> rstd;   // (Tr) its RMSNorm 1/rms
  Buf<Real> xz;     // (Tr, 2E) in_proj output [x | z], bias included
  Buf<Real> delta;  // (Tr, E) Δ
  Buf<Real> xdbl;   // (Tr, R + 2N) [dt_low | B | C] as the scan uses them (after Falcon's norms)
  Buf<Real> ssm;    // (Tr, E) Σ_n h·C (no D term): the gate's other input is ssm + D·u
  // Only without the SSM rule (the backward then goes through Δ, B, C):
  Buf<Real> dt_pre;  // (Tr, E) dt_low·W_dtᵀ + b_dt, the softplus input
  Buf<Real> xraw;    // (Tr, R + 2N) Falcon: x_proj output before the weightless norms
  Buf<Real> rstd3;   // (3, Tr) Falcon: 1/rms of dt_low, B, C
};

template <typename Real>
void map_silu(Real* out, const Real* in, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) { silu_array(out + b, in + b, e - b); }, 4096);
}
// u = SiLU(x) and s = σ(x) from one exp per element (u with silu_f's operations: bitwise the forward's u).
template <typename Real>
void map_silu_sigmoid(Real* u, Real* s, const Real* x, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      Real ex;
      if constexpr (std::is_same_v<Real, float>) ex = exp_clamped(-x[i]);
      else ex = std::exp(-x[i]);
      u[i] = x[i] / (Real(1) + ex);
      s[i] = Real(1) / (Real(1) + ex);
    }
  }, 4096);
}
template <typename Real>
void map_softplus(Real* out, const Real* in, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) { softplus_array(out + b, in + b, e - b); }, 4096);
}

template <typename Real>
void scan_forward(Real* ssm, Real* y, const Real* u, const Real* delta, const Real* A, const Real* B, const Real* C,
                  int64_t ld_bc, const Real* D, const Real* z, int64_t ld_z, int64_t T, int64_t E, int64_t N) {
  std::conditional_t<std::is_same_v<Real, float>, ScanArgs, ScanArgsF64> sa;
  sa.T = T, sa.E = E, sa.N = N;
  sa.u = u, sa.delta = delta, sa.A = A;
  sa.B = B, sa.C = C, sa.ld_bc = ld_bc;
  sa.D = D, sa.z = z, sa.ld_z = ld_z;
  if constexpr (std::is_same_v<Real, float>) selective_scan_forward_fast(ssm, y, sa);
  else selective_scan_forward(ssm, y, nullptr, sa);
}

// Σ_t Σ_o b[o]·G[t, o] (double; per-column sums in a fixed order, whatever the threads).
template <typename Real>
double bias_dot(const Real* b, const Real* G, int64_t T, int64_t O, int64_t ld) {
  if (!b) return 0.0;
  std::vector<double> col(size_t(O), 0.0);
  parallel_for(O, [&](int64_t o0, int64_t o1) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = o0; o < o1; ++o) col[size_t(o)] += double(G[t * ld + o]);
  }, std::max<int64_t>(64, 4096 / std::max<int64_t>(1, T)));
  double s = 0.0;
  for (int64_t o = 0; o < O; ++o) s += double(b[o]) * col[size_t(o)];
  return s;
}

// out[t] = Σ_d a[t, d]·g[t, d] for t < Tr (in double), 0 after.
template <typename Real>
void row_dot(Real* out, const Real* a, const Real* g, int64_t Tr, int64_t T, int64_t Dm) {
  parallel_for(Tr, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      double s = 0.0;
      for (int64_t d = 0; d < Dm; ++d) s += double(a[t * Dm + d]) * double(g[t * Dm + d]);
      out[t] = Real(s);
    }
  }, std::max<int64_t>(16, 4096 / std::max<int64_t>(1, Dm)));
  for (int64_t t = Tr; t < T; ++t) out[t] = 0;
}

// y = (ssm + D·u)·SiLU(z): the out_proj input, with the float operations of the forward scan's output loop.
template <typename Real>
void gated_output(Real* y, const Real* ssm, const Real* u, const Real* D, const Real* xz, int64_t Tr, int64_t E) {
  auto rows = [&](auto with_d, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Real* sr = ssm + t * E;
      const Real* ur = u + t * E;
      const Real* zr = xz + t * 2 * E + E;
      Real* yr = y + t * E;
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) {
        Real v = sr[e];
        if constexpr (decltype(with_d)::value) v += D[e] * ur[e];
        if constexpr (std::is_same_v<Real, float>) v *= silu_f(zr[e]);
        else v *= zr[e] / (1.0 + std::exp(-zr[e]));
        yr[e] = v;
      }
    }
  };
  parallel_for(Tr, [&](int64_t t0, int64_t t1) {
    if (D) rows(std::true_type{}, t0, t1);
    else rows(std::false_type{}, t0, t1);
  }, std::max<int64_t>(4, 4096 / std::max<int64_t>(1, E)));
}

template <typename Real>
std::vector<Real> padded(const Real* src, int64_t Tr, int64_t T, int64_t W) {
  std::vector<Real> v(size_t(T * W), Real(0));
  std::memcpy(v.data(), src, size_t(Tr * W) * sizeof(Real));
  return v;
}

template <typename Real>
GradResultT<Real> run(const MambaModel& m, const GradRequest& req) {
  const MambaConfig& cfg = m.config();
  const int64_t Dm = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv, R = cfg.dt_rank, V = cfg.vocab,
                L = cfg.n_layer, XW = R + 2 * N;
  const LrpRules& rules = req.rules;

  // ---- validate the request ----
  int64_t T = 0;
  if (req.embeds) {
    const Tensor& em = *req.embeds;
    if (em.shape.size() != 2 || em.shape[1] != Dm || em.shape[0] < 1 || em.numel() != em.shape[0] * Dm)
      throw Error("embeds", "shape " + shape_str(em.shape) + " but [T, " + std::to_string(Dm) +
                                "] (T >= 1, the model width " + std::to_string(Dm) + ") is expected");
    T = em.shape[0];
    if (!req.ids.empty() && int64_t(req.ids.size()) != T)
      throw Error("embeds", "has " + std::to_string(T) + " rows but " + std::to_string(req.ids.size()) +
                                " token ids are given (give no ids, or as many as rows)");
  } else {
    T = int64_t(req.ids.size());
    if (T == 0) throw Error("input", "no tokens to run");
    for (int32_t id : req.ids)
      if (id < 0 || id >= V)
        throw Error("input", "token id " + std::to_string(id) + " is out of range for a vocabulary of " + std::to_string(V));
  }
  const int64_t pos = req.position < 0 ? T - 1 + (req.position + 1) : req.position;
  if (req.position < -1 || pos < 0 || pos >= T)
    throw Error("position", std::to_string(req.position) + " is out of range for " + std::to_string(T) +
                                " tokens (use 0.." + std::to_string(T - 1) + ", or -1 for the last)");
  if (int64_t(req.seed.size()) != Dm)
    throw Error("seed", "has " + std::to_string(req.seed.size()) + " values but the model width is " + std::to_string(Dm));
  if (rules.linear == LrpRules::Linear::Epsilon && !(rules.epsilon > 0.0))
    throw Error("rules", "the epsilon rule needs epsilon > 0 (got " + std::to_string(rules.epsilon) + ")");
  if (rules.linear == LrpRules::Linear::Gamma && !(rules.gamma >= 0.0))
    throw Error("rules", "the gamma rule needs gamma >= 0 (got " + std::to_string(rules.gamma) + ")");
  for (float s : req.seed)
    if (!std::isfinite(s)) throw Error("seed", "contains a value that is not finite");

  GradResultT<Real> res;
  res.shape = {T, Dm};
  res.embeds.resize(size_t(T * Dm));
  if (req.embeds) {
    for (int64_t k = 0; k < T * Dm; ++k) res.embeds[size_t(k)] = Real(req.embeds->data[size_t(k)]);
  } else {
    const float* emb = m.embedding().p;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) res.embeds[size_t(t * Dm + d)] = Real(emb[int64_t(req.ids[size_t(t)]) * Dm + d]);
  }

  // Causality: tokens after the seed position do not influence f; run only up to it.
  const int64_t Tr = pos + 1;
  const bool full_ssm = !rules.ssm;  // backward through Δ, B, C (and x_proj, dt_proj)
  const SiluRule silu_rule = rules.silu ? SiluRule::Identity : SiluRule::Exact;
  const auto linear_rule = rules.linear;

  // ---- forward with caches ----
  std::vector<LayerCache<Real>> cache(static_cast<size_t>(L));
  Buf<Real> normed(size_t(Tr * Dm)), conv(size_t(Tr * E)), u(size_t(Tr * E)), y(size_t(Tr * E)), mix(size_t(Tr * Dm));
  Buf<Real> h_last(size_t(Tr * Dm));
  for (int64_t l = 0; l < L; ++l) {
    LayerCache<Real>& c = cache[size_t(l)];
    c.h.resize(size_t(Tr * Dm)), c.rstd.resize(size_t(Tr)), c.xz.resize(size_t(Tr * 2 * E));
    c.delta.resize(size_t(Tr * E)), c.xdbl.resize(size_t(Tr * XW)), c.ssm.resize(size_t(Tr * E));
  }
  if (L > 0) std::memcpy(cache[0].h.data(), res.embeds.data(), size_t(Tr * Dm) * sizeof(Real));
  for (int64_t l = 0; l < L; ++l) {
    const LayerW<Real> w(m.layer(l), req.zero_biases);
    LayerCache<Real>& c = cache[size_t(l)];
    rmsnorm_forward(normed.data(), c.rstd.data(), c.h.data(), w.norm, Tr, Dm, cfg.norm_eps);
    linear_forward(c.xz.data(), normed.data(), w.in_w, w.in_b, Tr, Dm, 2 * E);
    conv1d_causal_forward(conv.data(), c.xz.data(), w.conv_w, w.conv_b, Tr, E, K, 2 * E);
    map_silu(u.data(), conv.data(), Tr * E);
    Real* xd = c.xdbl.data();
    if (cfg.falcon) {
      Real* src = xd;  // normalised in place unless the backward needs the raw values
      Real* r3 = nullptr;
      if (full_ssm) {
        c.xraw.resize(size_t(Tr * XW)), c.rstd3.resize(size_t(3 * Tr));
        src = c.xraw.data(), r3 = c.rstd3.data();
      }
      linear_forward(src, u.data(), w.x_w, nullptr, Tr, E, XW);
      rmsnorm_forward(xd, r3, src, nullptr, Tr, R, cfg.mixer_rms_eps, XW, XW);
      rmsnorm_forward(xd + R, r3 ? r3 + Tr : nullptr, src + R, nullptr, Tr, N, cfg.mixer_rms_eps, XW, XW);
      rmsnorm_forward(xd + R + N, r3 ? r3 + 2 * Tr : nullptr, src + R + N, nullptr, Tr, N, cfg.mixer_rms_eps, XW, XW);
    } else {
      linear_forward(xd, u.data(), w.x_w, nullptr, Tr, E, XW);
    }
    linear_forward(c.delta.data(), xd, w.dt_w, w.dt_b, Tr, R, E, XW, E);
    if (full_ssm) c.dt_pre.assign(c.delta.begin(), c.delta.end());
    map_softplus(c.delta.data(), c.delta.data(), Tr * E);
    scan_forward<Real>(c.ssm.data(), y.data(), u.data(), c.delta.data(), w.A, xd + R, xd + R + N, XW, w.D,
                       c.xz.data() + E, 2 * E, Tr, E, N);
    linear_forward(mix.data(), y.data(), w.out_w, w.out_b, Tr, E, Dm);
    Real* hn = l + 1 < L ? cache[size_t(l + 1)].h.data() : h_last.data();
    const Real* hc = c.h.data();
    parallel_for(Tr * Dm, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) hn[k] = hc[k] + mix[k];
    }, 4096);
  }
  if (L == 0) std::memcpy(h_last.data(), res.embeds.data(), size_t(Tr * Dm) * sizeof(Real));

  // Final norm at the seed position, and f.
  std::vector<Real> nf_w(static_cast<size_t>(Dm)), seed(static_cast<size_t>(Dm));
  for (int64_t d = 0; d < Dm; ++d) nf_w[size_t(d)] = Real(m.norm_f().p[d]), seed[size_t(d)] = Real(req.seed[size_t(d)]);
  const Real* nfw = nullptr;
  if constexpr (std::is_same_v<Real, float>) nfw = m.norm_f().p;
  else nfw = nf_w.data();
  res.norm_f_at_pos.resize(size_t(Dm));
  Real rstd_f = 0;
  rmsnorm_forward(res.norm_f_at_pos.data(), &rstd_f, h_last.data() + pos * Dm, nfw, 1, Dm, cfg.norm_eps);
  {
    double f = 0.0;
    for (int64_t d = 0; d < Dm; ++d) f += double(seed[size_t(d)]) * double(res.norm_f_at_pos[size_t(d)]);
    res.f = f;
  }

  // ---- backward ----
  res.resid_relevance.assign(size_t((L + 1) * T), Real(0));
  if (req.keep_layer_grads) res.grad_resid.resize(size_t(L)), res.grad_y.resize(size_t(L));
  Buf<Real> g(size_t(Tr * Dm));  // ∂̃f/∂(residual stream) at the current depth
  std::fill(g.begin(), g.end(), Real(0));
  rmsnorm_backward(g.data() + pos * Dm, seed.data(), h_last.data() + pos * Dm, &rstd_f, nfw, 1, Dm, rules.norm, false,
                   Dm, Dm, Dm);
  row_dot(res.resid_relevance.data() + L * T, h_last.data(), g.data(), Tr, T, Dm);
  release(h_last);

  Buf<Real> dy(size_t(Tr * E)), du(size_t(Tr * E)), dxz(size_t(Tr * 2 * E)), dnormed(size_t(Tr * Dm)), sig(size_t(Tr * E));
  Buf<Real> dd, dxdbl, gm;
  if (full_ssm) dd.resize(size_t(Tr * E)), dxdbl.resize(size_t(Tr * XW));
  if (linear_rule == LrpRules::Linear::Epsilon) gm.resize(size_t(Tr * Dm));
  const Real gate_scale = rules.gate ? Real(0.5) : Real(1);
  double bias_abs = 0.0;

  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerW<Real> w(m.layer(l), req.zero_biases);
    LayerCache<Real>& c = cache[size_t(l)];
    const Real* xd = c.xdbl.data();
    // Recompute conv, u = SiLU(conv) and σ(conv) (cheaper than caching them).
    conv1d_causal_forward(conv.data(), c.xz.data(), w.conv_w, w.conv_b, Tr, E, K, 2 * E);
    map_silu_sigmoid(u.data(), sig.data(), conv.data(), Tr * E);
    if (linear_rule != LrpRules::Linear::Zero)  // the out_proj input y, for the ε / γ rules
      gated_output(y.data(), c.ssm.data(), u.data(), w.D, c.xz.data(), Tr, E);

    // out_proj: mix = y·W_outᵀ + b, ∂/∂mix = g.
    if (linear_rule == LrpRules::Linear::Gamma) {
      std::fill(dy.begin(), dy.end(), Real(0));
      linear_gamma_backward(dy.data(), g.data(), y.data(), w.out_w, w.out_b, Tr, E, Dm, E, Dm, E, rules.gamma, false,
                            &bias_abs);
    } else {
      const Real* gsrc = g.data();
      if (linear_rule == LrpRules::Linear::Epsilon) {
        linear_forward(mix.data(), y.data(), w.out_w, w.out_b, Tr, E, Dm);
        std::copy(g.begin(), g.end(), gm.begin());
        epsilon_rescale(gm.data(), mix.data(), Tr, Dm, Dm, Dm, rules.epsilon);
        gsrc = gm.data();
      }
      bias_abs += bias_dot(w.out_b, gsrc, Tr, Dm, Dm);
      if (l == L - 1 && linear_rule == LrpRules::Linear::Zero) {  // only the seed row of g is non-zero here
        std::fill(dy.begin(), dy.end(), Real(0));
        linear_backward(dy.data() + pos * E, gsrc + pos * Dm, w.out_w, 1, E, Dm, Dm, E, false);
      } else {
        linear_backward(dy.data(), gsrc, w.out_w, Tr, E, Dm, Dm, E, false);
      }
    }
    if (req.keep_layer_grads) res.grad_y[size_t(l)] = padded(dy.data(), Tr, T, E);

    // Gate (half rule: scale ½) → ∂/∂(ssm + D·u) in place of dy, and ∂/∂z into the z half of dxz.
    gate_backward(dy.data(), dxz.data() + E, dy.data(), c.ssm.data(), u.data(), w.D, c.xz.data() + E, Tr, E, 2 * E,
                  2 * E, gate_scale, silu_rule);

    // Selective scan (SSM rule: Ā, B̄, C held constant → only du).
    ScanBackwardArgs<Real> sb;
    sb.T = Tr, sb.E = E, sb.N = N;
    sb.u = u.data(), sb.delta = c.delta.data(), sb.A = w.A, sb.B = xd + R, sb.C = xd + R + N, sb.ld_bc = XW;
    sb.D = w.D, sb.dpre = dy.data(), sb.hold_params = rules.ssm, sb.du = du.data();
    if (full_ssm) {
      sb.ddelta = dd.data(), sb.dB = dxdbl.data() + R, sb.dC = dxdbl.data() + R + N, sb.ld_dbc = XW;
    }
    selective_scan_backward(sb);

    if (full_ssm) {
      // Δ = softplus(dt_low·W_dtᵀ + b_dt) → ∂/∂dt_low; Falcon's weightless norms; x_proj → du.
      softplus_backward(dd.data(), dd.data(), c.dt_pre.data(), Tr * E);
      bias_abs += bias_dot(w.dt_b, dd.data(), Tr, E, E);
      linear_backward(dxdbl.data(), dd.data(), w.dt_w, Tr, R, E, E, XW, false);
      if (cfg.falcon) {
        const Real* xr = c.xraw.data();
        const Real* r3 = c.rstd3.data();
        rmsnorm_backward(dxdbl.data(), dxdbl.data(), xr, r3, (const Real*)nullptr, Tr, R, false, false, XW, XW, XW);
        rmsnorm_backward(dxdbl.data() + R, dxdbl.data() + R, xr + R, r3 + Tr, (const Real*)nullptr, Tr, N, false, false,
                         XW, XW, XW);
        rmsnorm_backward(dxdbl.data() + R + N, dxdbl.data() + R + N, xr + R + N, r3 + 2 * Tr, (const Real*)nullptr, Tr,
                         N, false, false, XW, XW, XW);
      }
      linear_backward(du.data(), dxdbl.data(), w.x_w, Tr, E, XW, XW, E, true);
    }

    // u = SiLU(conv) (identity rule: σ(conv) held constant), then the transposed conv into the x half of dxz.
    silu_backward(du.data(), du.data(), conv.data(), Tr * E, silu_rule, (const Real*)sig.data());
    bias_abs += bias_dot(w.conv_b, du.data(), Tr, E, E);
    conv1d_causal_backward(dxz.data(), du.data(), w.conv_w, Tr, E, K, 2 * E);

    // in_proj: xz = normed·W_inᵀ + b.
    if (linear_rule == LrpRules::Linear::Gamma) {
      rmsnorm_forward(normed.data(), nullptr, c.h.data(), w.norm, Tr, Dm, cfg.norm_eps);
      linear_gamma_backward(dnormed.data(), dxz.data(), normed.data(), w.in_w, w.in_b, Tr, Dm, 2 * E, Dm, 2 * E, Dm,
                            rules.gamma, false, &bias_abs);
    } else {
      if (linear_rule == LrpRules::Linear::Epsilon)
        epsilon_rescale(dxz.data(), c.xz.data(), Tr, 2 * E, 2 * E, 2 * E, rules.epsilon);
      bias_abs += bias_dot(w.in_b, dxz.data(), Tr, 2 * E, 2 * E);
      linear_backward(dnormed.data(), dxz.data(), w.in_w, Tr, Dm, 2 * E, 2 * E, Dm, false);
    }

    // RMSNorm (LN rule: 1/rms held constant) and the residual: g ← g + ∂normed/∂h ᵀ·dnormed.
    rmsnorm_backward(g.data(), dnormed.data(), c.h.data(), c.rstd.data(), w.norm, Tr, Dm, rules.norm, true, Dm, Dm, Dm);
    if (req.keep_layer_grads) res.grad_resid[size_t(l)] = padded(g.data(), Tr, T, Dm);
    row_dot(res.resid_relevance.data() + l * T, c.h.data(), g.data(), Tr, T, Dm);
    c = LayerCache<Real>();  // free this layer's caches
  }
  res.bias_absorbed = bias_abs;
  res.grad = padded(g.data(), Tr, T, Dm);
  return res;
}

}  // namespace

GradResult mamba_gradient(const MambaModel& m, const GradRequest& req) { return run<float>(m, req); }

void set_grad_workspace_limit(size_t bytes) { BufferPool::get().set_limit(bytes); }
void release_grad_workspace() {
  BufferPool& p = BufferPool::get();
  p.set_limit(0);
  p.set_limit(size_t(2) << 30);
}

GradResultT<double> mamba_gradient_f64(const MambaModel& m, const GradRequest& req) { return run<double>(m, req); }

}  // namespace ssmx
