#!/usr/bin/python3
"""Tiny random RecurrentGemma (Griffin) models in Hugging Face layout plus float64 reference activations.

    /usr/bin/python3 scripts/make_griffin_fixtures.py

Writes tests/data/models/griffin-*/: config.json, model.safetensors, tokenizer.json (the repo's tiny tokenizer —
no SentencePiece model is generated, see docs/griffin.md) and reference.safetensors (input_ids I64 [T], every named
activation of scripts/reference/griffin_ref.py and the logits, computed in float64 and stored f32). Also
attention.safetensors: the implicit attention of layer 0 (exact and compat) for the C++ attention tests.
Deterministic: byte-identical on regeneration.
"""
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import griffin_ref as ref  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
TINY_TOKENIZER = os.path.join(ROOT, "tests", "data", "tokenizer", "tiny-tokenizer.json")
VOCAB = 509  # ids of the tiny tokenizer

FIXTURES = [
    # name, dtype, dims
    ("griffin-f32", torch.float32, dict(hidden=32, lru=48, heads=4, kv=1, inter=96, layers=4, window=4, cap=5.0, T=11)),
    ("griffin-bf16", torch.bfloat16, dict(hidden=24, lru=32, heads=2, kv=2, inter=64, layers=3, window=3, cap=30.0, T=9)),
]


def make_weights(seed, d):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    def un(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    Dm, W, H, KV = d["hidden"], d["lru"], d["heads"], d["kv"]
    hd = Dm // H
    F = d["inter"] // 2
    bw = W // H
    P = ref.P
    sd = {P + "embed_tokens.weight": rn(VOCAB, Dm, std=0.5)}
    types = [(["recurrent", "recurrent", "attention"] * 100)[i] for i in range(d["layers"])]
    for i, ty in enumerate(types):
        p = f"{P}layers.{i}."
        tb = p + "temporal_block."
        sd[p + "temporal_pre_norm.weight"] = rn(Dm, std=0.2)
        sd[p + "channel_pre_norm.weight"] = rn(Dm, std=0.2)
        if ty == "recurrent":
            for n, (o, inp) in {"linear_y": (W, Dm), "linear_x": (W, Dm), "linear_out": (Dm, W)}.items():
                sd[tb + n + ".weight"] = rn(o, inp, std=inp ** -0.5)
                sd[tb + n + ".bias"] = rn(o, std=0.1)
            sd[tb + "conv_1d.weight"] = rn(W, 1, 4, std=0.5)
            sd[tb + "conv_1d.bias"] = rn(W, std=0.1)
            sd[tb + "rg_lru.recurrent_param"] = un(-6.0, -1.0, W)
            sd[tb + "rg_lru.input_gate_weight"] = rn(H, bw, bw, std=bw ** -0.5)
            sd[tb + "rg_lru.input_gate_bias"] = rn(H, bw, std=0.3)
            sd[tb + "rg_lru.recurrent_gate_weight"] = rn(H, bw, bw, std=bw ** -0.5)
            sd[tb + "rg_lru.recurrent_gate_bias"] = rn(H, bw, std=0.3)
        else:
            sd[tb + "q_proj.weight"] = rn(H * hd, Dm, std=Dm ** -0.5)
            sd[tb + "k_proj.weight"] = rn(KV * hd, Dm, std=Dm ** -0.5)
            sd[tb + "v_proj.weight"] = rn(KV * hd, Dm, std=Dm ** -0.5)
            sd[tb + "o_proj.weight"] = rn(Dm, H * hd, std=(H * hd) ** -0.5)
            sd[tb + "o_proj.bias"] = rn(Dm, std=0.1)
        mb = p + "mlp_block."
        for n, (o, inp) in {"gate_proj": (F, Dm), "up_proj": (F, Dm), "down_proj": (Dm, F)}.items():
            sd[mb + n + ".weight"] = rn(o, inp, std=inp ** -0.5)
            sd[mb + n + ".bias"] = rn(o, std=0.1)
    sd[P + "final_norm.weight"] = rn(Dm, std=0.2)
    return sd


def hf_config(d, dtype):
    return {
        "architectures": ["RecurrentGemmaForCausalLM"], "model_type": "recurrent_gemma",
        "attention_bias": False, "attention_window_size": d["window"], "block_types": ["recurrent", "recurrent", "attention"],
        "bos_token_id": 2, "conv1d_width": 4, "embeddings_scale_by_sqrt_dim": True, "eos_token_id": 1,
        "final_w_init_variance_scale": 2.0 / d["layers"], "head_dim": d["hidden"] // d["heads"],
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": d["hidden"], "intermediate_size": d["inter"],
        "logits_soft_cap": d["cap"], "lru_width": d["lru"], "num_attention_heads": d["heads"],
        "num_hidden_layers": d["layers"], "num_key_value_heads": d["kv"], "pad_token_id": 0,
        "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "torch_dtype": {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype],
        "transformers_version": "4.40.0", "use_cache": True, "vocab_size": VOCAB, "w_init_variance_scale": 0.01,
    }


def write_fixture(name, dtype, d, seed):
    sd = {k: v.to(dtype) for k, v in make_weights(seed, d).items()}
    out = os.path.join(MODELS_DIR, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(d, dtype), f, indent=2, sort_keys=True)
        f.write("\n")
    ref.write_safetensors(os.path.join(out, "model.safetensors"), sd, {"format": "pt"})
    shutil.copyfile(TINY_TOKENIZER, os.path.join(out, "tokenizer.json"))
    g = torch.Generator().manual_seed(seed + 1)
    ids = [2] + torch.randint(3, VOCAB, (d["T"] - 1,), generator=g).tolist()
    config = hf_config(d, dtype)
    sd64 = {k: v.to(torch.float64) for k, v in sd.items()}
    _, acts = ref.forward(sd64, config, ids, torch.float64)
    tens = {"input_ids": torch.tensor(ids, dtype=torch.int64)}
    tens.update({k: v.to(torch.float32).contiguous() for k, v in acts.items()})
    ref.write_safetensors(os.path.join(out, "reference.safetensors"), tens, {"format": "pt"})
    att = {}
    for layer in (0, 1):
        att[f"layers.{layer}.exact"] = ref.implicit_attention(acts, sd64, layer).to(torch.float32).contiguous()
        att[f"layers.{layer}.compat"] = ref.implicit_attention(acts, sd64, layer, compat=True).to(torch.float32).contiguous()
    ref.write_safetensors(os.path.join(out, "attention.safetensors"), att, {"format": "pt"})
    l32, _ = ref.forward({k: v.to(torch.float32) for k, v in sd.items()}, config, ids, torch.float32)
    err = float((l32.double() - acts["logits"]).abs().max() / max(1.0, float(acts["logits"].abs().max())))
    print(f"{name}: T={len(ids)} logits max|.|={float(acts['logits'].abs().max()):.3f} f32-vs-f64 {err:.2e}")


def main():
    torch.manual_seed(0)
    for k, (name, dtype, d) in enumerate(FIXTURES):
        write_fixture(name, dtype, d, 7100 + 10 * k)


if __name__ == "__main__":
    main()
