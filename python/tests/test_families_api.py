"""Mamba-2, RWKV-4 and RecurrentGemma from Python: explanations and attention arrays equal the CLI's output files
bitwise (tiny fixture models in tests/data/models)."""
import json
import os
import subprocess

import numpy as np
import pytest

import ssmx

ROOT = os.environ.get("SSMX_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("SSMX_CLI", os.path.join(ROOT, "build", "ssmx"))
MODELS = {f: os.path.join(ROOT, "tests", "data", "models", f)
          for f in ("mamba2-f32-safetensors", "rwkv-f32-safetensors", "griffin-f32")}
IDS = [1, 5, 9, 13, 2, 7, 30, 4]


def cli(*args):
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("name", sorted(MODELS))
def test_explain_matches_cli_bitwise(name, tmp_path):
    path = MODELS[name]
    m = ssmx.load(path)
    npy, js = tmp_path / "r.npy", tmp_path / "r.json"
    cli("explain", path, "--ids", ",".join(map(str, IDS)), "--method", "mamba-lrp,grad-input", "--out", npy,
        "--json", js, "--no-color")
    a = m.explain(ids=IDS, method="mamba-lrp,grad-input")
    assert np.array_equal(a.relevance, np.load(npy))
    j = json.loads(js.read_text())
    mine = json.loads(a.to_json())
    assert mine["ids"] == j["ids"] == IDS
    assert mine["target"] == j["target"]
    for e, f in zip(mine["explanations"], j["explanations"], strict=True):
        assert e["method"] == f["method"] and e["relevance"] == f["relevance"]
        assert e.get("conservation") == f.get("conservation")
    c = a.conservation[0]  # MambaLRP conserves in every family: ΣR + bias share = f
    assert abs(c["relevance_sum"] + c["bias_absorbed"] - c["target_value"]) < 1e-4 * max(1.0, abs(c["target_value"]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_matches_cli_files_bitwise(name, tmp_path):
    path = MODELS[name]
    m = ssmx.load(path)
    for args, kw in [(("--kind", "unified", "--row", "-1", "--reduce", "mean"), dict(kind="unified", row=-1, reduce="mean")),
                     (("--kind", "s6", "--channels", "2:5"), dict(kind="s6", channels=(2, 5))),
                     (("--kind", "unified", "--row", "3", "--reduce", "absmean"), dict(kind="unified", row=3, reduce="absmean"))]:
        out = tmp_path / ("att" + "_".join(args).replace("-", ""))
        cli("attention", path, "--ids", ",".join(map(str, IDS)), *args, "--out", out, "--no-png")
        index = json.loads((out / "index.json").read_text())
        got = m.attention(ids=IDS, **kw)
        assert sorted(got) == sorted(f["layer"] for f in index["files"])
        for f in index["files"]:
            ref = np.load(out / f["file"])
            assert got[f["layer"]].shape == ref.shape
            assert np.array_equal(got[f["layer"]], ref), (name, args, f["file"])
    full = m.attention(ids=IDS, layers=[0], kind="s6", reduce="mean")
    assert full[0].shape == (len(IDS), len(IDS))
    np.testing.assert_allclose(np.triu(full[0], 1), 0.0)  # causal


def test_family_attention_shapes_and_errors():
    m = ssmx.load(MODELS["griffin-f32"])
    per_channel = m.attention(ids=IDS, layers=[1, 2])
    assert per_channel[1].shape == (48, len(IDS), len(IDS))  # lru_width channels
    assert per_channel[2].shape == (4, len(IDS), len(IDS))   # the local attention layer's heads
    np.testing.assert_allclose(per_channel[2].sum(-1), 1.0, rtol=1e-6)  # softmax rows
    with pytest.raises(ssmx.Error, match="kind"):
        m.attention(ids=IDS, kind="unified-noact", reduce="mean")
    with pytest.raises(ssmx.Error, match="tracing"):
        m.attention(ids=IDS, compat="hiddenattn-row", row=-1)
    with pytest.raises(ssmx.Error, match="channels"):
        m.attention(ids=IDS, channels=(40, 60))
    rows = m.attention(ids=IDS, row=-1, reduce="mean")
    assert sorted(rows) == [0, 1, 2, 3]  # recurrent layers and the local-attention layer
    for r in rows.values():
        assert r.shape == (len(IDS),) and np.all(np.isfinite(r))
    m2 = ssmx.load(MODELS["mamba2-f32-safetensors"])
    with pytest.raises(ssmx.Error, match="mamba2"):
        m2.attention(ids=IDS, kind="unified-noconv")
