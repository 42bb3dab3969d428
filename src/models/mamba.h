// ssmx/models/mamba.h — Mamba-1 (MambaForCausalLM) and Falcon-Mamba (FalconMambaForCausalLM), f32.
//
// Forward exactly as the transformers slow path (shared/specs/model-families.md §1–2):
//   h = E[ids]
//   per layer:  u_in = RMSNorm(h);  [x | z] = u_in·W_inᵀ (+b);  u = silu(conv1d(x));
//               [dt_low | B | C] = u·W_xᵀ  (Falcon: each RMS-normalised without weight);
//               Δ = softplus(dt_low·W_dtᵀ + b_dt);  selective scan;  y = (ssm + D·u)·silu(z);
//               h = h + y·W_outᵀ (+b)
//   logits = RMSNorm_f(h)·W_headᵀ   (W_head = lm_head, or the embedding when tied)
//
// Named activations (ForwardOptions::keep_activations), T tokens:
//   layers.{i}.residual_in (T,Dm)  layers.{i}.normed (T,Dm)  layers.{i}.x (T,E)  layers.{i}.z (T,E)
//   layers.{i}.conv (T,E)  layers.{i}.u (T,E)  layers.{i}.dt_low (T,R)  layers.{i}.delta (T,E)
//   layers.{i}.B (T,N)  layers.{i}.C (T,N)  layers.{i}.ssm (T,E)  layers.{i}.y (T,E)  layers.{i}.mixer_out (T,Dm)
//   norm_f (T,Dm)
// Dimensions come from tensor shapes and are cross-checked against config.json.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/model.h"

namespace ssmx {

struct MambaConfig {
  bool falcon = false;
  int64_t n_layer = 0, d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, vocab = 0;
  bool in_proj_bias = false, out_proj_bias = false, conv_bias = false, tied = true;
  float norm_eps = 1e-5f;
  float mixer_rms_eps = 1e-6f;  // Falcon-Mamba only
};

// A parameter: a view into the mapped checkpoint when it is stored as aligned little-endian f32, else an owned copy.
struct Param {
  const float* p = nullptr;
  std::vector<float> own;
  std::vector<int64_t> shape;
  explicit operator bool() const { return p != nullptr; }
};

struct MambaLayer {
  Param norm;                  // (Dm)
  Param in_proj_w, in_proj_b;  // (2E, Dm), (2E)
  Param conv_w, conv_b;        // (E, 1, K), (E)
  Param x_proj_w;              // (R + 2N, E)
  Param dt_proj_w, dt_proj_b;  // (E, R), (E)
  Param A;                     // (E, N)  = -exp(A_log), computed at load
  Param D;                     // (E)
  Param out_proj_w, out_proj_b;  // (Dm, E), (Dm)
};

class MambaModel : public CausalLM {
 public:
  static std::unique_ptr<MambaModel> load(const Checkpoint& ck, bool falcon);

  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return cfg_.vocab; }
  ForwardResult forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override;
  // The same forward from explicit input embeddings (T, Dm) instead of token ids (masking by zero embeddings).
  ForwardResult forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const override;
  int64_t d_model() const override { return cfg_.d_model; }
  Tensor embed(const std::vector<int32_t>& ids) const override;  // rows of the embedding, unscaled

  const MambaConfig& config() const { return cfg_; }
  const MambaLayer& layer(int64_t i) const { return layers_[size_t(i)]; }
  const Param& embedding() const { return embed_; }  // (V, Dm)
  const Param& lm_head() const { return head_; }     // (V, Dm); the embedding when tied
  const Param& norm_f() const { return norm_f_; }    // (Dm)

 private:
  MambaConfig cfg_;
  ModelInfo info_;
  Param embed_;   // (V, Dm)
  Param norm_f_;  // (Dm)
  Param head_;    // (V, Dm); points at embed_ when tied
  std::vector<MambaLayer> layers_;
  std::vector<std::shared_ptr<MappedFile>> keep_alive_;
  ForwardResult forward_impl(const std::vector<int32_t>* ids, const Tensor* embeds, const ForwardOptions& opt) const;
};

}  // namespace ssmx
