#include "models/mamba.h"

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
#include "ops/selective_scan.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {


void cross_check(const Checkpoint& ck, const nlohmann::json& c, const char* key, int64_t actual, const std::string& from) {
  int64_t v = 0;
  if (config_int(c, key, &v) && v != actual)
    throw Error(ck.config_path, std::string(key) + " is " + std::to_string(v) + " but " + from + " gives " +
                                    std::to_string(actual));
}

}  // namespace

std::unique_ptr<MambaModel> MambaModel::load(const Checkpoint& ck, bool falcon) {
  auto m = std::unique_ptr<MambaModel>(new MambaModel());
  MambaConfig& cfg = m->cfg_;
  cfg.falcon = falcon;
  TensorLoader L{ck, "", {}, &m->keep_alive_};

  // Prefix and embedding name: HF "backbone.embeddings.weight", mamba_ssm "backbone.embedding.weight".
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

  // Layer count from the tensors: layers.{i}.mixer.A_log for i = 0..L-1.
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

  // Inner dims from layer 0's shapes.
  {
    const RawTensor& a = L.raw("layers.0.mixer.A_log");
    if (a.shape.size() != 2) throw Error(a.source, "tensor '" + L.prefix + "layers.0.mixer.A_log' must be 2-D [E, N], is " + shape_str(a.shape));
    cfg.d_inner = a.shape[0];
    cfg.d_state = a.shape[1];
    const RawTensor& cw = L.raw("layers.0.mixer.conv1d.weight");
    if (cw.shape.size() != 3 || cw.shape[1] != 1)
      throw Error(cw.source, "tensor '" + L.prefix + "layers.0.mixer.conv1d.weight' must be [E, 1, K], is " + shape_str(cw.shape));
    cfg.d_conv = cw.shape[2];
    const RawTensor& dw = L.raw("layers.0.mixer.dt_proj.weight");
    if (dw.shape.size() != 2) throw Error(dw.source, "tensor '" + L.prefix + "layers.0.mixer.dt_proj.weight' must be 2-D [E, R], is " + shape_str(dw.shape));
    cfg.dt_rank = dw.shape[1];
    cfg.in_proj_bias = ck.find(L.prefix + "layers.0.mixer.in_proj.bias") != nullptr;
    cfg.out_proj_bias = ck.find(L.prefix + "layers.0.mixer.out_proj.bias") != nullptr;
    cfg.conv_bias = ck.find(L.prefix + "layers.0.mixer.conv1d.bias") != nullptr;
  }

  // Cross-check config.json (HF keys; or the original mamba_ssm keys when there is no model_type).
  const nlohmann::json& c = ck.config;
  ModelInfo& info = m->info_;
  if (c.contains("model_type")) {
    cross_check(ck, c, "hidden_size", cfg.d_model, "the embedding width");
    cross_check(ck, c, "num_hidden_layers", cfg.n_layer, "the number of layers in the weights");
    cross_check(ck, c, "intermediate_size", cfg.d_inner, "A_log's first dimension");
    cross_check(ck, c, "state_size", cfg.d_state, "A_log's second dimension");
    cross_check(ck, c, "time_step_rank", cfg.dt_rank, "dt_proj.weight's second dimension");
    cross_check(ck, c, "conv_kernel", cfg.d_conv, "conv1d.weight's kernel width");
    cross_check(ck, c, "vocab_size", cfg.vocab, "the embedding's row count");
    if (c.contains("use_bias") && c["use_bias"].is_boolean() && c["use_bias"].get<bool>() != cfg.in_proj_bias)
      throw Error(ck.config_path, std::string("use_bias is ") + (c["use_bias"].get<bool>() ? "true" : "false") +
                                      " but in_proj.bias is " + (cfg.in_proj_bias ? "present" : "absent") + " in the weights");
    if (c.contains("use_conv_bias") && c["use_conv_bias"].is_boolean() && c["use_conv_bias"].get<bool>() != cfg.conv_bias)
      throw Error(ck.config_path, std::string("use_conv_bias is ") + (c["use_conv_bias"].get<bool>() ? "true" : "false") +
                                      " but conv1d.bias is " + (cfg.conv_bias ? "present" : "absent") + " in the weights");
    if (c.contains("layer_norm_epsilon") && c["layer_norm_epsilon"].is_number()) cfg.norm_eps = c["layer_norm_epsilon"].get<float>();
    if (c.contains("mixer_rms_eps") && c["mixer_rms_eps"].is_number()) cfg.mixer_rms_eps = c["mixer_rms_eps"].get<float>();
    if (c.contains("tie_word_embeddings") && c["tie_word_embeddings"].is_boolean()) cfg.tied = c["tie_word_embeddings"].get<bool>();
    int64_t expand = 0;
    if (falcon && config_int(c, "expand", &expand) && expand * cfg.d_model != cfg.d_inner)
      info.notes.push_back("config expand=" + std::to_string(expand) + " ignored; inner width " +
                           std::to_string(cfg.d_inner) + " taken from the tensors (as transformers does for Falcon-Mamba)");
  } else if (c.contains("d_model")) {
    cross_check(ck, c, "d_model", cfg.d_model, "the embedding width");
    cross_check(ck, c, "n_layer", cfg.n_layer, "the number of layers in the weights");
    int64_t v = 0, mult = 1;
    config_int(c, "pad_vocab_size_multiple", &mult);
    if (config_int(c, "vocab_size", &v)) {
      int64_t padded = mult > 1 ? (v + mult - 1) / mult * mult : v;
      if (padded != cfg.vocab)
        throw Error(ck.config_path, "vocab_size " + std::to_string(v) + " padded to a multiple of " + std::to_string(mult) +
                                        " is " + std::to_string(padded) + " but the embedding has " + std::to_string(cfg.vocab) + " rows");
    }
    if (c.contains("ssm_cfg") && c["ssm_cfg"].is_object()) {
      const auto& s = c["ssm_cfg"];
      cross_check(ck, s, "d_state", cfg.d_state, "A_log's second dimension");
      cross_check(ck, s, "d_conv", cfg.d_conv, "conv1d.weight's kernel width");
      cross_check(ck, s, "dt_rank", cfg.dt_rank, "dt_proj.weight's second dimension");
    }
    if (c.contains("tie_embeddings") && c["tie_embeddings"].is_boolean()) cfg.tied = c["tie_embeddings"].get<bool>();
    info.notes.push_back("original mamba_ssm config (d_model, n_layer); norm eps 1e-5");
  }

  // Weights.
  const int64_t Dm = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv, R = cfg.dt_rank, V = cfg.vocab;
  m->embed_ = make_param(emb);
  m->layers_.resize(size_t(cfg.n_layer));
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    MambaLayer& ly = m->layers_[size_t(i)];
    ly.norm = L.get(p + "norm.weight", {Dm});
    ly.in_proj_w = L.get(p + "mixer.in_proj.weight", {2 * E, Dm});
    ly.in_proj_b = L.get_opt(p + "mixer.in_proj.bias", {2 * E});
    ly.conv_w = L.get(p + "mixer.conv1d.weight", {E, 1, K});
    ly.conv_b = L.get_opt(p + "mixer.conv1d.bias", {E});
    ly.x_proj_w = L.get(p + "mixer.x_proj.weight", {R + 2 * N, E});
    ly.dt_proj_w = L.get(p + "mixer.dt_proj.weight", {E, R});
    ly.dt_proj_b = L.get(p + "mixer.dt_proj.bias", {E});
    Param a_log = L.get(p + "mixer.A_log", {E, N});
    ly.A.shape = a_log.shape;
    ly.A.own.resize(size_t(E * N));
    for (int64_t k = 0; k < E * N; ++k) ly.A.own[k] = -std::exp(a_log.p[k]);
    ly.A.p = ly.A.own.data();
    ly.D = L.get(p + "mixer.D", {E});
    ly.out_proj_w = L.get(p + "mixer.out_proj.weight", {Dm, E});
    ly.out_proj_b = L.get_opt(p + "mixer.out_proj.bias", {Dm});
    if (bool(ly.in_proj_b) != cfg.in_proj_bias || bool(ly.out_proj_b) != cfg.out_proj_bias || bool(ly.conv_b) != cfg.conv_bias)
      throw Error(ck.weights_where(), "layer " + std::to_string(i) + " has a different set of bias tensors than layer 0");
  }
  m->norm_f_ = L.get("norm_f.weight", {Dm});

  // Head: lm_head.weight when stored (used even if the config says tied), else the tied embedding.
  const RawTensor* head = ck.find("lm_head.weight");
  if (head) {
    L.used.insert("lm_head.weight");
    if (head->shape != std::vector<int64_t>{V, Dm})
      throw Error(head->source, "tensor 'lm_head.weight' has shape " + shape_str(head->shape) + " but " +
                                    shape_str({V, Dm}) + " is expected from the embedding");
    if (head->storage == emb.storage && head->offset == emb.offset && head->dtype == emb.dtype && head->strides == emb.strides) {
      m->head_.p = m->embed_.p;  // the same storage (tied in a torch .bin): share it
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

  // Info.
  info.family = falcon ? "falcon_mamba" : "mamba";
  info.architecture = falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM";
  info.dims = {{"layers", cfg.n_layer}, {"d_model", Dm}, {"d_inner", E},  {"d_state", N},
               {"d_conv", K},           {"dt_rank", R},  {"vocab", V}};
  info.tied_head = cfg.tied;
  int64_t np = V * Dm + Dm;
  const int64_t per_layer = Dm + 2 * E * Dm + (cfg.in_proj_bias ? 2 * E : 0) + E * K + (cfg.conv_bias ? E : 0) +
                            (R + 2 * N) * E + E * R + E + E * N + E + Dm * E + (cfg.out_proj_bias ? Dm : 0);
  np += per_layer * cfg.n_layer;
  if (!cfg.tied) np += V * Dm;
  info.n_params = np;
  return m;
}

ForwardResult MambaModel::forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const {
  return forward_impl(&ids, nullptr, opt);
}

ForwardResult MambaModel::forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const {
  if (embeds.shape.size() != 2 || embeds.shape[1] != cfg_.d_model)
    throw Error("input", "embeddings of shape " + shape_str(embeds.shape) + ", expected (T, " +
                             std::to_string(cfg_.d_model) + ")");
  return forward_impl(nullptr, &embeds, opt);
}

Tensor MambaModel::embed(const std::vector<int32_t>& ids) const {
  return embedding_rows(embed_, cfg_.vocab, cfg_.d_model, ids);
}

ForwardResult MambaModel::forward_impl(const std::vector<int32_t>* ids_p, const Tensor* embeds,
                                       const ForwardOptions& opt) const {
  static const std::vector<int32_t> no_ids;
  const std::vector<int32_t>& ids = ids_p ? *ids_p : no_ids;
  const MambaConfig& cfg = cfg_;
  const int64_t T = embeds ? embeds->shape[0] : int64_t(ids.size()), Dm = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv,
                R = cfg.dt_rank, V = cfg.vocab, XW = R + 2 * N;
  if (T == 0) throw Error("input", "no tokens to run");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw Error("input", "token id " + std::to_string(id) + " is out of range for a vocabulary of " + std::to_string(V));

  ForwardResult res;
  const bool capture = opt.keep_activations || bool(opt.layer_hook);
  std::map<std::string, Tensor> layer_acts;  // this layer's activations, when captured
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

  // (T, Dm) residual stream, f32.
  std::vector<float> h(size_t(T * Dm)), normed(size_t(T * Dm)), mix(size_t(T * Dm));
  std::vector<float> xz(size_t(T * 2 * E)), conv(size_t(T * E)), u(size_t(T * E)), delta(size_t(T * E)),
      y(size_t(T * E)), xdbl(size_t(T * XW));
  std::vector<float> ssm(capture ? size_t(T * E) : 0);
  if (embeds)
    std::memcpy(h.data(), embeds->ptr(), size_t(T * Dm) * 4);
  else
    for (int64_t t = 0; t < T; ++t) std::memcpy(h.data() + t * Dm, embed_.p + int64_t(ids[t]) * Dm, size_t(Dm) * 4);

  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const MambaLayer& ly = layers_[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    keep(p + "residual_in", {T, Dm}, h.data(), Dm);
    rmsnorm_forward(normed.data(), nullptr, h.data(), ly.norm.p, T, Dm, cfg.norm_eps);
    // [x | z] = normed · W_inᵀ + b          (T, 2E)
    linear_forward(xz.data(), normed.data(), ly.in_proj_w.p, ly.in_proj_b.p, T, Dm, 2 * E);
    // conv = conv1d(x), u = silu(conv)       (T, E)
    conv1d_causal_forward(conv.data(), xz.data(), ly.conv_w.p, ly.conv_b.p, T, E, K, 2 * E);
    pmap(T * E, [&](int64_t b, int64_t e) { silu_array(u.data() + b, conv.data() + b, e - b); });
    // [dt_low | B | C] = u · W_xᵀ            (T, R + 2N)
    linear_forward(xdbl.data(), u.data(), ly.x_proj_w.p, nullptr, T, E, XW);
    if (cfg.falcon) {  // weightless RMS norms on dt_low, B and C
      rmsnorm_forward(xdbl.data(), nullptr, xdbl.data(), nullptr, T, R, cfg.mixer_rms_eps, XW, XW);
      rmsnorm_forward(xdbl.data() + R, nullptr, xdbl.data() + R, nullptr, T, N, cfg.mixer_rms_eps, XW, XW);
      rmsnorm_forward(xdbl.data() + R + N, nullptr, xdbl.data() + R + N, nullptr, T, N, cfg.mixer_rms_eps, XW, XW);
    }
    // Δ = softplus(dt_low · W_dtᵀ + b_dt)    (T, E)
    linear_forward(delta.data(), xdbl.data(), ly.dt_proj_w.p, ly.dt_proj_b.p, T, R, E, XW, E);
    pmap(T * E, [&](int64_t b, int64_t e) { softplus_array(delta.data() + b, delta.data() + b, e - b); });
    // selective scan, D skip, gate          (T, E)
    ScanArgs sa;
    sa.T = T, sa.E = E, sa.N = N;
    sa.u = u.data(), sa.delta = delta.data(), sa.A = ly.A.p;
    sa.B = xdbl.data() + R, sa.C = xdbl.data() + R + N, sa.ld_bc = XW;
    sa.D = ly.D.p, sa.z = xz.data() + E, sa.ld_z = 2 * E;
    selective_scan_forward(capture ? ssm.data() : nullptr, y.data(), nullptr, sa);
    // mixer_out = y · W_outᵀ + b; h += mixer_out
    linear_forward(mix.data(), y.data(), ly.out_proj_w.p, ly.out_proj_b.p, T, E, Dm);
    pmap(T * Dm, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) h[k] += mix[k];
    });
    if (capture) {
      keep(p + "normed", {T, Dm}, normed.data(), Dm);
      keep(p + "x", {T, E}, xz.data(), 2 * E);
      keep(p + "z", {T, E}, xz.data() + E, 2 * E);
      keep(p + "conv", {T, E}, conv.data(), E);
      keep(p + "u", {T, E}, u.data(), E);
      keep(p + "dt_low", {T, R}, xdbl.data(), XW);
      keep(p + "delta", {T, E}, delta.data(), E);
      keep(p + "B", {T, N}, xdbl.data() + R, XW);
      keep(p + "C", {T, N}, xdbl.data() + R + N, XW);
      keep(p + "ssm", {T, E}, ssm.data(), E);
      keep(p + "y", {T, E}, y.data(), E);
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
