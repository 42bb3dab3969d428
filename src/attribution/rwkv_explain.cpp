// The RWKV-4 explanation backend (attribution/backend.h).
//
// Input embeddings: the embedding rows before LN_pre. Gradients: models/rwkv_grad.h. Attention: each block's
// time-mix WKV operator (attribution/rwkv_attention.h). AttnKind::S6 is alpha_WKV, whose rows are normalised by the
// WKV denominator (they sum to 1); AttnKind::Unified is diag(r)·alpha_WKV with r = σ(receptance), the operator that
// maps the values v to r⊙wkv, the input of the output projection. The channel-mix (FFN) block mixes only tokens t and
// t−1 through its token shift and has no attention matrix: the attention methods (raw-attention, rollout,
// mamba-attr, unified-attr) see the time-mix only.
#include <algorithm>

#include "attribution/backend.h"
#include "attribution/rwkv_attention.h"
#include "core/error.h"
#include "models/rwkv.h"
#include "models/rwkv_grad.h"

namespace ssmx {

namespace {

struct RwkvLayerAttention : LayerAttention {
  RwkvAttnInput plain, gated;
  const RwkvAttnInput& in(AttnKind k) const { return k == AttnKind::S6 ? plain : gated; }
  int64_t channels() const override { return plain.A; }
  Tensor mean_map(AttnKind k) const override { return rwkv_attention_reduced(in(k), RwkvReduce::Mean); }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    const Tensor rows = rwkv_attention_row(in(k), pos);
    const int64_t A = plain.A, T = plain.T;
    Tensor out({T});
    for (int64_t j = 0; j < T; ++j) {
      double s = 0;
      for (int64_t c = 0; c < A; ++c) s += rows.ptr()[c * T + j];
      out.ptr()[j] = float(s / double(A));
    }
    return out;
  }
  Tensor rows(AttnKind k, int64_t pos, bool) const override { return rwkv_attention_row(in(k), pos); }
};

struct RwkvBackend : LmBackend<RwkvModel> {
  RwkvBackend(const RwkvModel& model, const ClassHead* h, const std::vector<int32_t>& in)
      : LmBackend(model, h, in, model.config().n_layer, model.config().att) {}
  GradResult gradient(const GradRequest& q) const override { return rwkv_gradient(m, q); }
  void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const override {
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
      if (layer < start) return;
      RwkvLayerAttention la;
      la.plain = rwkv_attn_input(m, layer, acts, false);
      la.gated = rwkv_attn_input(m, layer, acts, true);
      f(layer, la);
    };
    m.forward(ids, fo);
  }
  void check(const ExplainOptions& o) const override {
    if (o.compat == "official")
      throw Error("--compat", "official reproduces the published Mamba / Vision Mamba code; RWKV has only --compat none");
  }
};

}  // namespace

std::unique_ptr<Backend> make_rwkv_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids) {
  const auto* rm = dynamic_cast<const RwkvModel*>(&m);
  if (!rm) return nullptr;
  return std::make_unique<RwkvBackend>(*rm, head, ids);
}

}  // namespace ssmx
