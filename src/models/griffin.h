// ssmx/models/griffin.h — RecurrentGemma / Griffin (RecurrentGemmaForCausalLM), f32.
//
// Forward exactly as shared/specs/model-families.md §5 (Hugging Face semantics):
//   h = E[ids] · bf16(sqrt(Dm))
//   per layer:  v = GemmaRMSNorm(h)            (x·r·(1+w))
//               recurrent:  y = gelu_tanh(linear_y(v));  x = linear_x(v);  c = conv1d_K(x) (+b, no activation)
//                           RG-LRU(c) -> o;  t = linear_out(o ⊙ y)
//               attention:  local multi-query attention with partial RoPE (first half of head_dim), window w:
//                           query i sees keys i-w..i;  t = o_proj(heads) + b
//               res = h + t;  h = res + down(gelu_tanh(gate(n)) ⊙ up(n)),  n = GemmaRMSNorm(res)
//   logits = cap·tanh((GemmaRMSNorm_f(h)·Eᵀ)/cap)
//
// Named activations (ForwardOptions::keep_activations / layer_hook), T tokens, W = lru_width:
//   layers.{i}.residual_in (T,Dm)  layers.{i}.temporal_normed (T,Dm)
//   recurrent: layers.{i}.y (T,W) gelu branch   .x (T,W) linear_x   .conv (T,W)   .gate_x (T,W) input gate
//              .gate_a (T,W) recurrence gate    .a (T,W) (0 at t=0)  .rg_lru (T,W)  .gated (T,W) = rg_lru ⊙ y
//   attention: layers.{i}.q (T,Hh·hd) .k (T,Hkv·hd) (after RoPE)  .v (T,Hkv·hd)  .attn (T,Hh·hd)
//   layers.{i}.temporal_out (T,Dm)  layers.{i}.channel_normed (T,Dm)  layers.{i}.mlp_out (T,Dm)
//   norm_f (T,Dm)
// Dimensions come from tensor shapes and are cross-checked against config.json.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/mamba.h"  // Param
#include "models/model.h"

namespace ssmx {

struct GriffinConfig {
  int64_t n_layer = 0, d_model = 0, lru_width = 0, heads = 0, kv_heads = 0, head_dim = 0, mlp_width = 0, conv_width = 0,
          vocab = 0, window = 2048, rot_dims = 0;
  float eps = 1e-6f, soft_cap = 30.0f, rope_theta = 10000.0f;
  float normalizer = 0.0f;  // bf16(sqrt(d_model))
  std::vector<bool> recurrent;  // per layer
  bool tied = true;
};

struct GriffinLayer {
  bool recurrent = true;
  std::vector<float> temporal_norm, channel_norm;  // 1 + w
  // recurrent block
  Param linear_y_w, linear_y_b, linear_x_w, linear_x_b, linear_out_w, linear_out_b;  // (W,Dm) (W) (W,Dm) (W) (Dm,W) (Dm)
  Param conv_w, conv_b;                     // (W,1,K), (W)
  Param gate_x_w, gate_x_b, gate_a_w, gate_a_b;  // (Hh,bw,bw), (Hh,bw): out[j] = Σ_i x[i]·w[h,i,j] + b[h,j]
  std::vector<float> neg_c_softplus;        // -8·softplus(recurrent_param), (W)
  // attention block
  Param q_w, k_w, v_w, o_w, o_b;
  // MLP
  Param gate_w, gate_b, up_w, up_b, down_w, down_b;
};

class GriffinModel : public CausalLM {
 public:
  static std::unique_ptr<GriffinModel> load(const Checkpoint& ck);

  const ModelInfo& info() const override { return info_; }
  int64_t vocab_size() const override { return cfg_.vocab; }
  ForwardResult forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override;
  // The input embeddings include the scale: embed(ids)[t] = E[ids[t]] · bf16(√Dm) (rounded to float as forward()
  // does), so forward_embeds(embed(ids), o) == forward(ids, o) bitwise, and attributions to embed() are to the
  // scaled rows the first layer reads.
  int64_t d_model() const override { return cfg_.d_model; }
  Tensor embed(const std::vector<int32_t>& ids) const override;
  ForwardResult forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const override;

  const Param& embedding() const { return embed_; }        // (V, Dm), unscaled
  const Param& lm_head() const { return head_; }           // (V, Dm)
  const std::vector<float>& final_norm() const { return final_norm_; }  // 1 + w

  const GriffinConfig& config() const { return cfg_; }
  const GriffinLayer& layer(int64_t i) const { return layers_[size_t(i)]; }

 private:
  GriffinConfig cfg_;
  ModelInfo info_;
  Param embed_;
  std::vector<float> final_norm_;
  Param head_;
  std::vector<GriffinLayer> layers_;
  std::vector<std::shared_ptr<MappedFile>> keep_alive_;
};

// The RG-LRU scan over T×W (row-major), vectorised over channels and threaded over channel blocks:
// h_t = a_t ⊙ h_{t-1} + xn_t, h_{-1} = 0. out may alias xn.
void rglru_scan(float* out, const float* a, const float* xn, int64_t T, int64_t W);

}  // namespace ssmx
