#!/usr/bin/python3
"""Writes the committed RWKV-4 forward-parity fixtures (deterministic: fixed seeds, no network).

    /usr/bin/python3 scripts/make_rwkv_fixtures.py            regenerate tests/data/models/rwkv-*/
    /usr/bin/python3 scripts/make_rwkv_fixtures.py --verify   re-run the reference on the committed files and compare

Each directory holds config.json (HF RwkvConfig keys), weights in HF names, tokenizer.json (the repo's tiny
tokenizer) and reference.safetensors: input_ids (I64 [T]) plus the logits and every named activation of
scripts/reference/rwkv_ref.py, computed in float64 from the stored (rounded) weights and saved as F32.
"""
import argparse
import collections
import json
import math
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba_ref  # noqa: E402
import rwkv_ref  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
TOKENIZER = os.path.join(ROOT, "tests", "data", "tokenizer", "tiny-tokenizer.json")
VOCAB = 509                          # the tiny tokenizer's id count: every input id is a real token
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAME = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}

# name, storage dtype, layout, dims, rescale_every
FIXTURES = [
    ("rwkv-f32-safetensors", "f32", "safetensors", dict(H=16, A=12, I=40, L=3), 6),
    ("rwkv-f32-rescale", "f32", "safetensors", dict(H=16, A=16, I=32, L=4), 2),
    ("rwkv-bf16-bin", "bf16", "bin", dict(H=16, A=16, I=64, L=2), 1),
    ("rwkv-f16-safetensors", "f16", "safetensors", dict(H=24, A=24, I=48, L=2), 0),
]


def make_weights(seed, H, A, I, L, V=VOCAB):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    P = "rwkv."
    w = collections.OrderedDict()
    w[P + "embeddings.weight"] = randn(V, H)
    for i in range(L):
        b = f"{P}blocks.{i}."
        if i == 0:
            w[b + "pre_ln.weight"] = unif(0.8, 1.2, H)
            w[b + "pre_ln.bias"] = randn(H, std=0.1)
        for ln in ("ln1", "ln2"):
            w[b + ln + ".weight"] = unif(0.8, 1.2, H)
            w[b + ln + ".bias"] = randn(H, std=0.1)
        a = b + "attention."
        w[a + "time_decay"] = unif(-3.0, 1.5, A)         # w = exp(.) in [0.05, 4.5]
        w[a + "time_first"] = unif(-1.0, 2.0, A)
        for m in ("key", "value", "receptance"):
            w[a + "time_mix_" + m] = unif(0.0, 1.0, 1, 1, H)
        w[a + "key.weight"] = randn(A, H, std=2.0 / math.sqrt(H))     # k of size ~2: exponents spread out
        w[a + "value.weight"] = randn(A, H, std=1.0 / math.sqrt(H))
        w[a + "receptance.weight"] = randn(A, H, std=1.5 / math.sqrt(H))
        w[a + "output.weight"] = randn(H, A, std=1.0 / math.sqrt(A))
        f = b + "feed_forward."
        for m in ("key", "receptance"):
            w[f + "time_mix_" + m] = unif(0.0, 1.0, 1, 1, H)
        w[f + "key.weight"] = randn(I, H, std=1.0 / math.sqrt(H))
        w[f + "receptance.weight"] = randn(H, H, std=1.5 / math.sqrt(H))
        w[f + "value.weight"] = randn(H, I, std=1.0 / math.sqrt(I))
    w[P + "ln_out.weight"] = unif(0.8, 1.2, H)
    w[P + "ln_out.bias"] = randn(H, std=0.1)
    w["head.weight"] = randn(V, H, std=2.5 / math.sqrt(H))
    return w


def round_to(w, dt):
    """Stored dtype; time_decay and time_first stay f32 (HF keeps them in f32)."""
    out = collections.OrderedDict()
    for n, t in w.items():
        keep32 = n.endswith("time_decay") or n.endswith("time_first") or dt == torch.float32
        out[n] = t.to(torch.float32 if keep32 else dt)
    return out


def hf_config(dtype_name, H, A, I, L, rescale_every):
    return {
        "architectures": ["RwkvForCausalLM"],
        "attention_hidden_size": A,
        "bos_token_id": 0,
        "context_length": 1024,
        "eos_token_id": 0,
        "hidden_size": H,
        "intermediate_size": I,
        "layer_norm_epsilon": 1e-05,
        "model_type": "rwkv",
        "num_hidden_layers": L,
        "rescale_every": rescale_every,
        "tie_word_embeddings": False,
        "torch_dtype": DTYPE_NAME[dtype_name],
        "transformers_version": "4.44.0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def make_ids(seed, T=13):
    g = torch.Generator().manual_seed(seed + 1000)
    return [int(x) for x in torch.randint(0, VOCAB, (T,), generator=g)]


def reference_tensors(ids, logits, acts):
    out = {"input_ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.to(torch.float32)}
    for n, t in acts.items():
        out[n] = t.to(torch.float32)
    return out


def write_fixture(name, dtype_name, layout, dims, rescale_every, seed):
    d = os.path.join(MODELS_DIR, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    sd = round_to(make_weights(seed, **dims), DTYPES[dtype_name])
    config = hf_config(dtype_name, **dims, rescale_every=rescale_every)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    if layout == "safetensors":
        mamba_ref.write_safetensors(os.path.join(d, "model.safetensors"), dict(sd), {"format": "pt"})
    else:
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    shutil.copyfile(TOKENIZER, os.path.join(d, "tokenizer.json"))
    ids = make_ids(seed)
    logits, acts = rwkv_ref.forward_dir(d, ids)
    mamba_ref.write_safetensors(os.path.join(d, "reference.safetensors"), reference_tensors(ids, logits, acts),
                                {"format": "pt"})
    return d, ids


def check_dir(d):
    stored, _ = mamba_ref.read_safetensors(os.path.join(d, "reference.safetensors"))
    ids = stored["input_ids"].tolist()
    logits, acts = rwkv_ref.forward_dir(d, ids)
    want = reference_tensors(ids, logits, acts)
    assert set(want) == set(stored), (d, set(want) ^ set(stored))
    for n in want:
        assert torch.equal(want[n], stored[n]), (d, n)
    # f32 forward of the same weights: how far a plain f32 implementation lands from the float64 reference.
    l32, a32 = rwkv_ref.forward_dir(d, ids, dtype=torch.float32)
    worst = max([float((a32[n].double() - acts[n]).abs().max() / max(1.0, float(acts[n].abs().max()))) for n in acts] +
                [float((l32.double() - logits).abs().max() / max(1.0, float(logits.abs().max())))])
    return worst, float(logits.abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    rwkv_ref.self_test()
    for seed, (name, dt, layout, dims, re) in enumerate(FIXTURES):
        d = os.path.join(MODELS_DIR, name)
        if not args.verify:
            write_fixture(name, dt, layout, dims, re, 7100 + seed)
        worst, lmax = check_dir(d)
        print(f"{name}: f32-torch vs f64 parity {worst:.2e}, max|logit| {lmax:.2f}")
    # rescale_every changes the logits only through LayerNorm eps (spec §4.3).
    config, sd = rwkv_ref.load_model_dir(os.path.join(MODELS_DIR, "rwkv-f32-rescale"))
    ids = make_ids(1)
    l2, _ = rwkv_ref.forward(sd, config, ids, collect=False)
    l0, _ = rwkv_ref.forward(sd, dict(config, rescale_every=0), ids, collect=False)
    print(f"rescale_every 2 vs 0: max logit change {float((l2 - l0).abs().max()):.2e}")


if __name__ == "__main__":
    main()
