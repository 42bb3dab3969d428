"""Mamba-2, RWKV-4 and RecurrentGemma from Python: explanations equal the CLI's, and the channel-mean implicit
attention equals the CLI's reduce=mean files (tiny fixture models in tests/data/models)."""
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


@pytest.mark.parametrize("name", ["mamba2-f32-safetensors", "rwkv-f32-safetensors"])
def test_mean_attention_row_matches_cli(name, tmp_path):
    path = MODELS[name]
    m = ssmx.load(path)
    out = tmp_path / "att"
    cli("attention", path, "--ids", ",".join(map(str, IDS)), "--kind", "unified", "--row", "-1", "--reduce", "mean",
        "--out", out, "--no-png")
    index = json.loads((out / "index.json").read_text())
    got = m.attention(ids=IDS, kind="unified", row=-1, reduce="mean")
    assert sorted(got) == sorted(f["layer"] for f in index["files"])
    for f in index["files"]:
        ref = np.load(out / f["file"])
        assert got[f["layer"]].shape == ref.shape == (len(IDS),)
        np.testing.assert_allclose(got[f["layer"]], ref, rtol=1e-5, atol=1e-7)
    full = m.attention(ids=IDS, layers=[0], kind="s6", reduce="mean")
    assert full[0].shape == (len(IDS), len(IDS))
    np.testing.assert_allclose(np.triu(full[0], 1), 0.0)  # causal


def test_family_attention_errors():
    m = ssmx.load(MODELS["griffin-f32"])
    with pytest.raises(ssmx.Error, match="reduce='mean'"):
        m.attention(ids=IDS)
    with pytest.raises(ssmx.Error, match="kind"):
        m.attention(ids=IDS, kind="unified-noconv", reduce="mean")
    rows = m.attention(ids=IDS, row=-1, reduce="mean")
    assert sorted(rows) == [0, 1, 2, 3]  # recurrent layers and the local-attention layer
    for r in rows.values():
        assert r.shape == (len(IDS),) and np.all(np.isfinite(r))
