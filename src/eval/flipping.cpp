#include "eval/flipping.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace ssmx {

void parse_mask(const std::string& s, FlipOptions& o) {
  if (s == "zero") {
    o.mask = MaskMode::Zero;
  } else if (s == "remove") {
    o.mask = MaskMode::Remove;
  } else if (s.rfind("token:", 0) == 0) {
    const std::string v = s.substr(6);
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--mask", "token:ID needs a non-negative integer id, got '" + v + "'");
    o.mask = MaskMode::Token;
    o.mask_token = int32_t(std::stol(v));
  } else {
    throw Error("--mask", "unknown masking '" + s + "' (zero, token:ID or remove)");
  }
}

std::string mask_name(const FlipOptions& o) {
  switch (o.mask) {
    case MaskMode::Zero: return "zero";
    case MaskMode::Remove: return "remove";
    case MaskMode::Token: return "token:" + std::to_string(o.mask_token);
  }
  return "?";
}

std::vector<float> masked_logits(const CausalLM& m, const std::vector<int32_t>& ids, const std::vector<bool>& masked,
                                 const FlipOptions& o) {
  ForwardOptions fo;
  fo.all_logits = false;
  const int64_t Dm = m.d_model(), T = int64_t(ids.size());
  if (int64_t(masked.size()) != T) throw Error("flipping", "mask length differs from the input length");
  Tensor logits;
  if (o.mask == MaskMode::Zero) {
    Tensor e = m.embed(ids);
    for (int64_t t = 0; t < T; ++t)
      if (masked[size_t(t)]) std::fill_n(e.ptr() + t * Dm, Dm, 0.0f);
    logits = m.forward_embeds(e, fo).logits;
  } else if (o.mask == MaskMode::Token) {
    std::vector<int32_t> x = ids;
    for (int64_t t = 0; t < T; ++t)
      if (masked[size_t(t)]) x[size_t(t)] = o.mask_token;
    logits = m.forward(x, fo).logits;
  } else {
    std::vector<int32_t> x;
    for (int64_t t = 0; t < T; ++t)
      if (!masked[size_t(t)]) x.push_back(ids[size_t(t)]);
    if (x.empty())
      logits = m.forward_embeds(Tensor({1, Dm}), fo).logits;
    else
      logits = m.forward(x, fo).logits;
  }
  return std::move(logits.data);
}

std::vector<int64_t> relevance_order(const std::vector<float>& r, int64_t first, int64_t last, bool descending,
                                     bool abs) {
  std::vector<int64_t> ord;
  for (int64_t t = std::max<int64_t>(first, 0); t < last && t < int64_t(r.size()); ++t) ord.push_back(t);
  auto v = [&](int64_t t) { return abs ? std::fabs(double(r[size_t(t)])) : double(r[size_t(t)]); };
  std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) { return descending ? v(a) > v(b) : v(a) < v(b); });
  return ord;
}

namespace {

std::vector<double> class_probs(const std::vector<float>& logits, const std::vector<int32_t>& classes) {
  std::vector<double> z;
  if (classes.empty())
    z.assign(logits.begin(), logits.end());
  else
    for (int32_t c : classes) z.push_back(double(logits.at(size_t(c))));
  const double mx = *std::max_element(z.begin(), z.end());
  double s = 0;
  for (double& v : z) s += (v = std::exp(v - mx));
  for (double& v : z) v /= s;
  return z;
}

}  // namespace

FlipCurves flip_curves(const CausalLM& m, const std::vector<int32_t>& ids, int32_t target,
                       const std::vector<float>& rel, const FlipOptions& o) {
  const int64_t T = int64_t(ids.size());
  if (T == 0) throw Error("flipping", "empty input");
  if (int64_t(rel.size()) != T) throw Error("flipping", "relevance length differs from the input length");
  if (target < 0 || target >= m.vocab_size()) throw Error("flipping", "target token out of range");
  for (int32_t c : o.classes)
    if (c < 0 || c >= m.vocab_size()) throw Error("flipping", "class token out of range");
  if (o.mask == MaskMode::Token && (o.mask_token < 0 || o.mask_token >= m.vocab_size()))
    throw Error("--mask", "token id " + std::to_string(o.mask_token) + " is out of range");
  const int64_t first = o.skip_first, last = T - o.skip_last;
  if (first < 0 || o.skip_last < 0 || first >= last)
    throw Error("flipping", "no candidate tokens (input of " + std::to_string(T) + " tokens, skip " +
                                std::to_string(o.skip_first) + " + " + std::to_string(o.skip_last) + ")");
  FlipCurves c;
  c.morf_order = relevance_order(rel, first, last, true, o.abs);
  const std::vector<int64_t> lerf_order = relevance_order(rel, first, last, false, o.abs);
  const int64_t n = int64_t(c.morf_order.size());
  std::vector<int64_t> counts;
  if (o.steps <= 0) {
    for (int64_t k = 0; k <= n; ++k) counts.push_back(k), c.x.push_back(double(k) / double(n));
  } else {
    for (int i = 0; i <= o.steps; ++i) {
      counts.push_back(int64_t(std::llround(double(i) * double(n) / double(o.steps))));
      c.x.push_back(double(i) / double(o.steps));
    }
  }
  const std::vector<float> full = masked_logits(m, ids, std::vector<bool>(size_t(T), false), o);
  c.full = full[size_t(target)];
  const std::vector<double> p_full = class_probs(full, o.classes);
  // deletion (insert = false) or insertion of the first k tokens of `order`
  auto run = [&](const std::vector<int64_t>& order, bool insert, std::vector<double>* mse) {
    std::vector<double> y;
    for (int64_t k : counts) {
      std::vector<bool> masked(size_t(T), false);
      if (insert)
        for (int64_t t = first; t < last; ++t) masked[size_t(t)] = true;
      for (int64_t j = 0; j < k; ++j) masked[size_t(order[size_t(j)])] = !insert;
      const std::vector<float> lg = (k == 0 && !insert) ? full : masked_logits(m, ids, masked, o);
      y.push_back(double(lg[size_t(target)]));
      if (mse) {
        const std::vector<double> p = class_probs(lg, o.classes);
        double s = 0;
        for (size_t i = 0; i < p.size(); ++i) s += (p[i] - p_full[i]) * (p[i] - p_full[i]);
        mse->push_back(s / double(p.size()));
      }
    }
    return y;
  };
  c.morf = run(c.morf_order, false, nullptr);
  c.lerf = run(lerf_order, false, &c.prune_mse);
  c.act = run(c.morf_order, true, nullptr);
  c.act_lerf = run(lerf_order, true, nullptr);
  c.a_morf = trapezoid(c.x, c.morf);
  c.a_lerf = trapezoid(c.x, c.lerf);
  c.delta_af = c.a_lerf - c.a_morf;
  c.auac = trapezoid(c.x, c.act);
  c.a_ins_lerf = trapezoid(c.x, c.act_lerf);
  c.delta_ai = c.auac - c.a_ins_lerf;
  c.au_mse = trapezoid(c.x, c.prune_mse);
  return c;
}

}  // namespace ssmx
