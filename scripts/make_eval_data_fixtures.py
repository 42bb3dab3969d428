#!/usr/bin/python3
"""Writes the vision-evaluation fixtures under tests/data/eval/ (committed; the build and tests never run this).

  gtsegs_ijcv.mat      a 3-image ImageNet-Segmentation file in the real format: MATLAB v7.3 (HDF5 with a 512-byte
                       userblock header), group /value with cell datasets img and gt of object references into
                       /#refs#; img{i} is uint8 stored (3, W, H) (MATLAB column-major H×W×3 seen transposed), gt{i} is
                       a 1×1 cell whose element is the uint8 mask stored (W, H).
  seg_expected.json    the images and masks of that file as nested lists, for the reader test
  imagenet/val/<wnid>/*.JPEG, imagenet/flat/*.JPEG, imagenet/flat_labels.txt, imagenet/flat_labels.csv
  metrics.npz-free:    seg_cases.json: small relevance maps and masks with NumPy-computed pixel accuracy, IoU, AP
                       (sklearn's average_precision_score reimplemented from its definition), F1 as Chefer's script
  resize_cases.json    PIL Image.NEAREST resizes of a mask, the expected output of resize_mask_nearest

Byte-identical on regeneration: the JSON files and the .mat (fixed header date, no timestamps) with the same h5py/HDF5
version; the JPEGs depend on the libjpeg in Pillow.
Needs numpy, Pillow, h5py (apt-get install python3-h5py).
"""
import json
import os

import h5py
import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "eval")
EPS = np.spacing(1)


def ap_score(y_true, y_score):
    # average_precision_score (binary): sum over distinct thresholds, decreasing, of (R_k - R_{k-1}) * P_k.
    y_true = np.asarray(y_true, dtype=np.int64)
    y_score = np.asarray(y_score)
    P = y_true.sum()
    if P == 0:
        return 0.0  # nan in sklearn; nan_to_num in the protocol
    ap, tp_prev = 0.0, 0
    for s in sorted(set(y_score.tolist()), reverse=True):
        sel = y_score >= s
        tp = int(y_true[sel].sum())
        fp = int(sel.sum()) - tp
        if tp != tp_prev:
            ap += (tp - tp_prev) / P * (tp / (tp + fp))
            tp_prev = tp
    return ap


def f1(t, p):
    tp = int(((t == 1) & (p == 1)).sum())
    fp = int(((t == 0) & (p == 1)).sum())
    fn = int(((t == 1) & (p == 0)).sum())
    d = 2 * tp + fp + fn
    return 0.0 if d == 0 else 2 * tp / d


def seg_stats(res, mask, normalise=True):
    res = res.astype(np.float32)
    mn, mx = res.min(), res.max()
    norm = (res - mn) / (mx - mn) if mx > mn else np.zeros_like(res)
    norm = norm.astype(np.float32)
    mean = norm.astype(np.float64).mean()
    pred = (norm.astype(np.float64) > mean).astype(np.int64)
    t = mask.astype(np.int64)
    correct = int((pred == t).sum())
    inter = [int(((pred == c) & (t == c)).sum()) for c in (0, 1)]
    union = [int(((pred == c) | (t == c)).sum()) for c in (0, 1)]
    apm = norm if normalise else res
    score = np.concatenate([(np.float32(1) - apm).reshape(-1), apm.reshape(-1)])
    target = np.concatenate([(t == 0).reshape(-1), (t == 1).reshape(-1)]).astype(np.int64)
    ap = ap_score(target, score)
    f = float(np.mean([f1(t[r], pred[r]) for r in range(t.shape[0])]))
    return dict(correct=correct, labelled=int(t.size), inter=inter, union=union, ap=ap, f1=f)


def seg_cases(rng):
    cases = []
    for idx, (h, w, levels) in enumerate([(8, 8, 5), (6, 10, 0), (12, 7, 3), (9, 9, 2)]):
        res = rng.random((h, w)).astype(np.float32)
        if levels:
            res = (np.floor(res * levels) / levels).astype(np.float32)  # ties
        res = (res * 0.01 + 0.002).astype(np.float32)  # small, like rollout rows: normalisation matters for AP
        yy, xx = np.mgrid[0:h, 0:w]
        mask = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2).astype(np.uint8)
        if idx == 3:
            mask[:] = 1  # all foreground
        cases.append((res, mask))
    out = []
    for norm in (True, False):
        stats = [seg_stats(r, m, norm) for r, m in cases]
        inter = np.sum([s["inter"] for s in stats], axis=0)
        union = np.sum([s["union"] for s in stats], axis=0)
        iou = inter / (EPS + union)
        out.append(dict(
            normalise=norm,
            per_image=stats,
            pixel_accuracy=sum(s["correct"] for s in stats) / (EPS + sum(s["labelled"] for s in stats)),
            iou=iou.tolist(), miou=float(iou.mean()),
            map=float(np.mean([s["ap"] for s in stats])), mf1=float(np.mean([s["f1"] for s in stats]))))
    return dict(images=[dict(h=int(r.shape[0]), w=int(r.shape[1]), map=[float(v) for v in r.reshape(-1)],
                             mask=[int(v) for v in m.reshape(-1)]) for r, m in cases],
                results=out)


def resize_cases(rng):
    src = (rng.random((13, 17)) > 0.5).astype(np.uint8)
    out = dict(h=13, w=17, mask=[int(v) for v in src.reshape(-1)], resized=[])
    for oh, ow in [(224, 224), (5, 8), (30, 20)]:
        r = np.array(Image.fromarray(src).resize((ow, oh), Image.NEAREST))
        out["resized"].append(dict(h=oh, w=ow, mask=[int(v) for v in r.reshape(-1)]))
    return out


def write_mat(path, imgs, masks):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    header = header.ljust(512, b"\x00")
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        val = f.create_group("value")
        img_refs, gt_refs = [], []
        for i, (im, m) in enumerate(zip(imgs, masks)):
            d = refs.create_dataset("img%d" % i, data=np.ascontiguousarray(im.transpose(2, 1, 0)), track_times=False)
            d.attrs["MATLAB_class"] = np.bytes_("uint8")
            g = refs.create_dataset("gt%d" % i, data=np.ascontiguousarray(m.transpose(1, 0)), track_times=False)
            g.attrs["MATLAB_class"] = np.bytes_("uint8")
            c = refs.create_dataset("cell%d" % i, data=np.array([[g.ref]], dtype=h5py.ref_dtype), track_times=False)
            c.attrs["MATLAB_class"] = np.bytes_("cell")
            img_refs.append(d.ref)
            gt_refs.append(c.ref)
        for name, r in (("img", img_refs), ("gt", gt_refs)):
            d = val.create_dataset(name, data=np.array(r, dtype=h5py.ref_dtype).reshape(-1, 1), track_times=False)
            d.attrs["MATLAB_class"] = np.bytes_("cell")
        val.attrs["MATLAB_class"] = np.bytes_("struct")
    with open(path, "r+b") as fh:
        fh.write(header)


def check_against_sklearn():
    # Optional: the reimplemented AP / F1 against the real sklearn when it is installed (python3-sklearn).
    try:
        from sklearn.metrics import average_precision_score, f1_score
    except ImportError:
        print("sklearn not installed: AP/F1 not cross-checked")
        return
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        y = (rng.random(n) > 0.6).astype(int)
        y[0] = 1
        s = (np.floor(rng.random(n) * int(rng.integers(1, 8))) / 7).astype(np.float32)
        p = (rng.random(n) > 0.5).astype(int)
        assert abs(ap_score(y, s) - average_precision_score(y, s)) < 1e-12
        assert abs(f1(y, p) - f1_score(y, p)) < 1e-12
    print("AP and F1 agree with sklearn")


def main():
    check_against_sklearn()
    rng = np.random.default_rng(20261123)
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "seg_cases.json"), "w") as f:
        json.dump(seg_cases(rng), f)
    with open(os.path.join(ROOT, "resize_cases.json"), "w") as f:
        json.dump(resize_cases(rng), f)

    imgs, masks = [], []
    for h, w in [(5, 7), (6, 4), (9, 8)]:
        imgs.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        masks.append((rng.random((h, w)) > 0.6).astype(np.uint8))
    write_mat(os.path.join(ROOT, "gtsegs_ijcv.mat"), imgs, masks)
    # What h5py readers of the real file get back (Chefer's transposes), for the C++ reader test.
    with h5py.File(os.path.join(ROOT, "gtsegs_ijcv.mat"), "r") as f:
        chk = []
        for i in range(len(f["/value/img"])):
            im = np.array(f[f["value/img"][i, 0]]).transpose((2, 1, 0))
            gt = np.array(f[f[f["value/gt"][i, 0]][0, 0]]).transpose((1, 0))
            assert (im == imgs[i]).all() and (gt == masks[i]).all()
            chk.append(dict(h=int(im.shape[0]), w=int(im.shape[1]), img=[int(v) for v in im.reshape(-1)],
                            mask=[int(v) for v in gt.reshape(-1)]))
    with open(os.path.join(ROOT, "seg_expected.json"), "w") as f:
        json.dump(chk, f)

    # ImageNet folder layout: wnids deliberately not created in sorted order.
    base = os.path.join(ROOT, "imagenet")
    val_files = {"n02102040": ["ILSVRC2012_val_00000007.JPEG", "ILSVRC2012_val_00000003.JPEG"],
                 "n01440764": ["ILSVRC2012_val_00000293.JPEG"],
                 "n01443537": ["ILSVRC2012_val_00000236.JPEG", "ILSVRC2012_val_00000262.JPEG"]}
    for k, (wnid, files) in enumerate(val_files.items()):
        os.makedirs(os.path.join(base, "val", wnid), exist_ok=True)
        for j, name in enumerate(files):
            a = np.full((8, 8, 3), 40 * k + 10 * j, dtype=np.uint8)
            Image.fromarray(a).save(os.path.join(base, "val", wnid, name), quality=90)
    os.makedirs(os.path.join(base, "flat"), exist_ok=True)
    labels = [65, 970, 230, 809]
    for i in range(len(labels)):
        a = np.full((8, 8, 3), 30 * i, dtype=np.uint8)
        Image.fromarray(a).save(os.path.join(base, "flat", "ILSVRC2012_val_%08d.JPEG" % (i + 1)), quality=90)
    with open(os.path.join(base, "flat_labels.txt"), "w") as f:
        f.write("".join("%d\n" % l for l in labels))
    with open(os.path.join(base, "flat_labels.csv"), "w") as f:
        f.write("file,label\n")
        f.write("".join("ILSVRC2012_val_%08d.JPEG,%d\n" % (i + 1, l) for i, l in enumerate(labels)))


if __name__ == "__main__":
    main()
