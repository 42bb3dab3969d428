// ssmx/models/mamba2.h — Mamba-2 (Mamba2ForCausalLM, and the original mamba_ssm layout with ssm_cfg.layer "Mamba2").
//
// Forward as shared/specs/model-families.md §3 (transformers' torch_forward, computed as the exact recurrence):
//   h = E[ids]
//   per layer:  u = RMSNorm(h);  [z | xBC | dt] = u·W_inᵀ (+b);  xBC = silu(conv1d(xBC));  [x | B | C] = split(xBC)
//               δ = clamp(softplus(dt + dt_bias), time_step_limit);  A = -exp(A_log)   (one scalar per head)
//               per head h (group g = h / (H/G)):  S = exp(δ_t A_h)·S + δ_t·x_t ⊗ B_t;  ssm_t = S·C_t
//               y = ssm + D_h·x;  gated = RMSNorm(y·silu(z)) (over all Di for HF, per group for mamba_ssm)
//               h = h + gated·W_outᵀ (+b)
//   logits = RMSNorm_f(h)·W_headᵀ
//
// Named activations (ForwardOptions::keep_activations / layer_hook), T tokens, CD = Di + 2·G·N:
//   layers.{i}.residual_in (T,Dm)  normed (T,Dm)  z (T,Di)  xbc (T,CD)  dt (T,H)  conv (T,CD)  x (T,Di)
//   B (T,G·N)  C (T,G·N)  delta (T,H)  ssm (T,Di)  y (T,Di)  gated (T,Di)  mixer_out (T,Dm);  norm_f (T,Dm)
// Dimensions come from tensor shapes and are cross-checked against config.json.
#pragma once

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/mamba.h"  // Param
#include "models/model.h"

namespace ssmx {

struct Mamba2Config {
  int64_t n_layer = 0, d_model = 0, d_inner = 0, n_heads = 0, head_dim = 0, n_groups = 1, d_state = 0, d_conv = 0,
          vocab = 0, chunk_size = 256;
  int64_t norm_groups = 1;  // groups of the gated RMSNorm: 1 (HF) or n_groups (mamba_ssm)
  bool in_proj_bias = false, out_proj_bias = false, conv_bias = false, tied = false;
  float norm_eps = 1e-5f;
  float dt_min = 0.0f, dt_max = INFINITY;  // time_step_limit
  int64_t conv_dim() const { return d_inner + 2 * n_groups * d_state; }
  int64_t in_proj_width() const { return 2 * d_inner + 2 * n_groups * d_state + n_heads; }
};

struct Mamba2Layer {
  Param norm;                      // (Dm)
  Param in_proj_w, in_proj_b;      // (2Di + 2GN + H, Dm), (same)
  Param conv_w, conv_b;            // (CD, 1, K), (CD)
  Param dt_bias;                   // (H)
  Param A;                         // (H) = -exp(A_log)
  Param D;                         // (H)
  Param gnorm;                     // (Di)
  Param out_proj_w, out_proj_b;    // (Dm, Di), (Dm)
};

// The Mamba-2 scan of one layer, exact recurrence, threaded over heads (bitwise independent of the thread count).
// ssm: (T, H·P) out; x: (T, H·P) row stride ld_x; delta: (T, H); A: (H); B, C: (T, G·N) row stride ld_bc.
void mamba2_scan(float* ssm, const float* x, int64_t ld_x, const float* delta, const float* A, const float* B,
                 const float* C, int64_t ld_bc, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N);

class Mamba2Model : public CausalLM {
 public:
  static std::unique_ptr<Mamba2Model> load(const Checkpoint& ck);

  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return cfg_.vocab; }
  ForwardResult forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override;
  int64_t d_model() const override { return cfg_.d_model; }
  Tensor embed(const std::vector<int32_t>& ids) const override;  // rows of the embedding, unscaled
  // forward(ids) on explicit input embeddings (T, d_model); bitwise forward(ids) for embeds = embed(ids).
  ForwardResult forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const override;

  const Mamba2Config& config() const { return cfg_; }
  const Mamba2Layer& layer(int64_t i) const { return layers_[size_t(i)]; }
  const Param& embedding() const { return embed_; }
  const Param& norm_f() const { return norm_f_; }
  const Param& lm_head() const { return head_; }

 private:
  ForwardResult forward_impl(const std::vector<int32_t>* ids, const Tensor* embeds, const ForwardOptions& opt) const;
  Mamba2Config cfg_;
  ModelInfo info_;
  Param embed_, norm_f_, head_;
  std::vector<Mamba2Layer> layers_;
  std::vector<std::shared_ptr<MappedFile>> keep_alive_;
};

}  // namespace ssmx
