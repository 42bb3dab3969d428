#!/usr/bin/python3
"""Times the PyTorch RWKV-4 reference (scripts/reference/rwkv_ref.py, float32, no activations kept) on a random
rwkv-4-169m-shaped model (hidden 768, 12 layers, vocab 50277): the forward at T=512 and 2048, and one explanation the
way a PyTorch user writes `ssmx explain --method grad-input` (scripts/reference/timing.py: forward with autograd,
backward of the predicted logit) at T=512; writes JSON ("results" and "explain_results", lists of {"T", "seconds"}).

    /usr/bin/python3 scripts/bench_rwkv_reference.py [--out bench/results/reference_rwkv.json] [--layers 12]
                                                     [--seqlens 512,2048] [--explain-seqlens 512] [--threads 2]

Each length: one untimed warm-up, then the best of --repeats (default 2).
"""
import argparse
import json
import os
import platform
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, HERE)
import rwkv_ref  # noqa: E402
from make_rwkv_fixtures import make_weights  # noqa: E402
from timing import best_of, grad_input_fn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seqlens", default="512,2048")
    ap.add_argument("--explain-seqlens", default="512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sd = {k: v.float() for k, v in make_weights(1, H=768, A=768, I=3072, L=a.layers, V=50277).items()}
    config = {"model_type": "rwkv", "rescale_every": 6, "layer_norm_epsilon": 1e-5}
    out = {"model": f"random rwkv-4-169m shape (hidden 768, {a.layers} layers, vocab 50277)",
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
           "torch": torch.__version__, "threads": a.threads, "results": [], "explain_results": []}

    def ids_of(T):
        return [(i * 7919 + 13) % 50277 for i in range(T)]
    for T in [int(s) for s in a.seqlens.split(",") if s]:
        ids = ids_of(T)
        with torch.no_grad():
            best = best_of(lambda: rwkv_ref.forward(sd, config, ids, dtype=torch.float32, collect=False), a.repeats)
        print(f"forward T={T}: {best:.3f} s", flush=True)
        out["results"].append({"T": T, "seconds": round(best, 4)})
    for T in [int(s) for s in a.explain_seqlens.split(",") if s]:
        ids = ids_of(T)
        run = grad_input_fn(lambda d, i: rwkv_ref.forward(d, config, i, dtype=torch.float32, collect=False)[0],
                            sd, "rwkv.embeddings.weight", "head.weight", ids)
        best = best_of(run, a.repeats)
        print(f"explain grad-input T={T}: {best:.3f} s", flush=True)
        out["explain_results"].append({"T": T, "seconds": round(best, 4)})
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
