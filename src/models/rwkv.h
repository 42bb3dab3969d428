// ssmx/models/rwkv.h — RWKV-4 (RwkvForCausalLM, model_type "rwkv"), f32.
//
// Forward as transformers computes it in eval mode (shared/specs/model-families.md §4):
//   h = LN_pre(E[ids])                                          (block 0's pre_ln)
//   per block i:  n = LN1(h);  s = n shifted one token down (zero row at t = 0);  mix(μ) = n·μ + s·(1−μ)
//                 k = mix(μk)·W_kᵀ;  v = mix(μv)·W_vᵀ;  r = σ(mix(μr)·W_rᵀ)
//                 wkv_t = (Σ_{j<t} e^{−(t−1−j)w + k_j} v_j + e^{u+k_t} v_t) / (same sums without v)
//                         with w = exp(time_decay), u = time_first, run as the max-tracking recurrence
//                 h += (r⊙wkv)·W_oᵀ / 2^(i/R)
//                 n = LN2(h);  fk = relu(mix(μk')·W_k'ᵀ)²;  fr = σ(mix(μr')·W_r'ᵀ);  h += fr ⊙ (fk·W_v'ᵀ) / 2^(i/R)
//                 if R > 0 and (i+1) % R == 0: h /= 2                       (R = rescale_every; HF divides the
//                 two output weights at load time, here the projections' outputs are scaled: exact, powers of 2)
//   logits = LN_out(h)·headᵀ   (LN_out eps 1e-5 whatever the config says, as nn.LayerNorm's default)
//
// Named activations (ForwardOptions::keep_activations / layer_hook), T tokens, H hidden, A attention, I ffn width:
//   pre_ln (T,H) (reported with layer 0)
//   layers.{i}.residual_in (T,H)  layers.{i}.ln1 (T,H)  layers.{i}.k (T,A)  layers.{i}.v (T,A)
//   layers.{i}.r (T,A) = σ(receptance)  layers.{i}.wkv (T,A)  layers.{i}.rwkv (T,A) = r⊙wkv
//   layers.{i}.att_out (T,H)  layers.{i}.ln2 (T,H)  layers.{i}.ffn_k (T,I) = relu²  layers.{i}.ffn_r (T,H)
//   layers.{i}.ffn_out (T,H)   norm_f (T,H) = LN_out output
// Dimensions come from tensor shapes and are cross-checked against config.json.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/mamba.h"  // Param
#include "models/model.h"

namespace ssmx {

struct RwkvConfig {
  int64_t n_layer = 0, hidden = 0, att = 0, ffn = 0, vocab = 0;
  int64_t rescale_every = 6;
  float norm_eps = 1e-5f;
  bool tied = false;
};

struct RwkvLayer {
  Param ln1_w, ln1_b, ln2_w, ln2_b;          // (H)
  Param time_decay, time_first;              // (A)
  std::vector<float> wneg;                   // (A) = −exp(time_decay)
  Param att_mix_k, att_mix_v, att_mix_r;     // (1,1,H)
  Param att_k, att_v, att_r;                 // (A,H)
  Param att_o;                               // (H,A)
  Param ffn_mix_k, ffn_mix_r;                // (1,1,H)
  Param ffn_k;                               // (I,H)
  Param ffn_r;                               // (H,H)
  Param ffn_v;                               // (H,I)
};

// The WKV recurrence over (T, A) row-major k and v (stride ld for k, v and out), stable max-tracking form, threaded
// over channels and vectorised across neighbouring channels; bitwise independent of the thread count.
// den_out / max_out (optional, (T, A)): the log-space normaliser log Z_t of each row, for the implicit attention.
void rwkv_wkv_forward(float* out, float* logz_out, const float* k, const float* v, const float* wneg, const float* u,
                      int64_t T, int64_t A);

class RwkvModel : public CausalLM {
 public:
  static std::unique_ptr<RwkvModel> load(const Checkpoint& ck);

  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return cfg_.vocab; }
  ForwardResult forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override;
  // The input embeddings are the embedding rows E[ids] before LN_pre (block 0's pre_ln belongs to the network), so
  // forward_embeds(embed(ids)) equals forward(ids) bitwise.
  int64_t d_model() const override { return cfg_.hidden; }
  Tensor embed(const std::vector<int32_t>& ids) const override;
  ForwardResult forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const override;

  const Param& embedding() const { return embed_; }
  const Param& pre_ln_w() const { return pre_ln_w_; }
  const Param& pre_ln_b() const { return pre_ln_b_; }
  const Param& ln_out_w() const { return ln_out_w_; }
  const Param& ln_out_b() const { return ln_out_b_; }
  const Param& lm_head() const { return head_; }

  const RwkvConfig& config() const { return cfg_; }
  const RwkvLayer& layer(int64_t i) const { return layers_[size_t(i)]; }

 private:
  ForwardResult forward_impl(const float* embeds, int64_t T, const ForwardOptions& opt) const;
  RwkvConfig cfg_;
  ModelInfo info_;
  Param embed_, pre_ln_w_, pre_ln_b_, ln_out_w_, ln_out_b_, head_;
  std::vector<RwkvLayer> layers_;
  std::vector<std::shared_ptr<MappedFile>> keep_alive_;
};

}  // namespace ssmx
