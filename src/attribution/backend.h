// ssmx/attribution/backend.h — what explain() needs of a model family, so that every method (attribution/explain.h)
// runs unchanged on Mamba, Falcon-Mamba, Vision Mamba, Mamba-2, RWKV-4 and RecurrentGemma.
//
// A family provides a Backend: its input embeddings, the target resolution (a logit of its head as a direction
// `seed` in the space of the head's input at one position), its gradient engine (GradRequest → GradResult, with the
// LRP rules it defines), and its layers' implicit attention through LayerAttention. explain_core() implements the
// methods once, on top of these.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attribution/explain.h"
#include "attribution/hidden_attention.h"
#include "core/tensor.h"
#include "models/class_head.h"
#include "models/mamba_grad.h"
#include "models/model.h"

namespace ssmx {

// Everything the target needs: where it acts, its direction in the head input's space and the head bias part of f.
struct ResolvedTarget {
  Target t;
  std::vector<float> seed;    // (Dm)
  double bias = 0;            // head bias contribution to f (class heads)
  double f = 0;               // the target value from a plain forward pass
  std::vector<float> logits;  // the model's output at the target position
};

// Resolves a target of a causal LM from the head's input `hidden` (T, Dm) and the head matrix W (V, Dm), or of a
// classification head on the last token. Token targets are the logit before any soft-capping (a monotone function of
// it), so that f = seed · hidden[pos] is linear in the head's input.
ResolvedTarget resolve_lm_target(const float* hidden, int64_t T, int64_t Dm, const float* W, int64_t V,
                                 const ClassHead* head, const Target& want, bool zero_biases);
// The same from the head's input row at the target's position alone (`row`: Dm values); the position comes from
// lm_target_position (class targets act on the last token; throws for a position outside the T tokens).
int64_t lm_target_position(const Target& want, int64_t T);
ResolvedTarget resolve_lm_target_row(const float* row, int64_t pos, int64_t Dm, const float* W, int64_t V,
                                     const ClassHead* head, const Target& want, bool zero_biases);

// What the attention methods read of one layer: its implicit attention, however the layer is built.
// AttnKind::S6 is the family's recurrence-only operator, AttnKind::Unified the operator with the layer's conv,
// gates and activations folded in (docs/methods.md, per family).
struct LayerAttention {
  virtual ~LayerAttention() = default;
  virtual int64_t channels() const = 0;
  virtual Tensor mean_map(AttnKind k) const = 0;                           // (T, T) channel mean
  virtual Tensor mean_row(AttnKind k, int64_t pos) const = 0;              // (T) channel mean of row pos
  virtual Tensor rows(AttnKind k, int64_t pos, bool published) const = 0;  // (E, T); published: the official rows
};

// A model as explain() sees it. The gradient engine's GradResult must fill `grad`, `embeds`, `f`; the LRP methods
// also `resid_relevance` ((L + 1) × T) and `bias_absorbed`; mamba-attr / unified-attr also, with keep_layer_grads,
// `grad_y[l]` = ∂f/∂(output of layer l's attention operator) (T, E) for E = that layer's channels(); the official
// compat mode `grad_resid[l]` (T, Dm).
struct Backend {
  int64_t T = 0, Dm = 0, L = 0, E = 0;
  std::vector<int32_t> ids;  // empty for images
  Tensor embeds;             // (T, Dm) the input embeddings
  virtual ~Backend() = default;
  virtual ResolvedTarget resolve(const Target& want, bool zero_biases) const = 0;
  virtual GradResult gradient(const GradRequest& q) const = 0;
  // The target and the gradient of request q, whose position and seed are the target's. The default resolves first
  // (one forward) and then runs the gradient engine; the causal-LM backends resolve inside the engine's own forward
  // (GradRequest::seed_from_hidden), one forward pass fewer for every single-gradient method.
  virtual std::pair<ResolvedTarget, GradResult> resolve_with_gradient(const Target& want, bool zero_biases,
                                                                      GradRequest q) const {
    ResolvedTarget rt = resolve(want, zero_biases);
    q.position = rt.t.position;
    q.seed = rt.seed;
    GradResult g = gradient(q);
    return {std::move(rt), std::move(g)};
  }
  virtual const float* embedding_row(int64_t id) const = 0;  // token baselines; nullptr when there is no vocabulary
  virtual int64_t vocab() const = 0;
  virtual void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const = 0;
  // What the target value is when it is not the model's output itself (e.g. "logit before the soft cap"); explain
  // records it as settings["target_value"] and reports show it. Empty: the value is the output.
  virtual std::string target_note(const Target&) const { return {}; }
  // Methods this family does not define (e.g. compat "official" outside Mamba/Vim) throw from here; the default
  // accepts everything.
  virtual void check(const ExplainOptions&) const {}
};

// The part every causal-LM backend shares: the input ids and their embeddings (Model::embed), the target resolved from
// the head's input (the "norm_f" activation) and the LM head, token baselines from the embedding rows. Model is a
// family class with embed, forward, lm_head() and embedding().
template <typename Model>
struct LmBackend : Backend {
  const Model& m;
  const ClassHead* head;
  LmBackend(const Model& model, const ClassHead* h, const std::vector<int32_t>& in, int64_t layers, int64_t channels)
      : m(model), head(h) {
    T = int64_t(in.size()), Dm = model.d_model(), L = layers, E = channels;
    ids = in;
    embeds = model.embed(in);
  }
  ResolvedTarget resolve(const Target& want, bool zero_biases) const override {
    ForwardOptions fo;
    fo.all_logits = false;
    fo.keep_final_hidden = true;
    const ForwardResult fr = m.forward(ids, fo);
    ResolvedTarget rt = resolve_lm_target(fr.acts.at("norm_f").ptr(), T, Dm, m.lm_head().p, m.vocab_size(), head,
                                          want, zero_biases);
    if (rt.t.kind != Target::Kind::Class) output_transform(rt.logits);
    return rt;
  }
  std::pair<ResolvedTarget, GradResult> resolve_with_gradient(const Target& want, bool zero_biases,
                                                              GradRequest q) const override {
    ResolvedTarget rt;
    q.position = lm_target_position(want, T);
    q.seed.clear();
    q.seed_from_hidden = [&](const float* row) {
      rt = resolve_lm_target_row(row, q.position, Dm, m.lm_head().p, m.vocab_size(), head, want, zero_biases);
      return rt.seed;
    };
    GradResult g = gradient(q);
    if (rt.t.kind != Target::Kind::Class) output_transform(rt.logits);
    return {std::move(rt), std::move(g)};
  }
  // What the model does to the head's logits after the explained (linear) target: RecurrentGemma's soft cap. The
  // reported logits and probabilities are the model's; the target value stays the logit before the transform.
  virtual void output_transform(std::vector<float>&) const {}
  const float* embedding_row(int64_t id) const override { return m.embedding().p + id * Dm; }
  int64_t vocab() const override { return m.vocab_size(); }
};

Explanation explain_core(const Backend& b, const ExplainOptions& o);

// The text backend of a causal LM, by family (attribution/backends.cpp); throws ssmx::Error for a family without one.
std::unique_ptr<Backend> make_text_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids);
std::unique_ptr<Backend> make_mamba_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids);
// RWKV-4 (attribution/rwkv_explain.cpp); nullptr for other model types.
std::unique_ptr<Backend> make_rwkv_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids);
// Mamba-2 (attribution/mamba2_explain.cpp); nullptr for other models.
std::unique_ptr<Backend> make_mamba2_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids);
// One Mamba-2 layer's implicit attention from its named activations (layers.{i}.delta, B, C, z, conv), as the backend
// exposes it (S6 and Unified; other kinds throw). `acts` must outlive the result.
class Mamba2Model;
std::unique_ptr<LayerAttention> mamba2_layer_attention(const Mamba2Model& m, int64_t layer,
                                                       const std::map<std::string, Tensor>& acts);
// RecurrentGemma (attribution/griffin_explain.cpp); nullptr for other families.
std::unique_ptr<Backend> make_griffin_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids);

}  // namespace ssmx
