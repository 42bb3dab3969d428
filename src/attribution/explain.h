// ssmx/attribution/explain.h — "why did the model say that?": per-token relevance for a target, by many methods.
//
// Every method returns one relevance value per input token (and, where meaningful, one row per layer). The formulas,
// their papers and where the official code differs are in docs/methods.md. In short:
//
//   gradient              ‖∂f/∂e_t‖₂                                   (saliency; unsigned)
//   grad-input            Σ_d e_t,d · ∂f/∂e_t,d                         (gradient × input)
//   integrated-gradients  Σ_d (e−b)_t,d · mean_k ∂f/∂e(b + α_k(e−b))    (Sundararajan et al.; midpoint rule)
//   smoothgrad            Σ_d e_t,d · mean_s ∂f/∂e(e + ε_s)             (Smilkov et al., × input; ε ~ N(0, σ²))
//   random                N(0, 1) per token (a baseline for the evaluation)
//   raw-attention         mean over layers ≥ start of the channel-mean hidden-attention row of the target position
//   rollout               row of Π_ℓ rownorm(I + mean_e α_ℓ) (Abnar & Zuidema over Mamba's hidden attention)
//   mamba-attr            row of Π_ℓ (I + (mean_e ∂f/∂y_ℓ ⊙ mean_e α_ℓ)⁺)   (Ali et al. 2024)
//   unified-attr          as mamba-attr with the unified implicit attention α̂ (Zimerman et al. 2024)
//   mamba-lrp             MambaLRP (Jafari et al. 2024): gradient × input through the modified backward pass
//   lrp-ln                only MambaLRP's norm rule (the paper's "LRP (LN-rule)" baseline)
//
// The target f is a logit: a token at a position (default: the predicted next token at the last position), a
// contrastive pair (logit a − logit b), or a class of a classification head on the last token.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/class_head.h"
#include "models/mamba.h"
#include "models/vim.h"
#include "models/mamba_grad.h"

namespace ssmx {

enum class Method {
  Gradient, GradInput, IntegratedGradients, SmoothGrad, Random,
  RawAttention, Rollout, MambaAttr, UnifiedAttr,
  MambaLrp, LrpLn,
};
const char* method_name(Method m);
Method parse_method(const std::string& s);  // throws ssmx::Error("--method", ...) listing the valid names
std::vector<Method> all_methods();

struct Target {
  enum class Kind { Token, Contrast, Class } kind = Kind::Token;
  int64_t position = -1;  // -1 = the last token (Class: always the last)
  int32_t token = -1;     // Token / Contrast: -1 = the predicted (arg-max) token at `position`
  int32_t contrast = -1;  // Contrast: f = logit[token] − logit[contrast]
  int64_t cls = -1;       // Class: -1 = the predicted class
};

struct ExplainOptions {
  Method method = Method::MambaLrp;
  Target target;
  LrpRules rules = LrpRules::mamba_lrp();  // mamba-lrp: which rules; lrp-ln ignores this (norm only)
  bool zero_biases = false;                // run the model as if every bias were zero (conservation checks)
  // integrated-gradients
  int ig_steps = 32;
  std::string ig_baseline = "zero";        // "zero" or "token:ID" (that token's embedding at every position)
  // smoothgrad
  int sg_samples = 16;
  double sg_noise = 0.1;                   // σ as a fraction of (max − min) of the input embeddings
  uint64_t seed = 0;                       // smoothgrad and random
  // attention methods
  int64_t start_layer = 0;
  std::string compat = "none";            // "none" or "official" (the published code's variant; docs/methods.md)
  bool keep_maps = false;                  // keep the per-layer channel-mean maps (T, T) used (for reports)
};

struct Explanation {
  std::string method;
  nlohmann::json settings = nlohmann::json::object();
  std::vector<int32_t> ids;
  std::vector<float> relevance;                     // (T)
  std::vector<std::vector<float>> layer_relevance;  // per layer (T), when meaningful; may be empty
  std::string layer_relevance_what;                 // what a layer row is ("residual stream entering layer ℓ", ...)
  // The target.
  Target target;                 // resolved: position ≥ 0, token / class filled in
  double target_value = 0;       // f (logit, logit difference or class logit, head bias included)
  std::vector<float> output_logits;  // the model's output at the target position: (V) or (n_classes)
  // Conservation (gradient × input family and LRP): Σ_t R_t against f.
  bool has_conservation = false;
  double relevance_sum = 0;
  double bias_absorbed = 0;      // Σ b·∂̃f/∂b over the biases (incl. a class head's bias)
  double reference_value = 0;    // what Σ R should equal: f, or f(x) − f(baseline) for integrated gradients
  std::vector<Tensor> maps;      // with keep_maps: per layer ≥ start, the (T, T) maps the method used
  double seconds = 0;
};

// Explains `ids` with one method. `head` is the classification head when the target is a class. Every causal LM
// family with an explanation backend (attribution/backend.h) is accepted.
Explanation explain(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids,
                    const ExplainOptions& opt);

// Explains a Vision Mamba's class prediction for `pixels` (3, H, W). The target must be a class (default: the
// predicted one); relevance is per token (T = patches + 1, the class token at config().cls_index), every method as for
// text, the attention methods on the bidirectional hidden attention (attribution/bidirectional.h) with the class
// token as the query; `--compat official` reproduces the published stitched rows.
Explanation explain_image(const VimModel& m, const Tensor& pixels, const ExplainOptions& opt);
// The per-patch map (grid_h · grid_w, row-major): token relevance with the class token removed.
std::vector<float> patch_map(const VimModel& m, const std::vector<float>& token_relevance);

// Sums token relevance into words: a word starts at a token whose text begins with whitespace (or at the first
// token); every other token joins the word before it. Returns, per word, its first and one-past-last token.
std::vector<std::pair<int64_t, int64_t>> word_spans(const std::vector<std::string>& token_texts);

}  // namespace ssmx
