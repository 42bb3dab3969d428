#include "models/mamba2.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/parallel.h"
#include "models/loading.h"
#include "ops/conv1d.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {


void cross_check(const Checkpoint& ck, const nlohmann::json& c, const std::string& where_key, const char* key,
                 int64_t actual, const std::string& from) {
  int64_t v = 0;
  if (config_int(c, key, &v) && v != actual)
    throw Error(ck.config_path, where_key + key + " is " + std::to_string(v) + " but " + from + " gives " +
                                    std::to_string(actual));
}

// time_step_limit / dt_limit: [lo, hi]; a non-number upper bound (null, a string "inf") means no limit.
void read_limit(const Checkpoint& ck, const nlohmann::json& v, const char* key, Mamba2Config& cfg) {
  if (!v.is_array() || v.size() != 2) throw Error(ck.config_path, std::string(key) + " must be a list of two numbers");
  if (v[0].is_number()) cfg.dt_min = v[0].get<float>();
  if (v[1].is_number()) cfg.dt_max = v[1].get<float>();
  if (!(cfg.dt_min <= cfg.dt_max)) throw Error(ck.config_path, std::string(key) + " has its lower bound above its upper bound");
}

}  // namespace

void mamba2_scan(float* ssm, const float* x, int64_t ld_x, const float* delta, const float* A, const float* B,
                 const float* C, int64_t ld_bc, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N) {
  const int64_t hpg = H / G;
  parallel_for(H, [&](int64_t h0, int64_t h1) {
    std::vector<float> S(size_t(N * P)), dx(static_cast<size_t>(P)), acc(static_cast<size_t>(P));  // S: (N, P), p fastest
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t g = h / hpg;
      std::fill(S.begin(), S.end(), 0.0f);
      const float Ah = A[h];
      for (int64_t t = 0; t < T; ++t) {
        const float d = delta[t * H + h];
        const float a = exp_clamped(d * Ah);
        const float* xt = x + t * ld_x + h * P;
        const float* bt = B + t * ld_bc + g * N;
        const float* ct = C + t * ld_bc + g * N;
        for (int64_t p = 0; p < P; ++p) dx[p] = d * xt[p], acc[p] = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          float* s = S.data() + n * P;
          const float b = bt[n], c = ct[n];
          for (int64_t p = 0; p < P; ++p) {
            s[p] = a * s[p] + dx[p] * b;
            acc[p] += c * s[p];
          }
        }
        std::memcpy(ssm + t * H * P + h * P, acc.data(), size_t(P) * 4);
      }
    }
  });
}

std::unique_ptr<Mamba2Model> Mamba2Model::load(const Checkpoint& ck) {
  auto m = std::unique_ptr<Mamba2Model>(new Mamba2Model());
  Mamba2Config& cfg = m->cfg_;
  TensorLoader L{ck, "", {}, &m->keep_alive_};
  std::string embed_name;
  for (const char* pre : {"backbone.", ""})
    for (const char* e : {"embeddings.weight", "embedding.weight"})
      if (embed_name.empty() && ck.find(std::string(pre) + e)) {
        L.prefix = pre;
        embed_name = e;
      }
  if (embed_name.empty())
    throw Error(ck.weights_where(), "missing tensor 'backbone.embeddings.weight' (or the mamba_ssm name 'backbone.embedding.weight')");
  const RawTensor& emb = L.raw(embed_name);
  if (emb.shape.size() != 2) throw Error(emb.source, "tensor '" + L.prefix + embed_name + "' must be 2-D, is " + shape_str(emb.shape));
  cfg.vocab = emb.shape[0];
  cfg.d_model = emb.shape[1];

  std::set<int64_t> idx;
  const std::string lp = L.prefix + "layers.";
  for (const auto& [name, t] : ck.tensors) {
    if (name.rfind(lp, 0) != 0) continue;
    size_t dot = name.find('.', lp.size());
    if (dot == std::string::npos) continue;
    const std::string num = name.substr(lp.size(), dot - lp.size());
    if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    idx.insert(std::stoll(num));
  }
  if (idx.empty()) throw Error(ck.weights_where(), "no layers found (missing tensors '" + lp + "0.mixer.*')");
  cfg.n_layer = int64_t(idx.size());
  if (*idx.rbegin() != cfg.n_layer - 1)
    throw Error(ck.weights_where(), "layer numbers are not contiguous (found " + std::to_string(cfg.n_layer) +
                                        " layers, highest index " + std::to_string(*idx.rbegin()) + ")");

  // The config's group count is needed to split conv_dim = Di + 2·G·N (the tensors alone cannot tell G from N).
  const nlohmann::json& c = ck.config;
  const bool hf = c.contains("model_type");
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& ssm_cfg = (!hf && c.contains("ssm_cfg") && c["ssm_cfg"].is_object()) ? c["ssm_cfg"] : empty;
  const std::string where_key = hf ? "" : "ssm_cfg.";
  int64_t G = 1;
  config_int(hf ? c : ssm_cfg, hf ? "n_groups" : "ngroups", &G);
  if (G < 1) throw Error(ck.config_path, "n_groups must be positive");
  cfg.n_groups = G;
  {
    const RawTensor& a = L.raw("layers.0.mixer.A_log");
    if (a.shape.size() != 1) throw Error(a.source, "tensor '" + L.prefix + "layers.0.mixer.A_log' must be 1-D [H] for Mamba-2, is " + shape_str(a.shape));
    cfg.n_heads = a.shape[0];
    const RawTensor& op = L.raw("layers.0.mixer.out_proj.weight");
    if (op.shape.size() != 2) throw Error(op.source, "tensor '" + L.prefix + "layers.0.mixer.out_proj.weight' must be 2-D, is " + shape_str(op.shape));
    cfg.d_inner = op.shape[1];
    if (cfg.n_heads <= 0 || cfg.d_inner % cfg.n_heads != 0)
      throw Error(op.source, "inner width " + std::to_string(cfg.d_inner) + " is not a multiple of the head count " + std::to_string(cfg.n_heads));
    cfg.head_dim = cfg.d_inner / cfg.n_heads;
    if (cfg.n_heads % G != 0)
      throw Error(ck.config_path, "n_groups " + std::to_string(G) + " does not divide the head count " + std::to_string(cfg.n_heads));
    const RawTensor& cw = L.raw("layers.0.mixer.conv1d.weight");
    if (cw.shape.size() != 3 || cw.shape[1] != 1)
      throw Error(cw.source, "tensor '" + L.prefix + "layers.0.mixer.conv1d.weight' must be [CD, 1, K], is " + shape_str(cw.shape));
    cfg.d_conv = cw.shape[2];
    const int64_t two_gn = cw.shape[0] - cfg.d_inner;
    if (two_gn <= 0 || two_gn % (2 * G) != 0)
      throw Error(cw.source, "conv1d has " + std::to_string(cw.shape[0]) + " channels; with inner width " + std::to_string(cfg.d_inner) +
                                 " and " + std::to_string(G) + " groups that leaves no whole state size");
    cfg.d_state = two_gn / (2 * G);
    const RawTensor& ip = L.raw("layers.0.mixer.in_proj.weight");
    if (ip.shape.size() != 2 || ip.shape[0] != cfg.in_proj_width())
      throw Error(ip.source, "tensor '" + L.prefix + "layers.0.mixer.in_proj.weight' has shape " + shape_str(ip.shape) + " but [" +
                                 std::to_string(cfg.in_proj_width()) + ", " + std::to_string(cfg.d_model) +
                                 "] = [2·Di + 2·G·N + H, Dm] is expected (a gated-MLP part, d_mlp > 0, is not supported)");
    cfg.in_proj_bias = ck.find(L.prefix + "layers.0.mixer.in_proj.bias") != nullptr;
    cfg.out_proj_bias = ck.find(L.prefix + "layers.0.mixer.out_proj.bias") != nullptr;
    cfg.conv_bias = ck.find(L.prefix + "layers.0.mixer.conv1d.bias") != nullptr;
  }

  ModelInfo& info = m->info_;
  if (hf) {
    cross_check(ck, c, "", "hidden_size", cfg.d_model, "the embedding width");
    cross_check(ck, c, "", "num_hidden_layers", cfg.n_layer, "the number of layers in the weights");
    cross_check(ck, c, "", "num_heads", cfg.n_heads, "A_log's length");
    cross_check(ck, c, "", "head_dim", cfg.head_dim, "out_proj's inner width / the head count");
    cross_check(ck, c, "", "state_size", cfg.d_state, "conv1d's channel count");
    cross_check(ck, c, "", "conv_kernel", cfg.d_conv, "conv1d.weight's kernel width");
    cross_check(ck, c, "", "vocab_size", cfg.vocab, "the embedding's row count");
    int64_t expand = 0;
    if (config_int(c, "expand", &expand) && expand * cfg.d_model != cfg.d_inner)
      throw Error(ck.config_path, "expand is " + std::to_string(expand) + " but the inner width " + std::to_string(cfg.d_inner) +
                                      " is not expand × hidden_size " + std::to_string(cfg.d_model));
    if (c.contains("use_bias") && c["use_bias"].is_boolean() && c["use_bias"].get<bool>() != cfg.in_proj_bias)
      throw Error(ck.config_path, std::string("use_bias is ") + (c["use_bias"].get<bool>() ? "true" : "false") +
                                      " but in_proj.bias is " + (cfg.in_proj_bias ? "present" : "absent") + " in the weights");
    if (c.contains("use_conv_bias") && c["use_conv_bias"].is_boolean() && c["use_conv_bias"].get<bool>() != cfg.conv_bias)
      throw Error(ck.config_path, std::string("use_conv_bias is ") + (c["use_conv_bias"].get<bool>() ? "true" : "false") +
                                      " but conv1d.bias is " + (cfg.conv_bias ? "present" : "absent") + " in the weights");
    if (c.contains("rms_norm") && c["rms_norm"].is_boolean() && !c["rms_norm"].get<bool>())
      throw Error(ck.config_path, "rms_norm false (no gated norm) is not supported");
    if (c.contains("layer_norm_epsilon") && c["layer_norm_epsilon"].is_number()) cfg.norm_eps = c["layer_norm_epsilon"].get<float>();
    cfg.tied = false;  // Mamba2Config default
    if (c.contains("tie_word_embeddings") && c["tie_word_embeddings"].is_boolean()) cfg.tied = c["tie_word_embeddings"].get<bool>();
    if (c.contains("time_step_limit")) read_limit(ck, c["time_step_limit"], "time_step_limit", cfg);
    config_int(c, "chunk_size", &cfg.chunk_size);
    cfg.norm_groups = 1;
  } else {
    cross_check(ck, c, "", "d_model", cfg.d_model, "the embedding width");
    cross_check(ck, c, "", "n_layer", cfg.n_layer, "the number of layers in the weights");
    int64_t v = 0, mult = 1;
    config_int(c, "pad_vocab_size_multiple", &mult);
    if (config_int(c, "vocab_size", &v)) {
      const int64_t padded = mult > 1 ? (v + mult - 1) / mult * mult : v;
      if (padded != cfg.vocab)
        throw Error(ck.config_path, "vocab_size " + std::to_string(v) + " padded to a multiple of " + std::to_string(mult) +
                                        " is " + std::to_string(padded) + " but the embedding has " + std::to_string(cfg.vocab) + " rows");
    }
    int64_t d_int = 0;
    if (config_int(c, "d_intermediate", &d_int) && d_int != 0) throw Error(ck.config_path, "d_intermediate > 0 (MLP blocks) is not supported");
    cross_check(ck, ssm_cfg, where_key, "d_state", cfg.d_state, "conv1d's channel count");
    cross_check(ck, ssm_cfg, where_key, "d_conv", cfg.d_conv, "conv1d.weight's kernel width");
    cross_check(ck, ssm_cfg, where_key, "headdim", cfg.head_dim, "out_proj's inner width / the head count");
    int64_t expand = 0;
    if (config_int(ssm_cfg, "expand", &expand) && expand * cfg.d_model != cfg.d_inner)
      throw Error(ck.config_path, "ssm_cfg.expand is " + std::to_string(expand) + " but the inner width is " + std::to_string(cfg.d_inner));
    if (ssm_cfg.contains("dt_limit")) read_limit(ck, ssm_cfg["dt_limit"], "ssm_cfg.dt_limit", cfg);
    config_int(ssm_cfg, "chunk_size", &cfg.chunk_size);
    cfg.tied = true;
    if (c.contains("tie_embeddings") && c["tie_embeddings"].is_boolean()) cfg.tied = c["tie_embeddings"].get<bool>();
    cfg.norm_groups = cfg.n_groups;
    info.notes.push_back("original mamba_ssm config (d_model, n_layer, ssm_cfg.layer Mamba2); norm eps 1e-5; gated norm per group");
  }
  if (cfg.d_inner % cfg.norm_groups != 0) throw Error(ck.config_path, "the gated norm's groups do not divide the inner width");

  const int64_t Dm = cfg.d_model, Di = cfg.d_inner, H = cfg.n_heads, K = cfg.d_conv, V = cfg.vocab, CD = cfg.conv_dim(),
                W = cfg.in_proj_width();
  m->embed_ = make_param(emb);
  m->layers_.resize(size_t(cfg.n_layer));
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Mamba2Layer& ly = m->layers_[size_t(i)];
    ly.norm = L.get(p + "norm.weight", {Dm});
    ly.in_proj_w = L.get(p + "mixer.in_proj.weight", {W, Dm});
    ly.in_proj_b = L.get_opt(p + "mixer.in_proj.bias", {W});
    ly.conv_w = L.get(p + "mixer.conv1d.weight", {CD, 1, K});
    ly.conv_b = L.get_opt(p + "mixer.conv1d.bias", {CD});
    ly.dt_bias = L.get(p + "mixer.dt_bias", {H});
    Param a_log = L.get(p + "mixer.A_log", {H});
    ly.A.shape = a_log.shape;
    ly.A.own.resize(static_cast<size_t>(H));
    for (int64_t k = 0; k < H; ++k) ly.A.own[size_t(k)] = -std::exp(a_log.p[k]);
    ly.A.p = ly.A.own.data();
    {
      const RawTensor& d = L.raw(p + "mixer.D");
      if (d.shape == std::vector<int64_t>{Di})
        throw Error(d.source, "tensor '" + L.prefix + p + "mixer.D' has one value per channel (D_has_hdim); only one per head is supported");
      L.expect_shape(p + "mixer.D", d, {H});
      ly.D = make_param(d);
    }
    ly.gnorm = L.get(p + "mixer.norm.weight", {Di});
    ly.out_proj_w = L.get(p + "mixer.out_proj.weight", {Dm, Di});
    ly.out_proj_b = L.get_opt(p + "mixer.out_proj.bias", {Dm});
    if (bool(ly.in_proj_b) != cfg.in_proj_bias || bool(ly.out_proj_b) != cfg.out_proj_bias || bool(ly.conv_b) != cfg.conv_bias)
      throw Error(ck.weights_where(), "layer " + std::to_string(i) + " has a different set of bias tensors than layer 0");
  }
  m->norm_f_ = L.get("norm_f.weight", {Dm});

  const RawTensor* head = ck.find("lm_head.weight");
  if (head) {
    L.used.insert("lm_head.weight");
    if (head->shape != std::vector<int64_t>{V, Dm})
      throw Error(head->source, "tensor 'lm_head.weight' has shape " + shape_str(head->shape) + " but " + shape_str({V, Dm}) +
                                    " is expected from the embedding");
    if (head->storage == emb.storage && head->offset == emb.offset && head->dtype == emb.dtype && head->strides == emb.strides) {
      m->head_.p = m->embed_.p;
      m->head_.shape = m->embed_.shape;
      cfg.tied = true;
    } else {
      m->head_ = make_param(*head);
      cfg.tied = false;
    }
  } else {
    if (!cfg.tied)
      throw Error(ck.weights_where(), "missing tensor 'lm_head.weight' (config.json says the head is not tied to the embedding)");
    m->head_.p = m->embed_.p;
    m->head_.shape = m->embed_.shape;
  }
  for (const auto& [name, t] : ck.tensors)
    if (!L.used.count(name)) info.notes.push_back("unused tensor '" + name + "'");

  info.family = "mamba2";
  info.architecture = "Mamba2ForCausalLM";
  info.dims = {{"layers", cfg.n_layer}, {"d_model", Dm},          {"d_inner", Di}, {"heads", H},
               {"head_dim", cfg.head_dim}, {"groups", cfg.n_groups}, {"d_state", cfg.d_state}, {"d_conv", K},
               {"chunk_size", cfg.chunk_size}, {"vocab", V}};
  info.tied_head = cfg.tied;
  const int64_t per_layer = Dm + W * Dm + (cfg.in_proj_bias ? W : 0) + CD * K + (cfg.conv_bias ? CD : 0) + 3 * H + Di +
                            Dm * Di + (cfg.out_proj_bias ? Dm : 0);
  info.n_params = V * Dm + Dm + per_layer * cfg.n_layer + (cfg.tied ? 0 : V * Dm);
  if (cfg.dt_min > 0.0f || std::isfinite(cfg.dt_max))
    info.notes.push_back("dt clamped to [" + std::to_string(cfg.dt_min) + ", " + std::to_string(cfg.dt_max) + "]");
  return m;
}

ForwardResult Mamba2Model::forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const {
  return forward_impl(&ids, nullptr, opt);
}

ForwardResult Mamba2Model::forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const {
  if (embeds.shape.size() != 2 || embeds.shape[1] != cfg_.d_model)
    throw Error("input", "embeddings of shape " + shape_str(embeds.shape) + ", expected (T, " +
                             std::to_string(cfg_.d_model) + ")");
  return forward_impl(nullptr, &embeds, opt);
}

Tensor Mamba2Model::embed(const std::vector<int32_t>& ids) const {
  return embedding_rows(embed_, cfg_.vocab, cfg_.d_model, ids);
}

ForwardResult Mamba2Model::forward_impl(const std::vector<int32_t>* ids_p, const Tensor* embeds,
                                        const ForwardOptions& opt) const {
  static const std::vector<int32_t> no_ids;
  const std::vector<int32_t>& ids = ids_p ? *ids_p : no_ids;
  const Mamba2Config& cfg = cfg_;
  const int64_t T = embeds ? embeds->shape[0] : int64_t(ids.size()), Dm = cfg.d_model, Di = cfg.d_inner, H = cfg.n_heads, P = cfg.head_dim,
                G = cfg.n_groups, N = cfg.d_state, K = cfg.d_conv, V = cfg.vocab, CD = cfg.conv_dim(),
                W = cfg.in_proj_width(), NG = cfg.norm_groups;
  if (T == 0) throw Error("input", "no tokens to run");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw Error("input", "token id " + std::to_string(id) + " is out of range for a vocabulary of " + std::to_string(V));

  ForwardResult res;
  const bool capture = opt.keep_activations || bool(opt.layer_hook);
  std::map<std::string, Tensor> layer_acts;
  auto keep = [&](const std::string& name, std::vector<int64_t> shape, const float* src, int64_t ld) {
    if (!capture) return;
    Tensor t(shape);
    const int64_t rows = shape[0], cols = shape[1];
    for (int64_t r = 0; r < rows; ++r) std::memcpy(t.ptr() + r * cols, src + r * ld, size_t(cols) * 4);
    layer_acts[name] = std::move(t);
  };
  auto flush = [&](int64_t layer) {
    if (!capture) return;
    if (opt.layer_hook && layer >= 0) opt.layer_hook(layer, layer_acts);
    if (opt.keep_activations) res.acts.merge(layer_acts);
    layer_acts.clear();
  };
  auto pmap = [&](int64_t n, auto&& f) { parallel_for(n, f, 4096); };

  std::vector<float> h(size_t(T * Dm)), normed(size_t(T * Dm)), mix(size_t(T * Dm));
  std::vector<float> zx(size_t(T * W)), conv(size_t(T * CD)), xa(size_t(T * CD)), delta(size_t(T * H)),
      ssm(size_t(T * Di)), y(size_t(T * Di)), gated(size_t(T * Di));
  if (embeds) std::memcpy(h.data(), embeds->ptr(), size_t(T * Dm) * 4);
  else
    for (int64_t t = 0; t < T; ++t) std::memcpy(h.data() + t * Dm, embed_.p + int64_t(ids[size_t(t)]) * Dm, size_t(Dm) * 4);

  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const Mamba2Layer& ly = layers_[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    keep(p + "residual_in", {T, Dm}, h.data(), Dm);
    rmsnorm_forward(normed.data(), nullptr, h.data(), ly.norm.p, T, Dm, cfg.norm_eps);
    // [z | xBC | dt] = normed · W_inᵀ + b     (T, W)
    linear_forward(zx.data(), normed.data(), ly.in_proj_w.p, ly.in_proj_b.p, T, Dm, W);
    // conv over xBC, then SiLU                (T, CD)
    conv1d_causal_forward(conv.data(), zx.data() + Di, ly.conv_w.p, ly.conv_b.p, T, CD, K, W);
    pmap(T * CD, [&](int64_t b, int64_t e) { silu_array(xa.data() + b, conv.data() + b, e - b); });
    // δ = clamp(softplus(dt + dt_bias))       (T, H)
    const float* dt = zx.data() + 2 * Di + 2 * G * N;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < H; ++k) delta[size_t(t * H + k)] = dt[t * W + k] + ly.dt_bias.p[k];
    softplus_array(delta.data(), delta.data(), T * H);
    if (cfg.dt_min > 0.0f || std::isfinite(cfg.dt_max))
      for (float& d : delta) d = std::min(std::max(d, cfg.dt_min), cfg.dt_max);
    // scan                                    (T, Di)
    mamba2_scan(ssm.data(), xa.data(), CD, delta.data(), ly.A.p, xa.data() + Di, xa.data() + Di + G * N, CD, T, H, P, G, N);
    // y = ssm + D·x;  g = y·silu(z)
    pmap(T, [&](int64_t b, int64_t e) {
      std::vector<float> sz(static_cast<size_t>(Di));
      for (int64_t t = b; t < e; ++t) {
        const float* xt = xa.data() + t * CD;
        float* yt = y.data() + t * Di;
        const float* st = ssm.data() + t * Di;
        for (int64_t k = 0; k < H; ++k)
          for (int64_t q = 0; q < P; ++q) yt[k * P + q] = st[k * P + q] + ly.D.p[k] * xt[k * P + q];
        silu_array(sz.data(), zx.data() + t * W, Di);
        float* gt = gated.data() + t * Di;
        for (int64_t k = 0; k < Di; ++k) gt[k] = yt[k] * sz[size_t(k)];
      }
    });
    // gated RMSNorm over NG groups of Di/NG channels: rows of (T·NG, Di/NG), then the weight
    rmsnorm_forward(gated.data(), nullptr, gated.data(), nullptr, T * NG, Di / NG, cfg.norm_eps);
    pmap(T * Di, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) gated[size_t(k)] *= ly.gnorm.p[k % Di];
    });
    linear_forward(mix.data(), gated.data(), ly.out_proj_w.p, ly.out_proj_b.p, T, Di, Dm);
    pmap(T * Dm, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) h[size_t(k)] += mix[size_t(k)];
    });
    if (capture) {
      keep(p + "normed", {T, Dm}, normed.data(), Dm);
      keep(p + "z", {T, Di}, zx.data(), W);
      keep(p + "xbc", {T, CD}, zx.data() + Di, W);
      keep(p + "dt", {T, H}, dt, W);
      keep(p + "conv", {T, CD}, conv.data(), CD);
      keep(p + "x", {T, Di}, xa.data(), CD);
      keep(p + "B", {T, G * N}, xa.data() + Di, CD);
      keep(p + "C", {T, G * N}, xa.data() + Di + G * N, CD);
      keep(p + "delta", {T, H}, delta.data(), H);
      keep(p + "ssm", {T, Di}, ssm.data(), Di);
      keep(p + "y", {T, Di}, y.data(), Di);
      keep(p + "gated", {T, Di}, gated.data(), Di);
      keep(p + "mixer_out", {T, Dm}, mix.data(), Dm);
    }
    flush(i);
  }
  rmsnorm_forward(normed.data(), nullptr, h.data(), norm_f_.p, T, Dm, cfg.norm_eps);
  if (capture) {
    keep("norm_f", {T, Dm}, normed.data(), Dm);
  } else if (opt.keep_final_hidden) {
    res.acts["norm_f"] = Tensor({T, Dm}, std::vector<float>(normed.begin(), normed.end()));
  }
  flush(-1);
  if (opt.all_logits) {
    res.logits = Tensor({T, V});
    linear_forward(res.logits.ptr(), normed.data(), head_.p, nullptr, T, Dm, V);
  } else {
    res.logits = Tensor({1, V});
    linear_forward(res.logits.ptr(), normed.data() + (T - 1) * Dm, head_.p, nullptr, 1, Dm, V);
  }
  return res;
}

}  // namespace ssmx
