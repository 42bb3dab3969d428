#!/usr/bin/python3
"""Plain-PyTorch reference forward of MambaForCausalLM and FalconMambaForCausalLM, written from
shared/specs/model-families.md (§0, §1.4, §2, §7) — the semantics of Hugging Face `slow_forward` (the path that runs
without CUDA). No transformers, no safetensors package: checkpoint files are read and written by hand.

    logits, acts = forward(state_dict, config, input_ids, dtype=torch.float64)

`state_dict` uses the HF tensor names (`backbone.embeddings.weight`, `backbone.layers.{i}.mixer.in_proj.weight`, ...),
`config` is the config.json dict (HF style or original mamba_ssm style), `dtype` is what everything is computed in
(float32 = what HF computes for an f32 checkpoint on CPU; float64 = the fixture ground truth). All weights are upcast
to `dtype` first. `acts` maps the intermediate names below (the C++ engine exposes the same names) to tensors:

    layers.{i}.residual_in [T,Dm]  hidden state entering layer i (the residual stream)
    layers.{i}.normed      [T,Dm]  RMSNorm(residual_in) · norm.weight
    layers.{i}.x           [T,E]   first half of in_proj output (pre-conv)
    layers.{i}.z           [T,E]   second half of in_proj output (gate)
    layers.{i}.conv        [T,E]   causal depthwise conv1d output incl. bias, before SiLU
    layers.{i}.u           [T,E]   silu(conv) — the SSM input
    layers.{i}.dt_low      [T,R]   x_proj dt part (after the weightless RMS for Falcon-Mamba)
    layers.{i}.delta       [T,E]   softplus(dt_low · W_dtᵀ + b_dt)
    layers.{i}.B, .C       [T,N]   x_proj B / C parts (after the weightless RMS for Falcon-Mamba)
    layers.{i}.ssm         [T,E]   Σ_n h[t,e,n]·C[t,n]   (no D term)
    layers.{i}.y           [T,E]   (ssm + D·u) · silu(z) — the out_proj input
    layers.{i}.mixer_out   [T,Dm]  out_proj output
    norm_f                 [T,Dm]  final RMSNorm output
    logits                 [T,V]

`gradient(state_dict, config, input_ids, target, position, rules, zero_biases)` is the autograd reference of the
gradient / MambaLRP engine (see its docstring and shared/specs/mambalrp.md §4).

`load_model_dir(path)` reads config.json plus model.safetensors / sharded safetensors (index json) /
pytorch_model.bin (or its index), renames the mamba_ssm `backbone.embedding.weight`, and returns (config, state_dict).
"""
import json
import math
import os
import struct

import torch

# ------------------------------------------------------------------------------------------------------------------
# safetensors (spec §7.2)

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
# Bit-pattern views used to get at raw bytes (numpy has no bfloat16).
_RAW_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def tensor_to_bytes(t):
    """Little-endian C-order bytes of a CPU tensor (any strides)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    raw = t.view(_RAW_VIEW[t.element_size()]) if t.numel() else t
    return raw.numpy().tobytes() if t.numel() else b""


def bytes_to_tensor(buf, dtype, shape):
    n = math.prod(shape)
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    item = _itemsize(dtype)
    assert len(buf) == n * item, (len(buf), n, item)
    raw = torch.frombuffer(bytearray(buf), dtype=_RAW_VIEW[item] if dtype != torch.bool else torch.uint8)
    return raw.view(dtype).reshape(shape).clone() if dtype != torch.bool else raw.to(torch.bool).reshape(shape)


def read_safetensors(path):
    """Returns (dict name -> tensor, metadata dict or None). Checks the layout rules of the format."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data) and n <= 100_000_000, f"{path}: bad header length {n}"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    buf = data[8 + n:]
    meta = header.pop("__metadata__", None)
    out, spans = {}, []
    for name, info in header.items():
        dtype = ST_DTYPES[info["dtype"]]
        shape = list(info["shape"])
        b, e = info["data_offsets"]
        assert 0 <= b <= e <= len(buf) and e - b == math.prod(shape) * _itemsize(dtype), f"{path}: {name}"
        spans.append((b, e))
        out[name] = bytes_to_tensor(buf[b:e], dtype, shape)
    pos = 0
    for b, e in sorted(spans):
        assert b == pos, f"{path}: hole or overlap at {b}"
        pos = e
    assert pos == len(buf), f"{path}: trailing bytes"
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes like the official writer: tensors sorted by descending dtype alignment then name, compact JSON header
    (`__metadata__` first) right-padded with spaces to a multiple of 8, then the data."""
    if metadata is None:
        metadata = {"format": "pt"}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header = {"__metadata__": metadata} if metadata else {}
    blobs, pos = [], 0
    for name in order:
        t = tensors[name]
        raw = tensor_to_bytes(t)
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    hj = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def write_or_verify(path, tensors, verify, root):
    """Writes `tensors` to the fixture `path`, or with `verify` compares them with the committed file (same names,
    bit-identical values). Prints one line naming the file (relative to `root`); returns False when it differs."""
    rel = os.path.relpath(path, root)
    if verify:
        stored, _ = read_safetensors(path)
        same = set(stored) == set(tensors) and all(torch.equal(stored[k], tensors[k]) for k in tensors)
        print(f"{rel}: {'identical' if same else 'DIFFERS'}")
        return same
    write_safetensors(path, tensors, {"format": "pt"})
    print(f"{rel} ({os.path.getsize(path)} bytes)")
    return True


# ------------------------------------------------------------------------------------------------------------------
# Model directories (spec §7.1, §1.3)


def _load_bin(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict(path):
    """State dict (HF names) of a model directory, in the stored dtypes."""
    def p(name):
        return os.path.join(path, name)
    sd = {}
    if os.path.exists(p("model.safetensors")):
        sd, _ = read_safetensors(p("model.safetensors"))
    elif os.path.exists(p("model.safetensors.index.json")):
        with open(p("model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            part, _ = read_safetensors(p(shard))
            assert set(part) == {k for k, v in wm.items() if v == shard}, shard
            sd.update(part)
    elif os.path.exists(p("pytorch_model.bin")):
        sd = dict(_load_bin(p("pytorch_model.bin")))
    elif os.path.exists(p("pytorch_model.bin.index.json")):
        with open(p("pytorch_model.bin.index.json")) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            sd.update(_load_bin(p(shard)))
    else:
        raise FileNotFoundError(f"{path}: no weights file")
    # mamba_ssm names the embedding `backbone.embedding.weight`; HF renames it on load.
    if "backbone.embedding.weight" in sd and "backbone.embeddings.weight" not in sd:
        sd["backbone.embeddings.weight"] = sd.pop("backbone.embedding.weight")
    return sd


def load_model_dir(path):
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    return config, load_state_dict(path)


def model_settings(config, state_dict):
    """What the forward needs from the config. Dimensions come from tensor shapes (spec §9)."""
    if "model_type" in config:                      # HF config
        family = config["model_type"]
        eps = config.get("layer_norm_epsilon", 1e-5)
        tied = config.get("tie_word_embeddings", True)
        residual_in_fp32 = config.get("residual_in_fp32", True)
    else:                                           # original mamba_ssm config (MambaConfig dataclass)
        assert config.get("ssm_cfg", {}).get("layer", "Mamba1") == "Mamba1"
        assert config.get("rms_norm", True) and not config.get("attn_layer_idx") and not config.get("d_intermediate")
        family = "mamba"
        eps = 1e-5                                  # MixerModel default, not in the config
        tied = config.get("tie_embeddings", True)
        residual_in_fp32 = config.get("residual_in_fp32", True)
    assert family in ("mamba", "falcon_mamba"), family
    n_layer = 0
    while f"backbone.layers.{n_layer}.mixer.A_log" in state_dict:
        n_layer += 1
    return {
        "family": family,
        "eps": float(eps),
        "mixer_rms_eps": float(config.get("mixer_rms_eps", 1e-6)) if family == "falcon_mamba" else None,
        "tied": bool(tied),
        "residual_in_fp32": bool(residual_in_fp32),
        "n_layer": n_layer,
    }


# ------------------------------------------------------------------------------------------------------------------
# Primitives (spec §0)


def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    # PyTorch default: beta 1, threshold 20
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))


def rms_norm(x, weight, eps):
    # [T, D]; HF MambaRMSNorm: x·rsqrt(mean(x²)+eps), then ·weight
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    y = x * r
    return y * weight if weight is not None else y


def causal_conv1d(x, weight, bias):
    """x [T, E], weight [E, 1, K], bias [E] or None -> [T, E].
    out[t, c] = b[c] + Σ_k W[c,0,k] · x[t-(K-1)+k, c]   (x = 0 before the start)."""
    T, E = x.shape
    K = weight.shape[-1]
    xc = x.t().unsqueeze(0)                                           # [1, E, T]
    y = torch.nn.functional.conv1d(xc, weight, bias, padding=K - 1, groups=E)   # [1, E, T+K-1]
    return y[0, :, :T].t()                                            # keep the first T -> [T, E]


def selective_scan(u, delta, A, B, C):
    """HF slow_forward scan. u, delta [T,E]; A [E,N]; B, C [T,N] -> ssm [T,E] (no D term).
    h[t] = exp(δ[t]·A)·h[t-1] + (δ[t]·B[t])·u[t];  ssm[t] = h[t]·C[t]   ("decay then add", output uses new state)."""
    T, E = u.shape
    dA = torch.exp(delta[:, :, None] * A[None, :, :])               # [T, E, N]
    dBu = delta[:, :, None] * B[:, None, :] * u[:, :, None]          # [T, E, N]
    h = torch.zeros_like(dA[0])                                      # [E, N]
    out = []
    for t in range(T):
        h = dA[t] * h + dBu[t]
        out.append(h @ C[t])                                         # [E]
    return torch.stack(out, 0)                                       # [T, E]


# ------------------------------------------------------------------------------------------------------------------
# Forward (spec §1.4, §2)


def forward(state_dict, config, input_ids, dtype=torch.float64, collect=True):
    """Returns (logits [T, V], acts dict). `collect=False` skips the intermediates (benchmarks)."""
    s = model_settings(config, state_dict)
    falcon = s["family"] == "falcon_mamba"

    def w(name, required=True):
        t = state_dict.get(name)
        if t is None:
            assert not required, f"missing tensor {name}"
            return None
        return t.to(dtype)

    ids = torch.as_tensor(input_ids, dtype=torch.int64)
    acts = {}

    def keep(name, t):
        if collect:
            acts[name] = t

    emb = w("backbone.embeddings.weight")                            # [V, Dm]
    h = emb[ids]                                                     # [T, Dm]
    for i in range(s["n_layer"]):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        keep(f"layers.{i}.residual_in", h)
        res = h
        normed = rms_norm(h, w(p + "norm.weight"), s["eps"])         # [T, Dm]
        keep(f"layers.{i}.normed", normed)

        xz = normed @ w(m + "in_proj.weight").t()                   # [T, 2E]
        b_in = w(m + "in_proj.bias", required=False)
        if b_in is not None:
            xz = xz + b_in
        E = xz.shape[1] // 2
        x, z = xz[:, :E], xz[:, E:]                                  # [T, E] each
        keep(f"layers.{i}.x", x)
        keep(f"layers.{i}.z", z)

        conv = causal_conv1d(x, w(m + "conv1d.weight"), w(m + "conv1d.bias", required=False))   # [T, E]
        keep(f"layers.{i}.conv", conv)
        u = silu(conv)                                               # [T, E]
        keep(f"layers.{i}.u", u)

        A_log = w(m + "A_log")                                       # [E, N]
        N = A_log.shape[1]
        W_dt = w(m + "dt_proj.weight")                               # [E, R]
        R = W_dt.shape[1]
        xdbl = u @ w(m + "x_proj.weight").t()                        # [T, R + 2N]
        assert xdbl.shape[1] == R + 2 * N
        dt_low, B, C = xdbl[:, :R], xdbl[:, R:R + N], xdbl[:, R + N:]
        if falcon:                                                   # weightless RMS, eps = mixer_rms_eps
            dt_low = rms_norm(dt_low, None, s["mixer_rms_eps"])
            B = rms_norm(B, None, s["mixer_rms_eps"])
            C = rms_norm(C, None, s["mixer_rms_eps"])
        keep(f"layers.{i}.dt_low", dt_low)
        keep(f"layers.{i}.B", B)
        keep(f"layers.{i}.C", C)

        delta = softplus(dt_low @ W_dt.t() + w(m + "dt_proj.bias"))  # [T, E]; bias before softplus
        keep(f"layers.{i}.delta", delta)
        A = -torch.exp(A_log)                                        # [E, N]
        ssm = selective_scan(u, delta, A, B, C)                      # [T, E]
        keep(f"layers.{i}.ssm", ssm)
        y = (ssm + u * w(m + "D")) * silu(z)                         # [T, E]; D skip on u, then the gate
        keep(f"layers.{i}.y", y)

        out = y @ w(m + "out_proj.weight").t()                       # [T, Dm]
        b_out = w(m + "out_proj.bias", required=False)
        if b_out is not None:
            out = out + b_out
        keep(f"layers.{i}.mixer_out", out)
        h = res + out                                                # residual stream
    hf = rms_norm(h, w("backbone.norm_f.weight"), s["eps"])          # [T, Dm]
    keep("norm_f", hf)
    head = w("lm_head.weight", required=False)
    if head is None:
        assert s["tied"], "lm_head.weight missing and embeddings are not tied"
        head = emb
    logits = hf @ head.t()                                           # [T, V]
    keep("logits", logits)
    return logits, acts


def self_test(seed=0):
    """Checks the vectorised primitives against their definitions written out as loops (float64)."""
    g = torch.Generator().manual_seed(seed)
    T, E, N, K = 7, 5, 3, 4
    x = torch.randn(T, E, generator=g, dtype=torch.float64)
    W = torch.randn(E, 1, K, generator=g, dtype=torch.float64)
    b = torch.randn(E, generator=g, dtype=torch.float64)
    want = torch.zeros(T, E, dtype=torch.float64)
    for t in range(T):
        for c in range(E):
            acc = b[c].item()
            for k in range(K):
                tau = t - (K - 1) + k
                if tau >= 0:
                    acc += W[c, 0, k].item() * x[tau, c].item()
            want[t, c] = acc
    assert torch.allclose(causal_conv1d(x, W, b), want, rtol=0, atol=1e-12)
    # scan vs y_t = Σ_{s≤t} C_t·(Π_{s<r≤t} exp(δ_r A))·δ_s B_s u_s
    u = torch.randn(T, E, generator=g, dtype=torch.float64)
    delta = softplus(torch.randn(T, E, generator=g, dtype=torch.float64))
    A = -torch.exp(torch.rand(E, N, generator=g, dtype=torch.float64) * 2)
    B = torch.randn(T, N, generator=g, dtype=torch.float64)
    C = torch.randn(T, N, generator=g, dtype=torch.float64)
    want = torch.zeros(T, E, dtype=torch.float64)
    for t in range(T):
        for c in range(E):
            acc = 0.0
            for s_ in range(t + 1):
                for n in range(N):
                    decay = math.exp(sum(delta[r, c].item() * A[c, n].item() for r in range(s_ + 1, t + 1)))
                    acc += C[t, n].item() * decay * delta[s_, c].item() * B[s_, n].item() * u[s_, c].item()
            want[t, c] = acc
    assert torch.allclose(selective_scan(u, delta, A, B, C), want, rtol=1e-12, atol=1e-12)
    v = torch.tensor([-30.0, -1.0, 0.0, 19.9, 20.0, 20.1, 50.0], dtype=torch.float64)
    assert torch.equal(softplus(v), torch.nn.functional.softplus(v))
    r = torch.randn(4, 6, generator=g, dtype=torch.float64)
    wn = torch.rand(6, generator=g, dtype=torch.float64)
    want = torch.stack([r[i] / math.sqrt(float((r[i] ** 2).mean()) + 1e-5) * wn for i in range(4)])
    assert torch.allclose(rms_norm(r, wn, 1e-5), want, rtol=1e-13, atol=0)
    return True


# ------------------------------------------------------------------------------------------------------------------
# Gradients and MambaLRP (shared/specs/mambalrp.md §4, HF slow-path semantics of the official code)

LRP_RULES = ("silu", "ssm", "gate", "norm")


def forward_modified(state_dict, config, embeds, rules=(), zero_biases=False, dtype=torch.float64, a_f32=True,
                     upto=None):
    """The forward of `forward` from explicit input embeddings [T, Dm], with MambaLRP's stop-gradients for the rules in
    `rules` (forward values unchanged; only autograd sees the difference). Returns norm_f's output [T, Dm].

      silu: u = c·σ(c).detach() and SiLU(z) = z·σ(z).detach()          (identity rule, both SiLUs)
      ssm:  exp(Δ·A), Δ·B and C detached                                 (the official slow path's discrete_A/B, C)
      gate: o = o/2 + (o/2).detach() right before out_proj                (half rule)
      norm: RMSNorm's rsqrt(mean(x²) + eps) detached                      (block norms and norm_f; Falcon-Mamba's
                                                                           weightless mixer norms stay exact)
    zero_biases: every bias (in_proj, conv1d, dt_proj, out_proj) taken as zero. a_f32: A = -exp(A_log) rounded to
    float32 as transformers (A_log.float()) and ssmx compute it. upto: only the first `upto` tokens (causal)."""
    for r in rules:
        assert r in LRP_RULES, r
    s = model_settings(config, state_dict)
    falcon = s["family"] == "falcon_mamba"

    def w(name, required=True, bias=False):
        t = state_dict.get(name)
        if t is None or (bias and zero_biases):
            assert not required or (bias and zero_biases), f"missing tensor {name}"
            return None
        return t.to(dtype)

    def silu_r(x):
        return x * torch.sigmoid(x).detach() if "silu" in rules else silu(x)

    def rms(x, weight, eps, hold):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        if hold:
            r = r.detach()
        y = x * r
        return y * weight if weight is not None else y

    h = embeds if upto is None else embeds[:upto]
    for i in range(s["n_layer"]):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        normed = rms(h, w(p + "norm.weight"), s["eps"], "norm" in rules)
        xz = normed @ w(m + "in_proj.weight").t()
        b_in = w(m + "in_proj.bias", required=False, bias=True)
        if b_in is not None:
            xz = xz + b_in
        E = xz.shape[1] // 2
        x, z = xz[:, :E], xz[:, E:]
        u = silu_r(causal_conv1d(x, w(m + "conv1d.weight"), w(m + "conv1d.bias", required=False, bias=True)))
        A_log = state_dict[m + "A_log"]
        A = (-torch.exp(A_log.double())).float().to(dtype) if a_f32 else -torch.exp(A_log.to(dtype))
        N = A.shape[1]
        W_dt = w(m + "dt_proj.weight")
        R = W_dt.shape[1]
        xdbl = u @ w(m + "x_proj.weight").t()
        dt_low, B, C = xdbl[:, :R], xdbl[:, R:R + N], xdbl[:, R + N:]
        if falcon:
            dt_low = rms(dt_low, None, s["mixer_rms_eps"], False)
            B = rms(B, None, s["mixer_rms_eps"], False)
            C = rms(C, None, s["mixer_rms_eps"], False)
        dt = dt_low @ W_dt.t()
        b_dt = w(m + "dt_proj.bias", required=False, bias=True)
        if b_dt is not None:
            dt = dt + b_dt
        delta = softplus(dt)
        dA = torch.exp(delta[:, :, None] * A[None, :, :])              # [T, E, N]
        dB = delta[:, :, None] * B[:, None, :]                          # [T, E, N]
        Cc = C
        if "ssm" in rules:
            dA, dB, Cc = dA.detach(), dB.detach(), C.detach()
        hs = torch.zeros_like(dA[0])
        out = []
        for t in range(u.shape[0]):
            hs = dA[t] * hs + dB[t] * u[t][:, None]
            out.append(hs @ Cc[t])
        y = (torch.stack(out, 0) + u * w(m + "D")) * silu_r(z)
        if "gate" in rules:
            y = y / 2 + (y / 2).detach()
        mix = y @ w(m + "out_proj.weight").t()
        b_out = w(m + "out_proj.bias", required=False, bias=True)
        if b_out is not None:
            mix = mix + b_out
        h = h + mix
    return rms(h, w("backbone.norm_f.weight"), s["eps"], "norm" in rules)


def head_weight(state_dict):
    head = state_dict.get("lm_head.weight")
    return head if head is not None else state_dict["backbone.embeddings.weight"]


def gradient(state_dict, config, input_ids, target, position=-1, rules=(), zero_biases=False, dtype=torch.float64,
             a_f32=True):
    """∂f/∂inputs_embeds by autograd, f = W_head[target] · norm_f[position] (a token logit), through
    `forward_modified` with the given rules. Returns (grad [T, Dm], embeds [T, Dm], f). Tokens after `position` get a
    zero gradient."""
    T = len(input_ids)
    pos = position % T
    emb = state_dict["backbone.embeddings.weight"].to(dtype)[torch.as_tensor(input_ids, dtype=torch.int64)]
    emb = emb.detach().clone().requires_grad_(True)
    nf = forward_modified(state_dict, config, emb, rules, zero_biases, dtype, a_f32, upto=pos + 1)
    f = nf[pos] @ head_weight(state_dict).to(dtype)[target]
    f.backward()
    return emb.grad.detach().clone(), emb.detach().clone(), float(f)


def forward_dir(path, input_ids, dtype=torch.float64, collect=True):
    config, sd = load_model_dir(path)
    return forward(sd, config, input_ids, dtype=dtype, collect=collect)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Run the reference forward on a model directory.")
    ap.add_argument("model")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    ap.add_argument("--f32", action="store_true", help="compute in float32 (default float64)")
    a = ap.parse_args()
    ids = [int(v) for v in a.ids.split(",")]
    logits, _ = forward_dir(a.model, ids, torch.float32 if a.f32 else torch.float64, collect=False)
    top = torch.topk(logits[-1], 5)
    print("last-position top-5:", [(int(i), round(float(v), 4)) for v, i in zip(top.values, top.indices)])
