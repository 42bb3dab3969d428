"""The Python API against the command line on the bundled demo model: same numbers, bit for bit, and clear errors.

Run by ctest (scripts/run_python_tests.sh) with PYTHONPATH=build/python, SSMX_CLI=build/ssmx, SSMX_ROOT=<repo>.
"""
import json
import os
import subprocess
import threading

import numpy as np
import pytest

import ssmx

ROOT = os.environ.get("SSMX_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("SSMX_CLI", os.path.join(ROOT, "build", "ssmx"))
MODEL = os.path.join(ROOT, "models", "sentiment-mamba")
TEXT = "review: the acting was not bad , but the plot was dull . sentiment:"


def cli(*args, check=True):
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"ssmx {' '.join(map(str, args))} failed: {r.stderr}")
    return r


@pytest.fixture(scope="module")
def model():
    return ssmx.load(MODEL)


def test_info_matches_cli(model):
    j = json.loads(cli("info", MODEL, "--json").stdout)
    info = model.info
    for key in ("family", "architecture", "parameters", "tied_head", "dtype", "layout", "files", "weights_bytes"):
        assert info[key] == j[key], key
    assert info["dims"] == j["dims"]
    assert "sentiment-mamba" in repr(model)


def test_tokenize_matches_cli(model):
    j = json.loads(cli("tokenize", MODEL, "--text", TEXT, "--json").stdout)
    t = model.tokenize(TEXT)
    assert t["ids"] == j["ids"]
    assert t["tokens"] == j["tokens"]
    assert [list(o) for o in t["offsets"]] == j["offsets"]
    assert "".join(t["texts"]) == TEXT


def test_predict_matches_cli_bitwise(model, tmp_path):
    out = tmp_path / "logits.npy"
    cli("predict", MODEL, "--text", TEXT, "--logits-out", out)
    ref = np.load(out)
    got = model.predict(TEXT)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.array_equal(got, ref)
    ids = model.tokenize(TEXT)["ids"]
    assert np.array_equal(model.predict(ids=np.array(ids, dtype=np.int64)), ref)
    # only the last row: a different GEMM shape, so equal to float rounding rather than bitwise
    assert np.allclose(model.predict(TEXT, last_only=True), ref[-1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("methods", ["mamba-lrp", "grad-input,integrated-gradients,smoothgrad", "rollout,mamba-attr"])
def test_explain_matches_cli_bitwise(model, tmp_path, methods):
    npy, js = tmp_path / "r.npy", tmp_path / "r.json"
    cli("explain", MODEL, "--text", TEXT, "--method", methods, "--out", npy, "--json", js, "--no-color")
    a = model.explain(TEXT, method=methods)
    ref = np.load(npy)
    assert a.relevance.dtype == np.float32 and a.relevance.shape == ref.shape
    assert np.array_equal(a.relevance, ref)
    j = json.loads(js.read_text())
    mine = json.loads(a.to_json())
    for key in ("tokens", "ids", "offsets", "target", "logit", "prediction", "text"):
        assert mine[key] == j[key], key
    for e, f in zip(mine["explanations"], j["explanations"]):
        assert e["method"] == f["method"] and e["relevance"] == f["relevance"] and e["settings"] == f["settings"]
        assert e.get("conservation") == f.get("conservation")
    assert a.methods == methods.split(",")


def test_explain_targets_and_options(model):
    a = model.explain(TEXT, method="mamba-lrp", target=" positive", contrast=" negative")
    b = model.explain(TEXT, method="mamba-lrp", target=304, contrast=300)
    assert np.array_equal(a.relevance, b.relevance)
    assert a.target["kind"] == "contrast"
    c = a.conservation
    assert abs(c["relevance_sum"] + c["bias_absorbed"] - c["target_value"]) < 1e-4 * max(1.0, abs(c["target_value"]))
    off = model.explain(TEXT, method="mamba-lrp", lrp_rules="none")
    assert not np.array_equal(off.relevance, model.explain(TEXT, method="mamba-lrp").relevance)
    ig = model.explain(TEXT, method="integrated-gradients", steps=8, baseline="token:0")
    assert ig.settings[0]["steps"] == 8
    w = model.explain(TEXT, method="grad-input", words=True)
    # words change the display units only; the relevance stays per token
    assert np.array_equal(w.relevance, model.explain(TEXT, method="grad-input").relevance)


def test_attention_matches_cli_bitwise(model, tmp_path):
    out = tmp_path / "att"
    cli("attention", MODEL, "--text", TEXT, "--layers", "1,3", "--kind", "unified", "--row", "-1", "--out", out, "--no-png")
    index = json.loads((out / "index.json").read_text())
    got = model.attention(TEXT, layers=[1, 3], kind="unified", row=-1)
    assert sorted(got) == [1, 3]
    for f in index["files"]:
        assert np.array_equal(got[f["layer"]], np.load(out / f["file"])), f["file"]
    full = model.attention(TEXT, layers=0, channels=(2, 5), full=True)
    assert full[0].shape == (3, len(index["ids"]), len(index["ids"]))
    red = model.attention(TEXT, layers=[2], reduce="mean")
    assert red[2].shape == (len(index["ids"]),) * 2


def test_save_and_display(model, tmp_path):
    a = model.explain(TEXT, method="mamba-lrp,grad-input")
    a.save(tmp_path / "r.npy")
    a.save(tmp_path / "r.json")
    a.save(tmp_path / "r.html")
    assert np.array_equal(np.load(tmp_path / "r.npy"), a.relevance)
    assert json.loads((tmp_path / "r.json").read_text())["ids"] == a.ids
    html = (tmp_path / "r.html").read_text()
    assert html == a._repr_html_() and "<html" in html.lower() and "mamba-lrp" in html
    assert "mamba-lrp" in str(a)
    with pytest.raises(ssmx.Error):
        a.save(tmp_path / "r.txt")


def test_eval_evidence_matches_cli(model, tmp_path):
    data = os.path.join(MODEL, "heldout.jsonl")
    js = tmp_path / "ev.json"
    cli("eval", "evidence", MODEL, "--data", data, "--method", "grad-input,mamba-lrp", "--limit", 30, "--top-k", 2,
        "--skip-first", 2, "--skip-last", 2, "--contrast", "--json", js)
    ref = json.loads(js.read_text())["methods"]
    got = model.eval_evidence(data, "grad-input,mamba-lrp", limit=30, top_k=2, skip_first=2, skip_last=2, contrast=True)
    for g, r in zip(got, ref):
        assert g["method"] == r["method"]
        for key in ("pointing_game", "recall_at_E", "hit_at_k"):
            assert g[key] == r[key], key


def test_eval_randomization_matches_cli(model, tmp_path):
    data = os.path.join(MODEL, "heldout.jsonl")
    js = tmp_path / "rand.json"
    cli("eval", "randomization", MODEL, "--data", data, "--method", "grad-input,random", "--limit", 6, "--json", js)
    ref = json.loads(js.read_text())
    got = model.eval_randomization(data, "grad-input,random", limit=6)
    assert got["stages"] == ref["stages"]
    for r in ref["methods"]:
        assert got["spearman"][r["method"]] == r["spearman"]
        assert got["spearman_abs"][r["method"]] == r["spearman_abs"]
    assert got["spearman"]["random"] == [1.0] * len(ref["stages"])


def test_errors_are_clear(model, tmp_path):
    r = cli("explain", MODEL, "--text", TEXT, "--method", "nope", check=False)
    assert r.returncode == 2
    with pytest.raises(ssmx.Error) as e:
        model.explain(TEXT, method="nope")
    assert r.stderr.strip() == f"ssmx: error: {e.value}"
    assert isinstance(e.value, ValueError)
    with pytest.raises(ssmx.Error, match="exactly one of"):
        model.predict()
    with pytest.raises(ssmx.Error, match="exactly one of"):
        model.predict(TEXT, ids=[1, 2])
    with pytest.raises(ssmx.Error, match="outside the vocabulary"):
        model.predict(ids=[1, 10**6])
    with pytest.raises(ssmx.Error, match="layer 99"):
        model.attention(TEXT, layers=[99], row=-1)
    with pytest.raises(ssmx.Error, match="not one"):
        model.explain(TEXT, target="positive negative")
    with pytest.raises(TypeError, match="unexpected option"):
        model.explain(TEXT, stepz=3)
    with pytest.raises(ssmx.Error, match="images need"):
        model.predict(image="cat.jpg")
    with pytest.raises(ssmx.Error) as e:
        ssmx.load(tmp_path / "missing")
    assert "missing" in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ssmx.Error):
        ssmx.load(bad)


def test_threads_release_the_gil(model):
    ref = model.explain(TEXT, method="grad-input").relevance
    results = [None] * 4

    def work(k):
        results[k] = model.explain(TEXT, method="grad-input").relevance

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.array_equal(r, ref)
