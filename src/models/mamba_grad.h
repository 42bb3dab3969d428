// ssmx/models/mamba_grad.h — gradients of a Mamba / Falcon-Mamba target with respect to the input embeddings,
// plain or with MambaLRP's modified backward rules (shared/specs/mambalrp.md §4–5).
//
// One forward pass caches each layer's intermediate values; one backward pass walks the layers in reverse. The
// target is given as a direction in the space of the final norm's output at one position: `seed` = ∂f/∂norm_f[pos]
// (for a token logit that is the head row W_head[token]; for a contrastive pair W_head[a] − W_head[b]; for a class
// head W_cls[c]). Then f = seed · norm_f[pos] (the caller adds a head bias if there is one).
//
// Rules (all off = the exact gradient; all on = MambaLRP; only `norm` = "LRP (LN-rule)"):
//   silu: u = c·[σ(c)] and SiLU(z) = z·[σ(z)]          (identity rule; [·] = held constant in the backward pass)
//   ssm:  Ā_t, B̄_t, C_t held constant                 (no gradient into Δ, B, C, so none into x_proj / dt_proj)
//   gate: o = ½·(y⊙SiLU(z)) + ½·[y⊙SiLU(z)]            (half rule)
//   norm: RMSNorm's 1/rms held constant                 (block norms and norm_f)
//   linear: LRP-0 (plain), epsilon, or gamma on in_proj / out_proj (the γ rule of the official Vim wrapper).
// The forward values never change; only the backward pass does. Relevance of any activation v is v ⊙ ∂̃f/∂v.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "models/mamba.h"

namespace ssmx {

struct LrpRules {
  bool silu = false, ssm = false, gate = false, norm = false;
  enum class Linear { Zero, Epsilon, Gamma } linear = Linear::Zero;
  double epsilon = 1e-6;  // Linear::Epsilon stabiliser
  double gamma = 0.25;    // Linear::Gamma
  static LrpRules gradient() { return {}; }
  static LrpRules mamba_lrp() { return {true, true, true, true}; }
  static LrpRules ln_only() { return {false, false, false, true}; }
};

struct GradRequest {
  // The input: token ids (looked up in the embedding) or, when `embeds` is not null, explicit input embeddings
  // (T, Dm), used by integrated gradients, SmoothGrad and the perturbation tests.
  std::vector<int32_t> ids;
  const Tensor* embeds = nullptr;
  int64_t position = -1;     // where the seed acts; -1 = the last token
  std::vector<float> seed;   // (Dm) ∂f/∂norm_f[position]
  // When `seed` is empty: called once, after the forward, with the head's input row at `position` (Dm values) and
  // returns the seed. explain() resolves its target this way, from the engine's own forward, instead of running a
  // separate one (Backend::resolve_with_gradient).
  std::function<std::vector<float>(const float* head_input_row)> seed_from_hidden;
  LrpRules rules;
  bool zero_biases = false;  // run forward and backward as if every bias (in/out proj, conv, dt_proj) were zero
  bool keep_layer_grads = false;  // fill grad_resid and grad_y
};

// Every engine's check of the request's seed: Dm values, or empty with seed_from_hidden set.
void check_seed(const GradRequest& req, int64_t Dm);
// The seed for head input row `row` (Dm values): req.seed, or seed_from_hidden(row) (checked to have Dm values).
std::vector<float> seed_for(const GradRequest& req, const float* row, int64_t Dm);
std::vector<float> seed_for(const GradRequest& req, const double* row, int64_t Dm);

template <typename Real>
struct GradResultT {
  std::vector<int64_t> shape;         // {T, Dm}
  std::vector<Real> embeds;           // (T, Dm) the input embeddings used
  std::vector<Real> grad;             // (T, Dm) ∂̃f/∂embeds
  double f = 0;                       // seed · norm_f[position]
  std::vector<Real> norm_f_at_pos;    // (Dm)
  // Relevance Σ_d x^ℓ[t,d]·g^ℓ[t,d] of the residual stream entering each layer ℓ, and after the last one:
  // (L + 1, T) flattened. resid_relevance[0] is the per-token relevance of the embeddings.
  std::vector<Real> resid_relevance;
  // Σ over biases b·∂̃f/∂b (the relevance absorbed by biases; zero with zero_biases). Under MambaLRP with no
  // linear rule, Σ_t resid_relevance[0][t] + bias_absorbed = f up to rounding.
  double bias_absorbed = 0;
  // With keep_layer_grads: per layer, ∂̃f/∂(residual entering the layer) (T, Dm) and ∂̃f/∂y (T, E), where y is the
  // gated mixer output before out_proj (the ŷ' of Ali et al.'s Mamba-Attribution).
  std::vector<std::vector<Real>> grad_resid, grad_y;
};
using GradResult = GradResultT<float>;

// The fast path: f32, BLAS, threaded; results do not depend on the thread count.
GradResult mamba_gradient(const MambaModel& m, const GradRequest& req);
// The same computation in double precision everywhere (slow): the reference for conservation tests.
GradResultT<double> mamba_gradient_f64(const MambaModel& m, const GradRequest& req);

// The engine's view of a model: optional token embeddings, a stack of pre-norm Mamba-1 layers, the final norm. A
// stack with `backward` layers is Vision Mamba's bidirectional mixer (bimamba v2): the shared in_proj output is also
// scanned in reverse token order with the backward direction's conv1d, x_proj, dt_proj, A and D (read from
// backward[l]; its norm and projections are not used), the two gated outputs are added — halved when divide_out —
// before the shared out_proj. MambaLRP's rules then apply per direction. Tokens after the seed position matter in a
// bidirectional stack, so it always runs every token.
struct GradStack {
  MambaConfig cfg;                          // dims, eps, Falcon's mixer norms
  const Param* embedding = nullptr;         // (V, Dm) for ids; null: requests must give embeds
  std::vector<const MambaLayer*> layers;    // n_layer
  std::vector<const MambaLayer*> backward;  // empty, or n_layer backward directions
  bool divide_out = false;
  const Param* norm_f = nullptr;            // (Dm)
};
GradStack grad_stack(const MambaModel& m);
GradResult stack_gradient(const GradStack& st, const GradRequest& req);
GradResultT<double> stack_gradient_f64(const GradStack& st, const GradRequest& req);

// Workspace. Both functions keep their large buffers (per layer T·(Dm + 5E + R + 2N)·sizeof(Real) bytes of caches,
// plus a few (T, E) scratch arrays) in a process-wide pool after a call, so that the next call reuses memory that is
// already mapped instead of faulting in fresh pages (0.4 s per call at T = 1024 on a mamba-130m shape on the
// development VM). The pool keeps at most `bytes` (default 2 GiB); release_grad_workspace() frees what it holds.
void set_grad_workspace_limit(size_t bytes);
void release_grad_workspace();

}  // namespace ssmx
