#include "attribution/explain.h"

#include "attribution/backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>

#include "attribution/bidirectional.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "attribution/vim_trace.h"
#include "core/error.h"

namespace ssmx {

namespace {

struct MethodName {
  Method m;
  const char* name;
};
constexpr MethodName kMethods[] = {
    {Method::Gradient, "gradient"},          {Method::GradInput, "grad-input"},
    {Method::IntegratedGradients, "integrated-gradients"}, {Method::SmoothGrad, "smoothgrad"},
    {Method::Random, "random"},              {Method::RawAttention, "raw-attention"},
    {Method::Rollout, "rollout"},            {Method::MambaAttr, "mamba-attr"},
    {Method::UnifiedAttr, "unified-attr"},   {Method::MambaLrp, "mamba-lrp"},
    {Method::LrpLn, "lrp-ln"},
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int64_t lm_target_position(const Target& want, int64_t T) {
  if (want.kind == Target::Kind::Class) return T - 1;
  const int64_t pos = want.position < 0 ? T + want.position : want.position;
  if (pos < 0 || pos >= T)
    throw Error("--position", "position " + std::to_string(want.position) + " is outside the " + std::to_string(T) +
                                  " input tokens");
  return pos;
}

ResolvedTarget resolve_lm_target_row(const float* row, int64_t pos, int64_t Dm, const float* W, int64_t V,
                                     const ClassHead* head, const Target& want, bool zero_biases) {
  ResolvedTarget r;
  r.t = want;
  r.t.position = pos;
  auto dot = [&](const float* a, const float* b) {
    double s = 0;
    for (int64_t d = 0; d < Dm; ++d) s += double(a[d]) * double(b[d]);
    return s;
  };
  if (want.kind == Target::Kind::Class) {
    if (!head) throw Error("--class", "the model has no classification head (docs/methods.md lists the tensor names read)");
    const std::vector<float> lg = head->logits(row);
    r.logits = lg;
    if (r.t.cls < 0) r.t.cls = int64_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    if (r.t.cls >= head->n_classes)
      throw Error("--class", "class " + std::to_string(r.t.cls) + " does not exist (the head has " +
                                 std::to_string(head->n_classes) + " classes)");
    r.seed.assign(head->weight.begin() + r.t.cls * Dm, head->weight.begin() + (r.t.cls + 1) * Dm);
    if (!head->bias.empty() && !zero_biases) r.bias = head->bias[size_t(r.t.cls)];
    r.f = dot(r.seed.data(), row) + r.bias;
    return r;
  }
  auto check_id = [&](int32_t id, const char* what) {
    if (id < 0 || id >= V)
      throw Error(what, "token id " + std::to_string(id) + " is out of range for a vocabulary of " + std::to_string(V));
  };
  r.logits.resize(size_t(V));
  for (int64_t v = 0; v < V; ++v) r.logits[size_t(v)] = float(dot(W + v * Dm, row));
  if (r.t.token < 0) r.t.token = int32_t(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
  check_id(r.t.token, "--target");
  r.seed.assign(W + int64_t(r.t.token) * Dm, W + int64_t(r.t.token + 1) * Dm);
  if (want.kind == Target::Kind::Contrast) {
    check_id(r.t.contrast, "--contrast");
    for (int64_t d = 0; d < Dm; ++d) r.seed[size_t(d)] -= W[int64_t(r.t.contrast) * Dm + d];
  }
  r.f = dot(r.seed.data(), row);
  return r;
}

ResolvedTarget resolve_lm_target(const float* hid, int64_t T, int64_t Dm, const float* W, int64_t V,
                                 const ClassHead* head, const Target& want, bool zero_biases) {
  const int64_t pos = lm_target_position(want, T);
  return resolve_lm_target_row(hid + pos * Dm, pos, Dm, W, V, head, want, zero_biases);
}

namespace {

GradRequest base_request(const std::vector<int32_t>& ids, const Tensor& embeds, const ResolvedTarget& rt,
                         const ExplainOptions& o) {
  GradRequest q;
  q.ids = ids;
  if (ids.empty()) q.embeds = &embeds;
  q.position = rt.t.position;
  q.seed = rt.seed;
  q.zero_biases = o.zero_biases;
  return q;
}

// Σ_d a[t,d]·b[t,d] per token.
std::vector<float> rowdot(const std::vector<float>& a, const std::vector<float>& b, int64_t T, int64_t Dm) {
  std::vector<float> r(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    double s = 0;
    for (int64_t d = 0; d < Dm; ++d) s += double(a[size_t(t * Dm + d)]) * double(b[size_t(t * Dm + d)]);
    r[size_t(t)] = float(s);
  }
  return r;
}

double sum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s;
}

void minmax_normalise(std::vector<float>& v) {
  if (v.empty()) return;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  const float a = *lo, b = *hi;
  for (float& x : v) x = b > a ? (x - a) / (b - a) : 0.0f;
}

// The per-layer inputs the attention methods need, gathered in one forward pass.
struct LayerMaps {
  std::vector<Tensor> mean_maps;          // exact: (T, T) channel mean of α (or α̂), layers ≥ start
  std::vector<std::vector<float>> rows;   // official: per layer ≥ start, the published row reduction (T)
};

struct MambaLayerAttention : LayerAttention {
  MixerTrace tr;
  int64_t channels() const override { return tr.E; }
  Tensor mean_map(AttnKind k) const override { return hidden_attention_reduce(tr, k, AttnReduce::Mean, 0, tr.E); }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    return hidden_attention_row_reduce(tr, k, AttnReduce::Mean, pos, 0, tr.E);
  }
  // System 1's row leaves out the query's own decay and the diagonal (s6); the unified code's row is exact.
  Tensor rows(AttnKind k, int64_t pos, bool published) const override {
    return hidden_attention_row(tr, k, pos, 0, tr.E,
                                published && k == AttnKind::S6 ? AttnCompat::HiddenAttnRow : AttnCompat::None);
  }
};

struct VimLayerAttention : LayerAttention {
  BidirTrace bt;
  int64_t channels() const override { return bt.fwd.E; }
  Tensor mean_map(AttnKind k) const override { return bidir_attention_reduce(bt, k, AttnReduce::Mean, 0, bt.fwd.E); }
  Tensor mean_row(AttnKind k, int64_t pos) const override {
    return bidir_attention_row_reduce(bt, k, AttnReduce::Mean, pos, 0, bt.fwd.E);
  }
  // The published class-token rows are stitched from the two directions (hidden-attention.md §2.2, §3.2).
  Tensor rows(AttnKind k, int64_t pos, bool published) const override {
    const BidirCompat c = !published ? BidirCompat::None
                          : k == AttnKind::S6 ? BidirCompat::HiddenAttnStitched : BidirCompat::Stitched;
    return bidir_attention_row(bt, k, pos, 0, bt.fwd.E, c);
  }
};

struct MambaBackend : LmBackend<MambaModel> {
  MambaBackend(const MambaModel& model, const ClassHead* h, const std::vector<int32_t>& in)
      : LmBackend(model, h, in, model.config().n_layer, model.config().d_inner) {}
  GradResult gradient(const GradRequest& q) const override { return mamba_gradient(m, q); }
  void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const override {
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
      if (layer < start) return;
      MambaLayerAttention la;
      la.tr = make_mixer_trace(m, acts, layer);
      f(layer, la);
    };
    m.forward(ids, fo);
  }
};

struct VimBackend : Backend {
  const VimModel& m;
  VimBackend(const VimModel& model, const Tensor& pixels) : m(model) {
    const VimConfig& c = m.config();
    T = c.n_tokens, Dm = c.d_model, L = c.n_layer, E = c.d_inner;
    embeds = m.embed(pixels);
  }
  ResolvedTarget resolve(const Target& want, bool zero_biases) const override {
    if (want.kind != Target::Kind::Class)
      throw Error("--target", "a Vision Mamba explains a class of its head: use --class C (or the predicted class)");
    const VimConfig& c = m.config();
    const VimForwardResult fr = m.forward_tokens(embeds);
    ResolvedTarget r;
    r.t = want;
    r.t.position = c.cls_index;
    r.logits = fr.logits.data;
    if (r.t.cls < 0) r.t.cls = int64_t(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
    if (r.t.cls >= c.n_classes)
      throw Error("--class", "class " + std::to_string(r.t.cls) + " does not exist (the head has " +
                                 std::to_string(c.n_classes) + " classes)");
    r.seed.assign(m.head_w().p + r.t.cls * Dm, m.head_w().p + (r.t.cls + 1) * Dm);
    if (!zero_biases) r.bias = m.head_b().p[r.t.cls];
    const float* hid = fr.final_hidden.ptr() + c.cls_index * Dm;
    double f = 0;
    for (int64_t d = 0; d < Dm; ++d) f += double(r.seed[size_t(d)]) * double(hid[d]);
    r.f = f + r.bias;
    return r;
  }
  GradResult gradient(const GradRequest& q) const override { return stack_gradient(grad_stack(m), q); }
  const float* embedding_row(int64_t) const override { return nullptr; }
  int64_t vocab() const override { return 0; }
  void for_layers(int64_t start, const std::function<void(int64_t, const LayerAttention&)>& f) const override {
    VimForwardOptions fo;
    fo.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
      if (layer < start) return;
      VimLayerTrace vt;
      make_vim_trace(vt, m, acts, layer);
      VimLayerAttention la;
      la.bt = vt.bt;
      f(layer, la);
    };
    m.forward_tokens(embeds, fo);
  }
};

// Runs the forward pass and extracts, per layer ≥ start, what `need_maps` / `row_fn` ask for.
template <typename RowFn>
LayerMaps collect_layers(const Backend& b, int64_t start, AttnKind kind, bool need_maps, RowFn&& row_fn) {
  LayerMaps out;
  b.for_layers(start, [&](int64_t layer, const LayerAttention& la) {
    if (need_maps) out.mean_maps.push_back(la.mean_map(kind));
    row_fn(layer, la, out);
  });
  return out;
}

// Row `pos` of M_{L-1} · … · M_start for per-layer matrices produced by make(ℓ) (given as (T, T)).
template <typename MakeRow>
std::vector<float> rollout_row(int64_t T, int64_t pos, size_t n_layers, MakeRow&& apply) {
  std::vector<double> x(size_t(T), 0.0);
  x[size_t(pos)] = 1.0;
  for (size_t k = n_layers; k-- > 0;) x = apply(k, x);
  std::vector<float> r(static_cast<size_t>(T));
  for (int64_t j = 0; j < T; ++j) r[size_t(j)] = float(x[size_t(j)]);
  return r;
}

// x ← x · M for a (T, T) map transformed entrywise into M[i,j] = f(i, j, map[i,j]) (+ identity, optional row norm).
std::vector<double> vec_times(const std::vector<double>& x, const Tensor& map, bool row_normalise,
                              const std::vector<float>* row_scale, bool clamp_positive) {
  const int64_t T = map.dim(0);
  std::vector<double> y(size_t(T), 0.0);
  for (int64_t i = 0; i < T; ++i) {
    const double xi = x[size_t(i)];
    if (xi == 0.0) continue;
    const float* row = map.ptr() + i * T;
    const double s = row_scale ? double((*row_scale)[size_t(i)]) : 1.0;
    auto entry = [&](int64_t j) {
      double v = s * double(row[j]);
      if (clamp_positive && v < 0) v = 0;
      return v + (i == j ? 1.0 : 0.0);
    };
    double norm = 1.0;
    if (row_normalise) {
      double rs = 0;
      for (int64_t j = 0; j < T; ++j) rs += entry(j);
      if (std::fabs(rs) > 1e-12) norm = rs;
    }
    for (int64_t j = 0; j < T; ++j) y[size_t(j)] += xi * entry(j) / norm;
  }
  return y;
}

// The published code's rollout of class-token rows broadcast to matrices (hidden-attention.md §2.3): every row of
// M_ℓ is (v_ℓ + e_r) / (1 + Σ v_ℓ), which reduces to x ← (v_ℓ + x) / (1 + s_ℓ).
std::vector<float> broadcast_rollout(const std::vector<std::vector<float>>& v, int64_t T, int64_t pos) {
  std::vector<double> x(size_t(T), 0.0);
  x[size_t(pos)] = 1.0;
  for (size_t k = v.size(); k-- > 0;) {
    double s = 0;
    for (float a : v[k]) s += a;
    for (int64_t j = 0; j < T; ++j) x[size_t(j)] = (double(v[k][size_t(j)]) + x[size_t(j)]) / (1.0 + s);
  }
  std::vector<float> r(static_cast<size_t>(T));
  for (int64_t j = 0; j < T; ++j) r[size_t(j)] = float(x[size_t(j)]);
  return r;
}

// Official post-processing: the class token is dropped (here: set to 0) and the rest clamped at 0.
void official_finish(std::vector<float>& r, int64_t pos) {
  for (float& v : r) v = std::max(v, 0.0f);
  r[size_t(pos)] = 0.0f;
}

// Token-wise gradient score of the published attribution code: min-max of max_d max(g[t,d], 0).
std::vector<float> grad_score(const std::vector<float>& g, int64_t T, int64_t Dm) {
  std::vector<float> s(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    float m = 0.0f;
    for (int64_t d = 0; d < Dm; ++d) m = std::max(m, g[size_t(t * Dm + d)]);
    s[size_t(t)] = m;
  }
  minmax_normalise(s);
  return s;
}

}  // namespace

const char* method_name(Method m) {
  for (const auto& e : kMethods)
    if (e.m == m) return e.name;
  return "?";
}

Method parse_method(const std::string& s) {
  std::string names;
  for (const auto& e : kMethods) {
    if (s == e.name) return e.m;
    names += (names.empty() ? "" : ", ") + std::string(e.name);
  }
  throw Error("--method", "unknown method '" + s + "' (one of: " + names + ")");
}

std::vector<Method> all_methods() {
  std::vector<Method> v;
  for (const auto& e : kMethods) v.push_back(e.m);
  return v;
}

std::vector<std::pair<int64_t, int64_t>> word_spans(const std::vector<std::string>& texts) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t t = 0; t < int64_t(texts.size()); ++t) {
    const std::string& s = texts[size_t(t)];
    const bool starts_word = spans.empty() || (!s.empty() && std::isspace(static_cast<unsigned char>(s[0])));
    if (starts_word) spans.push_back({t, t + 1});
    else spans.back().second = t + 1;
  }
  return spans;
}

Explanation explain_core(const Backend& b, const ExplainOptions& o) {
  const double t0 = now_s();
  const std::vector<int32_t>& ids = b.ids;
  const int64_t T = b.T, Dm = b.Dm, L = b.L;
  if (T == 0) throw Error("input", "no tokens to explain");
  if (o.start_layer < 0 || o.start_layer >= L)
    throw Error("--start-layer", "layer " + std::to_string(o.start_layer) + " is outside 0.." + std::to_string(L - 1));
  if (o.compat != "none" && o.compat != "official")
    throw Error("--compat", "unknown mode '" + o.compat + "' (none or official)");

  b.check(o);
  // The methods that need one plain gradient resolve the target inside it (one forward pass fewer).
  LrpRules single_rules;
  bool single = true;
  switch (o.method) {
    case Method::Gradient:
    case Method::GradInput: single_rules = LrpRules::gradient(); break;
    case Method::MambaLrp: single_rules = o.rules; break;
    case Method::LrpLn:
      single_rules = LrpRules::ln_only();
      single_rules.linear = o.rules.linear, single_rules.epsilon = o.rules.epsilon, single_rules.gamma = o.rules.gamma;
      break;
    default: single = false;
  }
  std::optional<GradResult> first;
  ResolvedTarget rt;
  if (single) {
    GradRequest q = base_request(ids, b.embeds, ResolvedTarget{}, o);
    q.rules = single_rules;
    auto [r, g] = b.resolve_with_gradient(o.target, o.zero_biases, std::move(q));
    rt = std::move(r);
    first = std::move(g);
  } else {
    rt = b.resolve(o.target, o.zero_biases);
  }
  Explanation ex;
  ex.method = method_name(o.method);
  ex.ids = ids;
  ex.target = rt.t;
  ex.output_logits = rt.logits;
  const int64_t pos = rt.t.position;
  nlohmann::json& st = ex.settings;
  if (o.zero_biases) st["zero_biases"] = true;
  if (const std::string note = b.target_note(rt.t); !note.empty()) st["target_value"] = note;

  auto grad = [&](const LrpRules& rules, const Tensor* embeds, bool layer_grads) {
    GradRequest q = base_request(ids, b.embeds, rt, o);
    q.rules = rules;
    if (embeds) q.embeds = embeds;
    q.keep_layer_grads = layer_grads;
    return b.gradient(q);
  };
  // f from a plain forward, so that every method reports the same target value.
  double f_value = 0;
  bool have_f = false;
  auto set_f = [&](const GradResult& g) {
    if (!have_f) f_value = g.f + rt.bias, have_f = true;
  };

  const bool official = o.compat == "official";
  switch (o.method) {
    case Method::Gradient: {
      const GradResult g = std::move(*first);
      set_f(g);
      ex.relevance.resize(size_t(T));
      for (int64_t t = 0; t < T; ++t) {
        double s = 0;
        for (int64_t d = 0; d < Dm; ++d) s += double(g.grad[size_t(t * Dm + d)]) * g.grad[size_t(t * Dm + d)];
        ex.relevance[size_t(t)] = float(std::sqrt(s));
      }
      break;
    }
    case Method::GradInput:
    case Method::MambaLrp:
    case Method::LrpLn: {
      const LrpRules& rules = single_rules;
      const GradResult g = std::move(*first);
      set_f(g);
      ex.relevance = rowdot(g.embeds, g.grad, T, Dm);
      for (int64_t l = 0; l <= L; ++l)
        ex.layer_relevance.emplace_back(g.resid_relevance.begin() + l * T, g.resid_relevance.begin() + (l + 1) * T);
      ex.layer_relevance_what = "relevance of the residual stream entering each layer (the last row: after the last layer)";
      ex.has_conservation = true;
      ex.bias_absorbed = g.bias_absorbed + rt.bias;
      ex.reference_value = f_value;
      if (o.method != Method::GradInput) {
        nlohmann::json r = nlohmann::json::array();
        if (rules.silu) r.push_back("silu");
        if (rules.ssm) r.push_back("ssm");
        if (rules.gate) r.push_back("gate");
        if (rules.norm) r.push_back("norm");
        st["lrp_rules"] = r;
        st["linear_rule"] = rules.linear == LrpRules::Linear::Zero      ? "lrp-0"
                            : rules.linear == LrpRules::Linear::Epsilon ? "epsilon"
                                                                        : "gamma";
        if (rules.linear == LrpRules::Linear::Epsilon) st["epsilon"] = rules.epsilon;
        if (rules.linear == LrpRules::Linear::Gamma) st["gamma"] = rules.gamma;
      }
      break;
    }
    case Method::IntegratedGradients: {
      if (o.ig_steps < 1 || o.ig_steps > 4096) throw Error("--steps", "steps must be in 1..4096");
      const Tensor& x = b.embeds;
      Tensor base({T, Dm});
      if (o.ig_baseline.rfind("token:", 0) == 0) {
        const std::string v = o.ig_baseline.substr(6);
        if (b.vocab() == 0) throw Error("--baseline", "this model has no vocabulary; use --baseline zero");
        if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos ||
            std::stoll(v) >= b.vocab())
          throw Error("--baseline", "'" + o.ig_baseline + "' names no token of the vocabulary");
        const float* row = b.embedding_row(std::stoll(v));
        for (int64_t t = 0; t < T; ++t) std::copy(row, row + Dm, base.ptr() + t * Dm);
      } else if (o.ig_baseline != "zero") {
        throw Error("--baseline", "unknown baseline '" + o.ig_baseline + "' (zero or token:ID)");
      }
      std::vector<double> avg(size_t(T * Dm), 0.0);
      Tensor p({T, Dm});
      for (int k = 0; k < o.ig_steps; ++k) {
        const float a = float((k + 0.5) / o.ig_steps);
        for (int64_t i = 0; i < T * Dm; ++i) p.data[size_t(i)] = base.data[size_t(i)] + a * (x.data[size_t(i)] - base.data[size_t(i)]);
        const GradResult g = grad(LrpRules::gradient(), &p, false);
        for (int64_t i = 0; i < T * Dm; ++i) avg[size_t(i)] += g.grad[size_t(i)];
      }
      ex.relevance.assign(size_t(T), 0.0f);
      for (int64_t t = 0; t < T; ++t) {
        double s = 0;
        for (int64_t d = 0; d < Dm; ++d) {
          const size_t i = size_t(t * Dm + d);
          s += (double(x.data[i]) - base.data[i]) * avg[i] / o.ig_steps;
        }
        ex.relevance[size_t(t)] = float(s);
      }
      const GradResult gx = grad(LrpRules::gradient(), &x, false);
      const GradResult gb = grad(LrpRules::gradient(), &base, false);
      set_f(gx);
      ex.has_conservation = true;
      ex.reference_value = gx.f - gb.f;  // completeness: Σ R ≈ f(x) − f(baseline)
      st["steps"] = o.ig_steps;
      st["baseline"] = o.ig_baseline;
      st["rule"] = "midpoint Riemann sum";
      break;
    }
    case Method::SmoothGrad: {
      if (o.sg_samples < 1 || o.sg_samples > 4096) throw Error("--samples", "samples must be in 1..4096");
      if (!(o.sg_noise >= 0)) throw Error("--noise", "noise must be ≥ 0");
      const Tensor& x = b.embeds;
      const auto [lo, hi] = std::minmax_element(x.data.begin(), x.data.end());
      const double sigma = o.sg_noise * double(*hi - *lo);
      std::mt19937_64 rng(o.seed);
      std::normal_distribution<double> nd(0.0, 1.0);
      std::vector<double> avg(size_t(T * Dm), 0.0);
      Tensor p({T, Dm});
      for (int s = 0; s < o.sg_samples; ++s) {
        for (int64_t i = 0; i < T * Dm; ++i) p.data[size_t(i)] = x.data[size_t(i)] + float(sigma * nd(rng));
        const GradResult g = grad(LrpRules::gradient(), &p, false);
        for (int64_t i = 0; i < T * Dm; ++i) avg[size_t(i)] += g.grad[size_t(i)];
      }
      ex.relevance.assign(size_t(T), 0.0f);
      for (int64_t t = 0; t < T; ++t) {
        double s = 0;
        for (int64_t d = 0; d < Dm; ++d) s += double(x.data[size_t(t * Dm + d)]) * avg[size_t(t * Dm + d)] / o.sg_samples;
        ex.relevance[size_t(t)] = float(s);
      }
      st["samples"] = o.sg_samples;
      st["noise"] = o.sg_noise;
      st["sigma"] = sigma;
      st["seed"] = o.seed;
      break;
    }
    case Method::Random: {
      std::mt19937_64 rng(o.seed);
      std::normal_distribution<double> nd(0.0, 1.0);
      ex.relevance.resize(size_t(T));
      for (float& v : ex.relevance) v = float(nd(rng));
      st["seed"] = o.seed;
      break;
    }
    case Method::RawAttention:
    case Method::Rollout:
    case Method::MambaAttr:
    case Method::UnifiedAttr: {
      const bool unified = o.method == Method::UnifiedAttr;
      const AttnKind kind = unified ? AttnKind::Unified : AttnKind::S6;
      const bool attr = o.method == Method::MambaAttr || o.method == Method::UnifiedAttr;
      st["start_layer"] = o.start_layer;
      st["kind"] = attn_kind_name(kind);
      st["compat"] = o.compat;
      GradResult g;
      if (attr) {
        g = grad(LrpRules::gradient(), nullptr, true);
        set_f(g);
      }
      if (!official) {
        const bool need_maps = o.method != Method::RawAttention;
        LayerMaps lm = collect_layers(b, o.start_layer, kind, need_maps,
                                      [&](int64_t, const LayerAttention& la, LayerMaps& out) {
                                        if (need_maps) {
                                          const Tensor& mp = out.mean_maps.back();
                                          out.rows.emplace_back(mp.ptr() + pos * T, mp.ptr() + (pos + 1) * T);
                                        } else {
                                          out.rows.push_back(la.mean_row(kind, pos).data);
                                        }
                                      });
        const size_t n = lm.rows.size();
        if (o.method == Method::RawAttention) {
          ex.relevance.assign(size_t(T), 0.0f);
          for (const auto& r : lm.rows)
            for (int64_t j = 0; j < T; ++j) ex.relevance[size_t(j)] += r[size_t(j)] / float(n);
        } else if (o.method == Method::Rollout) {
          ex.relevance = rollout_row(T, pos, n, [&](size_t k, const std::vector<double>& x) {
            return vec_times(x, lm.mean_maps[k], true, nullptr, false);
          });
          st["normalisation"] = "rows of I + mean_e α divided by their sums";
        } else {
          // ḡ_ℓ[i] = mean_e ∂f/∂y_ℓ[i,e]: the gradient of the target with respect to the gated mixer output.
          std::vector<std::vector<float>> gbar(n, std::vector<float>(size_t(T), 0.0f));
          for (size_t k = 0; k < n; ++k) {
            const std::vector<float>& gy = g.grad_y[size_t(o.start_layer) + k];
            const int64_t E = int64_t(gy.size()) / T;  // layers of a hybrid stack differ (RecurrentGemma)
            if (E == 0) continue;
            for (int64_t i = 0; i < T; ++i) {
              double s = 0;
              for (int64_t e = 0; e < E; ++e) s += gy[size_t(i * E + e)];
              gbar[k][size_t(i)] = float(s / double(E));
            }
          }
          ex.relevance = rollout_row(T, pos, n, [&](size_t k, const std::vector<double>& x) {
            return vec_times(x, lm.mean_maps[k], false, &gbar[k], true);
          });
          st["gradient"] = "mean over channels of the gradient w.r.t. the gated mixer output y";
        }
        ex.layer_relevance = lm.rows;
        ex.layer_relevance_what = "channel-mean attention row of the target position, per layer from the start layer";
        if (o.keep_maps) ex.maps = std::move(lm.mean_maps);
      } else {
        // The published code (hidden-attention.md §2.3 and §3.2), with the last token in the class token's role.
        LayerMaps lm = collect_layers(b, o.start_layer, kind, false,
                                      [&](int64_t layer, const LayerAttention& la, LayerMaps& out) {
                                        Tensor rows = la.rows(kind, pos, true);
                                        std::vector<float> a = std::move(rows.data);
                                        const int64_t E = la.channels();
                                        std::vector<float> v(size_t(T), 0.0f);
                                        if (o.method == Method::RawAttention) {
                                          minmax_normalise(a);
                                        } else if (attr) {
                                          for (float& q : a) q = std::max(q, 0.0f);
                                          if (!unified) minmax_normalise(a);
                                        }
                                        for (int64_t e = 0; e < E; ++e)
                                          for (int64_t j = 0; j < T; ++j) v[size_t(j)] += a[size_t(e * T + j)];
                                        for (float& q : v) q /= float(E);
                                        if (attr) {
                                          const std::vector<float> s = grad_score(g.grad_resid[size_t(layer)], T, Dm);
                                          for (int64_t j = 0; j < T; ++j) v[size_t(j)] *= s[size_t(j)];
                                          if (unified) minmax_normalise(v);
                                        }
                                        out.rows.push_back(std::move(v));
                                      });
        if (o.method == Method::RawAttention) {
          ex.relevance.assign(size_t(T), 0.0f);
          for (const auto& r : lm.rows)
            for (int64_t j = 0; j < T; ++j) ex.relevance[size_t(j)] += r[size_t(j)] / float(lm.rows.size());
        } else {
          ex.relevance = broadcast_rollout(lm.rows, T, pos);
        }
        official_finish(ex.relevance, pos);
        ex.layer_relevance = lm.rows;
        ex.layer_relevance_what = "the published code's per-layer row vector, from the start layer";
      }
      break;
    }
  }
  if (!o.zero_biases) {
    f_value = rt.f;
  } else if (!have_f) {  // the target value of the bias-free model needs its own pass
    GradRequest q = base_request(ids, b.embeds, rt, o);
    f_value = b.gradient(q).f + rt.bias;
  }
  ex.target_value = f_value;
  if (ex.has_conservation) {
    ex.relevance_sum = sum(ex.relevance);
    if (o.method != Method::IntegratedGradients) ex.reference_value = f_value;
  }
  ex.seconds = now_s() - t0;
  return ex;
}

std::unique_ptr<Backend> make_mamba_backend(const CausalLM& m, const ClassHead* head,
                                            const std::vector<int32_t>& ids) {
  const auto* mm = dynamic_cast<const MambaModel*>(&m);
  if (!mm) return nullptr;
  return std::make_unique<MambaBackend>(*mm, head, ids);
}

Explanation explain(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids,
                    const ExplainOptions& o) {
  if (ids.empty()) throw Error("input", "no tokens to explain");
  const std::unique_ptr<Backend> b = make_text_backend(m, head, ids);
  return explain_core(*b, o);
}

Explanation explain_image(const VimModel& m, const Tensor& pixels, const ExplainOptions& o) {
  const VimBackend b(m, pixels);
  ExplainOptions oo = o;
  if (oo.target.kind != Target::Kind::Class) {  // an image's target is a class; default: the predicted one
    if (oo.target.token >= 0 || oo.target.kind == Target::Kind::Contrast)
      throw Error("--target", "a Vision Mamba explains a class of its head: use --class C");
    oo.target.kind = Target::Kind::Class;
  }
  return explain_core(b, oo);
}

std::vector<float> patch_map(const VimModel& m, const std::vector<float>& token_relevance) {
  const VimConfig& c = m.config();
  if (int64_t(token_relevance.size()) != c.n_tokens)
    throw Error("patch map", "relevance has " + std::to_string(token_relevance.size()) + " entries, the model " +
                                 std::to_string(c.n_tokens) + " tokens");
  std::vector<float> out;
  out.reserve(size_t(c.n_patches));
  for (int64_t t = 0; t < c.n_tokens; ++t)
    if (t != c.cls_index) out.push_back(token_relevance[size_t(t)]);
  return out;
}

}  // namespace ssmx
