#!/usr/bin/python3
"""Writes the committed gradient / MambaLRP fixtures of ssmx (deterministic, no network): PyTorch autograd in float64
through scripts/reference/mamba_ref.py `gradient` (MambaLRP's stop-gradients as in the official slow path,
shared/specs/mambalrp.md §4), on three of the forward fixture models.

    /usr/bin/python3 scripts/make_grad_fixtures.py            write tests/data/grad/<model>.safetensors
    /usr/bin/python3 scripts/make_grad_fixtures.py --verify   recompute and compare with the committed files

Each file holds, for the model's forward-fixture input ids (T = 11) and the target token below:
    input_ids I64 [T], target I64 [1], position I64 [1] (the last token), seed F64 [Dm] (= the head row of target)
    and for each case NAME: NAME.grad F64 [T, Dm] (∂̃f/∂inputs_embeds), NAME.f F64 [1], NAME.position I64 [1]
Cases: gradient (rules off), mamba_lrp (silu, ssm, gate, norm), ln_only (norm), mamba_lrp_zero_bias (every bias taken
as zero: then Σ embeds·grad = f), gradient_mid (rules off, seed at position T-4: tokens after it get zeros).
The C++ test is tests/models/test_mamba_grad.cpp (MambaGradient.MatchesPyTorchAutograd).
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba_ref as ref  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
OUT_DIR = os.path.join(ROOT, "tests", "data", "grad")
MODELS = ["mamba-f32-safetensors", "mamba-f16-sharded", "falcon-f32-safetensors"]  # plain, with in/out biases, Falcon
TARGET = 7
CASES = [
    # name, rules, zero_biases, position offset from the end
    ("gradient", (), False, 1),
    ("mamba_lrp", ("silu", "ssm", "gate", "norm"), False, 1),
    ("ln_only", ("norm",), False, 1),
    ("mamba_lrp_zero_bias", ("silu", "ssm", "gate", "norm"), True, 1),
    ("gradient_mid", (), False, 4),
]


def make(name):
    config, sd = ref.load_model_dir(os.path.join(MODELS_DIR, name))
    stored, _ = ref.read_safetensors(os.path.join(MODELS_DIR, name, "reference.safetensors"))
    ids = stored["input_ids"].tolist()
    T = len(ids)
    seed = ref.head_weight(sd).to(torch.float64)[TARGET]
    out = {"input_ids": torch.tensor(ids, dtype=torch.int64), "target": torch.tensor([TARGET], dtype=torch.int64),
           "position": torch.tensor([T - 1], dtype=torch.int64), "seed": seed.clone()}
    logits, _ = ref.forward(sd, config, ids, torch.float64, collect=False)
    report = []
    for case, rules, zero_biases, back in CASES:
        pos = T - back
        grad, emb, f = ref.gradient(sd, config, ids, TARGET, pos, rules, zero_biases)
        if not zero_biases:  # the modified backward never changes the forward value (A rounded to f32 aside)
            assert abs(f - float(logits[pos, TARGET])) <= 1e-6 * max(1.0, abs(f)), (case, f, float(logits[pos, TARGET]))
        assert torch.all(grad[pos + 1:] == 0)
        out[f"{case}.grad"] = grad
        out[f"{case}.f"] = torch.tensor([f], dtype=torch.float64)
        out[f"{case}.position"] = torch.tensor([pos], dtype=torch.int64)
        report.append((case, f, float((grad * emb).sum())))
    return out, report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="recompute and compare with the committed files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    ok = True
    for name in MODELS:
        out, report = make(name)
        ok &= ref.write_or_verify(os.path.join(OUT_DIR, name + ".safetensors"), out, args.verify, ROOT)
        if args.verify:
            continue
        for case, f, srel in report:
            print(f"  {case:20s} f = {f:+.6f}   Σ embeds·grad = {srel:+.6f}   gap {abs(srel - f) / abs(f):.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
