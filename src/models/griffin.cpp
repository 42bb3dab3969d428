#include "models/griffin.h"
#include "models/loading.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/parallel.h"
#include "ops/conv1d.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

// Gemma RMSNorm weights are stored as w with the norm applying 1 + w.
std::vector<float> gemma_norm(TensorLoader& L, const std::string& name, int64_t n) {
  Param p = L.get(name, {n});
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) v[static_cast<size_t>(k)] = 1.0f + p.p[k];
  return v;
}


void cross_check(const Checkpoint& ck, const char* key, int64_t actual, const std::string& from) {
  int64_t v = 0;
  if (config_int(ck.config, key, &v) && v != actual)
    throw Error(ck.config_path, std::string(key) + " is " + std::to_string(v) + " but " + from + " gives " +
                                    std::to_string(actual));
}

// Round to the nearest bfloat16 (ties to even), as torch.tensor(x, dtype=torch.bfloat16).
float round_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xffff0000u);
}

inline float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

void gelu_array(float* p, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) p[k] = gelu_tanh(p[k]);
  }, 4096);
}

// out[t, h·bw + j] = σ(Σ_i x[t, h·bw + i]·w[h, i, j] + b[h, j])
void block_diag_gate(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t W, int64_t H) {
  const int64_t bw = W / H;
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x + t * W;
      float* o = out + t * W;
      for (int64_t h = 0; h < H; ++h) {
        float* oh = o + h * bw;
        std::memcpy(oh, b + h * bw, size_t(bw) * 4);
        for (int64_t i = 0; i < bw; ++i) {
          const float xi = xr[h * bw + i];
          const float* wr = w + (h * bw + i) * bw;
          for (int64_t j = 0; j < bw; ++j) oh[j] += xi * wr[j];
        }
      }
      for (int64_t k = 0; k < W; ++k) o[k] = sigmoid_f(o[k]);
    }
  }, 8);
}

}  // namespace

void rglru_scan(float* out, const float* a, const float* xn, int64_t T, int64_t W) {
  constexpr int64_t kBlock = 64;  // channels per task: fixed, so results never depend on the thread count
  const int64_t nb = (W + kBlock - 1) / kBlock;
  parallel_for(nb, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kBlock, c1 = std::min(W, c0 + kBlock), n = c1 - c0;
      float h[kBlock] = {};
      for (int64_t t = 0; t < T; ++t) {
        const float* ar = a + t * W + c0;
        const float* xr = xn + t * W + c0;
        float* o = out + t * W + c0;
        for (int64_t k = 0; k < n; ++k) {
          h[k] = ar[k] * h[k] + xr[k];
          o[k] = h[k];
        }
      }
    }
  });
}

std::unique_ptr<GriffinModel> GriffinModel::load(const Checkpoint& ck) {
  auto m = std::unique_ptr<GriffinModel>(new GriffinModel());
  GriffinConfig& cfg = m->cfg_;
  TensorLoader L{ck, "", {}, &m->keep_alive_};
  const nlohmann::json& c = ck.config;
  const RawTensor* emb = L.maybe("model.embed_tokens.weight");
  if (!emb) throw Error(ck.weights_where(), "missing tensor 'model.embed_tokens.weight'");
  if (emb->shape.size() != 2) throw Error(emb->source, "tensor 'model.embed_tokens.weight' must be 2-D, is " + shape_str(emb->shape));
  cfg.vocab = emb->shape[0];
  cfg.d_model = emb->shape[1];

  // Layers and their types from the tensors.
  std::set<int64_t> idx;
  const std::string lp = "model.layers.";
  for (const auto& [name, t] : ck.tensors) {
    if (name.rfind(lp, 0) != 0) continue;
    const size_t dot = name.find('.', lp.size());
    if (dot == std::string::npos) continue;
    const std::string num = name.substr(lp.size(), dot - lp.size());
    if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    idx.insert(std::stoll(num));
  }
  if (idx.empty()) throw Error(ck.weights_where(), "no layers found (missing tensors 'model.layers.0.*')");
  cfg.n_layer = int64_t(idx.size());
  if (*idx.rbegin() != cfg.n_layer - 1)
    throw Error(ck.weights_where(), "layer numbers are not contiguous (highest index " + std::to_string(*idx.rbegin()) + ")");
  std::vector<std::string> pattern = {"recurrent", "recurrent", "attention"};
  if (c.contains("block_types") && c["block_types"].is_array() && !c["block_types"].empty()) {
    pattern.clear();
    for (const auto& b : c["block_types"]) {
      if (!b.is_string() || (b != "recurrent" && b != "attention"))
        throw Error(ck.config_path, "block_types entries must be \"recurrent\" or \"attention\", got " + b.dump());
      pattern.push_back(b.get<std::string>());
    }
  }
  int64_t first_rec = -1, first_att = -1;
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const std::string p = lp + std::to_string(i) + ".temporal_block.";
    const bool rec = ck.find(p + "rg_lru.recurrent_param") != nullptr;
    const bool att = ck.find(p + "q_proj.weight") != nullptr;
    if (rec == att)
      throw Error(ck.weights_where(), "layer " + std::to_string(i) + " has " + (rec ? "both" : "neither") +
                                          " an RG-LRU (rg_lru.recurrent_param) and " + (rec ? "" : "nor ") + "attention (q_proj.weight)");
    const bool want_rec = pattern[size_t(i) % pattern.size()] == "recurrent";
    if (want_rec != rec)
      throw Error(ck.config_path.empty() ? ck.weights_where() : ck.config_path,
                  "block_types make layer " + std::to_string(i) + " " + (want_rec ? "recurrent" : "attention") +
                      " but its tensors are " + (rec ? "recurrent" : "attention"));
    cfg.recurrent.push_back(rec);
    if (rec && first_rec < 0) first_rec = i;
    if (att && first_att < 0) first_att = i;
  }

  // Dims from shapes.
  const int64_t Dm = cfg.d_model;
  int64_t cfg_heads = 0;
  config_int(c, "num_attention_heads", &cfg_heads);
  if (first_rec >= 0) {
    const std::string p = lp + std::to_string(first_rec) + ".temporal_block.";
    const RawTensor& lx = ck.require(p + "linear_x.weight");
    if (lx.shape.size() != 2) throw Error(lx.source, "tensor '" + p + "linear_x.weight' must be 2-D, is " + shape_str(lx.shape));
    cfg.lru_width = lx.shape[0];
    const RawTensor& gw = ck.require(p + "rg_lru.input_gate_weight");
    if (gw.shape.size() != 3 || gw.shape[1] != gw.shape[2] || gw.shape[0] * gw.shape[1] != cfg.lru_width)
      throw Error(gw.source, "tensor '" + p + "rg_lru.input_gate_weight' must be [heads, W/heads, W/heads] with W = " +
                                 std::to_string(cfg.lru_width) + ", is " + shape_str(gw.shape));
    cfg.heads = gw.shape[0];
    const RawTensor& cw = ck.require(p + "conv_1d.weight");
    if (cw.shape.size() != 3 || cw.shape[1] != 1) throw Error(cw.source, "tensor '" + p + "conv_1d.weight' must be [W, 1, K], is " + shape_str(cw.shape));
    cfg.conv_width = cw.shape[2];
  } else {
    if (cfg_heads <= 0) throw Error(ck.config_path, "num_attention_heads is missing (needed: no recurrent layer)");
    cfg.heads = cfg_heads;
  }
  if (first_att >= 0) {
    const std::string p = lp + std::to_string(first_att) + ".temporal_block.";
    const RawTensor& q = ck.require(p + "q_proj.weight");
    const RawTensor& k = ck.require(p + "k_proj.weight");
    if (q.shape.size() != 2 || q.shape[0] % cfg.heads != 0)
      throw Error(q.source, "tensor '" + p + "q_proj.weight' has shape " + shape_str(q.shape) + ", not [heads·head_dim, Dm] with " +
                                std::to_string(cfg.heads) + " heads");
    cfg.head_dim = q.shape[0] / cfg.heads;
    if (k.shape.size() != 2 || k.shape[0] % cfg.head_dim != 0)
      throw Error(k.source, "tensor '" + p + "k_proj.weight' has shape " + shape_str(k.shape) + ", not [kv_heads·head_dim, Dm]");
    cfg.kv_heads = k.shape[0] / cfg.head_dim;
    if (cfg.heads % cfg.kv_heads != 0)
      throw Error(k.source, std::to_string(cfg.heads) + " query heads cannot share " + std::to_string(cfg.kv_heads) + " key/value heads");
  }
  {
    const RawTensor& g = ck.require(lp + "0.mlp_block.gate_proj.weight");
    if (g.shape.size() != 2) throw Error(g.source, "tensor 'model.layers.0.mlp_block.gate_proj.weight' must be 2-D");
    cfg.mlp_width = g.shape[0];
  }

  // Cross-check config.json.
  ModelInfo& info = m->info_;
  cross_check(ck, "hidden_size", Dm, "the embedding width");
  cross_check(ck, "vocab_size", cfg.vocab, "the embedding's row count");
  cross_check(ck, "num_hidden_layers", cfg.n_layer, "the number of layers in the weights");
  cross_check(ck, "num_attention_heads", cfg.heads, first_rec >= 0 ? "rg_lru.input_gate_weight's first dimension" : "config");
  if (first_rec >= 0) {
    cross_check(ck, "lru_width", cfg.lru_width, "linear_x.weight's first dimension");
    cross_check(ck, "conv1d_width", cfg.conv_width, "conv_1d.weight's kernel width");
  }
  if (first_att >= 0) {
    cross_check(ck, "head_dim", cfg.head_dim, "q_proj.weight's rows / heads");
    cross_check(ck, "num_key_value_heads", cfg.kv_heads, "k_proj.weight's rows / head_dim");
  }
  int64_t inter = 0;
  if (config_int(c, "intermediate_size", &inter) && inter / 2 != cfg.mlp_width)
    throw Error(ck.config_path, "intermediate_size is " + std::to_string(inter) + " (MLP width " + std::to_string(inter / 2) +
                                    ") but gate_proj.weight has " + std::to_string(cfg.mlp_width) + " rows");
  if (config_int(c, "attention_window_size", &cfg.window) && cfg.window < 1)
    throw Error(ck.config_path, "attention_window_size must be positive");
  if (c.contains("rms_norm_eps") && c["rms_norm_eps"].is_number()) cfg.eps = c["rms_norm_eps"].get<float>();
  if (c.contains("logits_soft_cap")) {
    if (c["logits_soft_cap"].is_null()) cfg.soft_cap = 0.0f;
    else if (c["logits_soft_cap"].is_number()) cfg.soft_cap = c["logits_soft_cap"].get<float>();
  }
  if (c.contains("rope_theta") && c["rope_theta"].is_number()) cfg.rope_theta = c["rope_theta"].get<float>();
  double prf = 0.5;
  if (c.contains("partial_rotary_factor") && c["partial_rotary_factor"].is_number()) prf = c["partial_rotary_factor"].get<double>();
  cfg.rot_dims = int64_t(prf * double(cfg.head_dim));
  if (cfg.rot_dims % 2 != 0) throw Error(ck.config_path, "partial_rotary_factor gives an odd number of rotary dims");
  if (c.contains("hidden_activation") && c["hidden_activation"].is_string() && c["hidden_activation"] != "gelu_pytorch_tanh")
    throw Error(ck.config_path, "hidden_activation " + c["hidden_activation"].dump() + " is not supported (gelu_pytorch_tanh)");
  if (c.contains("tie_word_embeddings") && c["tie_word_embeddings"].is_boolean()) cfg.tied = c["tie_word_embeddings"].get<bool>();
  cfg.normalizer = round_bf16(std::sqrt(float(Dm)));

  // Weights.
  const int64_t W = cfg.lru_width, H = cfg.heads, K = cfg.conv_width, F = cfg.mlp_width, hd = cfg.head_dim,
                bw = H > 0 && W > 0 ? W / H : 0;
  m->embed_ = make_param(*emb);
  m->layers_.resize(size_t(cfg.n_layer));
  int64_t np = cfg.vocab * Dm + Dm;
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const std::string p = lp + std::to_string(i) + ".";
    const std::string tb = p + "temporal_block.";
    GriffinLayer& ly = m->layers_[size_t(i)];
    ly.recurrent = cfg.recurrent[size_t(i)];
    ly.temporal_norm = gemma_norm(L, p + "temporal_pre_norm.weight", Dm);
    ly.channel_norm = gemma_norm(L, p + "channel_pre_norm.weight", Dm);
    np += 2 * Dm;
    if (ly.recurrent) {
      ly.linear_y_w = L.get(tb + "linear_y.weight", {W, Dm});
      ly.linear_y_b = L.get(tb + "linear_y.bias", {W});
      ly.linear_x_w = L.get(tb + "linear_x.weight", {W, Dm});
      ly.linear_x_b = L.get(tb + "linear_x.bias", {W});
      ly.linear_out_w = L.get(tb + "linear_out.weight", {Dm, W});
      ly.linear_out_b = L.get(tb + "linear_out.bias", {Dm});
      ly.conv_w = L.get(tb + "conv_1d.weight", {W, 1, K});
      ly.conv_b = L.get(tb + "conv_1d.bias", {W});
      ly.gate_x_w = L.get(tb + "rg_lru.input_gate_weight", {H, bw, bw});
      ly.gate_x_b = L.get(tb + "rg_lru.input_gate_bias", {H, bw});
      ly.gate_a_w = L.get(tb + "rg_lru.recurrent_gate_weight", {H, bw, bw});
      ly.gate_a_b = L.get(tb + "rg_lru.recurrent_gate_bias", {H, bw});
      Param rp = L.get(tb + "rg_lru.recurrent_param", {W});
      ly.neg_c_softplus.resize(size_t(W));
      for (int64_t k = 0; k < W; ++k) ly.neg_c_softplus[size_t(k)] = float(-8.0 * std::log1p(std::exp(double(rp.p[k]))));
      for (int64_t k = 0; k < W; ++k)
        if (rp.p[k] > 20.0f) ly.neg_c_softplus[size_t(k)] = -8.0f * rp.p[k];
      np += 3 * W * Dm + 2 * W + Dm + W * K + W + 2 * (W * bw + W) + W;
    } else {
      ly.q_w = L.get(tb + "q_proj.weight", {H * hd, Dm});
      ly.k_w = L.get(tb + "k_proj.weight", {cfg.kv_heads * hd, Dm});
      ly.v_w = L.get(tb + "v_proj.weight", {cfg.kv_heads * hd, Dm});
      ly.o_w = L.get(tb + "o_proj.weight", {Dm, H * hd});
      ly.o_b = L.get(tb + "o_proj.bias", {Dm});
      np += 2 * H * hd * Dm + 2 * cfg.kv_heads * hd * Dm + Dm;
    }
    const std::string mb = p + "mlp_block.";
    ly.gate_w = L.get(mb + "gate_proj.weight", {F, Dm});
    ly.gate_b = L.get(mb + "gate_proj.bias", {F});
    ly.up_w = L.get(mb + "up_proj.weight", {F, Dm});
    ly.up_b = L.get(mb + "up_proj.bias", {F});
    ly.down_w = L.get(mb + "down_proj.weight", {Dm, F});
    ly.down_b = L.get(mb + "down_proj.bias", {Dm});
    np += 3 * F * Dm + 2 * F + Dm;
  }
  m->final_norm_ = gemma_norm(L, "model.final_norm.weight", Dm);
  if (const RawTensor* head = L.maybe("lm_head.weight")) {
    if (head->shape != std::vector<int64_t>{cfg.vocab, Dm})
      throw Error(head->source, "tensor 'lm_head.weight' has shape " + shape_str(head->shape) + " but " +
                                    shape_str({cfg.vocab, Dm}) + " is expected from the embedding");
    m->head_ = make_param(*head);
    cfg.tied = false;
    np += cfg.vocab * Dm;
  } else {
    if (!cfg.tied) throw Error(ck.weights_where(), "missing tensor 'lm_head.weight' (config.json says the head is not tied)");
    m->head_.p = m->embed_.p;
    m->head_.shape = m->embed_.shape;
  }
  for (const auto& [name, t] : ck.tensors)
    if (!L.used.count(name)) info.notes.push_back("unused tensor '" + name + "'");

  info.family = "recurrent_gemma";
  info.architecture = "RecurrentGemmaForCausalLM";
  int64_t n_rec = 0;
  for (bool r : cfg.recurrent) n_rec += r;
  info.dims = {{"layers", cfg.n_layer}, {"recurrent_layers", n_rec}, {"d_model", Dm}, {"lru_width", W},
               {"heads", H},           {"kv_heads", cfg.kv_heads},  {"head_dim", hd},  {"mlp_width", F},
               {"conv_width", K},      {"window", cfg.window},      {"vocab", cfg.vocab}};
  info.tied_head = cfg.tied;
  info.n_params = np;
  info.notes.push_back("embedding scaled by bf16(sqrt(" + std::to_string(Dm) + ")) = " + std::to_string(cfg.normalizer) +
                       "; logits soft cap " + std::to_string(cfg.soft_cap));
  return m;
}

Tensor GriffinModel::embed(const std::vector<int32_t>& ids) const {
  if (ids.empty()) throw Error("input", "no tokens to run");
  Tensor e = embedding_rows(embed_, cfg_.vocab, cfg_.d_model, ids);
  for (float& x : e.data) x *= cfg_.normalizer;
  return e;
}

ForwardResult GriffinModel::forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const {
  return forward_embeds(embed(ids), opt);
}

ForwardResult GriffinModel::forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const {
  const GriffinConfig& cfg = cfg_;
  if (embeds.shape.size() != 2 || embeds.shape[1] != cfg.d_model)
    throw Error("input embeddings", "shape " + shape_str(embeds.shape) + " is not [T, " + std::to_string(cfg.d_model) + "]");
  const int64_t T = embeds.shape[0], Dm = cfg.d_model, W = cfg.lru_width, H = cfg.heads, KV = cfg.kv_heads,
                hd = cfg.head_dim, F = cfg.mlp_width, V = cfg.vocab, K = cfg.conv_width;
  if (T == 0) throw Error("input", "no tokens to run");

  ForwardResult res;
  const bool capture = opt.keep_activations || bool(opt.layer_hook);
  std::map<std::string, Tensor> layer_acts;
  auto keep = [&](const std::string& name, int64_t cols, const float* src) {
    if (!capture) return;
    layer_acts[name] = Tensor({T, cols}, std::vector<float>(src, src + T * cols));
  };
  auto flush = [&](int64_t layer) {
    if (!capture) return;
    if (opt.layer_hook && layer >= 0) opt.layer_hook(layer, layer_acts);
    if (opt.keep_activations) res.acts.merge(layer_acts);
    layer_acts.clear();
  };
  auto pmap = [&](int64_t n, auto&& f) { parallel_for(n, f, 4096); };

  std::vector<float> h(size_t(T * Dm)), normed(size_t(T * Dm)), tout(size_t(T * Dm)), mlp(size_t(T * Dm));
  std::vector<float> ybuf(size_t(T * W)), xbuf(size_t(T * W)), conv(size_t(T * W)), gx(size_t(T * W)), ga(size_t(T * W)),
      abuf(size_t(T * W)), xn(size_t(T * W)), lru(size_t(T * W));
  std::vector<float> gate(size_t(T * F)), up(size_t(T * F));
  std::vector<float> q, k, v, att;
  std::vector<float> cosv, sinv;
  const int64_t half = cfg.rot_dims / 2;
  if (hd > 0) {
    q.resize(size_t(T * H * hd)), k.resize(size_t(T * KV * hd)), v.resize(size_t(T * KV * hd)), att.resize(size_t(T * H * hd));
    cosv.resize(size_t(T * half)), sinv.resize(size_t(T * half));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double inv = std::pow(double(cfg.rope_theta), -double(2 * i) / double(cfg.rot_dims));
        const double ang = double(t) * inv;
        cosv[size_t(t * half + i)] = float(std::cos(ang));
        sinv[size_t(t * half + i)] = float(std::sin(ang));
      }
  }
  auto rope = [&](float* x, int64_t nh) {
    pmap(T * nh, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t t = r / nh;
        float* p = x + r * hd;
        for (int64_t i = 0; i < half; ++i) {
          const float a = p[i], bb = p[i + half], cs = cosv[size_t(t * half + i)], sn = sinv[size_t(t * half + i)];
          p[i] = a * cs - bb * sn;
          p[i + half] = bb * cs + a * sn;
        }
      }
    });
  };

  std::copy(embeds.data.begin(), embeds.data.end(), h.begin());

  for (int64_t li = 0; li < cfg.n_layer; ++li) {
    const GriffinLayer& ly = layers_[size_t(li)];
    const std::string p = "layers." + std::to_string(li) + ".";
    keep(p + "residual_in", Dm, h.data());
    rmsnorm_forward(normed.data(), nullptr, h.data(), ly.temporal_norm.data(), T, Dm, cfg.eps);
    keep(p + "temporal_normed", Dm, normed.data());
    if (ly.recurrent) {
      linear_forward(ybuf.data(), normed.data(), ly.linear_y_w.p, ly.linear_y_b.p, T, Dm, W);
      gelu_array(ybuf.data(), T * W);
      linear_forward(xbuf.data(), normed.data(), ly.linear_x_w.p, ly.linear_x_b.p, T, Dm, W);
      conv1d_causal_forward(conv.data(), xbuf.data(), ly.conv_w.p, ly.conv_b.p, T, W, K, W);
      block_diag_gate(gx.data(), conv.data(), ly.gate_x_w.p, ly.gate_x_b.p, T, W, H);
      block_diag_gate(ga.data(), conv.data(), ly.gate_a_w.p, ly.gate_a_b.p, T, W, H);
      const float* ncs = ly.neg_c_softplus.data();
      pmap(T * W, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t t = r / W, ch = r % W;
          const float la = ga[size_t(r)] * ncs[ch];
          const float a = exp_clamped(la);
          const float mult = t == 0 ? 1.0f : std::sqrt(std::max(0.0f, 1.0f - exp_clamped(2.0f * la)));
          abuf[size_t(r)] = t == 0 ? 0.0f : a;
          xn[size_t(r)] = conv[size_t(r)] * gx[size_t(r)] * mult;
        }
      });
      rglru_scan(lru.data(), abuf.data(), xn.data(), T, W);
      if (capture) {
        keep(p + "y", W, ybuf.data());
        keep(p + "x", W, xbuf.data());
        keep(p + "conv", W, conv.data());
        keep(p + "gate_x", W, gx.data());
        keep(p + "gate_a", W, ga.data());
        keep(p + "a", W, abuf.data());
        keep(p + "rg_lru", W, lru.data());
      }
      pmap(T * W, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) xn[size_t(r)] = lru[size_t(r)] * ybuf[size_t(r)];
      });
      keep(p + "gated", W, xn.data());
      linear_forward(tout.data(), xn.data(), ly.linear_out_w.p, ly.linear_out_b.p, T, W, Dm);
    } else {
      linear_forward(q.data(), normed.data(), ly.q_w.p, nullptr, T, Dm, H * hd);
      linear_forward(k.data(), normed.data(), ly.k_w.p, nullptr, T, Dm, KV * hd);
      linear_forward(v.data(), normed.data(), ly.v_w.p, nullptr, T, Dm, KV * hd);
      rope(q.data(), H);
      rope(k.data(), KV);
      const float scale = 1.0f / std::sqrt(float(hd));
      const int64_t win = cfg.window, group = H / KV;
      parallel_for(T * H, [&](int64_t b, int64_t e) {
        std::vector<float> sc(size_t(std::min(T, win + 1)));
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r / H, hh = r % H, kh = hh / group;
          const int64_t j0 = std::max<int64_t>(0, i - win);
          const float* qi = q.data() + (i * H + hh) * hd;
          float mx = -INFINITY;
          for (int64_t j = j0; j <= i; ++j) {
            const float* kj = k.data() + (j * KV + kh) * hd;
            float s = 0.0f;
            for (int64_t d = 0; d < hd; ++d) s += qi[d] * kj[d];
            s *= scale;
            sc[size_t(j - j0)] = s;
            mx = std::max(mx, s);
          }
          float den = 0.0f;
          for (int64_t j = j0; j <= i; ++j) den += (sc[size_t(j - j0)] = std::exp(sc[size_t(j - j0)] - mx));
          float* o = att.data() + (i * H + hh) * hd;
          std::fill(o, o + hd, 0.0f);
          for (int64_t j = j0; j <= i; ++j) {
            const float w = sc[size_t(j - j0)] / den;
            const float* vj = v.data() + (j * KV + kh) * hd;
            for (int64_t d = 0; d < hd; ++d) o[d] += w * vj[d];
          }
        }
      }, 16);
      keep(p + "q", H * hd, q.data());
      keep(p + "k", KV * hd, k.data());
      keep(p + "v", KV * hd, v.data());
      keep(p + "attn", H * hd, att.data());
      linear_forward(tout.data(), att.data(), ly.o_w.p, ly.o_b.p, T, H * hd, Dm);
    }
    keep(p + "temporal_out", Dm, tout.data());
    pmap(T * Dm, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) h[size_t(r)] += tout[size_t(r)];
    });
    rmsnorm_forward(normed.data(), nullptr, h.data(), ly.channel_norm.data(), T, Dm, cfg.eps);
    keep(p + "channel_normed", Dm, normed.data());
    linear_forward(gate.data(), normed.data(), ly.gate_w.p, ly.gate_b.p, T, Dm, F);
    linear_forward(up.data(), normed.data(), ly.up_w.p, ly.up_b.p, T, Dm, F);
    pmap(T * F, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) gate[size_t(r)] = gelu_tanh(gate[size_t(r)]) * up[size_t(r)];
    });
    linear_forward(mlp.data(), gate.data(), ly.down_w.p, ly.down_b.p, T, F, Dm);
    keep(p + "mlp_out", Dm, mlp.data());
    pmap(T * Dm, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) h[size_t(r)] += mlp[size_t(r)];
    });
    flush(li);
  }
  rmsnorm_forward(normed.data(), nullptr, h.data(), final_norm_.data(), T, Dm, cfg.eps);
  if (capture) keep("norm_f", Dm, normed.data());
  else if (opt.keep_final_hidden) res.acts["norm_f"] = Tensor({T, Dm}, std::vector<float>(normed.begin(), normed.end()));
  flush(-1);
  const int64_t rows = opt.all_logits ? T : 1;
  res.logits = Tensor({rows, V});
  linear_forward(res.logits.ptr(), normed.data() + (T - rows) * Dm, head_.p, nullptr, rows, Dm, V);
  if (cfg.soft_cap > 0.0f) {
    const float cap = cfg.soft_cap;
    float* lg = res.logits.ptr();
    pmap(rows * V, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) lg[r] = cap * std::tanh(lg[r] / cap);
    });
  }
  return res;
}

}  // namespace ssmx
