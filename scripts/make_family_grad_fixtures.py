#!/usr/bin/python3
"""Writes the committed autograd gradient fixtures of the Mamba-2, RWKV-4 and RecurrentGemma gradient engines
(deterministic, no network): PyTorch autograd in float64 through the reference forwards in scripts/reference/
(mamba2_ref with the sequential SSD, rwkv_ref with the stable WKV, griffin_ref), on one forward-fixture model each.

    /usr/bin/python3 scripts/make_family_grad_fixtures.py            write tests/data/grad/<model>.safetensors
    /usr/bin/python3 scripts/make_family_grad_fixtures.py --verify   recompute and compare with the committed files

The input embeddings are autograd leaves (the rows of the embedding table for the fixture's input ids, T = 11); the
target is f = head[TARGET] · norm_f[position] (the logit before RecurrentGemma's soft cap). Each file holds
    input_ids I64 [T], target I64 [1], seed F64 [Dm] (= head[TARGET])
and for each case NAME in (gradient: the last position, gradient_mid: position T-4):
    NAME.grad F64 [T, Dm] = ∂f/∂(input embeddings as ssmx's embed() returns them; RecurrentGemma's are the rows
    scaled by bf16(√Dm), so its gradient is the rows' gradient divided by that factor), NAME.f F64 [1],
    NAME.position I64 [1].
The C++ test: tests/models/test_family_grad_autograd.cpp (FamilyGradients.*MatchesPyTorchAutograd).
"""
import argparse
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import griffin_ref  # noqa: E402
import mamba2_ref  # noqa: E402
import mamba_ref  # noqa: E402
import rwkv_ref  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
OUT_DIR = os.path.join(ROOT, "tests", "data", "grad")
TARGET = 7
CASES = [("gradient", 1), ("gradient_mid", 4)]  # name, position offset from the end


def family_of(name):
    """(embedding key, head key, forward(sd, config, ids) -> head input [T, Dm], input scale)."""
    if name.startswith("mamba2"):
        def fwd(sd, config, ids):
            _, acts = mamba2_ref.forward(sd, config, ids, dtype=torch.float64, collect=True, chunked=False)
            return acts["norm_f"]
        return "backbone.embeddings.weight", "lm_head.weight", fwd, lambda sd: 1.0
    if name.startswith("rwkv"):
        def fwd(sd, config, ids):
            _, acts = rwkv_ref.forward(sd, config, ids, dtype=torch.float64, collect=True)
            return acts["norm_f"]
        return rwkv_ref.P + "embeddings.weight", "head.weight", fwd, lambda sd: 1.0
    if name.startswith("griffin"):
        def fwd(sd, config, ids):
            _, acts = griffin_ref.forward(sd, config, ids, dtype=torch.float64)
            return acts["norm_f"]
        scale = lambda sd: float(torch.tensor(math.sqrt(sd[griffin_ref.P + "embed_tokens.weight"].shape[1]),  # noqa: E731
                                              dtype=torch.bfloat16))
        return griffin_ref.P + "embed_tokens.weight", "lm_head.weight", fwd, scale
    raise ValueError(name)


def make(name):
    config, sd = rwkv_ref.load_model_dir(os.path.join(MODELS_DIR, name))
    stored, _ = mamba_ref.read_safetensors(os.path.join(MODELS_DIR, name, "reference.safetensors"))
    ids = stored["input_ids"].tolist()
    T = len(ids)
    emb_key, head_key, fwd, scale_of = family_of(name)
    table = sd[emb_key].to(torch.float64)
    head = sd[head_key].to(torch.float64) if head_key in sd else table
    seed = head[TARGET].clone()
    scale = scale_of(sd)
    out = {"input_ids": torch.tensor(ids, dtype=torch.int64), "target": torch.tensor([TARGET], dtype=torch.int64),
           "seed": seed}
    report = []
    for case, back in CASES:
        pos = T - back
        rows = table[torch.tensor(ids)].clone().requires_grad_(True)
        sd2 = dict(sd)
        sd2[emb_key] = rows                   # ids 0..T-1 look up the leaf rows
        sd2[head_key] = head                  # a tied head keeps the whole table
        hidden = fwd(sd2, config, list(range(T)))
        f = hidden[pos] @ seed
        f.backward()
        grad = rows.grad / scale              # ∂f/∂(rows · scale)
        assert torch.all(grad[pos + 1:] == 0)
        out[f"{case}.grad"] = grad.detach()
        out[f"{case}.f"] = torch.tensor([float(f)], dtype=torch.float64)
        out[f"{case}.position"] = torch.tensor([pos], dtype=torch.int64)
        report.append((case, float(f), float(grad.abs().max())))
    return out, report


MODELS = ["mamba2-f32-safetensors", "rwkv-f32-rescale", "griffin-f32"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="recompute and compare with the committed files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    ok = True
    for name in MODELS:
        out, report = make(name)
        ok &= mamba_ref.write_or_verify(os.path.join(OUT_DIR, name + ".safetensors"), out, args.verify, ROOT)
        if args.verify:
            continue
        for case, f, gmax in report:
            print(f"  {case:14s} f = {f:+.6f}   max |grad| = {gmax:.4g}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
