// The explanation backend of Mamba-2 (attribution/backend.h; docs/methods.md, "Mamba-2").
//
// Implicit attention of layer ℓ (attribution/mamba2_attention.h): per head h,
//   alpha_h[i, j] = exp(A_h (S_i − S_j)) · δ_j · (C_i · B_j)      (j ≤ i),
// the same matrix for all P channels of the head, so that ssm[i, c] = Σ_j alpha_h(c)[i, j] · x[j, c].
//   AttnKind::S6       alpha_h per channel c = h·P + p; the channel mean is the mean over heads.
//   AttnKind::Unified  the conv1d, the SiLU after it and the gate folded in, per channel c (as the unified paper does
//                      for Mamba): with x[j, c] = s[j, c]·conv[j, c], s = silu(conv)/conv held as a coefficient, and
//                      conv[j, c] = Σ_k w_c[k]·xbc[j − K + 1 + k, c] + b_c,
//                        α̂_c[i, j'] = silu(z[i, c]) · Σ_{j = j'}^{min(i, j' + K − 1)} alpha_h(c)[i, j] · s[j, c] · w_c[K − 1 − (j − j')],
//                      so that silu(z)·y = Σ_j' α̂_c[i, j']·xbc[j', c] + silu(z)·(D_h·x + Σ_j alpha·s·b_c) — the D skip
//                      and the conv-bias term stay outside (as for Mamba). The gated RMSNorm comes after this tensor.
#include <algorithm>
#include <cmath>

#include "attribution/backend.h"
#include "attribution/mamba2_attention.h"
#include "core/error.h"
#include "core/parallel.h"
#include "models/mamba2.h"
#include "models/mamba2_grad.h"

namespace ssmx {

namespace {

struct Mamba2LayerAttention : LayerAttention {
  const Mamba2Model* m = nullptr;
  int64_t layer = 0;
  Mamba2AttnInputs in;
  const Tensor *z = nullptr, *conv = nullptr;  // (T, Di), (T, CD)
  std::vector<float> s, gate;                  // (T, Di): silu(conv)/conv = σ(conv) of the x channels, silu(z)

  void prepare() {
    const Mamba2Config& c = m->config();
    const int64_t T = in.T, Di = c.d_inner, CD = c.conv_dim();
    s.resize(size_t(T * Di)), gate.resize(size_t(T * Di));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t ch = 0; ch < Di; ++ch) {
        const float cv = conv->ptr()[t * CD + ch], zz = z->ptr()[t * Di + ch];
        s[size_t(t * Di + ch)] = 1.0f / (1.0f + std::exp(-cv));
        gate[size_t(t * Di + ch)] = zz / (1.0f + std::exp(-zz));
      }
  }

  int64_t channels() const override { return m->config().d_inner; }

  // Per-channel unified row i: out (Di, T).
  void unified_row(float* out, int64_t i, std::vector<float>& heads) const {
    const Mamba2Config& c = m->config();
    const int64_t T = in.T, H = c.n_heads, P = c.head_dim, Di = c.d_inner, K = c.d_conv;
    heads.resize(size_t(H * T));
    mamba2_attention_row(heads.data(), in, i);
    const Mamba2Layer& ly = m->layer(layer);
    std::vector<float> a(static_cast<size_t>(T));
    for (int64_t ch = 0; ch < Di; ++ch) {
      const float* al = heads.data() + (ch / P) * T;
      const float g = gate[size_t(i * Di + ch)];
      for (int64_t j = 0; j <= i; ++j) a[size_t(j)] = al[j] * s[size_t(j * Di + ch)];
      float* o = out + ch * T;
      std::fill(o, o + T, 0.0f);
      const float* w = ly.conv_w.p + ch * K;
      for (int64_t jp = 0; jp <= i; ++jp) {
        double acc = 0;
        for (int64_t d = 0; d < K && jp + d <= i; ++d) acc += double(a[size_t(jp + d)]) * w[K - 1 - d];
        o[jp] = float(g * acc);
      }
    }
  }
  static void check_kind(AttnKind k) {
    if (k != AttnKind::S6 && k != AttnKind::Unified)
      throw Error("--kind", std::string(attn_kind_name(k)) + " is not defined for mamba2 (s6 or unified)");
  }
  Tensor mean_map(AttnKind k) const override {
    check_kind(k);
    const int64_t T = in.T;
    Tensor out({T, T});
    if (k == AttnKind::S6) {
      mamba2_attention_reduce(out.ptr(), in, HeadReduce::Mean);
      return out;
    }
    const int64_t Di = channels();
    parallel_for(T, [&](int64_t i0, int64_t i1) {
      std::vector<float> rows(size_t(Di * T)), heads;
      for (int64_t i = i0; i < i1; ++i) {
        unified_row(rows.data(), i, heads);
        mean_over(out.ptr() + i * T, rows.data(), Di, T);
      }
    }, 4);
    return out;
  }
  static void mean_over(float* out, const float* rows, int64_t n, int64_t T) {
    for (int64_t j = 0; j < T; ++j) {
      double s = 0;
      for (int64_t e = 0; e < n; ++e) s += rows[e * T + j];
      out[j] = float(s / double(n));
    }
  }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    check_kind(k);
    Tensor out({in.T});
    if (k == AttnKind::S6) {
      mamba2_attention_reduce_row(out.ptr(), in, pos, HeadReduce::Mean);
      return out;
    }
    Tensor r = rows(k, pos, false);
    mean_over(out.ptr(), r.ptr(), channels(), in.T);
    return out;
  }
  Tensor rows(AttnKind k, int64_t pos, bool) const override {
    check_kind(k);
    if (pos < 0 || pos >= in.T) throw Error("--row", "row " + std::to_string(pos) + " is out of range (" + std::to_string(in.T) + " tokens)");
    const int64_t T = in.T, Di = channels(), P = m->config().head_dim;
    Tensor out({Di, T});
    std::vector<float> heads(size_t(in.H * T));
    if (k == AttnKind::S6) {
      mamba2_attention_row(heads.data(), in, pos);
      for (int64_t ch = 0; ch < Di; ++ch) std::copy(heads.data() + (ch / P) * T, heads.data() + (ch / P + 1) * T, out.ptr() + ch * T);
    } else {
      unified_row(out.ptr(), pos, heads);
    }
    return out;
  }
};

struct Mamba2Backend : LmBackend<Mamba2Model> {
  Mamba2Backend(const Mamba2Model& model, const ClassHead* h, const std::vector<int32_t>& in)
      : LmBackend(model, h, in, model.config().n_layer, model.config().d_inner) {}
  GradResult gradient(const GradRequest& q) const override { return mamba2_gradient(m, q); }
  void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const override {
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
      if (layer < start) return;
      Mamba2LayerAttention la;
      la.m = &m;
      la.layer = layer;
      la.in = mamba2_attention_inputs(m, layer, acts);
      const std::string p = "layers." + std::to_string(layer) + ".";
      la.z = &acts.at(p + "z");
      la.conv = &acts.at(p + "conv");
      la.prepare();
      f(layer, la);
    };
    m.forward(ids, fo);
  }
  void check(const ExplainOptions& o) const override {
    if (o.compat == "official")
      throw Error("--compat", "official is defined for mamba and vim only (the published code has no Mamba-2 path); use none");
  }
};

}  // namespace

std::unique_ptr<Backend> make_mamba2_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids) {
  const auto* mm = dynamic_cast<const Mamba2Model*>(&m);
  if (!mm) return nullptr;
  return std::make_unique<Mamba2Backend>(*mm, head, ids);
}

// The layer attention of a Mamba-2 layer from its named activations (for the CLI's attention command).
std::unique_ptr<LayerAttention> mamba2_layer_attention(const Mamba2Model& m, int64_t layer,
                                                       const std::map<std::string, Tensor>& acts) {
  auto la = std::make_unique<Mamba2LayerAttention>();
  la->m = &m;
  la->layer = layer;
  la->in = mamba2_attention_inputs(m, layer, acts);
  const std::string p = "layers." + std::to_string(layer) + ".";
  la->z = &acts.at(p + "z");
  la->conv = &acts.at(p + "conv");
  la->prepare();
  return la;
}

}  // namespace ssmx
