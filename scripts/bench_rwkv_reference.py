#!/usr/bin/python3
"""Times the PyTorch RWKV-4 reference (scripts/reference/rwkv_ref.py, float32, no activations kept) on a random
rwkv-4-169m-shaped model (hidden 768, 12 layers, vocab 50277) at T=512 and 2048; writes JSON.

    /usr/bin/python3 scripts/bench_rwkv_reference.py [--out bench/results/reference_rwkv.json] [--layers 12]
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, HERE)
import rwkv_ref  # noqa: E402
from make_rwkv_fixtures import make_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seqlens", default="512,2048")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    sd = {k: v.float() for k, v in make_weights(1, H=768, A=768, I=3072, L=a.layers, V=50277).items()}
    config = {"model_type": "rwkv", "rescale_every": 6, "layer_norm_epsilon": 1e-5}
    best = {}
    with torch.no_grad():
        for T in [int(s) for s in a.seqlens.split(",")]:
            ids = [(i * 7919 + 13) % 50277 for i in range(T)]
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                rwkv_ref.forward(sd, config, ids, dtype=torch.float32, collect=False)
                dt = time.perf_counter() - t0
                best[f"forward_T{T}"] = min(best.get(f"forward_T{T}", dt), dt)
            print(f"T={T}: {best[f'forward_T{T}']:.3f} s")
    out = {"model": f"random rwkv-4-169m shape (hidden 768, {a.layers} layers, vocab 50277)",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "best_seconds": best}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
