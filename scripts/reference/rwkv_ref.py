#!/usr/bin/python3
"""PyTorch reference of RWKV-4 (HF `RwkvForCausalLM`, model_type "rwkv"), written from
shared/specs/model-families.md §4 — no transformers needed.

    forward(sd, config, ids)  -> (logits, acts)   float64 by default; acts keyed like the C++ engine:
        pre_ln                        (T,H)  block-0 pre LayerNorm of the embeddings
        layers.{i}.residual_in        (T,H)  the residual stream entering block i (after any earlier halving)
        layers.{i}.ln1 / ln2          (T,H)
        layers.{i}.k / v              (T,A)  time-mix key and value
        layers.{i}.r                  (T,A)  sigmoid(receptance)
        layers.{i}.wkv                (T,A)  the WKV average
        layers.{i}.rwkv               (T,A)  r * wkv (the input of the output projection)
        layers.{i}.att_out            (T,H)  after the output projection (weights divided by 2^(i//rescale_every))
        layers.{i}.ffn_k              (T,I)  relu(key)^2
        layers.{i}.ffn_r              (T,H)  sigmoid(receptance)
        layers.{i}.ffn_out            (T,H)  r * (ffn_k · W_vᵀ) (W_v divided like att_out)
        norm_f                        (T,H)  ln_out
    wkv_naive(...) is the unstabilised exp-sum form, used by self_test.

Rescaling (eval mode, as HF does it): with rescale_every = R > 0 block i's attention.output and feed_forward.value
weights are divided by 2^(i // R), and the residual stream is halved after every block i with (i+1) % R == 0.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mamba_ref  # noqa: E402  (safetensors / .bin reading)

P = "rwkv."


def load_model_dir(path):
    import json
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    return config, mamba_ref.load_state_dict(path)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def token_shift(n):
    s = torch.zeros_like(n)
    s[1:] = n[:-1]
    return s


def wkv_stable(time_decay, time_first, k, v):
    """The max-tracking recurrence (spec §4.3), in the dtype of the inputs. k, v: (T, A)."""
    T, A = k.shape
    wneg = -torch.exp(time_decay)
    u = time_first
    num = torch.zeros(A, dtype=k.dtype)
    den = torch.zeros(A, dtype=k.dtype)
    p = torch.full((A,), -1e38, dtype=k.dtype)
    out = torch.empty_like(k)
    for t in range(T):
        q = torch.maximum(p, u + k[t])
        e1, e2 = torch.exp(p - q), torch.exp(u + k[t] - q)
        out[t] = (e1 * num + e2 * v[t]) / (e1 * den + e2)
        q2 = torch.maximum(p + wneg, k[t])
        e1, e2 = torch.exp(p + wneg - q2), torch.exp(k[t] - q2)
        num = e1 * num + e2 * v[t]
        den = e1 * den + e2
        p = q2
    return out


def wkv_naive(time_decay, time_first, k, v):
    T, A = k.shape
    w = torch.exp(time_decay)
    out = torch.empty_like(k)
    for t in range(T):
        num = torch.exp(time_first + k[t]) * v[t]
        den = torch.exp(time_first + k[t])
        for j in range(t):
            e = torch.exp(-(t - 1 - j) * w + k[j])
            num = num + e * v[j]
            den = den + e
        out[t] = num / den
    return out


def settings(config, sd):
    assert config.get("model_type") == "rwkv", config.get("model_type")
    n_layer = 0
    while f"{P}blocks.{n_layer}.ln1.weight" in sd:
        n_layer += 1
    return {"n_layer": n_layer, "eps": float(config.get("layer_norm_epsilon", 1e-5)),
            "rescale_every": int(config.get("rescale_every", 6) or 0)}


def forward(sd, config, ids, dtype=torch.float64, collect=True):
    s = settings(config, sd)

    def w(name):
        return sd[name].to(dtype)

    acts = {}

    def keep(name, t):
        if collect:
            acts[name] = t.clone()

    eps, R = s["eps"], s["rescale_every"]
    ids = torch.as_tensor(ids, dtype=torch.long)
    x = w(P + "embeddings.weight")[ids]
    x = layer_norm(x, w(P + "blocks.0.pre_ln.weight"), w(P + "blocks.0.pre_ln.bias"), eps)
    keep("pre_ln", x)
    for i in range(s["n_layer"]):
        b = f"{P}blocks.{i}."
        scale = 2.0 ** (i // R) if R > 0 else 1.0
        keep(f"layers.{i}.residual_in", x)
        n = layer_norm(x, w(b + "ln1.weight"), w(b + "ln1.bias"), eps)
        sh = token_shift(n)

        def mix(mu):
            mu = mu.reshape(-1)
            return n * mu + sh * (1 - mu)
        k = mix(w(b + "attention.time_mix_key")) @ w(b + "attention.key.weight").T
        v = mix(w(b + "attention.time_mix_value")) @ w(b + "attention.value.weight").T
        r = torch.sigmoid(mix(w(b + "attention.time_mix_receptance")) @ w(b + "attention.receptance.weight").T)
        wkv = wkv_stable(w(b + "attention.time_decay"), w(b + "attention.time_first"), k, v)
        rwkv = r * wkv
        att = rwkv @ (w(b + "attention.output.weight") / scale).T
        for nm, t in (("ln1", n), ("k", k), ("v", v), ("r", r), ("wkv", wkv), ("rwkv", rwkv), ("att_out", att)):
            keep(f"layers.{i}.{nm}", t)
        x = x + att
        n = layer_norm(x, w(b + "ln2.weight"), w(b + "ln2.bias"), eps)
        sh = token_shift(n)
        fk = torch.relu(mix(w(b + "feed_forward.time_mix_key")) @ w(b + "feed_forward.key.weight").T) ** 2
        fr = torch.sigmoid(mix(w(b + "feed_forward.time_mix_receptance")) @ w(b + "feed_forward.receptance.weight").T)
        fo = fr * (fk @ (w(b + "feed_forward.value.weight") / scale).T)
        for nm, t in (("ln2", n), ("ffn_k", fk), ("ffn_r", fr), ("ffn_out", fo)):
            keep(f"layers.{i}.{nm}", t)
        x = x + fo
        if R > 0 and (i + 1) % R == 0:
            x = x / 2
    x = layer_norm(x, w(P + "ln_out.weight"), w(P + "ln_out.bias"), 1e-5)   # nn.LayerNorm default eps
    keep("norm_f", x)
    logits = x @ w("head.weight").T
    return logits, acts


def forward_dir(path, ids, dtype=torch.float64, collect=True):
    config, sd = load_model_dir(path)
    return forward(sd, config, ids, dtype, collect)


def self_test(seed=0):
    g = torch.Generator().manual_seed(seed)
    T, A = 9, 5
    td = torch.randn(A, generator=g, dtype=torch.float64)
    tf = torch.randn(A, generator=g, dtype=torch.float64)
    k = torch.randn(T, A, generator=g, dtype=torch.float64) * 2
    v = torch.randn(T, A, generator=g, dtype=torch.float64)
    a, b = wkv_stable(td, tf, k, v), wkv_naive(td, tf, k, v)
    err = float((a - b).abs().max())
    assert err < 1e-12, err
    return err


if __name__ == "__main__":
    print("stable vs naive WKV max error", self_test())
