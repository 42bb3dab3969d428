#!/usr/bin/python3
"""Times the PyTorch reference forward of RecurrentGemma (scripts/reference/griffin_ref.py: HF semantics, sequential
RG-LRU scan) on a random ~110M-parameter Griffin shape — the same shape as build/bench_griffin — and one explanation
the way a PyTorch user writes `ssmx explain --method grad-input` (scripts/reference/timing.py: forward with autograd,
backward of the predicted logit) at --explain-T (default 512).

    /usr/bin/python3 scripts/bench_griffin_reference.py [--out bench/results/reference_griffin.json] [--T 512 2048]
                                                        [--explain-T 512]

float32, torch.set_num_threads(--threads, default 2), inference_mode, full capped logits [T, V], no activations
kept. Each T: one warm-up run, then the best of --repeats (default 2).
Shape: hidden 768, lru_width 768, 12 heads of 64 (1 KV head), MLP width 2304, 12 layers (recurrent, recurrent,
attention, ...), vocab 32000, window 2048, conv width 4.
"""
import argparse
import json
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import griffin_ref as ref  # noqa: E402
from timing import best_of, grad_input_fn  # noqa: E402

SHAPE = dict(hidden=768, lru=768, heads=12, kv=1, mlp=2304, layers=12, vocab=32000, window=2048)


def random_model(s, seed=1):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *sh, std=1.0: torch.randn(*sh, generator=g) * std  # noqa: E731
    Dm, W, H, KV, F = s["hidden"], s["lru"], s["heads"], s["kv"], s["mlp"]
    hd, bw = Dm // H, W // H
    P = ref.P
    sd = {P + "embed_tokens.weight": rn(s["vocab"], Dm, std=Dm ** -0.5), P + "final_norm.weight": torch.zeros(Dm)}
    for i in range(s["layers"]):
        p, tb = f"{P}layers.{i}.", f"{P}layers.{i}.temporal_block."
        sd[p + "temporal_pre_norm.weight"] = torch.zeros(Dm)
        sd[p + "channel_pre_norm.weight"] = torch.zeros(Dm)
        if i % 3 != 2:
            for n, (o, k) in {"linear_y": (W, Dm), "linear_x": (W, Dm), "linear_out": (Dm, W)}.items():
                sd[tb + n + ".weight"], sd[tb + n + ".bias"] = rn(o, k, std=k ** -0.5), torch.zeros(o)
            sd[tb + "conv_1d.weight"], sd[tb + "conv_1d.bias"] = rn(W, 1, 4, std=0.5), torch.zeros(W)
            sd[tb + "rg_lru.recurrent_param"] = rn(W) - 3.0
            for n in ("input", "recurrent"):
                sd[tb + f"rg_lru.{n}_gate_weight"] = rn(H, bw, bw, std=bw ** -0.5)
                sd[tb + f"rg_lru.{n}_gate_bias"] = torch.zeros(H, bw)
        else:
            sd[tb + "q_proj.weight"] = rn(H * hd, Dm, std=Dm ** -0.5)
            sd[tb + "k_proj.weight"] = rn(KV * hd, Dm, std=Dm ** -0.5)
            sd[tb + "v_proj.weight"] = rn(KV * hd, Dm, std=Dm ** -0.5)
            sd[tb + "o_proj.weight"], sd[tb + "o_proj.bias"] = rn(Dm, H * hd, std=(H * hd) ** -0.5), torch.zeros(Dm)
        for n, (o, k) in {"gate_proj": (F, Dm), "up_proj": (F, Dm), "down_proj": (Dm, F)}.items():
            sd[p + "mlp_block." + n + ".weight"], sd[p + "mlp_block." + n + ".bias"] = rn(o, k, std=k ** -0.5), torch.zeros(o)
    config = {"num_attention_heads": H, "num_key_value_heads": KV, "head_dim": hd, "num_hidden_layers": s["layers"],
              "lru_width": W, "attention_window_size": s["window"], "logits_soft_cap": 30.0, "rms_norm_eps": 1e-6,
              "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "intermediate_size": 2 * F}
    return sd, config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/reference_griffin.json")
    ap.add_argument("--T", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--explain-T", type=int, nargs="*", default=[512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sd, config = random_model(SHAPE)
    results, explain_results = [], []

    def ids_of(T):
        return [(i * 7919 + 13) % SHAPE["vocab"] for i in range(T)]
    for T in a.T:
        ids = ids_of(T)
        with torch.inference_mode():
            best = best_of(lambda: ref.forward(sd, config, ids, torch.float32, collect=False), a.repeats)
        print(f"forward T={T}: {best:.3f} s", flush=True)
        results.append({"T": T, "seconds": round(best, 4)})
        write(a, results, explain_results)
    for T in a.explain_T:
        ids = ids_of(T)
        run = grad_input_fn(lambda d, i: ref.forward(d, config, i, torch.float32, collect=False)[0],
                            sd, ref.P + "embed_tokens.weight", "lm_head.weight", ids)
        best = best_of(run, a.repeats)
        print(f"explain grad-input T={T}: {best:.3f} s", flush=True)
        explain_results.append({"T": T, "seconds": round(best, 4)})
        write(a, results, explain_results)


def write(a, results, explain_results):
    out = {"what": "PyTorch reference of RecurrentGemma (griffin_ref.py, sequential RG-LRU scan), float32: forward with "
                   "full capped logits [T, V]; explanation = autograd forward + backward of the predicted logit "
                   "(grad x input); best of repeats after warm-up",
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
           "torch_version": torch.__version__, "threads": a.threads, "shape": SHAPE, "results": results,
           "explain_results": explain_results}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
