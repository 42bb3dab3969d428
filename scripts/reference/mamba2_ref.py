"""PyTorch reference of Mamba-2 (Mamba2ForCausalLM), written from shared/specs/model-families.md §3.

Two forms of the SSD scan, checked against each other by `self_test()`:
  ssd_sequential  the recurrence S = exp(δA)·S + δ·x⊗B, y = C·S   (O(T·H·P·N))
  ssd_chunked     the chunked form of HF `torch_forward` (intra-chunk segsum, chunk-end states, inter-chunk pass)

`forward()` computes in float64 (or any dtype) and returns logits plus every named intermediate:
  layers.{i}.residual_in (T,Dm)  layers.{i}.normed (T,Dm)  layers.{i}.z (T,Di)  layers.{i}.xbc (T,Di+2GN)
  layers.{i}.dt (T,H)  layers.{i}.conv (T,Di+2GN)  layers.{i}.x (T,Di)  layers.{i}.B (T,GN)  layers.{i}.C (T,GN)
  layers.{i}.delta (T,H)  layers.{i}.ssm (T,Di)  layers.{i}.y (T,Di) (= ssm + D·x)  layers.{i}.gated (T,Di)
  layers.{i}.mixer_out (T,Dm)  norm_f (T,Dm)
Run as a script: self-test of the two scan forms.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mamba_ref import causal_conv1d, load_state_dict, read_safetensors, rms_norm, silu, softplus, write_safetensors  # noqa: E402,F401


def model_settings(config, sd):
    """What the forward needs from the config; dimensions from tensor shapes."""
    if "model_type" in config:
        assert config["model_type"] == "mamba2", config["model_type"]
        eps = float(config.get("layer_norm_epsilon", 1e-5))
        tied = bool(config.get("tie_word_embeddings", False))
        G = int(config.get("n_groups", 1))
        lim = config.get("time_step_limit", [0.0, math.inf])
        chunk = int(config.get("chunk_size", 256))
        norm_groups = 1                                 # HF MambaRMSNormGated: over the whole Di
    else:
        ssm = config.get("ssm_cfg", {})
        assert ssm.get("layer") == "Mamba2"
        eps = 1e-5
        tied = bool(config.get("tie_embeddings", True))
        G = int(ssm.get("ngroups", 1))
        lim = ssm.get("dt_limit", [0.0, math.inf])
        chunk = int(ssm.get("chunk_size", 256))
        norm_groups = G                                 # mamba_ssm RMSNormGated(group_size = Di / ngroups)
    n_layer = 0
    while f"backbone.layers.{n_layer}.mixer.A_log" in sd:
        n_layer += 1
    H = sd["backbone.layers.0.mixer.A_log"].shape[0]
    Di = sd["backbone.layers.0.mixer.out_proj.weight"].shape[1]
    conv_dim = sd["backbone.layers.0.mixer.conv1d.weight"].shape[0]
    N = (conv_dim - Di) // (2 * G)
    return dict(eps=eps, tied=tied, G=G, H=H, P=Di // H, N=N, Di=Di, lim=(float(lim[0]), float(lim[1])),
                chunk=chunk, norm_groups=norm_groups, n_layer=n_layer)


def ssd_sequential(x, delta, A, B, C):
    """x [T,H,P], delta [T,H], A [H], B/C [T,H,N] (already expanded to heads) -> y [T,H,P] (no D term)."""
    T, H, P = x.shape
    N = B.shape[-1]
    S = torch.zeros(H, P, N, dtype=x.dtype)
    ys = []
    for t in range(T):
        a = torch.exp(delta[t] * A)                                        # [H]
        S = a[:, None, None] * S + (delta[t][:, None, None] * x[t][:, :, None]) * B[t][:, None, :]
        ys.append(torch.einsum("hpn,hn->hp", S, C[t]))
    return torch.stack(ys)


def segsum(a):
    """a [..., Q] -> [..., Q, Q] with out[l, s] = Σ_{s<k≤l} a_k for s ≤ l, -inf above the diagonal (masked cumsum)."""
    Q = a.shape[-1]
    x = a[..., None].expand(*a.shape, Q)                                   # x[..., k, s] = a_k
    low = torch.tril(torch.ones(Q, Q, dtype=torch.bool), diagonal=-1)       # k > s
    x = x.masked_fill(~low, 0)
    ss = torch.cumsum(x, dim=-2)                                           # Σ_{s<k≤l}
    keep = torch.tril(torch.ones(Q, Q, dtype=torch.bool), diagonal=0)
    return ss.masked_fill(~keep, -math.inf)


def ssd_chunked(x, delta, A, B, C, Q):
    """The chunked SSD (HF torch_forward order of operations, simplified)."""
    T, H, P = x.shape
    N = B.shape[-1]
    pad = (-T) % Q
    def padt(t):
        return torch.cat([t, torch.zeros(pad, *t.shape[1:], dtype=t.dtype)]) if pad else t
    x, delta, B, C = padt(x), padt(delta), padt(B), padt(C)
    nc = x.shape[0] // Q
    xd = (x * delta[..., None]).reshape(nc, Q, H, P)                       # δ·x
    a = (delta * A).reshape(nc, Q, H).permute(0, 2, 1)                     # [c, H, Q]
    Bc, Cc = B.reshape(nc, Q, H, N), C.reshape(nc, Q, H, N)
    cs = torch.cumsum(a, dim=-1)                                           # [c, H, Q]
    L = torch.exp(segsum(a))                                               # [c, H, Q(l), Q(s)]
    y_diag = torch.einsum("clhn,cshn,chls,cshp->clhp", Cc, Bc, L, xd)
    decay_states = torch.exp(cs[..., -1:] - cs)                            # [c, H, Q]
    states = torch.einsum("cshn,chs,cshp->chpn", Bc, decay_states, xd)     # chunk-end states (from zero)
    states = torch.cat([torch.zeros(1, H, P, N, dtype=x.dtype), states])   # [c+1, ...]
    tot = torch.cat([torch.zeros(1, H, dtype=x.dtype), cs[..., -1]])      # [c+1, H] (with a leading 0)
    dc = torch.exp(segsum(tot.t()))                                        # [H, c+1, c+1]
    new_states = torch.einsum("hzc,chpn->zhpn", dc, states)                # state after each chunk boundary
    prev = new_states[:-1]                                                 # state entering chunk c
    y_off = torch.einsum("clhn,chpn,chl->clhp", Cc, prev, torch.exp(cs))
    y = (y_diag + y_off).reshape(nc * Q, H, P)
    return y[:T]


def gated_rms_norm(y, z, weight, eps, groups):
    g = y * silu(z)
    T, Di = g.shape
    gg = g.reshape(T, groups, Di // groups)
    r = torch.rsqrt(gg.pow(2).mean(-1, keepdim=True) + eps)
    return (gg * r).reshape(T, Di) * weight


def forward(sd, config, input_ids, dtype=torch.float64, collect=True, chunked=False):
    s = model_settings(config, sd)
    H, P, N, G, Di = s["H"], s["P"], s["N"], s["G"], s["Di"]
    acts = {}

    def w(name, required=True):
        t = sd.get("backbone." + name) if ("backbone." + name) in sd else sd.get(name)
        if t is None:
            assert not required, name
            return None
        return t.to(dtype)

    def keep(name, t):
        if collect:
            acts[name] = t.clone()

    ids = torch.tensor(input_ids, dtype=torch.long)
    emb = w("embeddings.weight") if "backbone.embeddings.weight" in sd else w("embedding.weight")
    h = emb[ids]
    T = h.shape[0]
    for i in range(s["n_layer"]):
        p = f"layers.{i}."
        m = p + "mixer."
        keep(p + "residual_in", h)
        u = rms_norm(h, w(p + "norm.weight"), s["eps"])
        keep(p + "normed", u)
        zx = u @ w(m + "in_proj.weight").t()
        b = w(m + "in_proj.bias", False)
        if b is not None:
            zx = zx + b
        z, xbc, dt = zx[:, :Di], zx[:, Di:2 * Di + 2 * G * N], zx[:, 2 * Di + 2 * G * N:]
        assert dt.shape[1] == H
        keep(p + "z", z)
        keep(p + "xbc", xbc)
        keep(p + "dt", dt)
        conv = causal_conv1d(xbc, w(m + "conv1d.weight"), w(m + "conv1d.bias", False))
        keep(p + "conv", conv)
        xbc_a = silu(conv)
        x, B, C = xbc_a[:, :Di], xbc_a[:, Di:Di + G * N], xbc_a[:, Di + G * N:]
        keep(p + "x", x)
        keep(p + "B", B)
        keep(p + "C", C)
        delta = softplus(dt + w(m + "dt_bias"))
        lo, hi = s["lim"]
        if lo > 0.0 or hi < math.inf:
            delta = torch.clamp(delta, lo, hi)
        keep(p + "delta", delta)
        A = -torch.exp(w(m + "A_log"))
        grp = torch.arange(H) // (H // G)                                  # head h -> group h / (H/G)
        Bh = B.reshape(T, G, N)[:, grp]
        Ch = C.reshape(T, G, N)[:, grp]
        xh = x.reshape(T, H, P)
        if chunked:
            ssm = ssd_chunked(xh, delta, A, Bh, Ch, s["chunk"])
        else:
            ssm = ssd_sequential(xh, delta, A, Bh, Ch)
        ssm = ssm.reshape(T, Di)
        keep(p + "ssm", ssm)
        D = w(m + "D")
        y = ssm + (xh * D[None, :, None]).reshape(T, Di)
        keep(p + "y", y)
        g = gated_rms_norm(y, z, w(m + "norm.weight"), s["eps"], s["norm_groups"])
        keep(p + "gated", g)
        out = g @ w(m + "out_proj.weight").t()
        ob = w(m + "out_proj.bias", False)
        if ob is not None:
            out = out + ob
        keep(p + "mixer_out", out)
        h = h + out
    hn = rms_norm(h, w("norm_f.weight"), s["eps"])
    keep("norm_f", hn)
    head = sd["lm_head.weight"].to(dtype) if "lm_head.weight" in sd else emb
    logits = hn @ head.t()
    return logits, acts


def implicit_attention(delta, A, B, C, H, G):
    """alpha [H, T, T]: alpha[h,i,j] = exp(A_h (S_i - S_j)) · δ_j · (C_i·B_j), j ≤ i; S = cumsum δ of head h."""
    T = delta.shape[0]
    N = B.shape[1] // G
    grp = torch.arange(H) // (H // G)
    Bh = B.reshape(T, G, N)[:, grp]
    Ch = C.reshape(T, G, N)[:, grp]
    S = torch.cumsum(delta, 0)                                             # [T, H]
    dec = torch.exp(A[:, None, None] * (S.t()[:, :, None] - S.t()[:, None, :]))
    cb = torch.einsum("ihn,jhn->hij", Ch, Bh)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return torch.where(mask, dec * cb * delta.t()[:, None, :], torch.zeros((), dtype=delta.dtype))


def self_test(seed=0):
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for T, H, P, N, Q in [(11, 4, 3, 5, 4), (16, 2, 2, 3, 8), (7, 3, 2, 2, 16), (33, 2, 4, 6, 5)]:
        x = torch.randn(T, H, P, generator=g, dtype=torch.float64)
        delta = torch.exp(torch.rand(T, H, generator=g, dtype=torch.float64) * 4 - 5)
        A = -torch.rand(H, generator=g, dtype=torch.float64) * 15 - 1
        B = torch.randn(T, H, N, generator=g, dtype=torch.float64)
        C = torch.randn(T, H, N, generator=g, dtype=torch.float64)
        a = ssd_sequential(x, delta, A, B, C)
        b = ssd_chunked(x, delta, A, B, C, Q)
        err = float((a - b).abs().max() / max(1.0, float(a.abs().max())))
        worst = max(worst, err)
        assert err < 1e-12, (T, H, P, N, Q, err)
        # implicit attention reproduces the scan: y[i,h,p] = Σ_j alpha[h,i,j] x[j,h,p]
        al = implicit_attention(delta, A, B[:, :, :].reshape(T, H * N), C.reshape(T, H * N), H, H)
        yy = torch.einsum("hij,jhp->ihp", al, x)
        assert float((yy - a).abs().max()) < 1e-10
    return worst


if __name__ == "__main__":
    print("mamba2_ref self-test: sequential vs chunked SSD, max rel. error", self_test())
