#include "attribution/family_attention.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "attribution/backend.h"
#include "attribution/griffin_attention.h"
#include "attribution/rwkv_attention.h"
#include "core/error.h"
#include "models/griffin.h"
#include "models/mamba2.h"
#include "models/rwkv.h"

namespace ssmx {

namespace {

// Reduction over the leading axis of `rows` (n_ch, n) → (n): mean, mean of |·| or max.
Tensor reduce_channels(const float* rows, int64_t n_ch, int64_t n, AttnReduce red) {
  Tensor out({n});
  for (int64_t j = 0; j < n; ++j) {
    double acc = red == AttnReduce::Max ? -INFINITY : 0.0;
    for (int64_t c = 0; c < n_ch; ++c) {
      const double v = rows[c * n + j];
      if (red == AttnReduce::Max) acc = std::max(acc, v);
      else acc += red == AttnReduce::AbsMean ? std::fabs(v) : v;
    }
    out.ptr()[j] = float(red == AttnReduce::Max ? acc : acc / double(n_ch));
  }
  return out;
}

struct Range {
  int64_t c0, c1;
  int64_t n() const { return c1 - c0; }
};

Range channel_range(const FamilyAttnRequest& req, int64_t C) {
  const int64_t c1 = req.c1 < 0 ? C : req.c1;
  if (req.c0 < 0 || req.c0 >= c1 || c1 > C)
    throw Error("--channels", "range " + std::to_string(req.c0) + ":" + std::to_string(c1) + " is empty or beyond the " +
                                  std::to_string(C) + " channels of the model");
  return {req.c0, c1};
}

void check_row(const FamilyAttnRequest& req, int64_t T) {
  if (req.row >= T) throw Error("--row", "row " + std::to_string(req.row) + " is outside the " + std::to_string(T) + " tokens");
}

// Runs the forward with a layer hook over the requested layers.
void for_requested_layers(const CausalLM& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                          const std::function<void(int64_t, const std::map<std::string, Tensor>&)>& fn) {
  const std::set<int64_t> want(layers.begin(), layers.end());
  ForwardOptions fo;
  fo.all_logits = false;
  fo.layer_hook = [&](int64_t l, const std::map<std::string, Tensor>& acts) {
    if (want.count(l)) fn(l, acts);
  };
  m.forward(ids, fo);
}

void mamba2_attention(const Mamba2Model& m2, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                      const FamilyAttnRequest& req, const std::function<void(const FamilyAttnLayer&)>& each) {
  if (req.kind != AttnKind::S6 && req.kind != AttnKind::Unified)
    throw Error("--kind", std::string(attn_kind_name(req.kind)) + " is not defined for mamba2 (s6 or unified)");
  if (req.compat != "none")
    throw Error("--compat", req.compat + " reproduces published Mamba / Vision Mamba code; mamba2 has only none");
  const int64_t T = int64_t(ids.size());
  const Range r = channel_range(req, m2.config().d_inner);
  check_row(req, T);
  for_requested_layers(m2, ids, layers, [&](int64_t l, const std::map<std::string, Tensor>& acts) {
    const std::unique_ptr<LayerAttention> la = mamba2_layer_attention(m2, l, acts);
    // Row i of the channels (or their reduction) into dst, ld between channels.
    auto put_row = [&](int64_t i, float* dst, int64_t ld) {
      const Tensor rows = la->rows(req.kind, i, false);  // (Di, T)
      if (req.reduce) {
        const Tensor red = reduce_channels(rows.ptr() + r.c0 * T, r.n(), T, req.red);
        std::copy_n(red.ptr(), T, dst);
      } else {
        for (int64_t c = r.c0; c < r.c1; ++c) std::copy_n(rows.ptr() + c * T, T, dst + (c - r.c0) * ld);
      }
    };
    FamilyAttnLayer out{l, {}, attn_kind_name(req.kind), r.c0, r.c1, "channel",
                        req.kind == AttnKind::S6 ? "exp(A_h(S_i - S_j))·Δ_j·(C_i·B_j) per head"
                                                 : "the S6 matrix with the layer's conv and gate folded in"};
    if (req.row >= 0) {
      out.result = req.reduce ? Tensor({T}) : Tensor({r.n(), T});
      put_row(req.row, out.result.ptr(), T);
    } else {
      out.result = req.reduce ? Tensor({T, T}) : Tensor({r.n(), T, T});
      for (int64_t i = 0; i < T; ++i) put_row(i, out.result.ptr() + i * T, T * T);
    }
    each(out);
  });
}

void rwkv_attention(const RwkvModel& rw, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                    const FamilyAttnRequest& req, const std::function<void(const FamilyAttnLayer&)>& each) {
  if (req.kind != AttnKind::S6 && req.kind != AttnKind::Unified)
    throw Error("--kind", "'" + std::string(attn_kind_name(req.kind)) +
                              "' is not defined for RWKV: s6 (alpha_WKV) or unified (diag(r)·alpha_WKV)");
  if (req.compat != "none") throw Error("--compat", req.compat + " reproduces published Mamba code; RWKV has only --compat none");
  const bool gate = req.kind == AttnKind::Unified;
  const int64_t T = int64_t(ids.size()), A = rw.config().att;
  const Range r = channel_range(req, A);
  check_row(req, T);
  const RwkvReduce rred = req.red == AttnReduce::AbsMean ? RwkvReduce::AbsMean
                          : req.red == AttnReduce::Max   ? RwkvReduce::Max
                                                         : RwkvReduce::Mean;
  for_requested_layers(rw, ids, layers, [&](int64_t l, const std::map<std::string, Tensor>& acts) {
    const RwkvAttnInput in = rwkv_attn_input(rw, l, acts, gate);
    FamilyAttnLayer out{l, {}, attn_kind_name(req.kind), r.c0, r.c1, "channel",
                        gate ? "diag(r)·alpha_WKV (time-mix)" : "alpha_WKV (time-mix, rows normalised by the WKV denominator)"};
    if (req.row >= 0) {
      const Tensor all = rwkv_attention_row(in, req.row);  // (A, T)
      if (req.reduce) {
        out.result = reduce_channels(all.ptr() + r.c0 * T, r.n(), T, req.red);
      } else {
        out.result = Tensor({r.n(), T});
        std::copy(all.ptr() + r.c0 * T, all.ptr() + r.c1 * T, out.result.ptr());
      }
    } else if (req.reduce && r.c0 == 0 && r.c1 == A) {
      out.result = rwkv_attention_reduced(in, rred);
    } else {
      std::vector<int64_t> chans;
      for (int64_t c = r.c0; c < r.c1; ++c) chans.push_back(c);
      out.result = rwkv_attention_channels(in, chans);  // (n, T, T)
      if (req.reduce) {
        out.result = reduce_channels(out.result.ptr(), r.n(), T * T, req.red);
        out.result.shape = {T, T};
      }
    }
    each(out);
  });
}

void griffin_attention(const GriffinModel& gm, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                       const FamilyAttnRequest& req, const std::function<void(const FamilyAttnLayer&)>& each) {
  if (req.kind == AttnKind::UnifiedNoAct)
    throw Error("--kind", "unified-noact has no meaning for recurrent_gemma (s6, unified, unified-noconv, unified-nogate)");
  GriffinAttnOptions go;
  go.gate = req.kind == AttnKind::Unified || req.kind == AttnKind::UnifiedNoConv;
  go.conv = req.kind != AttnKind::UnifiedNoConv;
  if (req.compat == "tracing") go.compat = true;
  else if (req.compat != "none")
    throw Error("--compat", "recurrent_gemma: none | tracing (the authors' file without √(1 − a²)), not '" + req.compat + "'");
  const GriffinConfig& gc = gm.config();
  const int64_t T = int64_t(ids.size());
  const Range r = channel_range(req, gc.lru_width);
  check_row(req, T);
  for_requested_layers(gm, ids, layers, [&](int64_t l, const std::map<std::string, Tensor>& acts) {
    const GriffinLayer& ly = gm.layer(l);
    FamilyAttnLayer out;
    out.layer = l;
    if (!ly.recurrent) {
      const int64_t H = gc.heads;
      const Tensor p = griffin_local_attention(acts, l, H, gc.kv_heads, gc.head_dim, gc.window);  // (H, T, T)
      if (req.row >= 0) {
        Tensor rows({H, T});
        for (int64_t h = 0; h < H; ++h) std::copy_n(p.ptr() + (h * T + req.row) * T, T, rows.ptr() + h * T);
        out.result = req.reduce ? reduce_channels(rows.ptr(), H, T, req.red) : rows;
      } else if (req.reduce) {
        out.result = reduce_channels(p.ptr(), H, T * T, req.red);
        out.result.shape = {T, T};
      } else {
        out.result = p;
      }
      out.kind = "softmax", out.a = 0, out.b = H, out.axis = "head";
      out.op = "softmax attention weights per query head (local attention)";
      each(out);
      return;
    }
    const GriffinTrace tr = griffin_trace(acts, l, ly.conv_w.p, ly.conv_b.p, gc.conv_width);
    if (req.row >= 0) {
      out.result = griffin_attention_row(tr, go, req.row, r.c0, r.c1);
      if (req.reduce) out.result = reduce_channels(out.result.ptr(), r.n(), T, req.red);
    } else {
      out.result = req.reduce ? griffin_attention_reduce(tr, go, req.red, r.c0, r.c1)
                              : griffin_attention_full(tr, go, r.c0, r.c1);
    }
    out.kind = attn_kind_name(req.kind), out.a = r.c0, out.b = r.c1, out.axis = "channel";
    out.op = go.gate ? (go.conv ? "diag(y)·α_RG·M_conv (RG-LRU)" : "diag(y)·α_RG (RG-LRU)") : "α_RG·M_conv (RG-LRU)";
    each(out);
  });
}

}  // namespace

bool has_family_attention(const CausalLM& m) {
  return dynamic_cast<const Mamba2Model*>(&m) || dynamic_cast<const RwkvModel*>(&m) ||
         dynamic_cast<const GriffinModel*>(&m);
}

FamilyAttnShape family_attention_shape(const CausalLM& m) {
  if (const auto* m2 = dynamic_cast<const Mamba2Model*>(&m)) return {m2->config().n_layer, m2->config().d_inner, 0};
  if (const auto* rw = dynamic_cast<const RwkvModel*>(&m)) return {rw->config().n_layer, rw->config().att, 0};
  if (const auto* gm = dynamic_cast<const GriffinModel*>(&m))
    return {gm->config().n_layer, gm->config().lru_width, gm->config().heads};
  throw Error("attention", "not a mamba2, rwkv or recurrent_gemma model");
}

void family_attention(const CausalLM& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& layers,
                      const FamilyAttnRequest& req, const std::function<void(const FamilyAttnLayer&)>& each) {
  if (ids.empty()) throw Error("attention", "no tokens");
  if (const auto* m2 = dynamic_cast<const Mamba2Model*>(&m)) return mamba2_attention(*m2, ids, layers, req, each);
  if (const auto* rw = dynamic_cast<const RwkvModel*>(&m)) return rwkv_attention(*rw, ids, layers, req, each);
  if (const auto* gm = dynamic_cast<const GriffinModel*>(&m)) return griffin_attention(*gm, ids, layers, req, each);
  throw Error("attention", "not a mamba2, rwkv or recurrent_gemma model");
}

}  // namespace ssmx
