#!/usr/bin/python3
"""Scores token attributions on the held-out sentences of models/sentiment-mamba against their known evidence words
(pointing game and top-k hits), and computes three PyTorch baselines to compare with.

    /usr/bin/python3 scripts/eval_demo_attributions.py                        baselines only
    /usr/bin/python3 scripts/eval_demo_attributions.py --scores FILE.jsonl    also score attributions made elsewhere

FILE.jsonl: one object a line, {"text": ..., "relevance": [one number per token of the model's tokenizer]} (a
"method" key, when present, groups the lines). Texts are matched with heldout.jsonl; missing ones are skipped.

Metrics, over the *body* tokens only (the fixed `review` `:` at the start and ` sentiment` `:` at the end are never
candidates — they are the same in every example), ranking by relevance (signed: evidence for the predicted label):
  hit@1 (pointing game) — the top token is an evidence token
  hit@k                 — at least one evidence token among the top k
  all@|E|               — the top |E| tokens are exactly the evidence tokens (|E| = 1 or 2: word, negation)
The random row is the expectation for a uniformly random ranking.

Baselines (float64, the reference maths of reference/mamba_ref.py on the committed weights), all explaining
logit(label) - logit(other label) at the last position:
  occlusion    — drop of that margin when the token's embedding is replaced by the `<|padding|>` embedding
  grad x input — Σ_d ∂margin/∂e[t,d] · e[t,d] over the token's embedding
  gradient     — ‖∂margin/∂e[t]‖₂ (unsigned)
"""
import argparse
import json
import os
import sys
from collections import defaultdict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, HERE)
import mamba_ref as ref  # noqa: E402
import make_tokenizer  # noqa: E402

ROOT = os.path.dirname(HERE)
MODEL_DIR = os.path.join(ROOT, "models", "sentiment-mamba")
N_PREFIX, N_SUFFIX = 2, 2           # "review" ":"  ...  " sentiment" ":"


def margin_fn(sd, config, label_id, other_id):
    emb = sd["backbone.embeddings.weight"].to(torch.float64)

    def f(embeds):
        # the reference forward on ids that point at extra embedding rows holding `embeds` (so they carry
        # gradients); the head is tied, so the margin is taken from norm_f with the original rows
        sd2 = dict(sd)
        sd2["backbone.embeddings.weight"] = torch.cat([emb, embeds], 0)
        T = embeds.shape[0]
        ids = list(range(emb.shape[0], emb.shape[0] + T))
        assert ref.model_settings(config, sd2)["tied"]
        _, acts = ref.forward(sd2, config, ids, torch.float64, collect=True)
        hf = acts["norm_f"][-1]
        return hf @ emb[label_id] - hf @ emb[other_id]
    return f


def baselines(sd, config, ids, label_id, other_id, pad_id):
    emb = sd["backbone.embeddings.weight"].to(torch.float64)
    f = margin_fn(sd, config, label_id, other_id)
    e = emb[torch.tensor(ids)].clone().requires_grad_(True)
    m = f(e)
    (g,) = torch.autograd.grad(m, e)
    gxi = (g * e).sum(-1).detach()
    gnorm = g.norm(dim=-1).detach()
    base = float(m)
    occ = []
    with torch.no_grad():
        for t in range(len(ids)):
            e2 = emb[torch.tensor(ids)].clone()
            e2[t] = emb[pad_id]
            occ.append(base - float(f(e2)))
    return {"occlusion": occ, "grad x input": gxi.tolist(), "gradient": gnorm.tolist()}


def score(relevance, ex):
    T = len(relevance)
    cand = list(range(N_PREFIX, T - N_SUFFIX))
    ev = set(ex["evidence_tokens"])
    order = sorted(cand, key=lambda t: (-relevance[t], t))
    out = {f"hit@{k}": float(bool(ev & set(order[:k]))) for k in (1, 2, 3)}
    out["all@|E|"] = float(set(order[:len(ev)]) == ev)
    return out


def random_score(ex, T):
    """Expected metrics for a uniformly random ranking of the body tokens."""
    from math import comb
    n = T - N_PREFIX - N_SUFFIX
    e = len(ex["evidence_tokens"])
    out = {}
    for k in (1, 2, 3):
        out[f"hit@{k}"] = 1.0 - comb(n - e, k) / comb(n, k)
    out["all@|E|"] = 1.0 / comb(n, e)
    return out


def table(rows, title):
    keys = ["hit@1", "hit@2", "hit@3", "all@|E|"]
    print(f"\n{title}")
    print(f"| method | n | {' | '.join(keys)} |")
    print("|---|---|" + "---|" * len(keys))
    for name, scores in rows.items():
        n = len(scores)
        print(f"| {name} | {n} | " + " | ".join(f"{sum(s[k] for s in scores) / n:.1%}" for k in keys) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL_DIR)
    ap.add_argument("--scores", help="jsonl of {text, relevance[, method]} to score")
    ap.add_argument("--limit", type=int, default=0, help="only the first N held-out examples (0: all)")
    ap.add_argument("--no-baselines", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    config, sd = ref.load_model_dir(a.model)
    sd = {k: v.to(torch.float64) for k, v in sd.items()}
    tok = make_tokenizer.TokenizerJson.from_file(os.path.join(a.model, "tokenizer.json"))
    with open(os.path.join(a.model, "heldout.jsonl"), encoding="utf-8") as f:
        heldout = [json.loads(x) for x in f]
    if a.limit:
        heldout = heldout[:a.limit]
    pad_id = tok.vocab["<|padding|>"]
    lab = {"positive": tok.encode(" positive")[0], "negative": tok.encode(" negative")[0]}
    rows = defaultdict(list)
    by_structure = defaultdict(lambda: defaultdict(list))
    for ex in heldout:
        ids = tok.encode(ex["text"])
        rows["random (expected)"].append(random_score(ex, len(ids)))
        if a.no_baselines:
            continue
        other = "negative" if ex["label"] == "positive" else "positive"
        for name, rel in baselines(sd, config, ids, lab[ex["label"]], lab[other], pad_id).items():
            s = score(rel, ex)
            rows[name].append(s)
            by_structure[ex["structure"] + (" negated" if ex["negated"] else "")][name].append(s)
    if a.scores:
        by_text = {ex["text"]: ex for ex in heldout}
        with open(a.scores, encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                ex = by_text.get(obj["text"])
                if ex is None:
                    continue
                assert len(obj["relevance"]) == len(tok.encode(ex["text"])), obj["text"]
                rows[obj.get("method", a.scores)].append(score(obj["relevance"], ex))
    table(rows, f"Top-k hits of the evidence tokens, {len(heldout)} held-out sentences of {a.model}")
    for key in sorted(by_structure):
        table(by_structure[key], f"structure: {key}")


if __name__ == "__main__":
    main()
