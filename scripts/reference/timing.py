"""Timing helpers shared by the scripts/bench_*_reference.py scripts (benchmarks only; never used by tests)."""
import math
import time

import torch


def best_of(fn, repeats, warmup=True):
    """Best wall-clock seconds of `repeats` calls of fn() (after one untimed warm-up call when warmup is set)."""
    if warmup:
        fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def grad_input_fn(call, sd, emb_key, head_key, ids):
    """A callable doing what `ssmx explain --method grad-input` does, the way a PyTorch user writes it with autograd:
    the input embedding rows as leaves (inputs_embeds with requires_grad), the forward, backward of the predicted
    token's logit at the last position, and gradient × input summed per token. `call(state_dict, ids)` runs the
    reference forward and returns logits [T, V]; it is given a state dict whose embedding table is the T leaf rows
    (ids 0..T-1), with a tied head kept on the full table."""
    rows = sd[emb_key].detach()[torch.as_tensor(ids, dtype=torch.long)].clone()
    sd2 = dict(sd)
    if head_key not in sd:
        sd2[head_key] = sd[emb_key].detach()
    local_ids = list(range(len(ids)))

    def run():
        leaf = rows.clone().requires_grad_(True)
        sd2[emb_key] = leaf
        logits = call(sd2, local_ids)
        logits[-1].max().backward()
        return (leaf.grad * leaf.detach()).sum(-1)
    return run
