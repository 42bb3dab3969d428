#!/usr/bin/python3
"""Times the PyTorch reference forward (scripts/reference/mamba_ref.py: the HF `slow_forward` math with its
sequential scan, which is what transformers runs without CUDA) on a random mamba-130m-shaped model.

    /usr/bin/python3 scripts/bench_reference.py [--out bench/results/reference_forward.json]
    /usr/bin/python3 scripts/bench_reference.py --layers 2 --vocab 1000 --T 64 128 --out /tmp/smoke.json   (smoke)

float32, torch.set_num_threads(--threads, default 2), torch.inference_mode(), full logits [T, V] at every position
(as HF returns them), no intermediates kept. Each T: 1 warm-up run, then the best of --repeats (default 3).
Writes {"machine", "torch_version", "threads", "shape", "results": [{"T", "seconds"}, ...]}.

--grad times the gradient instead (what build/bench_grad measures in ssmx): inputs_embeds with requires_grad, the
forward of mamba_ref.forward_modified, backward() of one target logit at the last position, for `grad-input` (plain
autograd) and `mamba-lrp` (the official slow path's .detach() rules), default T = 256 and 1024, best of --repeats
(a single run when one takes more than 30 s) after a warm-up at the first T; writes bench/results/reference_grad.json with {"T", "method", "seconds"} results.

    /usr/bin/python3 scripts/bench_reference.py --grad [--T 256 1024] [--out bench/results/reference_grad.json]
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import mamba_ref as ref  # noqa: E402

ROOT = os.path.dirname(HERE)


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores{mem}, {platform.system()} {platform.release()}"


def random_model(seed, d_model, n_layer, d_inner, d_state, dt_rank, d_conv, vocab):
    """float32 weights with HF names (tied head, no in/out-proj bias, conv bias), scaled like make_fixtures."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std):
        return torch.randn(*shape, generator=g) * std

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    Dm, E, N, K, R = d_model, d_inner, d_state, d_conv, dt_rank
    sd = {"backbone.embeddings.weight": randn(vocab, Dm, std=2.5 / math.sqrt(Dm))}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        sd[p + "norm.weight"] = unif(0.75, 1.25, Dm)
        sd[m + "in_proj.weight"] = randn(2 * E, Dm, std=1 / math.sqrt(Dm))
        sd[m + "conv1d.weight"] = randn(E, 1, K, std=1 / math.sqrt(K))
        sd[m + "conv1d.bias"] = unif(-0.5, 0.5, E)
        sd[m + "x_proj.weight"] = randn(R + 2 * N, E, std=1 / math.sqrt(E))
        sd[m + "dt_proj.weight"] = unif(-1, 1, E, R) * R ** -0.5
        dt = torch.exp(unif(math.log(0.001), math.log(0.1), E))
        sd[m + "dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
        sd[m + "A_log"] = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
        sd[m + "D"] = torch.ones(E)
        sd[m + "out_proj.weight"] = randn(Dm, E, std=1 / math.sqrt(E))
    sd["backbone.norm_f.weight"] = unif(0.75, 1.25, Dm)
    config = {"model_type": "mamba", "hidden_size": Dm, "num_hidden_layers": n_layer, "intermediate_size": E,
              "state_size": N, "time_step_rank": R, "conv_kernel": K, "use_bias": False, "use_conv_bias": True,
              "layer_norm_epsilon": 1e-5, "residual_in_fp32": True, "vocab_size": vocab, "tie_word_embeddings": True}
    return sd, config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="default bench/results/reference_forward.json "
                                                "(--grad: reference_grad.json)")
    ap.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths (default 512 2048; --grad: 256 1024)")
    ap.add_argument("--grad", action="store_true", help="time gradient×input and MambaLRP backward passes")
    ap.add_argument("--grad-methods", nargs="+", default=["grad-input", "mamba-lrp"], choices=["grad-input", "mamba-lrp"],
                    help="with --grad: which methods (default both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--d-inner", type=int, default=1536)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--dt-rank", type=int, default=48)
    ap.add_argument("--d-conv", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=50280)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.out is None:
        args.out = os.path.join(ROOT, "bench", "results", "reference_grad.json" if args.grad else "reference_forward.json")
    if args.T is None:
        args.T = [256, 1024] if args.grad else [512, 2048]
    torch.set_num_threads(args.threads)
    shape = {"d_model": args.d_model, "n_layer": args.layers, "d_inner": args.d_inner, "d_state": args.d_state,
             "dt_rank": args.dt_rank, "d_conv": args.d_conv, "vocab": args.vocab}
    sd, config = random_model(args.seed, **shape)
    g = torch.Generator().manual_seed(args.seed + 1)
    if args.grad:
        report = grad_report(args, sd, config, shape, g)
        write_report(args.out, report)
        return
    results = []
    with torch.inference_mode():
        for T in args.T:
            ids = torch.randint(0, args.vocab, (T,), generator=g).tolist()
            for _ in range(args.warmup):
                ref.forward(sd, config, ids, torch.float32, collect=False)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                logits, _ = ref.forward(sd, config, ids, torch.float32, collect=False)
                times.append(time.perf_counter() - t0)
                assert logits.shape == (T, args.vocab) and bool(torch.isfinite(logits).all())
                del logits
            best = min(times)
            print(f"T={T}: best {best:.3f} s of {', '.join(f'{t:.3f}' for t in times)}", flush=True)
            results.append({"T": T, "seconds": round(best, 4), "all_runs": [round(t, 4) for t in times]})
    report = {
        "what": "PyTorch reference forward (mamba_ref.py, HF slow_forward math, sequential scan), float32, "
                "full logits [T, V], best of repeats after warm-up",
        "machine": machine_description(),
        "torch_version": torch.__version__,
        "threads": args.threads,
        "shape": shape,
        "results": results,
    }
    write_report(args.out, report)


def write_report(path, report):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


GRAD_METHODS = {"grad-input": (), "mamba-lrp": ("silu", "ssm", "gate", "norm")}


def grad_once(sd, config, ids, target, rules):
    """inputs_embeds.requires_grad → forward → backward of the last-position target logit; returns the gradient."""
    emb = sd["backbone.embeddings.weight"][torch.as_tensor(ids, dtype=torch.int64)].detach().clone()
    emb.requires_grad_(True)
    nf = ref.forward_modified(sd, config, emb, rules, dtype=torch.float32)
    f = nf[-1] @ ref.head_weight(sd)[target]
    f.backward()
    return emb.grad


def grad_report(args, sd, config, shape, g):
    results = []
    target = 1234 % shape["vocab"]
    for k, T in enumerate(args.T):
        ids = torch.randint(0, args.vocab, (T,), generator=g).tolist()
        for method, rules in GRAD_METHODS.items():
            if method not in args.grad_methods:
                continue
            if k == 0:  # warm-up (one-time library and allocator setup) at the first length only
                for _ in range(args.warmup):
                    grad_once(sd, config, ids, target, rules)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                grad = grad_once(sd, config, ids, target, rules)
                times.append(time.perf_counter() - t0)
                assert grad.shape == (T, shape["d_model"]) and bool(torch.isfinite(grad).all())
                if times[-1] > 30.0:  # minutes-long runs: one is enough (run-to-run noise is far below 1%)
                    break
            best = min(times)
            print(f"T={T} {method}: best {best:.3f} s of {', '.join(f'{t:.3f}' for t in times)}", flush=True)
            results.append({"T": T, "method": method, "seconds": round(best, 4), "all_runs": [round(t, 4) for t in times]})
    return {
        "what": "PyTorch reference gradient (mamba_ref.forward_modified: HF slow_forward math, sequential scan) with "
                "autograd on inputs_embeds, backward of the last-position logit of one token; grad-input = plain "
                "autograd, mamba-lrp = the official slow path's .detach() rules; float32, best of repeats after warm-up",
        "machine": machine_description(),
        "torch_version": torch.__version__,
        "threads": args.threads,
        "shape": shape,
        "results": results,
    }


if __name__ == "__main__":
    main()
