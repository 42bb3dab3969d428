#!/usr/bin/python3
"""Times the plain-PyTorch Vision Mamba reference (scripts/reference/vim_ref.py, both scan directions, sequential
scans) on a random Vim-S-shaped model: 224x224 pixels, patch 16 (196 patches + the middle class token = 197 tokens),
d_model 384, 24 layers, E 768, N 16, 1000 classes — the shape build/bench_vim times in ssmx.

    /usr/bin/python3 scripts/bench_vim_reference.py [--out bench/results/reference_vim.json] [--threads 2]
    /usr/bin/python3 scripts/bench_vim_reference.py --depth 2 --out /tmp/smoke.json     (smoke)

float32, torch.inference_mode(), no intermediates kept; --warmup runs (default 1), then the best of --repeats
(default 3). One run takes minutes on a 2-core machine (the scans are Python loops over the 197 tokens).
Writes {"machine", "torch_version", "threads", "shape", "results": [{"T": 197, "seconds", "cpu_seconds"}]}: wall time
and the process's CPU time (all threads), the latter telling how much a loaded machine stretched the wall time.
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
import vim_ref  # noqa: E402
from bench_reference import machine_description  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "bench", "results", "reference_vim.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--depth", type=int, default=24)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sd = {k: v.to(torch.float32).contiguous() for k, v in
          vim_ref.random_state_dict(7, D=a.d_model, depth=a.depth, N=16, img=a.img, patch=a.patch,
                                    classes=a.classes).items()}
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(3, a.img, a.img, generator=g, dtype=torch.float32)
    T = (a.img // a.patch) ** 2 + 1
    load0 = list(os.getloadavg())
    times, cpu = [], []
    with torch.inference_mode():
        for rep in range(a.repeats + a.warmup):
            t0, c0 = time.perf_counter(), time.process_time()
            logits, _ = vim_ref.forward(sd, pixels, dtype=torch.float32, collect=False)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rep >= a.warmup:
                times.append(dt)
                cpu.append(dc)
            print(f"run {rep}: {dt:.3f} s wall, {dc:.3f} s CPU", file=sys.stderr)
    out = {"machine": machine_description(), "torch_version": torch.__version__, "threads": a.threads,
           "shape": {"img": a.img, "patch": a.patch, "T": T, "d_model": a.d_model, "depth": a.depth,
                     "d_inner": 2 * a.d_model, "d_state": 16, "classes": a.classes},
           "warmup": a.warmup, "repeats": a.repeats, "load_average_at_start": load0,
           "results": [{"T": T, "seconds": round(min(times), 4), "cpu_seconds": round(min(cpu), 4)}]}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(json.dumps(out["results"]))


if __name__ == "__main__":
    main()
