#!/usr/bin/python3
"""Times the PyTorch reference forward (scripts/reference/mamba2_ref.py, float32, the chunked SSD as transformers'
torch_forward runs it) on the shape of bench/bench_mamba2.cpp: mamba2-130m (Dm 768, 24 layers, Di 1536, 24 heads of 64,
1 group, state 128, V 50288), random weights, all logits; and one explanation the way a PyTorch user writes
`ssmx explain --method grad-input` (scripts/reference/timing.py: forward with autograd, backward of the predicted logit).

    /usr/bin/python3 scripts/bench_mamba2_reference.py [--seqlens 512,2048] [--explain-seqlens 512] [--layers 24]
                                                       [--threads 2] [--repeats 2] [--json FILE]

Each length: one untimed warm-up, then the best of --repeats. JSON: "results" (forward) and "explain_results",
each a list of {"T", "seconds"}.
"""
import argparse
import json
import math
import os
import sys
import platform

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import mamba2_ref as ref  # noqa: E402
from timing import best_of, grad_input_fn  # noqa: E402


def random_model(layers, Dm=768, Di=1536, P=64, G=1, N=128, K=4, V=50288):
    g = torch.Generator().manual_seed(7)
    H = Di // P
    W = 2 * Di + 2 * G * N + H
    sd = {"backbone.embeddings.weight": torch.randn(V, Dm, generator=g) * 0.05}
    for i in range(layers):
        p = f"backbone.layers.{i}."
        sd[p + "norm.weight"] = torch.ones(Dm)
        sd[p + "mixer.in_proj.weight"] = torch.randn(W, Dm, generator=g) / math.sqrt(Dm)
        sd[p + "mixer.conv1d.weight"] = torch.randn(Di + 2 * G * N, 1, K, generator=g) * 0.5
        sd[p + "mixer.conv1d.bias"] = torch.rand(Di + 2 * G * N, generator=g) - 0.5
        dt = 0.001 + 0.1 * torch.rand(H, generator=g)
        sd[p + "mixer.dt_bias"] = torch.log(torch.expm1(dt))
        sd[p + "mixer.A_log"] = torch.log(1 + 15 * torch.rand(H, generator=g))
        sd[p + "mixer.D"] = torch.ones(H)
        sd[p + "mixer.norm.weight"] = torch.ones(Di)
        sd[p + "mixer.out_proj.weight"] = torch.randn(Dm, Di, generator=g) / math.sqrt(Di)
    sd["backbone.norm_f.weight"] = torch.ones(Dm)
    cfg = {"model_type": "mamba2", "n_groups": G, "tie_word_embeddings": True, "chunk_size": 256}
    return sd, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="512,2048")
    ap.add_argument("--explain-seqlens", default="512")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sd, cfg = random_model(a.layers)
    out = {"what": "PyTorch reference (float32, chunked SSD), mamba2-130m shape: forward with all logits; explanation "
                   "= autograd forward + backward of the predicted logit (grad x input)",
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
           "torch": torch.__version__, "threads": a.threads, "layers": a.layers, "results": [], "explain_results": []}

    def ids_of(T):
        return [(i * 7919 + 13) % 50288 for i in range(T)]
    for T in [int(s) for s in a.seqlens.split(",") if s]:
        ids = ids_of(T)
        with torch.no_grad():
            best = best_of(lambda: ref.forward(sd, cfg, ids, dtype=torch.float32, collect=False, chunked=True), a.repeats)
        print(f"forward T={T}: {best:.3f} s", flush=True)
        out["results"].append({"T": T, "seconds": round(best, 4)})
    for T in [int(s) for s in a.explain_seqlens.split(",") if s]:
        ids = ids_of(T)
        run = grad_input_fn(lambda d, i: ref.forward(d, cfg, i, dtype=torch.float32, collect=False, chunked=True)[0],
                            sd, "backbone.embeddings.weight", "lm_head.weight", ids)
        best = best_of(run, a.repeats)
        print(f"explain grad-input T={T}: {best:.3f} s", flush=True)
        out["explain_results"].append({"T": T, "seconds": round(best, 4)})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
