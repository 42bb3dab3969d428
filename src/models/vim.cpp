#include "models/vim.h"

#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/parallel.h"
#include "models/loading.h"
#include "ops/conv1d.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/selective_scan.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

// A = -exp(A_log), owned.
Param neg_exp(TensorLoader& L, const std::string& name, const std::vector<int64_t>& shape) {
  Param a = L.get(name, shape);
  Param p;
  p.shape = shape;
  p.own.resize(size_t(Tensor::count(shape)));
  for (size_t k = 0; k < p.own.size(); ++k) p.own[k] = -std::exp(a.p[k]);
  p.p = p.own.data();
  return p;
}

std::vector<int64_t> shape_of(const Checkpoint& ck, const std::string& name, size_t rank) {
  const RawTensor& t = ck.require(name);
  if (t.shape.size() != rank)
    throw Error(t.source, "tensor '" + name + "' must have " + std::to_string(rank) + " dimensions, has shape " +
                              shape_str(t.shape));
  return t.shape;
}

// One scan direction of a bimamba v2 mixer over xz = [x | z] (T, 2E): writes y (T, E), the gated output.
struct DirScratch {
  std::vector<float> conv, u, delta, xdbl, ssm;
};

}  // namespace

bool VimModel::detect(const Checkpoint& ck) {
  return ck.find("cls_token") && ck.find("patch_embed.proj.weight") && ck.find("layers.0.mixer.A_b_log");
}

std::unique_ptr<VimModel> VimModel::load(const Checkpoint& ck) {
  if (!detect(ck))
    throw Error(ck.weights_where(), "not a Vision Mamba checkpoint (needs cls_token, patch_embed.proj.weight and "
                                    "layers.0.mixer.A_b_log)");
  auto m = std::unique_ptr<VimModel>(new VimModel());
  VimConfig& c = m->cfg_;
  TensorLoader L{ck, "", {}, &m->keep_alive_};

  const std::vector<int64_t> cls = shape_of(ck, "cls_token", 3), pos = shape_of(ck, "pos_embed", 3),
                             pw = shape_of(ck, "patch_embed.proj.weight", 4);
  c.d_model = cls[2];
  if (cls[0] != 1 || cls[1] != 1) throw Error(ck.weights_where(), "cls_token must be [1, 1, D], is " + shape_str(cls));
  if (pw[0] != c.d_model || pw[1] != 3 || pw[2] != pw[3] || pw[2] < 1)
    throw Error(ck.weights_where(), "patch_embed.proj.weight must be [D, 3, P, P] with D = " +
                                        std::to_string(c.d_model) + ", is " + shape_str(pw));
  c.patch = pw[2];
  if (pos[0] != 1 || pos[2] != c.d_model || pos[1] < 2)
    throw Error(ck.weights_where(), "pos_embed must be [1, T, " + std::to_string(c.d_model) + "], is " + shape_str(pos));
  c.n_tokens = pos[1];
  c.n_patches = c.n_tokens - 1;
  const int64_t g = int64_t(std::llround(std::sqrt(double(c.n_patches))));
  if (g * g != c.n_patches)
    throw Error(ck.weights_where(), "pos_embed has " + std::to_string(c.n_patches) +
                                        " patch positions, not a square grid");
  c.grid_h = c.grid_w = g;
  c.img_h = c.img_w = g * c.patch;
  c.cls_index = c.n_patches / 2;

  std::set<int64_t> idx;
  for (const auto& [name, t] : ck.tensors) {
    if (name.rfind("layers.", 0) != 0) continue;
    const size_t dot = name.find('.', 7);
    if (dot == std::string::npos) continue;
    const std::string num = name.substr(7, dot - 7);
    if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    idx.insert(std::stoll(num));
  }
  c.n_layer = int64_t(idx.size());
  if (c.n_layer == 0 || *idx.rbegin() != c.n_layer - 1)
    throw Error(ck.weights_where(), "layer numbers are missing or not contiguous");
  const std::vector<int64_t> a = shape_of(ck, "layers.0.mixer.A_log", 2), cw = shape_of(ck, "layers.0.mixer.conv1d.weight", 3),
                             dw = shape_of(ck, "layers.0.mixer.dt_proj.weight", 2);
  c.d_inner = a[0], c.d_state = a[1], c.d_conv = cw[2], c.dt_rank = dw[1];
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  if (E != 2 * D) throw Error(ck.weights_where(), "d_inner " + std::to_string(E) + " is not 2·d_model (" + std::to_string(2 * D) + ")");

  m->cls_ = L.get("cls_token", {1, 1, D});
  m->pos_ = L.get("pos_embed", {1, c.n_tokens, D});
  m->patch_w_ = L.get("patch_embed.proj.weight", {D, 3, c.patch, c.patch});
  m->patch_b_ = L.get("patch_embed.proj.bias", {D});
  m->fwd_.resize(size_t(c.n_layer));
  m->bwd_.resize(size_t(c.n_layer));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".", q = p + "mixer.";
    MambaLayer& f = m->fwd_[size_t(i)];
    MambaLayer& b = m->bwd_[size_t(i)];
    f.norm = L.get(p + "norm.weight", {D});
    f.in_proj_w = L.get(q + "in_proj.weight", {2 * E, D});
    f.out_proj_w = L.get(q + "out_proj.weight", {D, E});
    for (int dir = 0; dir < 2; ++dir) {
      MambaLayer& w = dir == 0 ? f : b;
      const std::string s = dir == 0 ? "" : "_b";
      w.conv_w = L.get(q + "conv1d" + s + ".weight", {E, 1, K});
      w.conv_b = L.get(q + "conv1d" + s + ".bias", {E});
      w.x_proj_w = L.get(q + "x_proj" + s + ".weight", {R + 2 * N, E});
      w.dt_proj_w = L.get(q + "dt_proj" + s + ".weight", {E, R});
      w.dt_proj_b = L.get(q + "dt_proj" + s + ".bias", {E});
      w.A = neg_exp(L, q + (dir == 0 ? "A_log" : "A_b_log"), {E, N});
      w.D = L.get(q + (dir == 0 ? "D" : "D_b"), {E});
    }
  }
  m->norm_f_ = L.get("norm_f.weight", {D});
  const std::vector<int64_t> hw = shape_of(ck, "head.weight", 2);
  c.n_classes = hw[0];
  m->head_w_ = L.get("head.weight", {c.n_classes, D});
  m->head_b_ = L.get("head.bias", {c.n_classes});
  c.size = c.n_layer == 24 && D == 192 ? "tiny" : c.n_layer == 24 && D == 384 ? "small"
         : c.n_layer == 24 && D == 768 ? "base" : "custom";

  ModelInfo& in = m->info_;
  in.family = "vim";
  in.architecture = "VisionMamba (bimamba v2, middle class token, div2)";
  in.dims = {{"layers", c.n_layer}, {"d_model", D}, {"d_inner", E}, {"d_state", N}, {"d_conv", K}, {"dt_rank", R},
             {"patch", c.patch}, {"image", c.img_h}, {"tokens", c.n_tokens}, {"classes", c.n_classes}};
  in.n_params = L.n_params;
  in.notes.push_back("size: " + c.size + "; class token at index " + std::to_string(c.cls_index));
  return m;
}

Tensor VimModel::embed(const Tensor& pixels) const {
  const VimConfig& c = cfg_;
  if (pixels.shape != std::vector<int64_t>{3, c.img_h, c.img_w})
    throw Error("pixels", "shape " + shape_str(pixels.shape) + " but the model takes [3, " + std::to_string(c.img_h) +
                              ", " + std::to_string(c.img_w) + "]");
  const int64_t D = c.d_model, P = c.patch, M = c.n_patches, KP = 3 * P * P;
  // im2col in the weight's (channel, row, column) order, then one GEMM: patches (M, D).
  std::vector<float> cols(size_t(M * KP)), patches(size_t(M * D));
  for (int64_t r = 0; r < c.grid_h; ++r)
    for (int64_t q = 0; q < c.grid_w; ++q) {
      float* dst = cols.data() + (r * c.grid_w + q) * KP;
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t i = 0; i < P; ++i)
          std::memcpy(dst + (ch * P + i) * P, pixels.ptr() + (ch * c.img_h + r * P + i) * c.img_w + q * P, size_t(P) * 4);
    }
  linear_forward(patches.data(), cols.data(), patch_w_.p, patch_b_.p, M, KP, D);
  Tensor tok({c.n_tokens, D});
  const int64_t ci = c.cls_index;
  std::memcpy(tok.ptr(), patches.data(), size_t(ci * D) * 4);
  std::memcpy(tok.ptr() + ci * D, cls_.p, size_t(D) * 4);
  std::memcpy(tok.ptr() + (ci + 1) * D, patches.data() + ci * D, size_t((M - ci) * D) * 4);
  for (int64_t k = 0; k < c.n_tokens * D; ++k) tok.data[size_t(k)] += pos_.p[k];
  return tok;
}

VimForwardResult VimModel::forward(const Tensor& pixels, const VimForwardOptions& opt) const {
  return forward_tokens(embed(pixels), opt);
}

VimForwardResult VimModel::forward_tokens(const Tensor& tokens, const VimForwardOptions& opt) const {
  const VimConfig& c = cfg_;
  const int64_t T = c.n_tokens, D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank,
                XW = R + 2 * N;
  if (tokens.shape != std::vector<int64_t>{T, D})
    throw Error("tokens", "shape " + shape_str(tokens.shape) + " but [" + std::to_string(T) + ", " +
                              std::to_string(D) + "] is expected");
  VimForwardResult res;
  const bool capture = opt.keep_activations || bool(opt.layer_hook);
  std::map<std::string, Tensor> acts;
  auto keep = [&](const std::string& name, std::vector<int64_t> shape, const float* src, int64_t ld) {
    if (!capture) return;
    Tensor t(shape);
    const int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
    for (int64_t r = 0; r < rows; ++r) std::memcpy(t.ptr() + r * cols, src + r * ld, size_t(cols) * 4);
    acts[name] = std::move(t);
  };
  auto flush = [&](int64_t layer) {
    if (!capture) return;
    if (opt.layer_hook && layer >= 0) opt.layer_hook(layer, acts);
    if (opt.keep_activations) res.acts.merge(acts);
    acts.clear();
  };
  auto pmap = [&](int64_t n, auto&& f) { parallel_for(n, f, 4096); };

  std::vector<float> h(tokens.data), normed(size_t(T * D)), mix(size_t(T * D)), xz(size_t(T * 2 * E)),
      xzr(size_t(T * 2 * E)), y(size_t(T * E)), yb(size_t(T * E));
  DirScratch sc;
  sc.conv.resize(size_t(T * E)), sc.u.resize(size_t(T * E)), sc.delta.resize(size_t(T * E)),
      sc.xdbl.resize(size_t(T * XW)), sc.ssm.resize(size_t(T * E));
  keep("tokens", {T, D}, tokens.ptr(), D);
  flush(-1);
  // One direction over [x | z] rows (T, 2E): y = (scan(u) + D·u)·SiLU(z).
  auto direction = [&](const MambaLayer& w, const float* in, float* out, const std::string& tag) {
    conv1d_causal_forward(sc.conv.data(), in, w.conv_w.p, w.conv_b.p, T, E, K, 2 * E);
    pmap(T * E, [&](int64_t b, int64_t e) { silu_array(sc.u.data() + b, sc.conv.data() + b, e - b); });
    linear_forward(sc.xdbl.data(), sc.u.data(), w.x_proj_w.p, nullptr, T, E, XW);
    linear_forward(sc.delta.data(), sc.xdbl.data(), w.dt_proj_w.p, w.dt_proj_b.p, T, R, E, XW, E);
    pmap(T * E, [&](int64_t b, int64_t e) { softplus_array(sc.delta.data() + b, sc.delta.data() + b, e - b); });
    ScanArgs sa;
    sa.T = T, sa.E = E, sa.N = N;
    sa.u = sc.u.data(), sa.delta = sc.delta.data(), sa.A = w.A.p;
    sa.B = sc.xdbl.data() + R, sa.C = sc.xdbl.data() + R + N, sa.ld_bc = XW;
    sa.D = w.D.p, sa.z = in + E, sa.ld_z = 2 * E;
    selective_scan_forward(capture ? sc.ssm.data() : nullptr, out, nullptr, sa);
    if (capture) {
      keep(tag + ".conv", {T, E}, sc.conv.data(), E);
      keep(tag + ".u", {T, E}, sc.u.data(), E);
      keep(tag + ".delta", {T, E}, sc.delta.data(), E);
      keep(tag + ".B", {T, N}, sc.xdbl.data() + R, XW);
      keep(tag + ".C", {T, N}, sc.xdbl.data() + R + N, XW);
      keep(tag + ".ssm", {T, E}, sc.ssm.data(), E);
      keep(tag + ".y", {T, E}, out, E);
    }
  };
  const float scale = c.divide_out ? 0.5f : 1.0f;
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const MambaLayer& f = fwd_[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    keep(p + "residual_in", {T, D}, h.data(), D);
    rmsnorm_forward(normed.data(), nullptr, h.data(), f.norm.p, T, D, c.norm_eps);
    linear_forward(xz.data(), normed.data(), f.in_proj_w.p, nullptr, T, D, 2 * E);
    for (int64_t t = 0; t < T; ++t) std::memcpy(xzr.data() + t * 2 * E, xz.data() + (T - 1 - t) * 2 * E, size_t(2 * E) * 4);
    direction(f, xz.data(), y.data(), p + "fwd");
    direction(bwd_[size_t(i)], xzr.data(), yb.data(), p + "bwd");
    pmap(T * E, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t t = k / E, ch = k % E;
        y[size_t(k)] = (y[size_t(k)] + yb[size_t((T - 1 - t) * E + ch)]) * scale;
      }
    });
    linear_forward(mix.data(), y.data(), f.out_proj_w.p, nullptr, T, E, D);
    pmap(T * D, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) h[size_t(k)] += mix[size_t(k)];
    });
    if (capture) {
      keep(p + "normed", {T, D}, normed.data(), D);
      keep(p + "x", {T, E}, xz.data(), 2 * E);
      keep(p + "z", {T, E}, xz.data() + E, 2 * E);
      keep(p + "y", {T, E}, y.data(), E);
      keep(p + "mixer_out", {T, D}, mix.data(), D);
    }
    flush(i);
  }
  res.final_hidden = Tensor({T, D});
  rmsnorm_forward(res.final_hidden.ptr(), nullptr, h.data(), norm_f_.p, T, D, c.norm_eps);
  const float* feat = res.final_hidden.ptr() + c.cls_index * D;
  keep("norm_f", {T, D}, res.final_hidden.ptr(), D);
  keep("feat", {1, D}, feat, D);
  if (capture && acts.count("feat")) acts["feat"].shape = {D};
  flush(-1);
  res.logits = Tensor({c.n_classes});
  linear_forward(res.logits.ptr(), feat, head_w_.p, head_b_.p, 1, D, c.n_classes);
  return res;
}

GradStack grad_stack(const VimModel& m) {
  const VimConfig& c = m.config();
  GradStack st;
  st.cfg.n_layer = c.n_layer, st.cfg.d_model = c.d_model, st.cfg.d_inner = c.d_inner, st.cfg.d_state = c.d_state;
  st.cfg.d_conv = c.d_conv, st.cfg.dt_rank = c.dt_rank, st.cfg.vocab = c.n_classes, st.cfg.norm_eps = c.norm_eps;
  st.cfg.conv_bias = true;
  for (int64_t l = 0; l < c.n_layer; ++l) st.layers.push_back(&m.layer(l)), st.backward.push_back(&m.layer_b(l));
  st.divide_out = c.divide_out;
  st.norm_f = &m.norm_f();
  return st;
}

}  // namespace ssmx
