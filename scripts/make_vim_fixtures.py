#!/usr/bin/python3
"""Writes the Vision Mamba test fixtures into tests/data/vim/ (deterministic; run with /usr/bin/python3):

  vim-tiny-random.pth          a training checkpoint exactly as the official ones are distributed: a torch.save zip
                               whose 'model' entry is the state dict (OrderedDict), next to 'model_ema', 'optimizer'
                               (state and param_groups), 'lr_scheduler', 'scaler', 'epoch' and 'args' (an
                               argparse.Namespace) — entries the C++ reader must step over without executing anything
  vim-tiny-random.safetensors  the same state dict as safetensors (F32)
  vim-evil.pth                 the same checkpoint with a pickled object in 'args' whose reduction names os.system —
                               the C++ reader must refuse it without executing anything
  reference.safetensors        'pixels' [3, 32, 32] and the reference outputs (scripts/reference/vim_ref.py, computed in
                               float64 on the stored f32 weights, stored as F32): 'logits' and every named activation

The model: img 32, patch 8 (16 patches + the middle class token = 17 tokens), D 32, 2 layers, E 64, N 8, R 2,
10 classes; dt up to 0.5 so the scans carry a real share of each layer's output.
"""
import argparse
import collections
import io
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba_ref as ref  # noqa: E402
import vim_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(HERE), "tests", "data", "vim")


def forward_from_tokens(sd, tokens):
    """vim_ref.forward after the embedding (tokens [T, D]), differentiable, float64."""
    s = vim_ref.settings(sd)
    h = tokens
    for i in range(s["depth"]):
        p, m = f"layers.{i}.", f"layers.{i}.mixer."
        normed = ref.rms_norm(h, sd[p + "norm.weight"], s["eps"])
        xz = normed @ sd[m + "in_proj.weight"].t()
        E = xz.shape[1] // 2
        x, z = xz[:, :E], xz[:, E:]
        keep = lambda name, t: None  # noqa: E731
        yf = vim_ref.direction(x, z, sd, m, "", torch.float64, keep, "")
        yb = vim_ref.direction(torch.flip(x, [0]), torch.flip(z, [0]), sd, m, "_b", torch.float64, keep, "")
        h = h + ((yf + torch.flip(yb, [0])) / 2) @ sd[m + "out_proj.weight"].t()
    hf = ref.rms_norm(h, sd["norm_f.weight"], s["eps"])
    return hf[s["cls"]] @ sd["head.weight"].t() + sd["head.bias"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd64 = vim_ref.random_state_dict(1234)
    sd = collections.OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in sd64.items())
    g = torch.Generator().manual_seed(99)
    params = list(sd.values())[:2]
    ckpt = {
        "model": sd,
        "model_ema": collections.OrderedDict((k, v.clone()) for k, v in list(sd.items())[:3]),
        "optimizer": {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(params[0]),
                                    "exp_avg_sq": torch.zeros_like(params[0])}},
                      "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05,
                                        "amsgrad": False, "params": [0, 1]}]},
        "lr_scheduler": {"base_lrs": [5e-4], "last_epoch": 3, "_step_count": 4, "verbose": False},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 17},
        "epoch": 3,
        "args": argparse.Namespace(model="vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
                                   batch_size=128, input_size=224, lr=5e-4, drop_path=0.0, seed=0, output_dir="./out",
                                   data_set="IMNET", if_amp=False, opt_betas=None),
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with open(os.path.join(OUT, "vim-tiny-random.pth"), "wb") as f:
        f.write(buf.getvalue())
    ref.write_safetensors(os.path.join(OUT, "vim-tiny-random.safetensors"), dict(sd))
    evil = dict(ckpt)
    evil["args"] = Evil()
    buf = io.BytesIO()
    torch.save(evil, buf)
    with open(os.path.join(OUT, "vim-evil.pth"), "wb") as f:
        f.write(buf.getvalue())

    pixels = torch.randn(3, 32, 32, generator=g, dtype=torch.float32)
    sd_back = {k: v.to(torch.float64) for k, v in sd.items()}
    logits, acts = vim_ref.forward(sd_back, pixels.to(torch.float64))
    out = {"pixels": pixels}
    for k, v in acts.items():
        out[k] = v.to(torch.float32).contiguous()
    # Gradient fixture: ∂ logit[c] / ∂ tokens by autograd in float64 (c = 3), for the C++ gradient engine.
    tokens = acts["tokens"].detach().clone().requires_grad_(True)
    lg = forward_from_tokens(sd_back, tokens)
    lg[3].backward()
    out["grad_tokens_class3"] = tokens.grad.to(torch.float32).contiguous()
    out["logit_class3"] = lg[3].detach().to(torch.float32).reshape(1)
    ref.write_safetensors(os.path.join(OUT, "reference.safetensors"), out)
    # Sanity: float32 run of the reference is close; the scans matter.
    l32, _ = vim_ref.forward({k: v for k, v in sd.items()}, pixels, dtype=torch.float32, collect=False)
    share = max(float(acts[f"layers.{i}.fwd.ssm"].norm() / acts[f"layers.{i}.fwd.y"].norm()) for i in range(2))
    print(f"logits {logits.tolist()}\nf32 vs f64 max diff {float((l32.double() - logits).abs().max()):.2e}, "
          f"ssm share up to {share:.2f}")
    # The torch reader can load it back (weights_only is not in torch 1.13; plain load).
    back = torch.load(os.path.join(OUT, "vim-tiny-random.pth"))
    assert all(torch.equal(back["model"][k], sd[k]) for k in sd)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
