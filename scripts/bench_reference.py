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

--attention times the official hidden-attention code's approach instead (one layer, E=--d-inner, N=--d-state):

    /usr/bin/python3 scripts/bench_reference.py --attention [--out bench/results/reference_attention.json]

  1. "official triple loop": the Python loops of HiddenMambaAttn / UnifiedImplicitAttnRepr compute_attn_matrix_fn
     (docs: shared spec hidden-attention.md §2.2, §3.1) in float32: dA = exp(Δ·A), dB = Δ·B as (T, E, N); for each
     row r and column c ≤ r the product of dA over k = c+1..r, times dB_c, contracted with C_r, written into a dense
     (E, T, T) matrix. Timed at small T (--attn-T, default 32 64 128), then extrapolated to T=1024 with a least-squares
     fit of its two cost terms, a·T³/6 (the innermost products, each over E·N) + b·T²/2 (the per-entry work).
  2. "vectorised PyTorch": what a fair PyTorch user would write: cumulative sums of Δ per channel, exp(A·(S_i − S_j))
     on the lower triangle per state, a channel block at a time, accumulated into the channel-mean map. Timed at
     T=1024 on --attn-channels channels (default 64) and scaled by E / channels (the cost is linear in E).
  The official code's extra dense T×T matmuls for the unified kinds (gate @ α @ Z @ M) are not included.
  Writes {"machine", "torch_version", "threads", "shape", "results": [{"method", "T", "seconds", "extrapolated"}, ...]}.
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


def official_attn_matrix(dt, A, B, C):
    """The official triple loop (HiddenMambaAttn compute_attn_matrix_fn structure), float32, batch 1.
    dt: (E, T) Δ after softplus, A: (E, N), B, C: (N, T). Returns (E, T, T)."""
    E, T = dt.shape
    dA = torch.exp(torch.einsum("dl,dn->ldn", dt, A))  # (T, E, N)
    dB = torch.einsum("dl,nl->ldn", dt, B)             # (T, E, N)
    attn = torch.zeros(E, T, T)
    for r in range(T):
        curr_C = C[:, r]
        for c in range(r + 1):
            currA = torch.ones(E, A.shape[1])
            if c < r:
                for i in range(r - c):
                    currA = currA * dA[r - i]
            currB = dB[c]
            attn[:, r, c] = torch.sum(curr_C[None, :] * currA * currB, dim=-1)
    return attn


def vectorised_mean_map(dt, A, B, C, block=16):
    """Channel-mean map by cumsum + exp of differences, `block` channels at a time. dt: (E, T). Returns (T, T)."""
    E, T = dt.shape
    S = torch.cumsum(dt.double(), dim=1)  # double sums: a float cumsum loses digits at long T
    tril = torch.tril(torch.ones(T, T, dtype=torch.bool))
    out = torch.zeros(T, T)
    for e0 in range(0, E, block):
        Sb = S[e0:e0 + block]
        diff = (Sb[:, :, None] - Sb[:, None, :]).float().masked_fill(~tril, float("inf"))  # (b, T, T), i ≥ j
        for n in range(A.shape[1]):
            decay = torch.exp(A[e0:e0 + block, n, None, None] * diff)  # A < 0: 0 above the diagonal
            key = dt[e0:e0 + block] * B[n][None, :]                        # (b, T): Δ_j B_j[n]
            out += C[n][:, None] * torch.einsum("bij,bj->ij", decay, key)
    return out / E


def attention_benchmark(args):
    torch.set_num_threads(args.threads)
    E, N = args.d_inner, args.d_state
    g = torch.Generator().manual_seed(args.seed)

    def inputs(T, channels):
        dt = torch.nn.functional.softplus(torch.randn(channels, T, generator=g) - 4.0)
        A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(channels, 1)
        B = torch.randn(N, T, generator=g)
        C = torch.randn(N, T, generator=g)
        return dt, A, B, C

    results = []
    with torch.inference_mode():
        measured = []
        for T in args.attn_T:
            dt, A, B, C = inputs(T, E)
            times = []
            for _ in range(max(1, args.repeats if T <= 64 else 1)):
                t0 = time.perf_counter()
                m = official_attn_matrix(dt, A, B, C)
                times.append(time.perf_counter() - t0)
                assert m.shape == (E, T, T) and bool(torch.isfinite(m).all())
                del m
            best = min(times)
            measured.append((T, best))
            print(f"official triple loop, T={T}: {best:.3f} s", flush=True)
            results.append({"method": "official triple loop (PyTorch fp32)", "T": T, "seconds": round(best, 4),
                            "extrapolated": False})
        # Least squares on t = a·T³/6 + b·T²/2.
        X = torch.tensor([[T ** 3 / 6, T ** 2 / 2] for T, _ in measured], dtype=torch.float64)
        y = torch.tensor([t for _, t in measured], dtype=torch.float64)
        coef = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if min(coef) < 0:  # fall back to the cubic term alone, from the largest T
            T, t = measured[-1]
            coef = [t / (T ** 3 / 6), 0.0]
        T = args.attn_target_T
        est = coef[0] * T ** 3 / 6 + coef[1] * T ** 2 / 2
        print(f"official triple loop, T={T}: {est:.0f} s extrapolated ({est / 3600:.1f} h)", flush=True)
        results.append({"method": "official triple loop (PyTorch fp32)", "T": T, "seconds": round(est, 1),
                        "extrapolated": True,
                        "fit": f"{coef[0]:.3e}*T^3/6 + {coef[1]:.3e}*T^2/2 seconds (least squares on T={args.attn_T})"})
        # Vectorised: a channel slice at the target T, scaled to all channels.
        ch = min(args.attn_channels, E)
        dt, A, B, C = inputs(T, ch)
        vectorised_mean_map(dt[:16], A[:16], B, C)  # warm-up
        times = []
        for _ in range(max(1, args.repeats - 1)):
            t0 = time.perf_counter()
            m = vectorised_mean_map(dt, A, B, C)
            times.append(time.perf_counter() - t0)
            assert bool(torch.isfinite(m).all())
        best = min(times) * E / ch
        print(f"vectorised PyTorch mean map, T={T}: {best:.2f} s ({ch} channels measured, x{E / ch:.0f})", flush=True)
        results.append({"method": "vectorised PyTorch (cumsum + exp of differences), channel-mean map", "T": T,
                        "seconds": round(best, 3), "extrapolated": True,
                        "note": f"measured on {ch} channels, scaled by E/{ch}"})
    return {
        "what": "One Mamba layer's hidden attention (E x T x T, or its channel mean) the way the official code builds "
                "it, float32 PyTorch on CPU; the unified kinds' extra dense T x T matmuls are not included",
        "machine": machine_description(),
        "torch_version": torch.__version__,
        "threads": args.threads,
        "shape": {"d_inner": E, "d_state": N},
        "results": results,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="default bench/results/reference_forward.json "
                                                "(--grad: reference_grad.json, --attention: reference_attention.json)")
    ap.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths (default 512 2048; --grad: 256 1024)")
    ap.add_argument("--grad", action="store_true", help="time gradient×input and MambaLRP backward passes")
    ap.add_argument("--grad-methods", nargs="+", default=["grad-input", "mamba-lrp"], choices=["grad-input", "mamba-lrp"],
                    help="with --grad: which methods (default both)")
    ap.add_argument("--attention", action="store_true", help="time the official hidden-attention approach instead")
    ap.add_argument("--attn-T", type=int, nargs="+", default=[32, 64, 128], help="T for the triple loop")
    ap.add_argument("--attn-target-T", type=int, default=1024)
    ap.add_argument("--attn-channels", type=int, default=64, help="channels timed for the vectorised version")
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
        name = ("reference_attention.json" if args.attention else
                "reference_grad.json" if args.grad else "reference_forward.json")
        args.out = os.path.join(ROOT, "bench", "results", name)
    if args.attention:
        write_report(args.out, attention_benchmark(args))
        return

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
