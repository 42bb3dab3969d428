// ssmx/eval/flipping.h — faithfulness by input perturbation (mambalrp.md §8, hidden-attention.md §4.3).
//
// The candidate tokens of an example are those in [skip_first, T − skip_last) (a fixed prompt prefix/suffix can be
// kept out). They are ordered by relevance: MoRF = descending (most relevant first), LeRF = ascending (least
// relevant first); ties keep the earlier position first; with `abs` the order uses |R|.
// Fraction schedule: with n candidates, step k of the curve has k tokens perturbed, x_k = k/n, k = 0..n (steps = 0),
// or with steps = S, x_i = i/S and round(i·n/S) tokens perturbed, i = 0..S.
// Score tracked: the explained target's logit at the last position of the perturbed input.
// Curves and areas (trapezoid rule over x ∈ [0, 1]):
//   MoRF   delete (mask) the most relevant first          A_MoRF
//   LeRF   delete the least relevant first                A_LeRF       ΔA_F = A_LeRF − A_MoRF  (higher is better)
//   activation: from the all-masked input insert the most relevant first: AUAC (higher is better);
//   insertion of the least relevant first gives A_I,LeRF and ΔA_I = AUAC − A_I,LeRF
//   pruning: delete the least relevant first and track MSE(p(x_k), p(x)) where p is the softmax over the class
//            tokens (all the vocabulary when none are given): AU-MSE (lower is better)
// Masking: zero embedding (default), a token id in place of the token, or removal of the token from the sequence
// (an input with every token removed is run as one zero embedding).
#pragma once

#include "eval/curves.h"

#include <cstdint>
#include <string>
#include <vector>

#include "models/mamba.h"

namespace ssmx {

enum class MaskMode { Zero, Token, Remove };

struct FlipOptions {
  MaskMode mask = MaskMode::Zero;
  int32_t mask_token = -1;             // MaskMode::Token
  int steps = 0;                       // 0 = one token per step
  int64_t skip_first = 0, skip_last = 0;
  bool abs = false;                    // order by |R|
  std::vector<int32_t> classes;        // class tokens for the pruning task's output distribution
};

// "zero", "token:ID" or "remove"; throws ssmx::Error("--mask", ...).
void parse_mask(const std::string& s, FlipOptions& o);
std::string mask_name(const FlipOptions& o);

struct FlipCurves {
  std::vector<double> x;                     // fractions
  std::vector<int64_t> morf_order;           // candidate positions, most relevant first
  std::vector<double> morf, lerf;            // target logit under deletion
  std::vector<double> act, act_lerf;         // target logit under insertion (most / least relevant first)
  std::vector<double> prune_mse;             // pruning task
  double full = 0;                           // target logit of the unperturbed input
  double a_morf = 0, a_lerf = 0, delta_af = 0, auac = 0, a_ins_lerf = 0, delta_ai = 0, au_mse = 0;
};

// The logits (V) at the last position with the tokens where masked[t] is true perturbed.
std::vector<float> masked_logits(const CausalLM& m, const std::vector<int32_t>& ids, const std::vector<bool>& masked,
                                 const FlipOptions& o);

// Trapezoid rule.

// Order of the candidate positions: most relevant first (descending), ties by position.
std::vector<int64_t> relevance_order(const std::vector<float>& relevance, int64_t first, int64_t last, bool descending,
                                     bool abs);

// All curves of one example, `target` the explained token id (its logit at the last position is the score).
FlipCurves flip_curves(const CausalLM& m, const std::vector<int32_t>& ids, int32_t target,
                       const std::vector<float>& relevance, const FlipOptions& o);

}  // namespace ssmx
