"""model.eval_flipping / eval_perturbation / eval_segmentation against `ssmx eval ... --json` on the demo models (a
few examples each): the same numbers, bit for bit."""
import json
import os
import subprocess

import numpy as np
import pytest

import ssmx

ROOT = os.environ.get("SSMX_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("SSMX_CLI", os.path.join(ROOT, "build", "ssmx"))
TEXT = os.path.join(ROOT, "models", "sentiment-mamba")
VIM = os.path.join(ROOT, "models", "colours-vim")
LIST = os.path.join(VIM, "heldout.jsonl")


def cli_json(args, tmp_path, name):
    out = tmp_path / name
    r = subprocess.run([CLI, "--threads", "1"] + args + ["--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_eval_flipping_matches_the_cli(tmp_path):
    args = ["--limit", "3", "--skip-first", "2", "--skip-last", "2", "--steps", "4"]
    rec = tmp_path / "f.jsonl"
    r = subprocess.run([CLI, "--threads", "1", "eval", "flipping", TEXT, "--data", os.path.join(TEXT, "heldout.jsonl"),
                        "--method", "random,grad-input", "--out", str(rec)] + args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = cli_json(["eval", "merge", str(rec)], tmp_path, "f.json")
    m = ssmx.load(TEXT, threads=1)
    got = m.eval_flipping(os.path.join(TEXT, "heldout.jsonl"), "random,grad-input", limit=3, skip_first=2,
                          skip_last=2, steps=4)
    assert list(got) == ["random", "grad-input"]
    for w in want:
        g = got[w["method"]]
        assert g["examples"] == w["examples"] == 3
        for k in ("a_morf", "a_lerf", "delta_af", "auac", "a_ins_lerf", "delta_ai", "au_mse"):
            assert g[k] == w[k], k
        assert isinstance(g["curve_morf"], np.ndarray) and g["curve_morf"].dtype == np.float64
        np.testing.assert_array_equal(g["curve_morf"], np.array(w["curve_morf"]))
        np.testing.assert_array_equal(g["curve_x"], np.arange(21) / 20)
    assert got["grad-input"]["delta_af"] > got["random"]["delta_af"]


def test_eval_perturbation_matches_the_cli(tmp_path):
    want = cli_json(["eval", "perturbation", VIM, "--data", LIST, "--method", "random,mamba-lrp", "--limit", "4",
                     "--steps", "4"], tmp_path, "p.json")
    m = ssmx.load(VIM, threads=1)
    got = m.eval_perturbation(LIST, ["random", "mamba-lrp"], limit=4, steps=4)
    assert list(got) == ["random", "mamba-lrp"]
    for w in want:
        g = got[w["method"]]
        assert g["images"] == 4
        np.testing.assert_array_equal(g["fractions"], [0.25, 0.5, 0.75])
        np.testing.assert_array_equal(g["positive_accuracy"], w["positive"]["accuracy"])
        np.testing.assert_array_equal(g["negative_accuracy"], w["negative"]["accuracy"])
        assert g["positive_auc"] == w["positive"]["auc"]
        assert g["negative_auc"] == w["negative"]["auc"]
        # accuracies of 4 images are multiples of 25 %
        assert all(a % 25 == 0 for a in g["positive_accuracy"])
    # steps as a list of fractions, one mode
    one = m.eval_perturbation(LIST, "mamba-lrp", limit=4, steps=[0.25, 0.5, 0.75], mode="positive")
    assert "negative_auc" not in one["mamba-lrp"]
    assert one["mamba-lrp"]["positive_auc"] == got["mamba-lrp"]["positive_auc"]
    with pytest.raises(ssmx.Error, match="mode"):
        m.eval_perturbation(LIST, "random", mode="sideways")


def test_eval_segmentation_matches_the_cli(tmp_path):
    want = cli_json(["eval", "segmentation", VIM, "--data", LIST, "--method", "grad-input,rollout", "--limit", "3"],
                    tmp_path, "s.json")
    m = ssmx.load(VIM, threads=1)
    got = m.eval_segmentation(LIST, "grad-input,rollout", limit=3)
    for w in want:
        g = got[w["method"]]
        for k in ("images", "pixel_accuracy", "iou_bg", "iou_fg", "miou", "map", "mf1", "pointing", "energy",
                  "mask_fraction"):
            assert g[k] == w[k], k
        assert 0 < g["miou"] <= 1
    with pytest.raises(ssmx.Error, match="Vision Mamba"):
        ssmx.load(TEXT).eval_segmentation(LIST, "random")
