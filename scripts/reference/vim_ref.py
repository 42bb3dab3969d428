#!/usr/bin/python3
"""Plain-PyTorch reference of Vision Mamba (hustvl/Vim, bimamba v2 with a middle class token), written from
shared/specs/model-families.md §6 — not from the official code, whose non-CUDA path silently runs only the forward
direction.

    logits, acts = forward(state_dict, pixels)        # pixels [3, H, W] (already normalised), any float dtype

State-dict names are the official ones (cls_token, pos_embed, patch_embed.proj.*, layers.{i}.mixer.*, layers.{i}.norm,
norm_f, head.*). Named activations (collect=True), T = patches + 1, cls = the middle index M // 2:
    tokens (T, D)  layers.{i}.residual_in (T, D)  layers.{i}.normed (T, D)  layers.{i}.x / .z (T, E)
    layers.{i}.{fwd,bwd}.conv / .u / .delta (T, E)  .B / .C (T, N)  .ssm / .y (T, E)  — the backward direction in
    its own (reversed) token order —  layers.{i}.y (T, E) the combined (y_fwd + flip(y_bwd))/2
    layers.{i}.mixer_out (T, D)  norm_f (T, D)  feat (D)  logits (classes)
"""
import math

import torch

import mamba_ref as ref


def settings(sd):
    D = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    E, N = sd["layers.0.mixer.A_log"].shape
    R = sd["layers.0.mixer.dt_proj.weight"].shape[1]
    P = sd["patch_embed.proj.weight"].shape[-1]
    T = sd["pos_embed"].shape[1]
    return {"D": D, "depth": depth, "E": E, "N": N, "R": R, "patch": P, "T": T, "M": T - 1, "cls": (T - 1) // 2,
            "classes": sd["head.weight"].shape[0], "eps": 1e-5}


def patch_embed(pixels, weight, bias):
    """pixels [3, H, W], weight [D, 3, P, P] -> tokens [M, D] in row-major patch order."""
    P = weight.shape[-1]
    y = torch.nn.functional.conv2d(pixels[None], weight, bias, stride=P)   # [1, D, H/P, W/P]
    return y[0].flatten(1).t()                                             # [M, D]


def direction(x, z, sd, m, suffix, dtype, keep, tag):
    """One scan direction (Mamba-1 mixer up to the gate) over x, z [T, E]."""
    def w(name):
        return sd[m + name].to(dtype)
    conv = ref.causal_conv1d(x, w(f"conv1d{suffix}.weight"), w(f"conv1d{suffix}.bias"))
    u = ref.silu(conv)
    A_log = w("A_log" if suffix == "" else "A_b_log")
    N = A_log.shape[1]
    W_dt = w(f"dt_proj{suffix}.weight")
    R = W_dt.shape[1]
    xdbl = u @ w(f"x_proj{suffix}.weight").t()
    dt_low, B, C = xdbl[:, :R], xdbl[:, R:R + N], xdbl[:, R + N:]
    delta = ref.softplus(dt_low @ W_dt.t() + w(f"dt_proj{suffix}.bias"))
    ssm = ref.selective_scan(u, delta, -torch.exp(A_log), B, C)
    y = (ssm + u * w("D" if suffix == "" else "D_b")) * ref.silu(z)
    for name, t in (("conv", conv), ("u", u), ("delta", delta), ("B", B), ("C", C), ("ssm", ssm), ("y", y)):
        keep(f"{tag}.{name}", t)
    return y


def forward(sd, pixels, dtype=torch.float64, collect=True, divide_out=True):
    s = settings(sd)
    acts = {}

    def keep(name, t):
        if collect:
            acts[name] = t

    def w(name):
        return sd[name].to(dtype)

    patches = patch_embed(pixels.to(dtype), w("patch_embed.proj.weight"), w("patch_embed.proj.bias"))   # [M, D]
    cls = s["cls"]
    tokens = torch.cat([patches[:cls], w("cls_token")[0], patches[cls:]], 0) + w("pos_embed")[0]      # [T, D]
    keep("tokens", tokens)
    h = tokens
    for i in range(s["depth"]):
        p, m = f"layers.{i}.", f"layers.{i}.mixer."
        keep(p + "residual_in", h)
        normed = ref.rms_norm(h, w(p + "norm.weight"), s["eps"])
        keep(p + "normed", normed)
        xz = normed @ w(m + "in_proj.weight").t()
        E = xz.shape[1] // 2
        x, z = xz[:, :E], xz[:, E:]
        keep(p + "x", x)
        keep(p + "z", z)
        yf = direction(x, z, sd, m, "", dtype, keep, p + "fwd")
        yb = direction(torch.flip(x, [0]), torch.flip(z, [0]), sd, m, "_b", dtype, keep, p + "bwd")
        y = yf + torch.flip(yb, [0])
        if divide_out:
            y = y / 2
        keep(p + "y", y)
        out = y @ w(m + "out_proj.weight").t()
        keep(p + "mixer_out", out)
        h = h + out
    hf = ref.rms_norm(h, w("norm_f.weight"), s["eps"])
    keep("norm_f", hf)
    feat = hf[cls]
    keep("feat", feat)
    logits = feat @ w("head.weight").t() + w("head.bias")
    keep("logits", logits)
    return logits, acts


def random_state_dict(seed, D=32, depth=2, N=8, img=32, patch=8, classes=10, d_conv=4):
    """A random Vim with the official names and Mamba's initialisation scales, plus a real share for the scan."""
    g = torch.Generator().manual_seed(seed)
    E, R = 2 * D, math.ceil(D / 16)
    M = (img // patch) ** 2

    def randn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    sd = {"cls_token": randn(1, 1, D, std=0.5), "pos_embed": randn(1, M + 1, D, std=0.5),
          "patch_embed.proj.weight": randn(D, 3, patch, patch, std=1 / math.sqrt(3 * patch * patch)),
          "patch_embed.proj.bias": randn(D, std=0.1)}
    for i in range(depth):
        p, m = f"layers.{i}.", f"layers.{i}.mixer."
        sd[p + "norm.weight"] = unif(0.75, 1.25, D)
        sd[m + "in_proj.weight"] = randn(2 * E, D, std=1 / math.sqrt(D))
        sd[m + "out_proj.weight"] = randn(D, E, std=1 / math.sqrt(E))
        for sfx, alog, dd in (("", "A_log", "D"), ("_b", "A_b_log", "D_b")):
            sd[m + f"conv1d{sfx}.weight"] = randn(E, 1, d_conv, std=1 / math.sqrt(d_conv))
            sd[m + f"conv1d{sfx}.bias"] = unif(-0.5, 0.5, E)
            sd[m + f"x_proj{sfx}.weight"] = randn(R + 2 * N, E, std=1 / math.sqrt(E))
            sd[m + f"dt_proj{sfx}.weight"] = unif(-1, 1, E, R) * R ** -0.5
            dt = torch.exp(unif(math.log(0.005), math.log(0.5), E))
            sd[m + f"dt_proj{sfx}.bias"] = dt + torch.log(-torch.expm1(-dt))
            sd[m + alog] = torch.log(unif(1, N, E, N))
            sd[m + dd] = unif(0.5, 1.5, E)
    sd["norm_f.weight"] = unif(0.75, 1.25, D)
    sd["head.weight"] = randn(classes, D, std=1 / math.sqrt(D))
    sd["head.bias"] = randn(classes, std=0.1)
    return sd
