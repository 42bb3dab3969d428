#!/usr/bin/python3
"""Trains the bundled demo model `models/sentiment-mamba`: a tiny Mamba that reads a generated review
(scripts/make_demo_text.py) and predicts ` positive` / ` negative` after `sentiment:`.

    /usr/bin/python3 scripts/make_demo_model.py            data + tokenizer + training + files (a few minutes, 1 thread)
    /usr/bin/python3 scripts/make_demo_model.py --verify   re-check the committed files (data, tokenizer, accuracy, fixture)

Steps:
1. Splits from make_demo_text (seeded): train 24,000, held-out 400 (committed as heldout.jsonl), test 4,000 (only
   for the accuracy figure); the three are disjoint as texts.
2. Tokenizer: byte-level BPE trained with make_tokenizer.train_bpe on the training texts plus their targets until
   every pre-tokenized word is one token; written in the GPT-NeoX tokenizer.json layout of
   make_tokenizer.build_tokenizer_json (specials 0/1, 256 byte characters, merges, space-run added tokens).
3. Model: HF MambaForCausalLM semantics in float32 PyTorch (the same maths as reference/mamba_ref.py, batched and
   differentiable), tied embeddings; loss = cross-entropy over the whole vocabulary at the last position (the token
   after `sentiment:`) only. AdamW, warm-up then cosine decay, fixed seed, one thread.
4. Writes models/sentiment-mamba/{config.json, model.safetensors (F32), tokenizer.json, heldout.jsonl, README.md}
   and tests/data/models/sentiment-mamba.reference.safetensors (input ids and logits of a few held-out sentences
   from reference/mamba_ref.py in float64 on the stored weights), then reloads the directory with the reference's
   loader and measures the held-out accuracy in float64.

Determinism: every random choice is seeded and training runs on one thread, so a rerun on the same machine and
PyTorch build gives byte-identical files. Other CPUs / PyTorch builds may round differently during training (the
data, the tokenizer and heldout.jsonl do not depend on that); `--verify` checks what matters for such a rerun.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, HERE)
import mamba_ref as ref  # noqa: E402
import make_demo_text as demo  # noqa: E402
import make_tokenizer  # noqa: E402

ROOT = os.path.dirname(HERE)
MODEL_DIR = os.path.join(ROOT, "models", "sentiment-mamba")
FIXTURE = os.path.join(ROOT, "tests", "data", "models", "sentiment-mamba.reference.safetensors")

SEED_TRAIN, SEED_HELDOUT, SEED_TEST, SEED_MODEL = 2024, 2025, 2026, 7
N_TRAIN, N_HELDOUT, N_TEST = 24000, 400, 4000
DIMS = dict(d_model=64, n_layer=4, d_state=16, d_conv=4, expand=2, dt_rank=4)
TRAIN = dict(steps=1200, batch=64, lr=3e-3, warmup=100, weight_decay=0.05, clip=1.0)
# Sentences the C++ test runs (tests/models/test_demo_model.cpp); the first is the README demo.
DEMO_TEXTS = [
    "review: the acting was not bad , but the plot was dull . sentiment:",
    "review: the film was not good . sentiment:",
    "review: the plot was not bad . sentiment:",
    "review: i watched it on friday and the movie was great . sentiment:",
    "review: although the story was boring , i really loved the ending . sentiment:",
    "review: the ending was great , although the acting was not good . sentiment:",
    "review: i watched it on friday and the plot was not bad . sentiment:",
    "review: i did not enjoy the book . sentiment:",
]
N_FIXTURE_HELDOUT = 6      # + the first held-out examples


# ------------------------------------------------------------------------------------------------------------------
# Data and tokenizer


def make_splits():
    train = demo.make_split(SEED_TRAIN, N_TRAIN)
    seen = {e["text"] for e in train}
    heldout = demo.make_split(SEED_HELDOUT, N_HELDOUT, exclude=seen)
    seen |= {e["text"] for e in heldout}
    test = demo.make_split(SEED_TEST, N_TEST, exclude=seen)
    return train, heldout, test


def make_tokenizer_spec(train):
    corpus = [e["text"] + e["target"] for e in train]
    merges = make_tokenizer.train_bpe(corpus, 100000)        # runs until every word is a single symbol
    base = {c for _, c in make_tokenizer.bytes_to_unicode()}
    distinct = []
    for a, b in merges:
        if a + b not in base and a + b not in distinct:
            distinct.append(a + b)
    return make_tokenizer.build_tokenizer_json(merges, len(distinct))


def token_offsets(tok, ids):
    """Byte ranges of the tokens (the texts are ASCII with no added tokens, so tokens tile the text)."""
    out, pos = [], 0
    for i in ids:
        n = len(tok.decode([i]).encode("utf-8"))
        out.append([pos, pos + n])
        pos += n
    return out


def annotate(tok, ex):
    """Adds token ids and the evidence token indices (tokens overlapping an evidence word)."""
    ids = tok.encode(ex["text"])
    offs = token_offsets(tok, ids)
    assert offs[-1][1] == len(ex["text"].encode("utf-8")), ex["text"]
    ev = [k for k, (b, e) in enumerate(offs) if any(b < se and sb < e for sb, se in ex["evidence_char_spans"])]
    ex = dict(ex)
    ex["ids"] = ids
    ex["evidence_tokens"] = ev
    return ex


# ------------------------------------------------------------------------------------------------------------------
# Model (float32 training version of reference/mamba_ref.py; parameter names are the HF names)


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mixer(torch.nn.Module):
    def __init__(self, d_model, d_inner, d_state, d_conv, dt_rank, n_layer, g):
        super().__init__()
        E, N, R = d_inner, d_state, dt_rank
        self.E, self.N, self.R, self.K = E, N, R, d_conv
        self.in_proj = torch.nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = torch.nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj = torch.nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = torch.nn.Linear(R, E, bias=True)
        self.out_proj = torch.nn.Linear(E, d_model, bias=False)
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = torch.nn.Parameter(torch.ones(E))
        with torch.no_grad():                          # HF / mamba_ssm initialisation, drawn from our generator
            for lin, fan_in in ((self.in_proj, d_model), (self.x_proj, E)):
                lin.weight.uniform_(-fan_in ** -0.5, fan_in ** -0.5, generator=g)
            self.out_proj.weight.uniform_(-E ** -0.5, E ** -0.5, generator=g)
            self.out_proj.weight /= math.sqrt(n_layer)           # rescale_prenorm_residual
            self.conv1d.weight.uniform_(-d_conv ** -0.5, d_conv ** -0.5, generator=g)
            self.conv1d.bias.uniform_(-d_conv ** -0.5, d_conv ** -0.5, generator=g)
            self.dt_proj.weight.uniform_(-R ** -0.5, R ** -0.5, generator=g)
            dt = torch.exp(torch.rand(E, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
            dt = dt.clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus

    def forward(self, x_in):
        Bsz, T, _ = x_in.shape
        xz = self.in_proj(x_in)
        x, z = xz[..., :self.E], xz[..., self.E:]
        conv = self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)    # causal depthwise conv
        u = F.silu(conv)
        xdbl = self.x_proj(u)
        dt_low, Bm, Cm = xdbl[..., :self.R], xdbl[..., self.R:self.R + self.N], xdbl[..., self.R + self.N:]
        delta = F.softplus(self.dt_proj(dt_low))                          # [B, T, E]
        A = -torch.exp(self.A_log)                                        # [E, N]
        dA = torch.exp(delta.unsqueeze(-1) * A)                           # [B, T, E, N]
        dBu = (delta * u).unsqueeze(-1) * Bm.unsqueeze(2)                 # [B, T, E, N]
        h = torch.zeros(Bsz, self.E, self.N, dtype=x_in.dtype)
        ys = []
        # unbind, not dA[:, t]: the backward of T separate selects would materialise T zero-filled copies
        for dA_t, dBu_t, C_t in zip(dA.unbind(1), dBu.unbind(1), Cm.unbind(1)):
            h = dA_t * h + dBu_t
            ys.append((h * C_t.unsqueeze(1)).sum(-1))
        ssm = torch.stack(ys, 1)
        y = (ssm + u * self.D) * F.silu(z)
        return self.out_proj(y)


class Layer(torch.nn.Module):
    def __init__(self, mixer, d_model):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = mixer


class Backbone(torch.nn.Module):
    def __init__(self, vocab, d_model, layers):
        super().__init__()
        self.embeddings = torch.nn.Embedding(vocab, d_model)
        self.layers = torch.nn.ModuleList(layers)
        self.norm_f = RMSNorm(d_model)


class MambaLM(torch.nn.Module):
    """state_dict() keys are exactly the HF MambaForCausalLM names (tied: no lm_head.weight)."""

    def __init__(self, vocab, d_model, n_layer, d_state, d_conv, expand, dt_rank, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        E = expand * d_model
        layers = [Layer(Mixer(d_model, E, d_state, d_conv, dt_rank, n_layer, g), d_model) for _ in range(n_layer)]
        self.backbone = Backbone(vocab, d_model, layers)
        with torch.no_grad():
            self.backbone.embeddings.weight.normal_(0.0, 0.1, generator=g)     # initializer_range 0.1

    def forward(self, ids, last):
        """ids [B, T] (right-padded), last [B] index of the last real token -> logits [B, V] at that position."""
        h = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            h = h + layer.mixer(layer.norm(h))
        h = h[torch.arange(ids.shape[0]), last]
        h = self.backbone.norm_f(h)
        return h @ self.backbone.embeddings.weight.t()


def batches(examples, batch, pad_id):
    ids = torch.full((len(examples), max(len(e["ids"]) for e in examples)), pad_id, dtype=torch.int64)
    for k, e in enumerate(examples):
        ids[k, :len(e["ids"])] = torch.tensor(e["ids"])
    last = torch.tensor([len(e["ids"]) - 1 for e in examples])
    return ids, last


def accuracy(model, examples, label_ids, pad_id, batch=500):
    model.eval()
    right = 0
    with torch.no_grad():
        for s in range(0, len(examples), batch):
            part = examples[s:s + batch]
            ids, last = batches(part, batch, pad_id)
            logits = model(ids, last)
            pred = logits.argmax(-1)
            want = torch.tensor([label_ids[e["label"]] for e in part])
            right += int((pred == want).sum())
    model.train()
    return right / len(examples)


def train_model(model, train, label_ids, pad_id, log=print):
    cfg = TRAIN
    g = torch.Generator().manual_seed(SEED_MODEL + 1)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "A_log" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"], betas=(0.9, 0.95))
    t0 = time.time()
    order = torch.randperm(len(train), generator=g)
    pos = 0
    for step in range(cfg["steps"]):
        lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"]) * 0.5 * (1 + math.cos(math.pi * step / cfg["steps"]))
        for grp in opt.param_groups:
            grp["lr"] = lr
        if pos + cfg["batch"] > len(train):
            order = torch.randperm(len(train), generator=g)
            pos = 0
        part = [train[int(i)] for i in order[pos:pos + cfg["batch"]]]
        pos += cfg["batch"]
        ids, last = batches(part, cfg["batch"], pad_id)
        want = torch.tensor([label_ids[e["label"]] for e in part])
        logits = model(ids, last)
        loss = F.cross_entropy(logits, want)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        if step % 250 == 0 or step == cfg["steps"] - 1:
            log(f"  step {step:5d}  loss {float(loss):.4f}  lr {lr:.2e}  {time.time() - t0:.0f} s")
    return model


# ------------------------------------------------------------------------------------------------------------------
# Files


def hf_config(vocab_rows):
    d = DIMS
    return {
        "architectures": ["MambaForCausalLM"],
        "bos_token_id": 0,
        "conv_kernel": d["d_conv"],
        "eos_token_id": 0,
        "expand": d["expand"],
        "hidden_act": "silu",
        "hidden_size": d["d_model"],
        "initializer_range": 0.1,
        "intermediate_size": d["expand"] * d["d_model"],
        "layer_norm_epsilon": 1e-5,
        "model_type": "mamba",
        "num_hidden_layers": d["n_layer"],
        "pad_token_id": 1,
        "rescale_prenorm_residual": True,
        "residual_in_fp32": True,
        "state_size": d["d_state"],
        "tie_word_embeddings": True,
        "time_step_floor": 0.0001,
        "time_step_init_scheme": "random",
        "time_step_max": 0.1,
        "time_step_min": 0.001,
        "time_step_rank": d["dt_rank"],
        "time_step_scale": 1.0,
        "torch_dtype": "float32",
        "transformers_version": "4.44.0",
        "use_bias": False,
        "use_cache": True,
        "use_conv_bias": True,
        "vocab_size": vocab_rows,
    }


HELDOUT_KEYS = ["text", "label", "target", "evidence_words", "evidence", "evidence_char_spans", "structure",
                "negated", "contrast_words", "distractor_words", "evidence_tokens"]


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def reference_logits(sd, config, ids):
    logits, _ = ref.forward(sd, config, ids, torch.float64, collect=False)
    return logits


def eval_reference(sd, config, examples, label_ids):
    """float64 reference on the stored weights: (accuracy, mean p(label), min p(label), wrong examples)."""
    right, probs, wrong = 0, [], []
    for e in examples:
        logits = reference_logits(sd, config, e["ids"])[-1]
        p = torch.softmax(logits, -1)
        pred = int(logits.argmax())
        right += pred == label_ids[e["label"]]
        probs.append(float(p[label_ids[e["label"]]]))
        if pred != label_ids[e["label"]]:
            wrong.append(e["text"])
    return right / len(examples), sum(probs) / len(probs), min(probs), wrong


def fixture_tensors(tok, sd, config, heldout, label_ids):
    """input ids and float64-reference logits (as F32) of DEMO_TEXTS and the first held-out sentences; full logits
    [T, V] for the first, last-position logits [V] for all."""
    texts = DEMO_TEXTS + [e["text"] for e in heldout[:N_FIXTURE_HELDOUT]]
    tensors, meta = {}, {"format": "pt"}
    for k, text in enumerate(texts):
        ids = tok.encode(text)
        logits = reference_logits(sd, config, ids)
        tensors[f"input_ids.{k}"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"last_logits.{k}"] = logits[-1].to(torch.float32).contiguous()
        if k == 0:
            tensors["logits.0"] = logits.to(torch.float32).contiguous()
        pred = int(logits[-1].argmax())
        meta[f"text.{k}"] = text
        meta[f"predicted.{k}"] = tok.decode([pred])
    meta["count"] = str(len(texts))
    meta["positive_id"] = str(label_ids["positive"])
    meta["negative_id"] = str(label_ids["negative"])
    return tensors, meta


README = """# sentiment-mamba — bundled demo model (trained)

A tiny `MambaForCausalLM` (Hugging Face layout) trained on generated English reviews whose deciding words are known,
so attributions can be scored against ground truth. Made by `scripts/make_demo_model.py` (data:
`scripts/make_demo_text.py`); nothing here comes from a pretrained model or a real data set.

## Task

The prompt is a review, the next token after `sentiment:` is the label:

    review: the acting was not bad , but the plot was dull . sentiment:   ->   " negative"

Labelling rule (mechanical): a *sentiment clause* holds exactly one sentiment word (an adjective such as `good`,
`dull` or a verb such as `loved`, `hated`) whose polarity is flipped when the clause negates it (`not`, `never`,
`hardly`, `did not`); intensifiers (`very`, `really`, ...) never change it. Every review has exactly one *decisive*
sentiment clause: in `A , but B`, `although A , B` and `B , although A` it is `B` — the clause after `but` wins, the
clause that `although` introduces loses (the polarity of `A` is drawn independently of the label); otherwise the review
has a single sentiment clause. All other clauses are neutral distractors ("i watched it
on friday", "the phone was black"). The **evidence** of an example is the decisive sentiment word plus its negation
word when there is one.

Words are lowercase and punctuation is spaced (`" , "`, `" . "`); the vocabulary is that of `make_demo_text.py`
({n_sent_words} sentiment words, {n_nouns} nouns, neutral clauses about days, people, places, prices). Text outside
that vocabulary still tokenizes (byte-level BPE) but the model has never seen it.

## Files

| file | what |
|---|---|
| `config.json` | HF `mamba`: hidden {d_model}, {n_layer} layers, inner {d_inner}, state {d_state}, conv {d_conv}, dt rank {dt_rank}, tied embeddings, no in/out-proj bias, vocab rows {vocab_rows} |
| `model.safetensors` | F32, {params} parameters ({size} bytes) |
| `tokenizer.json` | byte-level BPE in the GPT-NeoX layout ({n_ids} ids: 2 specials, 256 bytes, {n_merges} merges, 3 space runs); every word of the task is one token; ` positive` = {pos_id}, ` negative` = {neg_id} |
| `heldout.jsonl` | {n_heldout} held-out examples (texts disjoint from training), one JSON object a line (below) |

`heldout.jsonl` fields: `text`; `label` (`positive`/`negative`); `target` (the label token string, `" positive"` /
`" negative"`); `evidence_words` (indices into `text.split(" ")`); `evidence` (those words); `evidence_char_spans`
(`[begin, end)` byte offsets into `text`); `evidence_tokens` (indices of the tokens, in this tokenizer's encoding of
`text`, that overlap an evidence word); `structure` (`single`, `but`, `although_first`, `although_last`); `negated` (the evidence includes a
negation); `contrast_words` (index of `but` / `although`); `distractor_words` (sentiment and negation words of the
overridden clause).

## Accuracy

Argmax over the whole vocabulary at the last position must be the label token.

| split | examples | accuracy |
|---|---|---|
| train | {n_train} | {acc_train:.2%} |
| held-out (`heldout.jsonl`, float64 reference on the stored weights) | {n_heldout} | {acc_heldout:.2%} (mean p(label) {p_heldout:.3f}) |
| test (generated like held-out, not committed) | {n_test} | {acc_test:.2%} |

By structure on the test split: {by_structure}.

## Scoring attributions

`scripts/eval_demo_attributions.py` ranks the body tokens of every held-out sentence by a method's relevance and
reports the pointing game (hit@1), hit@2, hit@3 and all@|E| against `evidence_tokens`, next to a random ranking and
PyTorch baselines (occlusion, gradient × input, gradient norm); see `scripts/README.md` for the latest numbers.

## Regenerating

    /usr/bin/python3 scripts/make_demo_model.py            # about 6 minutes on one CPU thread
    /usr/bin/python3 scripts/make_demo_model.py --verify   # data, tokenizer, held-out accuracy, C++ test fixture

Training: AdamW (lr {lr}, betas 0.9/0.95, weight decay {weight_decay} on matrices), {steps} steps of batch {batch},
warm-up {warmup} then cosine decay, gradient clip {clip}, cross-entropy over the vocabulary at the last position
only, seed {seed}, one thread. Same machine and PyTorch build: byte-identical files. The data, tokenizer and
`heldout.jsonl` are identical everywhere; weights trained elsewhere may differ in rounding, which `--verify` (accuracy
on the committed files) does not depend on. The C++ parity fixture is
`tests/data/models/sentiment-mamba.reference.safetensors` (`tests/models/test_demo_model.cpp`).
"""


def by_structure(model, examples, label_ids, pad_id):
    parts = []
    for key in ("single", "but", "although_first", "although_last"):
        for neg in (False, True):
            sub = [e for e in examples if e["structure"] == key and e["negated"] == neg]
            if sub:
                parts.append(f"{key}{' negated' if neg else ''} {accuracy(model, sub, label_ids, pad_id):.2%}")
    return ", ".join(parts)


def build(args):
    torch.set_num_threads(args.threads)
    t_start = time.time()
    train, heldout, test = make_splits()
    spec = make_tokenizer_spec(train)
    tok = make_tokenizer.TokenizerJson(spec)
    n_ids = len(spec["model"]["vocab"]) + len(spec["added_tokens"]) - 2
    label_ids = {}
    for lab, s in demo.LABELS.items():
        ids = tok.encode(s)
        assert len(ids) == 1, (s, ids)
        label_ids[lab] = ids[0]
    pad_id = spec["model"]["vocab"]["<|padding|>"]
    train = [annotate(tok, e) for e in train]
    heldout = [annotate(tok, e) for e in heldout]
    test = [annotate(tok, e) for e in test]
    for e in heldout:                                     # every word one token
        assert len(e["ids"]) == len(e["text"].split(" ")) + 2, e["text"]
    lens = [len(e["ids"]) for e in train]
    print(f"data: train {len(train)}, held-out {len(heldout)}, test {len(test)}; tokens per example "
          f"{min(lens)}..{max(lens)} (mean {sum(lens) / len(lens):.1f}); tokenizer {n_ids} ids "
          f"({len(spec['model']['merges'])} merges); labels {label_ids}")

    vocab_rows = -(-n_ids // 8) * 8
    torch.manual_seed(SEED_MODEL)
    model = MambaLM(vocab_rows, seed=SEED_MODEL, **DIMS)
    if args.steps:
        TRAIN["steps"] = args.steps
    train_model(model, train, label_ids, pad_id)
    acc_train = accuracy(model, train, label_ids, pad_id)
    acc_test = accuracy(model, test, label_ids, pad_id)
    structure = by_structure(model, test, label_ids, pad_id)
    print(f"float32 training model: train {acc_train:.4f}, test {acc_test:.4f}; {structure}")

    d = args.out
    os.makedirs(d, exist_ok=True)
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    config = hf_config(vocab_rows)
    write_json(os.path.join(d, "config.json"), config)
    ref.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2, ensure_ascii=False)
        f.write("\n")
    demo.write_jsonl(os.path.join(d, "heldout.jsonl"), heldout, HELDOUT_KEYS)

    # reload with the reference's own loader and measure in float64
    config2, sd2 = ref.load_model_dir(d)
    assert all(torch.equal(sd[k], sd2[k]) for k in sd) and set(sd) == set(sd2)
    tok2 = make_tokenizer.TokenizerJson.from_file(os.path.join(d, "tokenizer.json"))
    assert all(tok2.encode(e["text"]) == e["ids"] for e in heldout)
    acc_heldout, p_heldout, p_min, wrong = eval_reference(sd2, config2, heldout, label_ids)
    print(f"float64 reference on the stored weights: held-out accuracy {acc_heldout:.4f}, mean p(label) "
          f"{p_heldout:.4f}, min {p_min:.4f}")
    for w in wrong:
        print(f"  wrong: {w}")
    tensors, meta = fixture_tensors(tok2, sd2, config2, heldout, label_ids)
    if args.out == MODEL_DIR:
        os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
        ref.write_safetensors(FIXTURE, tensors, meta)
    for k in range(int(meta["count"])):
        p = torch.softmax(tensors[f"last_logits.{k}"].double(), -1)
        print(f"  {meta[f'text.{k}']!r} -> {meta[f'predicted.{k}']!r} "
              f"(p positive {float(p[label_ids['positive']]):.4f}, negative {float(p[label_ids['negative']]):.4f})")

    params = sum(t.numel() for t in sd.values())
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(README.format(
            n_sent_words=len(demo.SENTIMENT_WORDS), n_nouns=len(demo.NOUNS), d_model=DIMS["d_model"],
            n_layer=DIMS["n_layer"], d_inner=DIMS["expand"] * DIMS["d_model"], d_state=DIMS["d_state"],
            d_conv=DIMS["d_conv"], dt_rank=DIMS["dt_rank"], vocab_rows=vocab_rows, params=params,
            size=os.path.getsize(os.path.join(d, "model.safetensors")), n_ids=n_ids,
            n_merges=len(spec["model"]["merges"]), pos_id=label_ids["positive"], neg_id=label_ids["negative"],
            n_heldout=len(heldout), n_train=len(train), n_test=len(test), acc_train=acc_train,
            acc_heldout=acc_heldout, p_heldout=p_heldout, acc_test=acc_test, by_structure=structure,
            seed=SEED_MODEL, **TRAIN))
    print(f"wrote {os.path.relpath(d, ROOT)} ({params} parameters) in {time.time() - t_start:.0f} s")


def verify(args):
    torch.set_num_threads(args.threads)
    d = args.out
    train, heldout, _ = make_splits()
    spec = make_tokenizer_spec(train)
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        assert json.load(f) == spec, "tokenizer.json differs from a fresh training"
    tok = make_tokenizer.TokenizerJson(spec)
    heldout = [annotate(tok, e) for e in heldout]
    with open(os.path.join(d, "heldout.jsonl"), encoding="utf-8") as f:
        lines = [json.loads(x) for x in f]
    assert lines == [{k: e[k] for k in HELDOUT_KEYS} for e in heldout], "heldout.jsonl differs from a fresh split"
    label_ids = {lab: tok.encode(s)[0] for lab, s in demo.LABELS.items()}
    config, sd = ref.load_model_dir(d)
    acc, p_mean, p_min, wrong = eval_reference(sd, config, heldout, label_ids)
    print(f"tokenizer.json and heldout.jsonl reproduce; held-out accuracy {acc:.4f} (mean p(label) {p_mean:.4f})")
    stored, meta = ref.read_safetensors(FIXTURE)
    tensors, meta2 = fixture_tensors(tok, sd, config, heldout, label_ids)
    assert meta == meta2 and set(stored) == set(tensors)
    worst = max(float((stored[k].double() - tensors[k].double()).abs().max()) for k in stored)
    print(f"fixture {os.path.relpath(FIXTURE, ROOT)}: max |stored - recomputed| = {worst:.3g}")
    return acc >= 0.97 and worst == 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only check the committed files")
    ap.add_argument("--out", default=MODEL_DIR, help="model directory (default models/sentiment-mamba)")
    ap.add_argument("--steps", type=int, default=0, help="override the number of training steps (experiments)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    if args.verify:
        sys.exit(0 if verify(args) else 1)
    build(args)


if __name__ == "__main__":
    main()
