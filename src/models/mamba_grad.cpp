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

// What the backward pass needs of one scan direction's forward.
template <typename Real>
struct DirCache {
  Buf<Real> delta;  // (Tr, E) Δ
  Buf<Real> xdbl;   // (Tr, R + 2N) [dt_low | B | C] as the scan uses them (after Falcon's norms)
  Buf<Real> ssm;    // (Tr, E) Σ_n h·C (no D term): the gate's other input is ssm + D·u
  // Only without the SSM rule (the backward then goes through Δ, B, C):
  Buf<Real> dt_pre;  // (Tr, E) dt_low·W_dtᵀ + b_dt, the softplus input
  Buf<Real> xraw;    // (Tr, R + 2N) Falcon: x_proj output before the weightless norms
  Buf<Real> rstd3;   // (3, Tr) Falcon: 1/rms of dt_low, B, C
};

// What the backward pass needs of one layer's forward (Tr rows = tokens up to the seed position, or all of them for
// a bidirectional stack).
template <typename Real>
struct LayerCache {
  Buf<Real> h;      // (Tr, Dm) residual stream entering the layer
  Buf<Real> rstd;   // (Tr) its RMSNorm 1/rms
  Buf<Real> xz;     // (Tr, 2E) in_proj output [x | z], bias included
  Buf<Real> y;      // (Tr, E) out_proj input, kept only for the epsilon / gamma rules
  DirCache<Real> dir[2];  // forward direction; backward direction (bidirectional layers), in reversed token order
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

// Reverses the rows of a (T, W) array.
template <typename Real>
void flip_rows(Real* dst, const Real* src, int64_t T, int64_t W) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) std::memcpy(dst + t * W, src + (T - 1 - t) * W, size_t(W) * sizeof(Real));
  }, std::max<int64_t>(4, 4096 / std::max<int64_t>(1, W)));
}

// Everything of one run that the per-direction passes share.
template <typename Real>
struct Ctx {
  int64_t Tr, E, N, K, R, XW;
  bool falcon, full_ssm;
  float mixer_eps;
  SiluRule silu_rule;
  Real gate_scale;
  bool ssm_rule;
  Buf<Real> conv, u, sig, du, dd, dxdbl;  // scratch (Tr, E) / (Tr, XW)
};

// One scan direction's forward over xz = [x | z] (Tr, 2E): conv, SiLU, x_proj (Falcon's norms), dt_proj, softplus,
// the scan; writes the gated output y = (ssm + D·u)·SiLU(z) (Tr, E) and fills the cache.
template <typename Real>
void dir_forward(Ctx<Real>& x, DirCache<Real>& c, const LayerW<Real>& w, const Real* xz, Real* y) {
  const int64_t Tr = x.Tr, E = x.E, N = x.N, R = x.R, XW = x.XW;
  c.delta.resize(size_t(Tr * E)), c.xdbl.resize(size_t(Tr * XW)), c.ssm.resize(size_t(Tr * E));
  conv1d_causal_forward(x.conv.data(), xz, w.conv_w, w.conv_b, Tr, E, x.K, 2 * E);
  map_silu(x.u.data(), x.conv.data(), Tr * E);
  Real* xd = c.xdbl.data();
  if (x.falcon) {
    Real* src = xd;  // normalised in place unless the backward needs the raw values
    Real* r3 = nullptr;
    if (x.full_ssm) {
      c.xraw.resize(size_t(Tr * XW)), c.rstd3.resize(size_t(3 * Tr));
      src = c.xraw.data(), r3 = c.rstd3.data();
    }
    linear_forward(src, x.u.data(), w.x_w, nullptr, Tr, E, XW);
    rmsnorm_forward(xd, r3, src, nullptr, Tr, R, x.mixer_eps, XW, XW);
    rmsnorm_forward(xd + R, r3 ? r3 + Tr : nullptr, src + R, nullptr, Tr, N, x.mixer_eps, XW, XW);
    rmsnorm_forward(xd + R + N, r3 ? r3 + 2 * Tr : nullptr, src + R + N, nullptr, Tr, N, x.mixer_eps, XW, XW);
  } else {
    linear_forward(xd, x.u.data(), w.x_w, nullptr, Tr, E, XW);
  }
  linear_forward(c.delta.data(), xd, w.dt_w, w.dt_b, Tr, R, E, XW, E);
  if (x.full_ssm) c.dt_pre.assign(c.delta.begin(), c.delta.end());
  map_softplus(c.delta.data(), c.delta.data(), Tr * E);
  scan_forward<Real>(c.ssm.data(), y, x.u.data(), c.delta.data(), w.A, xd + R, xd + R + N, XW, w.D, xz + E, 2 * E, Tr,
                     E, N);
}

// One scan direction's backward: dy (Tr, E) = ∂̃f/∂(gated output), overwritten; writes dxz (Tr, 2E) = ∂̃f/∂[x | z].
template <typename Real>
void dir_backward(Ctx<Real>& x, Real* dxz, Real* dy, const DirCache<Real>& c, const LayerW<Real>& w, const Real* xz,
                  double& bias_abs) {
  const int64_t Tr = x.Tr, E = x.E, N = x.N, R = x.R, XW = x.XW;
  const Real* xd = c.xdbl.data();
  // Recompute conv, u = SiLU(conv) and σ(conv) (cheaper than caching them).
  conv1d_causal_forward(x.conv.data(), xz, w.conv_w, w.conv_b, Tr, E, x.K, 2 * E);
  map_silu_sigmoid(x.u.data(), x.sig.data(), x.conv.data(), Tr * E);
  // Gate (half rule: scale ½) → ∂/∂(ssm + D·u) in place of dy, and ∂/∂z into the z half of dxz.
  gate_backward(dy, dxz + E, dy, c.ssm.data(), x.u.data(), w.D, xz + E, Tr, E, 2 * E, 2 * E, x.gate_scale, x.silu_rule);
  // Selective scan (SSM rule: Ā, B̄, C held constant → only du).
  ScanBackwardArgs<Real> sb;
  sb.T = Tr, sb.E = E, sb.N = N;
  sb.u = x.u.data(), sb.delta = c.delta.data(), sb.A = w.A, sb.B = xd + R, sb.C = xd + R + N, sb.ld_bc = XW;
  sb.D = w.D, sb.dpre = dy, sb.hold_params = x.ssm_rule, sb.du = x.du.data();
  if (x.full_ssm) sb.ddelta = x.dd.data(), sb.dB = x.dxdbl.data() + R, sb.dC = x.dxdbl.data() + R + N, sb.ld_dbc = XW;
  selective_scan_backward(sb);
  if (x.full_ssm) {
    // Δ = softplus(dt_low·W_dtᵀ + b_dt) → ∂/∂dt_low; Falcon's weightless norms; x_proj → du.
    Real* dd = x.dd.data();
    Real* dx = x.dxdbl.data();
    softplus_backward(dd, dd, c.dt_pre.data(), Tr * E);
    bias_abs += bias_dot(w.dt_b, dd, Tr, E, E);
    linear_backward(dx, dd, w.dt_w, Tr, R, E, E, XW, false);
    if (x.falcon) {
      const Real* xr = c.xraw.data();
      const Real* r3 = c.rstd3.data();
      rmsnorm_backward(dx, dx, xr, r3, (const Real*)nullptr, Tr, R, false, false, XW, XW, XW);
      rmsnorm_backward(dx + R, dx + R, xr + R, r3 + Tr, (const Real*)nullptr, Tr, N, false, false, XW, XW, XW);
      rmsnorm_backward(dx + R + N, dx + R + N, xr + R + N, r3 + 2 * Tr, (const Real*)nullptr, Tr, N, false, false, XW,
                       XW, XW);
    }
    linear_backward(x.du.data(), dx, w.x_w, Tr, E, XW, XW, E, true);
  }
  // u = SiLU(conv) (identity rule: σ(conv) held constant), then the transposed conv into the x half of dxz.
  silu_backward(x.du.data(), x.du.data(), x.conv.data(), Tr * E, x.silu_rule, (const Real*)x.sig.data());
  bias_abs += bias_dot(w.conv_b, x.du.data(), Tr, E, E);
  conv1d_causal_backward(dxz, x.du.data(), w.conv_w, Tr, E, x.K, 2 * E);
}

template <typename Real>
GradResultT<Real> run(const GradStack& st, const GradRequest& req) {
  const MambaConfig& cfg = st.cfg;
  const int64_t Dm = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv, R = cfg.dt_rank, V = cfg.vocab,
                L = cfg.n_layer, XW = R + 2 * N;
  const LrpRules& rules = req.rules;
  const bool bidir = !st.backward.empty();
  if (int64_t(st.layers.size()) != L || (bidir && int64_t(st.backward.size()) != L) || !st.norm_f)
    throw Error("gradient", "inconsistent layer stack");

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
    if (!st.embedding) throw Error("input", "this model takes input embeddings, not token ids");
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
  check_seed(req, Dm);
  if (rules.linear == LrpRules::Linear::Epsilon && !(rules.epsilon > 0.0))
    throw Error("rules", "the epsilon rule needs epsilon > 0 (got " + std::to_string(rules.epsilon) + ")");
  if (rules.linear == LrpRules::Linear::Gamma && !(rules.gamma >= 0.0))
    throw Error("rules", "the gamma rule needs gamma >= 0 (got " + std::to_string(rules.gamma) + ")");

  GradResultT<Real> res;
  res.shape = {T, Dm};
  res.embeds.resize(size_t(T * Dm));
  if (req.embeds) {
    for (int64_t k = 0; k < T * Dm; ++k) res.embeds[size_t(k)] = Real(req.embeds->data[size_t(k)]);
  } else {
    const float* emb = st.embedding->p;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < Dm; ++d) res.embeds[size_t(t * Dm + d)] = Real(emb[int64_t(req.ids[size_t(t)]) * Dm + d]);
  }

  // Causality: tokens after the seed position do not influence f in a causal stack; run only up to it. A
  // bidirectional stack needs every token.
  const int64_t Tr = bidir ? T : pos + 1;
  const auto linear_rule = rules.linear;
  const Real dir_scale = bidir && st.divide_out ? Real(0.5) : Real(1);
  Ctx<Real> x;
  x.Tr = Tr, x.E = E, x.N = N, x.K = K, x.R = R, x.XW = XW;
  x.falcon = cfg.falcon, x.full_ssm = !rules.ssm, x.mixer_eps = cfg.mixer_rms_eps;
  x.silu_rule = rules.silu ? SiluRule::Identity : SiluRule::Exact;
  x.gate_scale = rules.gate ? Real(0.5) : Real(1);
  x.ssm_rule = rules.ssm;
  x.conv.resize(size_t(Tr * E)), x.u.resize(size_t(Tr * E)), x.sig.resize(size_t(Tr * E)), x.du.resize(size_t(Tr * E));
  if (x.full_ssm) x.dd.resize(size_t(Tr * E)), x.dxdbl.resize(size_t(Tr * XW));

  // ---- forward with caches ----
  std::vector<LayerCache<Real>> cache(static_cast<size_t>(L));
  Buf<Real> normed(size_t(Tr * Dm)), y(size_t(Tr * E)), mix(size_t(Tr * Dm)), h_last(size_t(Tr * Dm));
  Buf<Real> xzr, yb;  // bidirectional: the reversed [x | z] and the backward direction's output
  if (bidir) xzr.resize(size_t(Tr * 2 * E)), yb.resize(size_t(Tr * E));
  for (int64_t l = 0; l < L; ++l) {
    LayerCache<Real>& c = cache[size_t(l)];
    c.h.resize(size_t(Tr * Dm)), c.rstd.resize(size_t(Tr)), c.xz.resize(size_t(Tr * 2 * E));
  }
  if (L > 0) std::memcpy(cache[0].h.data(), res.embeds.data(), size_t(Tr * Dm) * sizeof(Real));
  for (int64_t l = 0; l < L; ++l) {
    const LayerW<Real> w(*st.layers[size_t(l)], req.zero_biases);
    LayerCache<Real>& c = cache[size_t(l)];
    rmsnorm_forward(normed.data(), c.rstd.data(), c.h.data(), w.norm, Tr, Dm, cfg.norm_eps);
    linear_forward(c.xz.data(), normed.data(), w.in_w, w.in_b, Tr, Dm, 2 * E);
    dir_forward(x, c.dir[0], w, c.xz.data(), y.data());
    if (bidir) {
      const LayerW<Real> wb(*st.backward[size_t(l)], req.zero_biases);
      flip_rows(xzr.data(), c.xz.data(), Tr, 2 * E);
      dir_forward(x, c.dir[1], wb, xzr.data(), yb.data());
      Real* yp = y.data();
      const Real* bp = yb.data();
      parallel_for(Tr, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t e = 0; e < E; ++e) yp[t * E + e] = dir_scale * (yp[t * E + e] + bp[(Tr - 1 - t) * E + e]);
      }, std::max<int64_t>(4, 4096 / std::max<int64_t>(1, E)));
    }
    if (linear_rule != LrpRules::Linear::Zero) c.y.assign(y.begin(), y.end());
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
  for (int64_t d = 0; d < Dm; ++d) nf_w[size_t(d)] = Real(st.norm_f->p[d]);
  const Real* nfw = nullptr;
  if constexpr (std::is_same_v<Real, float>) nfw = st.norm_f->p;
  else nfw = nf_w.data();
  res.norm_f_at_pos.resize(size_t(Dm));
  Real rstd_f = 0;
  rmsnorm_forward(res.norm_f_at_pos.data(), &rstd_f, h_last.data() + pos * Dm, nfw, 1, Dm, cfg.norm_eps);
  {
    const std::vector<float> sd = seed_for(req, res.norm_f_at_pos.data(), Dm);
    for (int64_t d = 0; d < Dm; ++d) seed[size_t(d)] = Real(sd[size_t(d)]);
  }
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

  Buf<Real> dy(size_t(Tr * E)), dxz(size_t(Tr * 2 * E)), dnormed(size_t(Tr * Dm));
  Buf<Real> gm, dyb, dxzb;
  if (linear_rule == LrpRules::Linear::Epsilon) gm.resize(size_t(Tr * Dm));
  if (bidir) dyb.resize(size_t(Tr * E)), dxzb.resize(size_t(Tr * 2 * E));
  double bias_abs = 0.0;

  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerW<Real> w(*st.layers[size_t(l)], req.zero_biases);
    LayerCache<Real>& c = cache[size_t(l)];

    // out_proj: mix = y·W_outᵀ + b, ∂/∂mix = g.
    if (linear_rule == LrpRules::Linear::Gamma) {
      std::fill(dy.begin(), dy.end(), Real(0));
      linear_gamma_backward(dy.data(), g.data(), c.y.data(), w.out_w, w.out_b, Tr, E, Dm, E, Dm, E, rules.gamma, false,
                            &bias_abs);
    } else {
      const Real* gsrc = g.data();
      if (linear_rule == LrpRules::Linear::Epsilon) {
        linear_forward(mix.data(), c.y.data(), w.out_w, w.out_b, Tr, E, Dm);
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

    if (bidir) {  // y = s·(y_fwd + flip(y_bwd)): each direction gets s·dy, the backward one in its own order
      flip_rows(dyb.data(), dy.data(), Tr, E);
      if (dir_scale != Real(1))
        for (int64_t k = 0; k < Tr * E; ++k) dy[size_t(k)] *= dir_scale, dyb[size_t(k)] *= dir_scale;
    }
    dir_backward(x, dxz.data(), dy.data(), c.dir[0], w, c.xz.data(), bias_abs);
    if (bidir) {
      const LayerW<Real> wb(*st.backward[size_t(l)], req.zero_biases);
      flip_rows(xzr.data(), c.xz.data(), Tr, 2 * E);
      dir_backward(x, dxzb.data(), dyb.data(), c.dir[1], wb, xzr.data(), bias_abs);
      Real* dp = dxz.data();
      const Real* bp = dxzb.data();
      parallel_for(Tr, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t k = 0; k < 2 * E; ++k) dp[t * 2 * E + k] += bp[(Tr - 1 - t) * 2 * E + k];
      }, std::max<int64_t>(4, 4096 / std::max<int64_t>(1, 2 * E)));
    }

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

GradStack grad_stack(const MambaModel& m) {
  GradStack st;
  st.cfg = m.config();
  st.embedding = &m.embedding();
  for (int64_t l = 0; l < st.cfg.n_layer; ++l) st.layers.push_back(&m.layer(l));
  st.norm_f = &m.norm_f();
  return st;
}

GradResult stack_gradient(const GradStack& st, const GradRequest& req) { return run<float>(st, req); }
GradResultT<double> stack_gradient_f64(const GradStack& st, const GradRequest& req) { return run<double>(st, req); }

void check_seed(const GradRequest& req, int64_t Dm) {
  if (req.seed.empty() && req.seed_from_hidden) return;
  if (int64_t(req.seed.size()) != Dm)
    throw Error("seed", "has " + std::to_string(req.seed.size()) + " values but the model width is " + std::to_string(Dm));
  for (float s : req.seed)
    if (!std::isfinite(s)) throw Error("seed", "contains a value that is not finite");
}

std::vector<float> seed_for(const GradRequest& req, const float* row, int64_t Dm) {
  if (!req.seed.empty() || !req.seed_from_hidden) return req.seed;
  std::vector<float> s = req.seed_from_hidden(row);
  if (int64_t(s.size()) != Dm)
    throw Error("seed", "the target resolver returned " + std::to_string(s.size()) + " values for a width of " + std::to_string(Dm));
  return s;
}

std::vector<float> seed_for(const GradRequest& req, const double* row, int64_t Dm) {
  if (!req.seed.empty() || !req.seed_from_hidden) return req.seed;
  const std::vector<float> r(row, row + Dm);
  return seed_for(req, r.data(), Dm);
}

GradResult mamba_gradient(const MambaModel& m, const GradRequest& req) { return run<float>(grad_stack(m), req); }

void set_grad_workspace_limit(size_t bytes) { BufferPool::get().set_limit(bytes); }
void release_grad_workspace() {
  BufferPool& p = BufferPool::get();
  p.set_limit(0);
  p.set_limit(size_t(2) << 30);
}

GradResultT<double> mamba_gradient_f64(const MambaModel& m, const GradRequest& req) {
  return run<double>(grad_stack(m), req);
}

}  // namespace ssmx
