#!/usr/bin/python3
"""Writes the committed forward-parity fixtures of ssmx (deterministic: fixed seeds, no network).

    /usr/bin/python3 scripts/make_fixtures.py            regenerate everything (tokenizer, fixtures, bundled model)
    /usr/bin/python3 scripts/make_fixtures.py --verify   only re-run the reference on the committed files and compare

Outputs (see scripts/README.md):
  tests/data/tokenizer/tiny-tokenizer.json, tiny-expected.json     (scripts/make_tokenizer.py)
  tests/data/models/<name>/                                          tiny random checkpoints, one per layout/dtype:
      config.json, weights, tokenizer.json, reference.safetensors (input_ids I64 [T] + every named intermediate and
      the logits, computed by scripts/reference/mamba_ref.py in float64 from the stored weights, saved as F32)
  models/tiny-mamba/                                                 bundled demo model (random weights)
  tests/data/models/bundled-tiny-mamba.reference.safetensors         its reference on "the movie was not good"

Every directory is loaded back with the reference's own loader and re-run; the result must equal the fixture exactly.
"""
import argparse
import collections
import json
import math
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
sys.path.insert(0, HERE)
import mamba_ref as ref  # noqa: E402
import make_tokenizer  # noqa: E402

ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "tests", "data", "models")
BUNDLED_DIR = os.path.join(ROOT, "models", "tiny-mamba")
BUNDLED_REF = os.path.join(MODELS_DIR, "bundled-tiny-mamba.reference.safetensors")
BUNDLED_TEXT = "the movie was not good"
TOKENIZER_IDS = make_tokenizer.TOTAL_IDS          # 509: every fixture input id is a real tokenizer id

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TORCH_DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ------------------------------------------------------------------------------------------------------------------
# Random weights


def make_weights(seed, *, d_model, d_inner, d_state, d_conv, dt_rank, n_layer, vocab, falcon, use_bias, untied):
    """float64 weights with HF names. Scales: activations O(1) everywhere, logits O(1-10), the SSM path of the
    same order as the D skip (dt log-uniform in [0.005, 0.5], B/C of unit size, A = -(1..N) random)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    Dm, E, N, K, R = d_model, d_inner, d_state, d_conv, dt_rank
    w = {"backbone.embeddings.weight": randn(vocab, Dm, std=2.5 / math.sqrt(Dm))}   # logits std ~2.5
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        w[p + "norm.weight"] = unif(0.75, 1.25, Dm)
        w[m + "in_proj.weight"] = randn(2 * E, Dm, std=1 / math.sqrt(Dm))
        if use_bias:
            w[m + "in_proj.bias"] = randn(2 * E, std=0.2)
        w[m + "conv1d.weight"] = randn(E, 1, K, std=1 / math.sqrt(K))
        w[m + "conv1d.bias"] = unif(-0.5, 0.5, E)
        xp = randn(R + 2 * N, E, std=1 / math.sqrt(E))
        xp[R:] *= 2.0                       # u = silu(conv) has rms ~0.6: B, C come out with rms ~1
        w[m + "x_proj.weight"] = xp
        w[m + "dt_proj.weight"] = unif(-1, 1, E, R) * R ** -0.5            # HF init range (dt_init "random")
        dt = torch.exp(unif(math.log(0.005), math.log(0.5), E))
        w[m + "dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))          # inverse softplus
        w[m + "A_log"] = torch.log(unif(1.0, float(N), E, N))
        w[m + "D"] = unif(0.5, 1.5, E)
        w[m + "out_proj.weight"] = randn(Dm, E, std=1.5 / math.sqrt(E))
        if use_bias:
            w[m + "out_proj.bias"] = randn(Dm, std=0.1)
    w["backbone.norm_f.weight"] = unif(0.75, 1.25, Dm)
    if untied:
        w["lm_head.weight"] = randn(vocab, Dm, std=2.5 / math.sqrt(Dm))
    return w


def round_to(weights, dtype):
    return {k: v.to(dtype) for k, v in weights.items()}


def make_ids(seed, T=11):
    """T distinct ids in [1, 509) with id 0 placed once at a random position."""
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randperm(TOKENIZER_IDS - 1, generator=g)[:T - 1] + 1).tolist()
    pos = int(torch.randint(0, T, (1,), generator=g))
    return ids[:pos] + [0] + ids[pos:]


# ------------------------------------------------------------------------------------------------------------------
# Configs


def hf_config(family, dtype, *, d_model, d_inner, d_state, d_conv, dt_rank, n_layer, vocab, use_bias, tied,
              expand=2, mixer_rms_eps=1e-6):
    c = {
        "architectures": ["FalconMambaForCausalLM" if family == "falcon_mamba" else "MambaForCausalLM"],
        "bos_token_id": 0,
        "conv_kernel": d_conv,
        "eos_token_id": 0,
        "expand": expand,
        "hidden_act": "silu",
        "hidden_size": d_model,
        "initializer_range": 0.1,
        "intermediate_size": d_inner,
        "layer_norm_epsilon": 1e-5,
        "model_type": family,
        "num_hidden_layers": n_layer,
        "pad_token_id": 0,
        "rescale_prenorm_residual": False,
        "residual_in_fp32": True,
        "state_size": d_state,
        "tie_word_embeddings": tied,
        "time_step_floor": 0.0001,
        "time_step_init_scheme": "random",
        "time_step_max": 0.5,
        "time_step_min": 0.005,
        "time_step_rank": dt_rank,
        "time_step_scale": 1.0,
        "torch_dtype": TORCH_DTYPE_NAME[dtype],
        "transformers_version": "4.44.0",
        "use_bias": use_bias,
        "use_cache": True,
        "use_conv_bias": True,
        "vocab_size": vocab,
    }
    if family == "falcon_mamba":
        c["mixer_rms_eps"] = mixer_rms_eps
        c["use_mambapy"] = False
    return c


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------------------------------------------------------------
# Weight files


def hf_module_order(names):
    """The order HF `state_dict()` emits: embeddings, per layer norm then mixer (own params A_log, D first, then
    conv1d, in_proj, x_proj, dt_proj, out_proj), norm_f, lm_head."""
    mixer = ["A_log", "D", "conv1d.weight", "conv1d.bias", "in_proj.weight", "in_proj.bias", "x_proj.weight",
             "dt_proj.weight", "dt_proj.bias", "out_proj.weight", "out_proj.bias"]

    def key(n):
        if n.startswith("backbone.embedding"):
            return (0, 0, 0)
        if n.startswith("backbone.layers."):
            parts = n.split(".")
            i, rest = int(parts[2]), ".".join(parts[3:])
            return (1, i, -1 if rest == "norm.weight" else mixer.index(rest[len("mixer."):]))
        if n == "backbone.norm_f.weight":
            return (2, 0, 0)
        return (3, 0, 0)
    return sorted(names, key=key)


def mamba_ssm_order(names):
    """mamba_ssm `state_dict()` order: Block registers mixer before norm; Mamba's own A_log, D come first, then
    in_proj, conv1d, x_proj, dt_proj, out_proj."""
    mixer = ["A_log", "D", "in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "x_proj.weight",
             "dt_proj.weight", "dt_proj.bias", "out_proj.weight", "out_proj.bias"]

    def key(n):
        if n.startswith("backbone.embedding"):
            return (0, 0, 0)
        if n.startswith("backbone.layers."):
            parts = n.split(".")
            i, rest = int(parts[2]), ".".join(parts[3:])
            return (1, i, 99 if rest == "norm.weight" else mixer.index(rest[len("mixer."):]))
        if n == "backbone.norm_f.weight":
            return (2, 0, 0)
        return (3, 0, 0)
    return sorted(names, key=key)


def write_single_safetensors(d, sd):
    ref.write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})


def write_sharded_safetensors(d, sd, n_shards=2):
    """Layer-aligned shards: the first holds the embedding and the first half of the layers."""
    names = hf_module_order(sd)
    n_layer = 1 + max(int(n.split(".")[2]) for n in names if n.startswith("backbone.layers."))
    shard_of = {}
    for n in names:
        if n.startswith("backbone.layers."):
            s = int(n.split(".")[2]) * n_shards // n_layer
        else:
            s = 0 if n.startswith("backbone.embedding") else n_shards - 1
        shard_of[n] = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
    for fname in sorted(set(shard_of.values())):
        ref.write_safetensors(os.path.join(d, fname), {n: sd[n] for n in names if shard_of[n] == fname},
                              {"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(shard_of.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def write_hf_bin(d, sd, views=False):
    """torch.save of a plain dict (what HF save_pretrained(safe_serialization=False) writes). With `views`, some
    tensors are saved as views: a transpose (non-contiguous strides), a row slice and a flat slice (storage offsets),
    a column slice (both)."""
    out = {}
    for n in hf_module_order(sd):
        out[n] = sd[n].clone()
    if views:
        def transposed(t):                           # shape [a, b], strides (1, a)
            base = t.t().contiguous()
            v = base.t()
            assert not v.is_contiguous() and v.stride() == (1, t.shape[0])
            return v

        def row_slice(t, before=3, after=2):         # storage offset before·cols
            pad = torch.zeros(before + t.shape[0] + after, *t.shape[1:], dtype=t.dtype)
            pad[before:before + t.shape[0]] = t
            v = pad[before:before + t.shape[0]]
            assert v.storage_offset() == before * math.prod(t.shape[1:])
            return v

        def flat_slice(t, before=7, after=5):
            pad = torch.zeros(before + t.numel() + after, dtype=t.dtype)
            pad[before:before + t.numel()] = t.reshape(-1)
            return pad[before:before + t.numel()].view(t.shape)

        def col_slice(t, before=2, after=3):         # strides (cols + 5, 1), offset 2
            pad = torch.zeros(t.shape[0], before + t.shape[1] + after, dtype=t.dtype)
            pad[:, before:before + t.shape[1]] = t
            v = pad[:, before:before + t.shape[1]]
            assert not v.is_contiguous() and v.storage_offset() == before
            return v

        out["backbone.layers.0.mixer.out_proj.weight"] = transposed(sd["backbone.layers.0.mixer.out_proj.weight"])
        out["backbone.layers.0.mixer.x_proj.weight"] = row_slice(sd["backbone.layers.0.mixer.x_proj.weight"])
        out["backbone.layers.1.mixer.D"] = flat_slice(sd["backbone.layers.1.mixer.D"])
        out["backbone.layers.1.mixer.A_log"] = col_slice(sd["backbone.layers.1.mixer.A_log"])
        for n in out:
            assert torch.equal(out[n], sd[n]), n
    torch.save(out, os.path.join(d, "pytorch_model.bin"))


def write_mamba_ssm_bin(d, sd):
    """The original state-spaces layout: an OrderedDict with `_metadata` (what `Module.state_dict()` returns),
    `backbone.embedding.weight` (singular) and `lm_head.weight` as two tensors sharing one storage (state_dict()
    detaches each tied parameter separately, so they are distinct tensor objects over the same storage)."""
    emb = sd["backbone.embeddings.weight"].clone()
    src = dict(sd)
    src["backbone.embedding.weight"] = src.pop("backbone.embeddings.weight")
    src["lm_head.weight"] = None
    out = collections.OrderedDict()
    for n in mamba_ssm_order(src):
        if n == "backbone.embedding.weight":
            out[n] = emb.detach()
        elif n == "lm_head.weight":
            out[n] = emb.detach()
        else:
            out[n] = src[n].clone()
    assert out["lm_head.weight"] is not out["backbone.embedding.weight"]
    assert out["lm_head.weight"].data_ptr() == out["backbone.embedding.weight"].data_ptr()
    meta = collections.OrderedDict()
    meta[""] = {"version": 1}
    meta["backbone"] = {"version": 1}
    meta["backbone.embedding"] = {"version": 1}
    out._metadata = meta
    torch.save(out, os.path.join(d, "pytorch_model.bin"))


# ------------------------------------------------------------------------------------------------------------------
# Fixtures


def small_dims(falcon):
    return dict(d_model=32, d_inner=64, d_state=8, d_conv=4, dt_rank=8 if falcon else 4, n_layer=2, vocab=512)


FIXTURES = [
    # name, family, storage dtype, layout, options
    ("mamba-f32-safetensors", "mamba", "f32", "safetensors", dict(use_bias=False, tied=True)),
    ("mamba-f16-sharded", "mamba", "f16", "sharded", dict(use_bias=True, tied=True)),
    # mamba_ssm config with ssm_cfg {} means the Mamba ctor defaults: d_state 16, expand 2, dt_rank ceil(32/16) = 2
    ("mamba-bf16-bin", "mamba", "bf16", "mamba_ssm_bin", dict(use_bias=False, tied=True, d_state=16, dt_rank=2)),
    ("mamba-f32-bin-hf", "mamba", "f32", "hf_bin_views", dict(use_bias=False, tied=False)),
    ("falcon-f32-safetensors", "falcon_mamba", "f32", "safetensors", dict(use_bias=False, tied=False)),
    ("falcon-bf16-sharded", "falcon_mamba", "bf16", "sharded", dict(use_bias=False, tied=True, mixer_rms_eps=1e-5)),
    ("falcon-f16-bin", "falcon_mamba", "f16", "hf_bin", dict(use_bias=False, tied=False)),
]


def ssm_contribution(sd, acts, n_layer):
    """rms(y - D·u·silu(z)) / rms(y) per layer: how much of the out_proj input comes from the scan."""
    out = []
    for i in range(n_layer):
        D = sd[f"backbone.layers.{i}.mixer.D"].to(torch.float64)
        u, z, y = acts[f"layers.{i}.u"], acts[f"layers.{i}.z"], acts[f"layers.{i}.y"]
        skip = u * D * ref.silu(z)
        out.append(float((y - skip).pow(2).mean().sqrt() / y.pow(2).mean().sqrt()))
    return out


def parity_error(got, want):
    """The C++ tests' metric: max |a - b| / max(1, max |b|)."""
    return float((got.double() - want.double()).abs().max() / max(1.0, float(want.abs().max())))


def reference_tensors(ids, acts):
    out = {"input_ids": torch.tensor(ids, dtype=torch.int64)}
    for k, v in acts.items():
        out[k] = v.to(torch.float32).contiguous()
    return out


def check_dir(model_dir, ref_path, want_acts=None):
    """Loads the directory with the reference's own loader, re-runs it in float64 and compares with the stored
    fixture (exactly) and, when given, with the in-memory activations (exactly). Returns (state_dict, acts)."""
    config, sd = ref.load_model_dir(model_dir)
    stored, _ = ref.read_safetensors(ref_path)
    ids = stored["input_ids"].tolist()
    _, acts = ref.forward(sd, config, ids, torch.float64)
    assert set(stored) == set(acts) | {"input_ids"}, set(stored) ^ (set(acts) | {"input_ids"})
    worst = 0.0
    for k, v in acts.items():
        assert stored[k].dtype == torch.float32 and list(stored[k].shape) == list(v.shape), k
        worst = max(worst, float((stored[k].double() - v.to(torch.float32).double()).abs().max()))
        if want_acts is not None:
            assert torch.equal(v, want_acts[k]), f"{model_dir}: {k} differs after the round trip"
    return config, sd, ids, acts, worst


def f32_noise(sd, config, ids, acts64):
    logits32, acts32 = ref.forward(sd, config, ids, torch.float32)
    rel = float((logits32.double() - acts64["logits"]).abs().max() / acts64["logits"].abs().max())
    worst_act = max(parity_error(acts32[k], acts64[k]) for k in acts64)
    return rel, worst_act


def write_fixture(name, family, dtype_name, layout, opts, seed):
    falcon = family == "falcon_mamba"
    dims = small_dims(falcon)
    dims.update({k: v for k, v in opts.items() if k in dims})
    dtype = DTYPES[dtype_name]
    tied = opts["tied"]
    w64 = make_weights(seed, falcon=falcon, use_bias=opts["use_bias"], untied=not tied, **dims)
    sd = round_to(w64, dtype)
    d = os.path.join(MODELS_DIR, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    if layout == "mamba_ssm_bin":
        config = {"d_model": dims["d_model"], "d_intermediate": 0, "n_layer": dims["n_layer"],
                  "vocab_size": TOKENIZER_IDS, "ssm_cfg": {}, "attn_layer_idx": [], "attn_cfg": {},
                  "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
                  "tie_embeddings": True}
        assert -(-config["vocab_size"] // 8) * 8 == dims["vocab"]
        # consistent with the mamba_ssm Mamba defaults that an empty ssm_cfg implies
        assert dims["d_state"] == 16 and dims["d_inner"] == 2 * dims["d_model"]
        assert dims["dt_rank"] == -(-dims["d_model"] // 16) and dims["d_conv"] == 4
    else:
        config = hf_config(family, dtype, use_bias=opts["use_bias"], tied=tied,
                           expand=16 if falcon else 2, mixer_rms_eps=opts.get("mixer_rms_eps", 1e-6), **dims)
    write_json(os.path.join(d, "config.json"), config)
    if layout == "safetensors":
        write_single_safetensors(d, sd)
    elif layout == "sharded":
        write_sharded_safetensors(d, sd)
    elif layout == "hf_bin":
        write_hf_bin(d, sd)
    elif layout == "hf_bin_views":
        write_hf_bin(d, sd, views=True)
    elif layout == "mamba_ssm_bin":
        write_mamba_ssm_bin(d, sd)
    else:
        raise ValueError(layout)
    shutil.copyfile(make_tokenizer.TINY_TOKENIZER, os.path.join(d, "tokenizer.json"))

    ids = make_ids(seed + 1)
    _, acts = ref.forward(sd, config, ids, torch.float64)
    ref_path = os.path.join(d, "reference.safetensors")
    ref.write_safetensors(ref_path, reference_tensors(ids, acts), {"format": "pt"})
    _, _, _, _, worst = check_dir(d, ref_path, want_acts=acts)
    assert worst == 0.0, worst
    return d, sd, config, ids, acts


def write_bundled(seed):
    dims = dict(d_model=64, d_inner=128, d_state=16, d_conv=4, dt_rank=4, n_layer=4, vocab=512)
    w64 = make_weights(seed, falcon=False, use_bias=False, untied=False, **dims)
    sd = round_to(w64, torch.float32)
    d = BUNDLED_DIR
    os.makedirs(d, exist_ok=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    config = hf_config("mamba", torch.float32, use_bias=False, tied=True, **dims)
    write_json(os.path.join(d, "config.json"), config)
    write_single_safetensors(d, sd)
    shutil.copyfile(make_tokenizer.TINY_TOKENIZER, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(BUNDLED_README.format(**dims, params=sum(t.numel() for t in sd.values()),
                                      size=os.path.getsize(os.path.join(d, "model.safetensors"))))
    tok = make_tokenizer.TokenizerJson.from_file(os.path.join(d, "tokenizer.json"))
    ids = tok.encode(BUNDLED_TEXT)
    _, acts = ref.forward(sd, config, ids, torch.float64)
    ref.write_safetensors(BUNDLED_REF, reference_tensors(ids, acts), {"format": "pt"})
    _, _, _, _, worst = check_dir(d, BUNDLED_REF, want_acts=acts)
    assert worst == 0.0, worst
    return d, sd, config, ids, acts


BUNDLED_README = """# tiny-mamba — bundled demo model (RANDOM WEIGHTS)

A tiny `MambaForCausalLM` in the Hugging Face layout so that `ssmx predict models/tiny-mamba --text "..."` works out
of the box. **Its weights are random** (seeded, made by `scripts/make_fixtures.py`): its predictions are
meaningless. A later issue replaces it with a small trained model; keep the file layout when it does.

| | |
|---|---|
| layout | `config.json` (HF `mamba`, tied embeddings, no in/out-proj bias) + `model.safetensors` (F32) + `tokenizer.json` |
| shape | hidden {d_model}, {n_layer} layers, inner {d_inner}, state {d_state}, conv {d_conv}, dt rank {dt_rank}, vocab rows {vocab} |
| parameters | {params} ({size} bytes of safetensors) |
| tokenizer | the tiny byte-level BPE of `tests/data/tokenizer/tiny-tokenizer.json` (509 ids, GPT-NeoX layout) |

Its PyTorch reference output (input: `"the movie was not good"`) is
`tests/data/models/bundled-tiny-mamba.reference.safetensors`; regenerate both with
`/usr/bin/python3 scripts/make_fixtures.py`.
"""


def summarize(name, d, sd, config, ids, acts):
    n_layer = ref.model_settings(config, sd)["n_layer"]
    logits = acts["logits"]
    rel32, act32 = f32_noise(sd, config, ids, acts)
    contrib = ssm_contribution(sd, acts, n_layer)
    files = sorted(os.listdir(d)) if os.path.isdir(d) else []
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    print(f"{name}: T={len(ids)} ids={ids}")
    print(f"  files: {', '.join(files)} ({size} bytes)")
    print(f"  logits: max|.|={float(logits.abs().max()):.2f} std={float(logits.std()):.2f}; "
          f"ssm share of y (rms(y - D·u·silu(z))/rms(y)) per layer: {', '.join(f'{c:.2f}' for c in contrib)}")
    print(f"  f32 vs f64: max rel diff of logits {rel32:.2e}; worst parity error over all tensors {act32:.2e}")
    assert 1.0 <= float(logits.abs().max()) <= 30.0, "logits out of the intended range"
    assert min(contrib) > 0.2, "the SSM path contributes too little"
    return rel32


def verify_all():
    bad = 0
    targets = [(os.path.join(MODELS_DIR, n), os.path.join(MODELS_DIR, n, "reference.safetensors"))
               for n, *_ in FIXTURES] + [(BUNDLED_DIR, BUNDLED_REF)]
    for d, r in targets:
        _, _, _, _, worst = check_dir(d, r)
        print(f"{os.path.relpath(d, ROOT)}: max |reference - stored| = {worst:.3g}")
        bad += worst != 0.0
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only re-run the reference on the committed files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.verify:
        sys.exit(0 if verify_all() else 1)

    assert ref.self_test(), "reference primitives"
    make_tokenizer.main([])
    os.makedirs(MODELS_DIR, exist_ok=True)
    worst32 = 0.0
    for k, (name, family, dtype_name, layout, opts) in enumerate(FIXTURES):
        d, sd, config, ids, acts = write_fixture(name, family, dtype_name, layout, opts, seed=1000 + 10 * k)
        worst32 = max(worst32, summarize(name, d, sd, config, ids, acts))
    d, sd, config, ids, acts = write_bundled(seed=4242)
    worst32 = max(worst32, summarize("models/tiny-mamba", d, sd, config, ids, acts))
    print(f"all fixtures round-trip exactly; f32 noise (max rel diff of logits vs f64) ≤ {worst32:.2e}")


if __name__ == "__main__":
    main()
