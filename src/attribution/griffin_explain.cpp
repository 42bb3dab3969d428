// The explanation backend of RecurrentGemma / Griffin (attribution/backend.h; docs/methods.md, "RecurrentGemma").
//
// Recurrent layers expose the RG-LRU's implicit attention (attribution/griffin_attention.h), channel mean over the
// lru_width channels: S6 = α_RG·M_conv (no gate), Unified = diag(y)·α_RG·M_conv. Local attention layers expose their
// softmax attention, mean over the query heads, for both kinds (it has no conv and no gate to fold in).
#include <cmath>
#include <map>
#include <mutex>

#include "attribution/backend.h"
#include "attribution/griffin_attention.h"
#include "core/error.h"
#include "models/griffin.h"
#include "models/griffin_grad.h"

namespace ssmx {

namespace {

struct GriffinRecurrentAttention : LayerAttention {
  GriffinTrace tr;
  static GriffinAttnOptions opts(AttnKind k) {
    GriffinAttnOptions o;
    o.gate = k != AttnKind::S6;
    return o;
  }
  int64_t channels() const override { return tr.W; }
  Tensor mean_map(AttnKind k) const override { return griffin_attention_reduce(tr, opts(k), AttnReduce::Mean, 0, tr.W); }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    const Tensor r = griffin_attention_row(tr, opts(k), pos, 0, tr.W);
    Tensor out({tr.T});
    for (int64_t j = 0; j < tr.T; ++j) {
      double s = 0;
      for (int64_t c = 0; c < tr.W; ++c) s += r.ptr()[c * tr.T + j];
      out.ptr()[j] = float(s / double(tr.W));
    }
    return out;
  }
  Tensor rows(AttnKind k, int64_t pos, bool) const override { return griffin_attention_row(tr, opts(k), pos, 0, tr.W); }
};

// Softmax weights of a local MQA layer, per head: (H, T, T) (griffin_local_attention).
struct GriffinLocalAttention : LayerAttention {
  int64_t T = 0, H = 0;
  Tensor p;  // (H, T, T)
  GriffinLocalAttention(const GriffinConfig& cfg, const std::map<std::string, Tensor>& acts, int64_t layer)
      : H(cfg.heads), p(griffin_local_attention(acts, layer, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.window)) {
    T = p.dim(1);
  }
  int64_t channels() const override { return H; }
  Tensor mean_map(AttnKind) const override {
    Tensor out({T, T});
    for (int64_t i = 0; i < T * T; ++i) {
      double s = 0;
      for (int64_t hh = 0; hh < H; ++hh) s += p.ptr()[hh * T * T + i];
      out.ptr()[i] = float(s / double(H));
    }
    return out;
  }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    const Tensor mm = mean_map(k);
    return Tensor({T}, std::vector<float>(mm.ptr() + pos * T, mm.ptr() + (pos + 1) * T));
  }
  Tensor rows(AttnKind, int64_t pos, bool) const override {
    Tensor out({H, T});
    for (int64_t hh = 0; hh < H; ++hh)
      for (int64_t j = 0; j < T; ++j) out.ptr()[hh * T + j] = p.ptr()[(hh * T + pos) * T + j];
    return out;
  }
};

struct GriffinBackend : LmBackend<GriffinModel> {
  GriffinBackend(const GriffinModel& model, const ClassHead* h, const std::vector<int32_t>& in)
      : LmBackend(model, h, in, model.config().n_layer, model.config().lru_width) {}
  mutable std::mutex mu;
  mutable std::map<int64_t, std::vector<float>> scaled_rows;
  void check(const ExplainOptions& o) const override {
    if (o.compat == "official")
      throw Error("--compat", "'official' reproduces the published Mamba / Vision Mamba code; recurrent_gemma has none (use --compat none)");
  }
  GradResult gradient(const GradRequest& q) const override { return griffin_gradient(m, q); }
  std::string target_note(const Target& t) const override {
    if (t.kind == Target::Kind::Class || m.config().soft_cap <= 0.0f) return {};
    return t.kind == Target::Kind::Contrast ? "logit difference before the soft cap" : "logit before the soft cap";
  }
  void output_transform(std::vector<float>& logits) const override {
    const float cap = m.config().soft_cap;  // as GriffinModel::forward computes it
    if (cap <= 0.0f) return;
    for (float& z : logits) z = cap * std::tanh(z / cap);
  }
  // Baselines live in the space of embed(): the row scaled by bf16(√Dm).
  const float* embedding_row(int64_t id) const override {
    std::lock_guard<std::mutex> lk(mu);
    auto& r = scaled_rows[id];
    if (r.empty()) r = m.embed({int32_t(id)}).data;
    return r.data();
  }
  void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const override {
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
      if (layer < start) return;
      const GriffinLayer& ly = m.layer(layer);
      if (ly.recurrent) {
        GriffinRecurrentAttention la;
        la.tr = griffin_trace(acts, layer, ly.conv_w.p, ly.conv_b.p, m.config().conv_width);
        f(layer, la);
      } else {
        GriffinLocalAttention la(m.config(), acts, layer);
        f(layer, la);
      }
    };
    m.forward(ids, fo);
  }
};

}  // namespace

std::unique_ptr<Backend> make_griffin_backend(const CausalLM& m, const ClassHead* head,
                                              const std::vector<int32_t>& ids) {
  const auto* gm = dynamic_cast<const GriffinModel*>(&m);
  if (!gm) return nullptr;
  return std::make_unique<GriffinBackend>(*gm, head, ids);
}

}  // namespace ssmx
