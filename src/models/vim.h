// ssmx/models/vim.h — Vision Mamba (hustvl/Vim: bimamba v2, middle class token, absolute position embedding), f32.
//
// Forward exactly as the official model's CUDA path (shared/specs/model-families.md §6.3):
//   tokens = [patches[:c] ; cls ; patches[c:]] + pos_embed         patches = conv2d(pixels, P×P, stride P), row-major
//   per layer:  u_in = RMSNorm(h);  [x | z] = u_in·W_inᵀ  (shared);
//               y_f = Mamba-1 direction(x, z; conv1d, x_proj, dt_proj, A_log, D)
//               y_b = Mamba-1 direction(flip(x), flip(z); conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b)
//               h = h + ((y_f + flip(y_b)) / 2)·W_outᵀ  (shared; "div2")
//   logits = RMSNorm_f(h)[c]·W_headᵀ + b_head                      c = M / 2, the middle class token
//
// Loading: the official training checkpoints as distributed (vim_t_midclstok_*.pth, vim_s_midclstok_*.pth: a torch
// zip whose 'model' entry is the state dict, next to optimizer state and an argparse.Namespace, which the pickle
// subset steps over without executing anything), or safetensors with the same names. Sizes come from the shapes:
// d_model 192 / 384 / 768 with 24 layers are tiny / small / base; anything else loads as "custom".
//
// Named activations (keep_activations / layer_hook), T = M + 1 tokens:
//   tokens (T,D)  layers.{i}.residual_in (T,D)  layers.{i}.normed (T,D)  layers.{i}.x / .z (T,E)
//   layers.{i}.{fwd,bwd}.conv / .u / .delta (T,E)  .B / .C (T,N)  .ssm / .y (T,E)  (bwd in reversed token order)
//   layers.{i}.y (T,E) combined  layers.{i}.mixer_out (T,D)  norm_f (T,D)  feat (D)
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/mamba.h"
#include "models/mamba_grad.h"
#include "models/model.h"

namespace ssmx {

struct VimConfig {
  int64_t d_model = 0, n_layer = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0;
  int64_t patch = 0, grid_h = 0, grid_w = 0, img_h = 0, img_w = 0;
  int64_t n_patches = 0, n_tokens = 0, cls_index = 0, n_classes = 0;
  float norm_eps = 1e-5f;
  bool divide_out = true;
  std::string size;  // "tiny", "small", "base" or "custom"
};

struct VimForwardOptions {
  bool keep_activations = false;
  // Called once per layer with that layer's named activations (valid during the call only).
  std::function<void(int64_t layer, const std::map<std::string, Tensor>& acts)> layer_hook;
};

struct VimForwardResult {
  Tensor logits;                       // (classes)
  Tensor final_hidden;                 // (T, D) the final norm's output
  std::map<std::string, Tensor> acts;  // with keep_activations
};

class VimModel {
 public:
  // Whether the checkpoint holds a Vision Mamba (cls_token, patch_embed.proj.weight, layers.0.mixer.A_b_log).
  static bool detect(const Checkpoint& ck);
  static std::unique_ptr<VimModel> load(const Checkpoint& ck);

  const VimConfig& config() const { return cfg_; }
  const ModelInfo& info() const { return info_; }

  // pixels (3, H, W), already normalised → tokens (T, D): patch embedding, class token, position embedding.
  Tensor embed(const Tensor& pixels) const;
  VimForwardResult forward(const Tensor& pixels, const VimForwardOptions& opt = {}) const;
  // From tokens (T, D) (for example embed()'s output, perturbed).
  VimForwardResult forward_tokens(const Tensor& tokens, const VimForwardOptions& opt = {}) const;

  const MambaLayer& layer(int64_t i) const { return fwd_[size_t(i)]; }   // norm, projections, forward direction
  const MambaLayer& layer_b(int64_t i) const { return bwd_[size_t(i)]; } // backward direction (conv, x/dt_proj, A, D)
  const Param& norm_f() const { return norm_f_; }
  const Param& head_w() const { return head_w_; }  // (classes, D)
  const Param& head_b() const { return head_b_; }  // (classes)

 private:
  VimConfig cfg_;
  ModelInfo info_;
  Param cls_, pos_, patch_w_, patch_b_, norm_f_, head_w_, head_b_;
  std::vector<MambaLayer> fwd_, bwd_;
  std::vector<std::shared_ptr<MappedFile>> keep_alive_;
};

// The gradient engine's view of a Vim: a bidirectional stack without token embeddings (requests give the tokens).
GradStack grad_stack(const VimModel& m);

}  // namespace ssmx
