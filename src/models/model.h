// ssmx/models/model.h — what every language model family offers the layers above (CLI, attribution, evaluation).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"

namespace ssmx {

struct ModelInfo {
  std::string family;        // "mamba", "falcon_mamba"
  std::string architecture;  // "MambaForCausalLM", ...
  std::vector<std::pair<std::string, int64_t>> dims;  // ordered: ("layers", 24), ("d_model", 768), ...
  int64_t n_params = 0;      // unique parameters (a tied head counted once)
  bool tied_head = false;
  std::vector<std::string> notes;  // facts worth showing in `ssmx info` (config quirks, ignored keys)
  int64_t dim(const std::string& key) const;
};

struct ForwardOptions {
  // Logits for every position (T, V), or only for the last one (1, V).
  bool all_logits = true;
  // Keep named intermediate activations (see the family's header for the names).
  bool keep_activations = false;
  // Called once per layer, in order, with that layer's named activations (valid during the call only). Lets
  // attention and attribution code work layer by layer without keeping every layer's activations alive.
  std::function<void(int64_t layer, const std::map<std::string, Tensor>& acts)> layer_hook;
  // Keep only the final norm's output ("norm_f", (T, Dm)) in ForwardResult::acts (for heads other than the LM head).
  bool keep_final_hidden = false;
};

struct ForwardResult {
  Tensor logits;                         // (T, V) or (1, V)
  std::map<std::string, Tensor> acts;    // filled when keep_activations
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelInfo& info() const = 0;
  virtual int64_t vocab_size() const = 0;
  // ids must be in [0, vocab_size()); throws ssmx::Error otherwise.
  virtual ForwardResult forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const = 0;

  // The input embeddings of a family: what explanations attribute to and what masking by zero embeddings zeroes.
  // embed(ids) is (T, d_model()); forward_embeds(embed(ids), o) equals forward(ids, o). A family whose forward scales
  // the looked-up rows (RecurrentGemma's √d_model) documents whether the scale is inside embed() or after it.
  // The defaults throw ssmx::Error naming the family (a family that does not support them yet).
  virtual int64_t d_model() const;
  virtual Tensor embed(const std::vector<int32_t>& ids) const;
  virtual ForwardResult forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const;
};

// Detects the family from config.json (model_type, or the original mamba_ssm keys) and the tensor names.
// Throws ssmx::Error naming config.json for an unknown model_type.
std::unique_ptr<CausalLM> load_causal_lm(const Checkpoint& ck);

// The family name ("mamba", "falcon_mamba", or "vim" for a Vision Mamba, which load_causal_lm refuses), or throws.
std::string detect_family(const Checkpoint& ck);

}  // namespace ssmx
