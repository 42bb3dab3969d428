#!/usr/bin/python3
"""Writes the committed Mamba-2 forward-parity fixtures (deterministic: fixed seeds, no network).

    /usr/bin/python3 scripts/make_mamba2_fixtures.py

Outputs tests/data/models/mamba2-*/: config.json, model.safetensors, tokenizer.json (the tiny test tokenizer) and
reference.safetensors (input_ids I64 [T], logits and every named intermediate of scripts/reference/mamba2_ref.py,
computed in float64 from the stored weights, saved as F32). The sequential and the chunked SSD forms must agree to
1e-10 on every fixture, else the script fails.
"""
import json
import math
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba2_ref as ref  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
TOKENIZER = os.path.join(ROOT, "tests", "data", "tokenizer", "tiny-tokenizer.json")
TOKENIZER_IDS = 509
VOCAB = 512


def make_weights(seed, *, Dm, H, P, G, N, K, n_layer, use_bias, untied, mamba_ssm_names):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    Di = H * P
    conv_dim = Di + 2 * G * N
    emb = "backbone.embedding.weight" if mamba_ssm_names else "backbone.embeddings.weight"
    w = {emb: randn(VOCAB, Dm, std=2.5 / math.sqrt(Dm))}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        w[p + "norm.weight"] = unif(0.75, 1.25, Dm)
        ip = randn(2 * Di + 2 * G * N + H, Dm, std=1 / math.sqrt(Dm))
        ip[2 * Di + 2 * G * N:] *= 0.5                                   # dt pre-activations of moderate size
        w[m + "in_proj.weight"] = ip
        if use_bias:
            w[m + "in_proj.bias"] = randn(2 * Di + 2 * G * N + H, std=0.2)
        w[m + "conv1d.weight"] = randn(conv_dim, 1, K, std=1 / math.sqrt(K))
        w[m + "conv1d.bias"] = unif(-0.5, 0.5, conv_dim)
        dt = torch.exp(unif(math.log(0.01), math.log(0.5), H))
        w[m + "dt_bias"] = dt + torch.log(-torch.expm1(-dt))               # inverse softplus
        w[m + "A_log"] = torch.log(unif(1.0, 16.0, H))
        w[m + "D"] = unif(0.5, 1.5, H)
        w[m + "norm.weight"] = unif(0.75, 1.25, Di)
        w[m + "out_proj.weight"] = randn(Dm, Di, std=1.5 / math.sqrt(Di))
        if use_bias:
            w[m + "out_proj.bias"] = randn(Dm, std=0.1)
    w["backbone.norm_f.weight"] = unif(0.75, 1.25, Dm)
    if untied:
        w["lm_head.weight"] = randn(VOCAB, Dm, std=2.5 / math.sqrt(Dm))
    return w


def make_ids(seed, T=13):
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randperm(TOKENIZER_IDS - 1, generator=g)[:T - 1] + 1).tolist()
    pos = int(torch.randint(0, T, (1,), generator=g))
    return ids[:pos] + [0] + ids[pos:]


FIXTURES = [
    # name, storage dtype, layout ("hf" or "mamba_ssm"), dims/options
    ("mamba2-f32-safetensors", torch.float32, "hf",
     dict(Dm=32, H=4, P=16, G=2, N=8, K=4, n_layer=2, use_bias=False, untied=True, chunk=4, limit=None)),
    ("mamba2-bf16-bias-clamp", torch.bfloat16, "hf",
     dict(Dm=32, H=8, P=8, G=1, N=8, K=3, n_layer=2, use_bias=True, untied=False, chunk=5, limit=[0.02, 0.3])),
    ("mamba2-f16-mamba-ssm", torch.float16, "mamba_ssm",
     dict(Dm=32, H=4, P=16, G=1, N=16, K=4, n_layer=3, use_bias=False, untied=False, chunk=256, limit=None)),
]


def config_for(layout, o):
    Di = o["H"] * o["P"]
    if layout == "hf":
        c = {
            "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": o["Dm"],
            "num_hidden_layers": o["n_layer"], "num_heads": o["H"], "head_dim": o["P"], "n_groups": o["G"],
            "state_size": o["N"], "expand": Di // o["Dm"], "conv_kernel": o["K"], "vocab_size": VOCAB,
            "layer_norm_epsilon": 1e-5, "use_bias": o["use_bias"], "use_conv_bias": True, "chunk_size": o["chunk"],
            "tie_word_embeddings": not o["untied"], "residual_in_fp32": True, "rms_norm": True,
            "hidden_act": "silu", "time_step_rank": 256, "torch_dtype": None,
        }
        if o["limit"] is not None:
            c["time_step_limit"] = o["limit"]
        return c
    return {
        "d_model": o["Dm"], "d_intermediate": 0, "n_layer": o["n_layer"], "vocab_size": VOCAB,
        "ssm_cfg": {"layer": "Mamba2", "d_state": o["N"], "d_conv": o["K"], "expand": Di // o["Dm"],
                    "headdim": o["P"], "ngroups": o["G"], "chunk_size": o["chunk"]},
        "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
        "pad_vocab_size_multiple": 16, "tie_embeddings": True,
    }


def main():
    worst_chunk = 0.0
    for k, (name, dtype, layout, o) in enumerate(FIXTURES):
        d = os.path.join(MODELS_DIR, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        w = make_weights(100 + k, Dm=o["Dm"], H=o["H"], P=o["P"], G=o["G"], N=o["N"], K=o["K"],
                         n_layer=o["n_layer"], use_bias=o["use_bias"], untied=o["untied"],
                         mamba_ssm_names=layout == "mamba_ssm")
        sd = {n: t.to(dtype).contiguous() for n, t in w.items()}
        cfg = config_for(layout, o)
        if cfg.get("torch_dtype", 0) is None:
            cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        ref.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
        shutil.copyfile(TOKENIZER, os.path.join(d, "tokenizer.json"))
        # Reference from the stored weights, exactly as a loader sees them.
        sd_back = ref.load_state_dict(d)
        ids = make_ids(200 + k)
        logits, acts = ref.forward(sd_back, cfg, ids, dtype=torch.float64)
        logits_c, acts_c = ref.forward(sd_back, cfg, ids, dtype=torch.float64, chunked=True)
        err = float((logits - logits_c).abs().max() / max(1.0, float(logits.abs().max())))
        for a in acts:
            e = float((acts[a] - acts_c[a]).abs().max() / max(1.0, float(acts[a].abs().max())))
            err = max(err, e)
        assert err < 1e-10, (name, err)
        worst_chunk = max(worst_chunk, err)
        out = {"input_ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.to(torch.float32)}
        for a, t in acts.items():
            out[a] = t.to(torch.float32).contiguous()
        ref.write_safetensors(os.path.join(d, "reference.safetensors"), out, {"format": "pt"})
        print(f"{name}: T={len(ids)} max|logit|={float(logits.abs().max()):.3f} sequential vs chunked {err:.2e}")
    print("worst sequential-vs-chunked difference", worst_chunk)


if __name__ == "__main__":
    main()
