#include "models/rwkv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/parallel.h"
#include "models/loading.h"
#include "ops/linear.h"
#include "ops/vmath.h"

namespace ssmx {

namespace {

void cross_check(const Checkpoint& ck, const char* key, int64_t actual, const std::string& from) {
  const auto& c = ck.config;
  if (!c.contains(key) || c[key].is_null()) return;
  if (!c[key].is_number_integer()) throw Error(ck.config_path, std::string(key) + " is not an integer");
  const int64_t v = c[key].get<int64_t>();
  if (v != actual)
    throw Error(ck.config_path, std::string(key) + " is " + std::to_string(v) + " but " + from + " gives " +
                                    std::to_string(actual));
}

// LayerNorm over rows of x (T, C): biased variance, sums in double so the result does not depend on the order.
void layer_norm(float* out, const float* x, const float* w, const float* b, int64_t T, int64_t C, float eps) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x + t * C;
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += xr[c];
      const double mu = s / double(C);
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += (xr[c] - mu) * (xr[c] - mu);
      const float muf = float(mu), rstd = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
      float* o = out + t * C;
      for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] - muf) * rstd * w[c] + b[c];
    }
  }, 16);
}

// out = n·μ + shift(n)·(1−μ) over (T, C); shift(n)[0] = 0.
void token_mix(float* out, const float* n, const float* mu, int64_t T, int64_t C) {
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* cur = n + t * C;
      float* o = out + t * C;
      if (t == 0) {
        for (int64_t c = 0; c < C; ++c) o[c] = cur[c] * mu[c];
      } else {
        const float* prev = cur - C;
        for (int64_t c = 0; c < C; ++c) o[c] = cur[c] * mu[c] + prev[c] * (1.0f - mu[c]);
      }
    }
  }, 16);
}

void sigmoid_inplace(float* x, int64_t n) {
  parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) x[k] = sigmoid_f(x[k]);
  }, 4096);
}

}  // namespace

void rwkv_wkv_forward(float* out, float* logz_out, const float* k, const float* v, const float* wneg, const float* u,
                      int64_t T, int64_t A) {
  constexpr int64_t kBlock = 16;  // neighbouring channels run together (one SIMD-friendly inner loop)
  const int64_t nblocks = (A + kBlock - 1) / kBlock;
  parallel_for(nblocks, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kBlock, nc = std::min(kBlock, A - c0);
      float num[kBlock], den[kBlock], p[kBlock], wn[kBlock], uu[kBlock];
      for (int64_t c = 0; c < nc; ++c) {
        num[c] = 0.0f, den[c] = 0.0f, p[c] = -1e38f;
        wn[c] = wneg[c0 + c], uu[c] = u[c0 + c];
      }
      for (int64_t t = 0; t < T; ++t) {
        const float* kt = k + t * A + c0;
        const float* vt = v + t * A + c0;
        float* ot = out + t * A + c0;
        float lz[kBlock];
        for (int64_t c = 0; c < nc; ++c) {
          const float ku = uu[c] + kt[c];
          const float q = p[c] > ku ? p[c] : ku;
          const float e1 = exp_clamped(p[c] - q), e2 = exp_clamped(ku - q);
          const float d = e1 * den[c] + e2;
          ot[c] = (e1 * num[c] + e2 * vt[c]) / d;
          lz[c] = q + log_pos(d);
          const float pw = p[c] + wn[c];
          const float q2 = pw > kt[c] ? pw : kt[c];
          const float f1 = exp_clamped(pw - q2), f2 = exp_clamped(kt[c] - q2);
          num[c] = f1 * num[c] + f2 * vt[c];
          den[c] = f1 * den[c] + f2;
          p[c] = q2;
        }
        if (logz_out)
          for (int64_t c = 0; c < nc; ++c) logz_out[t * A + c0 + c] = lz[c];
      }
    }
  });
}

std::unique_ptr<RwkvModel> RwkvModel::load(const Checkpoint& ck) {
  auto m = std::unique_ptr<RwkvModel>(new RwkvModel());
  RwkvConfig& cfg = m->cfg_;
  TensorLoader L{ck, "", {}, &m->keep_alive_};
  const std::string P = "rwkv.";

  const RawTensor& emb = L.raw(P + "embeddings.weight");
  if (emb.shape.size() != 2) throw Error(emb.source, "tensor 'rwkv.embeddings.weight' must be 2-D [V, H], is " + shape_str(emb.shape));
  cfg.vocab = emb.shape[0];
  cfg.hidden = emb.shape[1];

  std::set<int64_t> idx;
  const std::string bp = P + "blocks.";
  for (const auto& [name, t] : ck.tensors) {
    if (name.rfind(bp, 0) != 0) continue;
    const size_t dot = name.find('.', bp.size());
    if (dot == std::string::npos) continue;
    const std::string num = name.substr(bp.size(), dot - bp.size());
    if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    idx.insert(std::stoll(num));
  }
  if (idx.empty()) throw Error(ck.weights_where(), "no blocks found (missing tensors 'rwkv.blocks.0.*')");
  cfg.n_layer = int64_t(idx.size());
  if (*idx.rbegin() != cfg.n_layer - 1)
    throw Error(ck.weights_where(), "block numbers are not contiguous (found " + std::to_string(cfg.n_layer) +
                                        " blocks, highest index " + std::to_string(*idx.rbegin()) + ")");
  {
    const RawTensor& kw = L.raw(P + "blocks.0.attention.key.weight");
    if (kw.shape.size() != 2) throw Error(kw.source, "tensor 'rwkv.blocks.0.attention.key.weight' must be 2-D [A, H], is " + shape_str(kw.shape));
    cfg.att = kw.shape[0];
    const RawTensor& fw = L.raw(P + "blocks.0.feed_forward.key.weight");
    if (fw.shape.size() != 2) throw Error(fw.source, "tensor 'rwkv.blocks.0.feed_forward.key.weight' must be 2-D [I, H], is " + shape_str(fw.shape));
    cfg.ffn = fw.shape[0];
  }

  const auto& c = ck.config;
  ModelInfo& info = m->info_;
  cross_check(ck, "hidden_size", cfg.hidden, "the embedding width");
  cross_check(ck, "num_hidden_layers", cfg.n_layer, "the number of blocks in the weights");
  cross_check(ck, "attention_hidden_size", cfg.att, "attention.key.weight's first dimension");
  cross_check(ck, "intermediate_size", cfg.ffn, "feed_forward.key.weight's first dimension");
  cross_check(ck, "vocab_size", cfg.vocab, "the embedding's row count");
  if (c.contains("layer_norm_epsilon") && c["layer_norm_epsilon"].is_number()) cfg.norm_eps = c["layer_norm_epsilon"].get<float>();
  if (c.contains("rescale_every") && !c["rescale_every"].is_null()) {
    if (!c["rescale_every"].is_number_integer() || c["rescale_every"].get<int64_t>() < 0)
      throw Error(ck.config_path, "rescale_every must be a non-negative integer, is " + c["rescale_every"].dump());
    cfg.rescale_every = c["rescale_every"].get<int64_t>();
  }
  if (c.contains("tie_word_embeddings") && c["tie_word_embeddings"].is_boolean()) cfg.tied = c["tie_word_embeddings"].get<bool>();

  const int64_t H = cfg.hidden, A = cfg.att, I = cfg.ffn, V = cfg.vocab;
  m->embed_ = make_param(emb);
  m->pre_ln_w_ = L.get(P + "blocks.0.pre_ln.weight", {H});
  m->pre_ln_b_ = L.get(P + "blocks.0.pre_ln.bias", {H});
  m->layers_.resize(size_t(cfg.n_layer));
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const std::string b = bp + std::to_string(i) + ".";
    RwkvLayer& ly = m->layers_[size_t(i)];
    ly.ln1_w = L.get(b + "ln1.weight", {H});
    ly.ln1_b = L.get(b + "ln1.bias", {H});
    ly.ln2_w = L.get(b + "ln2.weight", {H});
    ly.ln2_b = L.get(b + "ln2.bias", {H});
    // time_decay / time_first: [A] in HF; the original BlinkDL export has them [A] too (older ones [1, 1, A]).
    for (auto [dst, nm] : {std::pair{&ly.time_decay, "attention.time_decay"}, std::pair{&ly.time_first, "attention.time_first"}}) {
      const RawTensor& t = L.raw(b + nm);
      if (Tensor::count(t.shape) != A || t.shape.empty() || t.shape.back() != A)
        throw Error(t.source, "tensor '" + b + nm + "' has shape " + shape_str(t.shape) + " but [" + std::to_string(A) +
                                  "] is expected from attention.key.weight");
      *dst = make_param(t);
    }
    ly.wneg.resize(size_t(A));
    for (int64_t a = 0; a < A; ++a) ly.wneg[size_t(a)] = -std::exp(ly.time_decay.p[a]);
    ly.att_mix_k = L.get(b + "attention.time_mix_key", {1, 1, H});
    ly.att_mix_v = L.get(b + "attention.time_mix_value", {1, 1, H});
    ly.att_mix_r = L.get(b + "attention.time_mix_receptance", {1, 1, H});
    ly.att_k = L.get(b + "attention.key.weight", {A, H});
    ly.att_v = L.get(b + "attention.value.weight", {A, H});
    ly.att_r = L.get(b + "attention.receptance.weight", {A, H});
    ly.att_o = L.get(b + "attention.output.weight", {H, A});
    ly.ffn_mix_k = L.get(b + "feed_forward.time_mix_key", {1, 1, H});
    ly.ffn_mix_r = L.get(b + "feed_forward.time_mix_receptance", {1, 1, H});
    ly.ffn_k = L.get(b + "feed_forward.key.weight", {I, H});
    ly.ffn_r = L.get(b + "feed_forward.receptance.weight", {H, H});
    ly.ffn_v = L.get(b + "feed_forward.value.weight", {H, I});
  }
  m->ln_out_w_ = L.get(P + "ln_out.weight", {H});
  m->ln_out_b_ = L.get(P + "ln_out.bias", {H});
  if (ck.find("head.weight")) {
    m->head_ = L.get("head.weight", {V, H});
    cfg.tied = false;
  } else {
    if (!cfg.tied) throw Error(ck.weights_where(), "missing tensor 'head.weight' (RWKV heads are not tied to the embedding)");
    m->head_.p = m->embed_.p;
    m->head_.shape = m->embed_.shape;
  }
  for (const auto& [name, t] : ck.tensors)
    if (!L.used.count(name)) info.notes.push_back("unused tensor '" + name + "'");
  if (cfg.rescale_every > 0)
    info.notes.push_back("rescale_every=" + std::to_string(cfg.rescale_every) +
                         ": the residual stream is halved every " + std::to_string(cfg.rescale_every) + " blocks (as transformers in eval mode)");

  info.family = "rwkv";
  info.architecture = "RwkvForCausalLM";
  info.dims = {{"layers", cfg.n_layer}, {"hidden", H}, {"attention_hidden", A}, {"intermediate", I}, {"vocab", V}};
  info.tied_head = cfg.tied;
  const int64_t per_layer = 4 * H + 2 * A + 5 * H + 3 * A * H + H * A + I * H + H * H + H * I;
  info.n_params = V * H + 2 * H + per_layer * cfg.n_layer + 2 * H + (cfg.tied ? 0 : V * H);
  return m;
}

Tensor RwkvModel::embed(const std::vector<int32_t>& ids) const {
  return embedding_rows(embed_, cfg_.vocab, cfg_.hidden, ids);
}

ForwardResult RwkvModel::forward(const std::vector<int32_t>& ids, const ForwardOptions& opt) const {
  if (ids.empty()) throw Error("input", "no tokens to run");
  const Tensor e = embed(ids);
  return forward_impl(e.ptr(), int64_t(ids.size()), opt);
}

ForwardResult RwkvModel::forward_embeds(const Tensor& embeds, const ForwardOptions& opt) const {
  if (embeds.shape.size() != 2 || embeds.shape[1] != cfg_.hidden || embeds.shape[0] == 0)
    throw Error("input", "embeddings of shape " + shape_str(embeds.shape) + ", expected (T, " +
                             std::to_string(cfg_.hidden) + ") with T > 0");
  return forward_impl(embeds.ptr(), embeds.shape[0], opt);
}

ForwardResult RwkvModel::forward_impl(const float* embeds, int64_t T, const ForwardOptions& opt) const {
  const RwkvConfig& cfg = cfg_;
  const int64_t H = cfg.hidden, A = cfg.att, I = cfg.ffn, V = cfg.vocab;

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

  std::vector<float> h(size_t(T * H)), n(size_t(T * H)), mixed(size_t(T * H)), out(size_t(T * H)), fr(size_t(T * H));
  std::vector<float> k(size_t(T * A)), v(size_t(T * A)), r(size_t(T * A)), wkv(size_t(T * A)), fk(size_t(T * I));
  layer_norm(h.data(), embeds, pre_ln_w_.p, pre_ln_b_.p, T, H, cfg.norm_eps);
  keep("pre_ln", H, h.data());

  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    const RwkvLayer& ly = layers_[size_t(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    const float scale = cfg.rescale_every > 0 ? std::ldexp(1.0f, -int(i / cfg.rescale_every)) : 1.0f;
    keep(p + "residual_in", H, h.data());
    // ---- time mix ----
    layer_norm(n.data(), h.data(), ly.ln1_w.p, ly.ln1_b.p, T, H, cfg.norm_eps);
    token_mix(mixed.data(), n.data(), ly.att_mix_k.p, T, H);
    linear_forward(k.data(), mixed.data(), ly.att_k.p, nullptr, T, H, A);
    token_mix(mixed.data(), n.data(), ly.att_mix_v.p, T, H);
    linear_forward(v.data(), mixed.data(), ly.att_v.p, nullptr, T, H, A);
    token_mix(mixed.data(), n.data(), ly.att_mix_r.p, T, H);
    linear_forward(r.data(), mixed.data(), ly.att_r.p, nullptr, T, H, A);
    sigmoid_inplace(r.data(), T * A);
    rwkv_wkv_forward(wkv.data(), nullptr, k.data(), v.data(), ly.wneg.data(), ly.time_first.p, T, A);
    if (capture) {
      keep(p + "ln1", H, n.data());
      keep(p + "k", A, k.data());
      keep(p + "v", A, v.data());
      keep(p + "r", A, r.data());
      keep(p + "wkv", A, wkv.data());
    }
    pmap(T * A, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) wkv[q] *= r[q];
    });
    linear_forward(out.data(), wkv.data(), ly.att_o.p, nullptr, T, A, H);
    pmap(T * H, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        out[q] *= scale;
        h[q] += out[q];
      }
    });
    if (capture) {
      keep(p + "rwkv", A, wkv.data());
      keep(p + "att_out", H, out.data());
    }
    // ---- channel mix ----
    layer_norm(n.data(), h.data(), ly.ln2_w.p, ly.ln2_b.p, T, H, cfg.norm_eps);
    token_mix(mixed.data(), n.data(), ly.ffn_mix_k.p, T, H);
    linear_forward(fk.data(), mixed.data(), ly.ffn_k.p, nullptr, T, H, I);
    pmap(T * I, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        const float x = fk[q] > 0.0f ? fk[q] : 0.0f;
        fk[q] = x * x;
      }
    });
    token_mix(mixed.data(), n.data(), ly.ffn_mix_r.p, T, H);
    linear_forward(fr.data(), mixed.data(), ly.ffn_r.p, nullptr, T, H, H);
    sigmoid_inplace(fr.data(), T * H);
    linear_forward(out.data(), fk.data(), ly.ffn_v.p, nullptr, T, I, H);
    const bool halve = cfg.rescale_every > 0 && (i + 1) % cfg.rescale_every == 0;
    pmap(T * H, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        out[q] = fr[q] * (out[q] * scale);
        const float x = h[q] + out[q];
        h[q] = halve ? x * 0.5f : x;
      }
    });
    if (capture) {
      keep(p + "ln2", H, n.data());
      keep(p + "ffn_k", I, fk.data());
      keep(p + "ffn_r", H, fr.data());
      keep(p + "ffn_out", H, out.data());
    }
    flush(i);
  }
  layer_norm(n.data(), h.data(), ln_out_w_.p, ln_out_b_.p, T, H, 1e-5f);
  if (capture) {
    keep("norm_f", H, n.data());
  } else if (opt.keep_final_hidden) {
    res.acts["norm_f"] = Tensor({T, H}, std::vector<float>(n.begin(), n.end()));
  }
  flush(-1);
  if (opt.all_logits) {
    res.logits = Tensor({T, V});
    linear_forward(res.logits.ptr(), n.data(), head_.p, nullptr, T, H, V);
  } else {
    res.logits = Tensor({1, V});
    linear_forward(res.logits.ptr(), n.data() + (T - 1) * H, head_.p, nullptr, 1, H, V);
  }
  return res;
}

}  // namespace ssmx
