"""The Python API on a Vision Mamba (the tests' tiny fixture) against the command line: same numbers, bit for bit."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

import ssmx

ROOT = os.environ.get("SSMX_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("SSMX_CLI", os.path.join(ROOT, "build", "ssmx"))
VIM = os.path.join(ROOT, "tests", "data", "vim", "vim-tiny-random.pth")
TEXT_MODEL = os.path.join(ROOT, "models", "sentiment-mamba")


def read_safetensors_f32(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        assert info["dtype"] == "F32"
        f.seek(8 + n + info["data_offsets"][0])
        count = int(np.prod(info["shape"]))
        return np.frombuffer(f.read(4 * count), dtype="<f4").reshape(info["shape"]).copy()


@pytest.fixture(scope="module")
def vim():
    return ssmx.load(VIM)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    px = read_safetensors_f32(os.path.join(ROOT, "tests", "data", "vim", "reference.safetensors"), "pixels")
    path = tmp_path_factory.mktemp("px") / "px.npy"
    np.save(path, px)
    return px, str(path)


def cli(*args):
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def test_predict_matches_cli_and_reference(vim, pixels, tmp_path):
    px, path = pixels
    assert vim.is_vision and vim.vision["class_token"] == 8 and vim.info["family"] == "vim"
    cli("predict", VIM, "--pixels", path, "--logits-out", tmp_path / "l.npy")
    got = vim.predict(pixels=px)
    assert np.array_equal(got, np.load(tmp_path / "l.npy"))
    want = read_safetensors_f32(os.path.join(ROOT, "tests", "data", "vim", "reference.safetensors"), "logits")
    assert np.abs(got - want).max() < 1e-4


def test_explain_matches_cli(vim, pixels, tmp_path):
    px, path = pixels
    cli("explain", VIM, "--pixels", path, "--method", "mamba-lrp,rollout", "--class", "2", "--out", tmp_path / "m.npy",
        "--json", tmp_path / "e.json")
    a = vim.explain(pixels=px, method="mamba-lrp,rollout", cls=2)
    assert a.patch_map.shape == (2, 4, 4) and a.relevance.shape == (2, 17)
    assert np.array_equal(a.patch_map, np.load(tmp_path / "m.npy"))
    j = json.loads((tmp_path / "e.json").read_text())
    assert a.target["class"] == 2 == j["target"]["class"]
    c = a.conservation[0]
    assert abs(c["relevance_sum"] + c["bias_absorbed"] - c["target_value"]) < 1e-4 * max(1, abs(c["target_value"]))
    ov, fig = a.overlay(), a.figure
    assert ov.dtype == np.uint8 and ov.ndim == 3 and ov.shape[2] == 3 and fig.shape[1] > ov.shape[1]
    a.save(tmp_path / "f.png")
    a.save(tmp_path / "r.html")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert "<html" in (tmp_path / "r.html").read_text()


def test_attention_matches_cli(vim, pixels, tmp_path):
    px, path = pixels
    cli("attention", VIM, "--pixels", path, "--class-row", "--kind", "unified", "--no-png", "--out", tmp_path / "a")
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    got = vim.attention(pixels=px, class_row=True, kind="unified")
    for f in index["files"]:
        assert np.array_equal(got[f["layer"]], np.load(tmp_path / "a" / f["file"]))
    st = vim.attention(pixels=px, layers=[1], class_row=True, compat="stitched", reduce="mean")
    assert st[1].shape == (17,)


def test_errors(vim, pixels):
    px, _ = pixels
    with pytest.raises(ssmx.Error, match="Vision Mamba"):
        vim.predict("some text")
    with pytest.raises(ssmx.Error, match="use cls="):
        vim.explain(pixels=px, target=3)
    with pytest.raises(ssmx.Error, match="shape"):
        vim.predict(pixels=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ssmx.Error, match="exactly one"):
        vim.predict()
    text = ssmx.load(TEXT_MODEL)
    with pytest.raises(ssmx.Error, match="Vision Mamba"):
        text.predict(pixels=px)
