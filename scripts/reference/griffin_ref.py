#!/usr/bin/python3
"""Plain-PyTorch reference forward of RecurrentGemmaForCausalLM (Griffin), written from
shared/specs/model-families.md §0 and §5 (Hugging Face semantics). No transformers.

    logits, acts = forward(state_dict, config, input_ids, dtype=torch.float64)

All weights are upcast to `dtype`. Names in `acts` (the C++ engine exposes the same ones), T tokens, Dm = hidden,
W = lru_width, Q = heads·head_dim, KV = kv_heads·head_dim, F = intermediate_size // 2:

    layers.{i}.residual_in   [T,Dm]  stream entering layer i (layer 0: embedding · bf16(sqrt(Dm)))
    layers.{i}.temporal_normed [T,Dm] Gemma RMSNorm (x·r·(1+w)) before the temporal block
  recurrent layers:
    layers.{i}.y             [T,W]   gelu_tanh(linear_y(v))            (the gate branch)
    layers.{i}.x             [T,W]   linear_x(v)                       (before the conv)
    layers.{i}.conv          [T,W]   causal depthwise conv1d (+bias)   (the RG-LRU input)
    layers.{i}.gate_x        [T,W]   input gate  σ(conv·Wx + bx) per head block
    layers.{i}.gate_a        [T,W]   recurrence gate σ(conv·Wa + ba)
    layers.{i}.a             [T,W]   exp(-8·gate_a·softplus(Λ)), 0 at position 0 (reset)
    layers.{i}.rg_lru        [T,W]   RG-LRU state h_t
    layers.{i}.gated         [T,W]   rg_lru ⊙ y                        (linear_out input)
  attention layers:
    layers.{i}.q [T,Q], layers.{i}.k [T,KV]   after partial RoPE;  layers.{i}.v [T,KV]
    layers.{i}.attn          [T,Q]   concatenated heads (o_proj input)
  all layers:
    layers.{i}.temporal_out  [T,Dm]  temporal block output
    layers.{i}.channel_normed [T,Dm] Gemma RMSNorm before the MLP
    layers.{i}.mlp_out       [T,Dm]  MLP output
    norm_f [T,Dm];  logits [T,V] (after the soft cap)

Local attention uses the original Griffin window: query i sees keys j with i - window <= j <= i.
`implicit_attention(acts, sd, layer, ...)` gives the per-channel hidden attention (hidden-attention.md §3.3).
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mamba_ref import read_safetensors, write_safetensors, load_state_dict  # noqa: E402,F401

P = "model."


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def softplus(x):
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))


def gemma_rms(x, w, eps):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * r * (1.0 + w)


def causal_conv1d(x, weight, bias):
    T, E = x.shape
    K = weight.shape[-1]
    y = torch.nn.functional.conv1d(x.t().unsqueeze(0), weight, bias, padding=K - 1, groups=E)
    return y[0, :, :T].t()


def settings(config, sd):
    Dm = sd[P + "embed_tokens.weight"].shape[1]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    hd = config.get("head_dim") or Dm // heads
    pattern = list(config.get("block_types", ["recurrent", "recurrent", "attention"]))
    n = config["num_hidden_layers"]
    return dict(Dm=Dm, heads=heads, kv=kv, hd=hd, n=n, types=[(pattern * 100)[i] for i in range(n)],
                W=config.get("lru_width") or Dm, eps=config.get("rms_norm_eps", 1e-6),
                window=config.get("attention_window_size", 2048), cap=config.get("logits_soft_cap", 30.0),
                rot=int(config.get("partial_rotary_factor", 0.5) * hd), theta=config.get("rope_theta", 10000.0))


def block_diag_linear(x, w, b, heads):
    """x [T, W] split in `heads` blocks; out[t, h, j] = Σ_i x[t, h, i]·w[h, i, j] + b[h, j]."""
    T, W = x.shape
    xb = x.view(T, heads, W // heads)
    return (torch.einsum("thi,hij->thj", xb, w) + b).reshape(T, W)


def rg_lru(c, sd, pre, heads, dtype):
    T, W = c.shape
    gx = torch.sigmoid(block_diag_linear(c, sd[pre + "input_gate_weight"].to(dtype), sd[pre + "input_gate_bias"].to(dtype), heads))
    ga = torch.sigmoid(block_diag_linear(c, sd[pre + "recurrent_gate_weight"].to(dtype), sd[pre + "recurrent_gate_bias"].to(dtype), heads))
    log_a = -8.0 * ga * softplus(sd[pre + "recurrent_param"].to(dtype))
    a = torch.exp(log_a)
    m = torch.sqrt(1.0 - torch.exp(2.0 * log_a))
    first = (torch.arange(T) == 0).unsqueeze(1)          # reset at position 0, written without in-place ops so
    m = torch.where(first, torch.ones_like(m), m)        # autograd can run through it (scripts/reference/timing.py)
    a = torch.where(first, torch.zeros_like(a), a)
    xn = c * gx * m
    h = torch.zeros(W, dtype=dtype)
    out = torch.empty_like(c)
    for t in range(T):
        h = a[t] * h + xn[t]
        out[t] = h
    return gx, ga, a, out


def rope(x, nheads, hd, rot, theta, dtype):
    """x [T, nheads·hd]; rotate the first `rot` dims of each head (rotate_half pairing)."""
    T = x.shape[0]
    x = x.view(T, nheads, hd).clone()
    inv = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang).to(dtype)[:, None, :], torch.sin(ang).to(dtype)[:, None, :]
    h = rot // 2
    a, b = x[:, :, :h].clone(), x[:, :, h:rot].clone()
    x[:, :, :h] = a * cos - b * sin
    x[:, :, h:rot] = b * cos + a * sin
    return x.reshape(T, nheads * hd)


def local_attention(q, k, v, s):
    T = q.shape[0]
    H, KV, hd = s["heads"], s["kv"], s["hd"]
    qh = q.view(T, H, hd).transpose(0, 1)
    kh = k.view(T, KV, hd).transpose(0, 1).repeat_interleave(H // KV, 0)
    vh = v.view(T, KV, hd).transpose(0, 1).repeat_interleave(H // KV, 0)
    sc = qh @ kh.transpose(1, 2) * hd ** -0.5
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = (j > i) | (j < i - s["window"])
    sc = sc.masked_fill(mask, float("-inf"))
    p = torch.softmax(sc, -1)
    return (p @ vh).transpose(0, 1).reshape(T, H * hd)


def lin(x, sd, name, dtype):
    b = sd.get(name + ".bias")
    return torch.nn.functional.linear(x, sd[name + ".weight"].to(dtype), None if b is None else b.to(dtype))


def forward(sd, config, ids, dtype=torch.float64, collect=True):
    s = settings(config, sd)
    acts = {}
    E = sd[P + "embed_tokens.weight"].to(dtype)
    nrm = torch.tensor(math.sqrt(s["Dm"]), dtype=torch.bfloat16).to(dtype)
    h = E[torch.tensor(ids, dtype=torch.long)] * nrm
    for i in range(s["n"]):
        p = f"{P}layers.{i}."
        tb = p + "temporal_block."
        acts[f"layers.{i}.residual_in"] = h
        v = gemma_rms(h, sd[p + "temporal_pre_norm.weight"].to(dtype), s["eps"])
        acts[f"layers.{i}.temporal_normed"] = v
        if s["types"][i] == "recurrent":
            y = gelu_tanh(lin(v, sd, tb + "linear_y", dtype))
            x = lin(v, sd, tb + "linear_x", dtype)
            c = causal_conv1d(x, sd[tb + "conv_1d.weight"].to(dtype), sd[tb + "conv_1d.bias"].to(dtype))
            gx, ga, a, o = rg_lru(c, sd, tb + "rg_lru.", s["heads"], dtype)
            g = o * y
            t = lin(g, sd, tb + "linear_out", dtype)
            acts.update({f"layers.{i}.y": y, f"layers.{i}.x": x, f"layers.{i}.conv": c, f"layers.{i}.gate_x": gx,
                         f"layers.{i}.gate_a": ga, f"layers.{i}.a": a, f"layers.{i}.rg_lru": o,
                         f"layers.{i}.gated": g})
        else:
            q = rope(lin(v, sd, tb + "q_proj", dtype), s["heads"], s["hd"], s["rot"], s["theta"], dtype)
            k = rope(lin(v, sd, tb + "k_proj", dtype), s["kv"], s["hd"], s["rot"], s["theta"], dtype)
            vv = lin(v, sd, tb + "v_proj", dtype)
            at = local_attention(q, k, vv, s)
            t = lin(at, sd, tb + "o_proj", dtype)
            acts.update({f"layers.{i}.q": q, f"layers.{i}.k": k, f"layers.{i}.v": vv, f"layers.{i}.attn": at})
        acts[f"layers.{i}.temporal_out"] = t
        res = t + h
        u = gemma_rms(res, sd[p + "channel_pre_norm.weight"].to(dtype), s["eps"])
        acts[f"layers.{i}.channel_normed"] = u
        mb = p + "mlp_block."
        mo = lin(gelu_tanh(lin(u, sd, mb + "gate_proj", dtype)) * lin(u, sd, mb + "up_proj", dtype), sd, mb + "down_proj", dtype)
        acts[f"layers.{i}.mlp_out"] = mo
        h = mo + res
    hf = gemma_rms(h, sd[P + "final_norm.weight"].to(dtype), s["eps"])
    acts["norm_f"] = hf
    head = sd.get("lm_head.weight", sd[P + "embed_tokens.weight"]).to(dtype)
    logits = hf @ head.t()
    cap = s["cap"]
    if cap:
        logits = torch.tanh(logits / cap) * cap
    acts["logits"] = logits
    return logits, acts


def conv_matrix(w, T):
    """M[c, i, j] = weight of x[j, c] in conv[i, c] (bias excluded): w[c, 0, K-1-(i-j)] for 0 <= i-j < K."""
    W, _, K = w.shape
    M = torch.zeros(W, T, T, dtype=w.dtype)
    for i in range(T):
        for d in range(K):
            if i - d >= 0:
                M[:, i, i - d] = w[:, 0, K - 1 - d]
    return M


def implicit_attention(acts, sd, layer, dtype=torch.float64, compat=False):
    """[W, T, T] per-channel matrices diag(y)·α_RG·M_conv relative to x = linear_x(v)."""
    a = acts[f"layers.{layer}.a"].to(dtype)
    gx = acts[f"layers.{layer}.gate_x"].to(dtype)
    y = acts[f"layers.{layer}.y"].to(dtype)
    T, W = a.shape
    m = torch.sqrt(torch.clamp(1.0 - a * a, min=0.0))
    m[0] = 1.0
    if compat:
        m = torch.ones_like(m)
    alpha = torch.zeros(W, T, T, dtype=dtype)
    for i in range(T):
        prod = torch.ones(W, dtype=dtype)
        for j in range(i, -1, -1):
            alpha[:, i, j] = prod * m[j] * gx[j]
            prod = prod * a[j]
    w = sd[f"{P}layers.{layer}.temporal_block.conv_1d.weight"].to(dtype)
    return y.t()[:, :, None] * (alpha @ conv_matrix(w, T))
