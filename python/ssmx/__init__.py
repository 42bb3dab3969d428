"""ssmx from Python: hidden attention and relevance for Mamba-family models, NumPy in and out.

    import ssmx
    model = ssmx.load("models/sentiment-mamba")
    a = model.explain("review: the plot was dull . sentiment:", method="mamba-lrp")
    a.relevance          # NumPy float32 [T]
    a.save("report.html")

Every call runs the same C++ code as the `ssmx` command line, so results are identical to it. Errors raise
ssmx.Error (a ValueError) with the command line's one-line message.
"""
import json as _json
import os as _os

import numpy as _np

from . import _ssmx
from ._ssmx import Error

__all__ = ["load", "Model", "Attribution", "ImageAttribution", "Error"]
__version__ = _ssmx.__version__

_EXPLAIN_OPTIONS = {
    "lrp_rules": "silu,ssm,gate,norm",  # mamba-lrp rules: subset of silu,ssm,gate,norm, or "none"
    "linear_rule": "lrp0",              # lrp0, epsilon or gamma (in_proj/out_proj)
    "epsilon": 1e-6,
    "gamma": 0.25,
    "steps": 32,                        # integrated-gradients
    "baseline": "zero",                 # integrated-gradients: "zero" or "token:ID"
    "samples": 16,                      # smoothgrad
    "noise": 0.1,                       # smoothgrad
    "seed": 0,                          # smoothgrad, random
    "start_layer": 0,                   # attention methods
    "compat": "none",                   # "official": the published code's attention methods
    "zero_biases": False,
    "words": False,                     # sum sub-word tokens into words in the report
}


def _ids(ids):
    if ids is None:
        return None
    arr = _np.asarray(ids)
    if arr.ndim != 1 or not (arr.size == 0 or _np.issubdtype(arr.dtype, _np.integer)):
        raise Error("ids: expected a 1-D sequence of integer token ids")
    return [int(v) for v in arr]


def _no_image(image, pixels):
    if image is not None or pixels is not None:
        raise Error("image: this model takes text; images need a Vision Mamba model")


def _pixels(pixels):
    return None if pixels is None else _np.ascontiguousarray(pixels, dtype=_np.float32)


def _image(image):
    return None if image is None else _os.fspath(image)


def _no_text(model, text, ids):
    if text is not None or ids is not None:
        raise Error(f"{model.path}: this is a Vision Mamba; give image= or pixels=")


def load(path, threads=0):
    """Loads a model directory or weights file in any layout the command line loads. threads=0: all cores."""
    return Model(_ssmx.load(_os.fspath(path), int(threads)))


class Model:
    """A loaded model. Use ssmx.load(path)."""

    def __init__(self, core):
        self._m = core

    def __repr__(self):
        i = self.info
        return f"<ssmx.Model {i['family']} {i['parameters']:,} parameters from {i['path']!r}>"

    @property
    def path(self):
        return self._m.path

    @property
    def info(self):
        """Family, dimensions, parameter count, dtype, file layout, tokenizer (a dict, as `ssmx info --json`)."""
        return self._m.info()

    def tokenize(self, text):
        """{'ids': [...], 'tokens': vocabulary strings ('Ġthe'), 'texts': decoded text of each token (' the'),
        'offsets': [(begin, end), ...] byte offsets into the UTF-8 text} — as `ssmx tokenize --json`, plus texts."""
        return self._m.tokenize(text)

    @property
    def is_vision(self):
        """True for a Vision Mamba (inputs are images: image= a JPEG/PNG path, or pixels= a float32 [3, H, W] array)."""
        return _ssmx.is_vision(self._m)

    @property
    def vision(self):
        """Vision Mamba geometry: {'grid', 'image', 'class_token', 'classes', 'size'}."""
        return _ssmx.vision_config(self._m)

    def predict(self, text=None, *, ids=None, image=None, pixels=None, last_only=False, transform="deit"):
        """Logits as float32 NumPy: [T, V], or [V] with last_only=True; a Vision Mamba: [classes] for the image."""
        if self.is_vision:
            _no_text(self, text, ids)
            return _ssmx.predict_image(self._m, image=_image(image), pixels=_pixels(pixels), transform=transform)
        _no_image(image, pixels)
        return self._m.predict(text=text, ids=_ids(ids), last_only=bool(last_only))

    def attention(self, text=None, *, ids=None, image=None, pixels=None, layers=None, kind="s6", channels=None,
                  row=None, full=False, reduce="none", compat="none", class_row=False, transform="deit"):
        """Hidden attention per layer: {layer: array}, shapes as the CLI's .npy files — [E,T,T] full, [E,T] a row,
        [T,T] or [T] reduced over channels. kind: s6, unified, unified-noconv, unified-nogate, unified-noact;
        channels: (a, b); row: query index (negative counts from the end); reduce: none, mean, absmean, max;
        compat: none or hiddenattn-row (Vision Mamba: none, stitched, hiddenattn-stitched; class_row=True for the
        class token's row). Mamba-2 and RWKV-4: kind s6 or unified; RecurrentGemma: s6, unified, unified-noconv,
        unified-nogate, compat none or tracing, and its local attention layers give their softmax weights per query
        head ([heads,T,T] / [heads,T], or the head reduction); the same arrays as `ssmx attention`'s files."""
        if layers is not None:
            layers = [int(l) for l in ([layers] if isinstance(layers, int) else layers)]
        if channels is not None:
            if isinstance(channels, int):
                channels = (channels, channels + 1)
            channels = (int(channels[0]), int(channels[1]))
        if self.is_vision:
            _no_text(self, text, ids)
            return _ssmx.attention_image(self._m, image=_image(image), pixels=_pixels(pixels), transform=transform,
                                         layers=layers, kind=kind, channels=channels,
                                         row=None if row is None else int(row), class_row=bool(class_row),
                                         full=bool(full), reduce=reduce, compat=compat)
        _no_image(image, pixels)
        return self._m.attention(text=text, ids=_ids(ids), layers=layers, kind=kind, channels=channels,
                                 row=None if row is None else int(row), full=bool(full), reduce=reduce, compat=compat)

    def explain(self, text=None, *, ids=None, image=None, pixels=None, method="mamba-lrp", target=None,
                contrast=None, cls=None, position=-1, **method_options):
        """Relevance of each input token for a target, by one method or several (method="a,b" or a list).

        target: token id or the text of one token (default: the predicted next token); contrast: explain
        logit(target) - logit(contrast); cls: class of a classification head (index, label or "predicted").
        method_options: lrp_rules, linear_rule, epsilon, gamma, steps, baseline, samples, noise, seed,
        start_layer, compat, zero_biases, words (docs/methods.md).

        A Vision Mamba explains a class (cls=, default the predicted one) of image= or pixels= and returns an
        ImageAttribution (patch maps, overlays); its start_layer defaults to 15/24 of the depth."""
        unknown = sorted(set(method_options) - set(_EXPLAIN_OPTIONS) - {"transform"})
        if unknown:
            raise TypeError(f"explain() got unexpected option(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(_EXPLAIN_OPTIONS))}")
        methods = [method] if isinstance(method, str) else list(method)
        if self.is_vision:
            _no_text(self, text, ids)
            if target is not None or contrast is not None:
                raise Error("target: a Vision Mamba explains a class of its head; use cls=")
            o = dict(method_options)
            transform = o.pop("transform", "deit")
            start = o.pop("start_layer", -1)
            o.pop("words", None)
            opts = {k: v for k, v in dict(_EXPLAIN_OPTIONS, **o).items() if k not in ("words", "start_layer")}
            report = _ssmx.explain_image(self._m, image=_image(image), pixels=_pixels(pixels), transform=transform,
                                         methods=methods, cls=-1 if cls is None else int(cls),
                                         start_layer=int(start), **opts)
            return ImageAttribution(report)
        _no_image(image, pixels)
        method_options.pop("transform", None)
        opts = dict(_EXPLAIN_OPTIONS, **method_options)
        report = self._m.explain(
            text=text, ids=_ids(ids), methods=methods,
            target="" if target is None else str(target), contrast="" if contrast is None else str(contrast),
            cls="" if cls is None else str(cls), position=int(position), keep_maps=True, **opts)
        return Attribution(report)

    def eval_evidence(self, data, method="grad-input,mamba-lrp", *, top_k=3, skip_first=0, skip_last=0,
                      contrast=False, limit=0, start_layer=0):
        """Pointing game, recall@|E| and hit@k per method on JSONL data with known evidence words (as
        `ssmx eval evidence`). Returns a list of dicts, one per method."""
        methods = [method] if isinstance(method, str) else list(method)
        return self._m.eval_evidence(_os.fspath(data), methods, top_k=int(top_k), skip_first=int(skip_first),
                                     skip_last=int(skip_last), contrast=bool(contrast), limit=int(limit),
                                     start_layer=int(start_layer))


    def eval_randomization(self, data, method="grad-input,mamba-lrp,random", *, limit=20, seed=0, start_layer=0):
        """Cascading model-parameter randomisation test (as `ssmx eval randomization`): {'stages': [...],
        'spearman': {method: [ρ per stage]}, 'spearman_abs': {...}, 'examples': n}."""
        methods = [method] if isinstance(method, str) else list(method)
        return self._m.eval_randomization(_os.fspath(data), methods, limit=int(limit), seed=int(seed),
                                          start_layer=int(start_layer))

    def eval_flipping(self, data, method="random,grad-input,mamba-lrp", *, format="", text_field="",
                      label_field="label", labels="", template="", mask="zero", steps=0, skip_first=0, skip_last=0,
                      abs=False, limit=0, seed=0, start_layer=0, shard=(0, 1), out=None, resume=False):
        """Token flipping, activation and pruning (as `ssmx eval flipping`): {method: {'examples', 'a_morf', 'a_lerf',
        'delta_af', 'auac', 'a_ins_lerf', 'delta_ai', 'au_mse', 'curve_x', 'curve_morf', 'curve_lerf',
        'curve_activation', 'curve_pruning'}}, the curves as float64 NumPy arrays on x = 0, 0.05, ..., 1. With out=
        the records are written (and resumed, resume=True) as the CLI's JSONL and the summary covers the whole file."""
        methods = [method] if isinstance(method, str) else list(method)
        return _ssmx.eval_flipping(self._m, _os.fspath(data), methods, format=format, text_field=text_field,
                                   label_field=label_field, labels=labels, template=template, mask=mask,
                                   steps=int(steps), skip_first=int(skip_first), skip_last=int(skip_last),
                                   abs=bool(abs), limit=int(limit), seed=int(seed), start_layer=int(start_layer),
                                   shard=tuple(shard), out="" if out is None else _os.fspath(out),
                                   resume=bool(resume))

    def eval_perturbation(self, data, method="random,grad-input,mamba-lrp", *, labels="", mode="both", steps=10,
                          include_zero=False, limit=0, seed=0, start_layer=None, compat="none", shard=(0, 1), out=None,
                          resume=False, transform="deit"):
        """Positive/negative pixel perturbation of a Vision Mamba (as `ssmx eval perturbation`): {method: {'images',
        'fractions', 'positive_accuracy', 'positive_auc', 'negative_accuracy', 'negative_auc'}}, accuracies in % as
        float64 NumPy arrays. steps: a count S (fractions 1/S ... (S-1)/S) or a list of fractions."""
        methods = [method] if isinstance(method, str) else list(method)
        if isinstance(steps, int):
            if steps < 2:
                raise Error("steps: a count of steps must be at least 2")
            steps = [i / steps for i in range(1, steps)]
        return _ssmx.eval_perturbation(self._m, _os.fspath(data), methods, labels=_os.fspath(labels), mode=mode,
                                       steps=[float(f) for f in steps], include_zero=bool(include_zero),
                                       limit=int(limit), seed=int(seed),
                                       start_layer=-1 if start_layer is None else int(start_layer), compat=compat,
                                       shard=tuple(shard), out="" if out is None else _os.fspath(out),
                                       resume=bool(resume), transform=transform)

    def eval_segmentation(self, data, method="random,grad-input,mamba-lrp", *, compat_unnormalised_ap=False, limit=0,
                          seed=0, start_layer=None, compat="none", shard=(0, 1), out=None, resume=False):
        """Relevance maps against object masks (as `ssmx eval segmentation`): {method: {'images', 'pixel_accuracy',
        'iou_bg', 'iou_fg', 'miou', 'map', 'mf1', 'pointing', 'energy', 'mask_fraction'}}, all in [0, 1]."""
        methods = [method] if isinstance(method, str) else list(method)
        return _ssmx.eval_segmentation(self._m, _os.fspath(data), methods,
                                       compat_unnormalised_ap=bool(compat_unnormalised_ap), limit=int(limit),
                                       seed=int(seed), start_layer=-1 if start_layer is None else int(start_layer),
                                       compat=compat,
                                       shard=tuple(shard), out="" if out is None else _os.fspath(out),
                                       resume=bool(resume))


class Attribution:
    """The result of Model.explain: tokens, relevance per method, the target and the conservation numbers."""

    def __init__(self, report):
        self._r = report
        self._j = _json.loads(report.json())
        self.relevance = report.relevance()  # float32 [T], or [M, T] for M methods

    tokens = property(lambda self: list(self._j["tokens"]))
    ids = property(lambda self: list(self._j["ids"]))
    offsets = property(lambda self: [tuple(o) for o in self._j["offsets"]])
    methods = property(lambda self: [e["method"] for e in self._j["explanations"]])
    target = property(lambda self: dict(self._j["target"]))
    prediction = property(lambda self: dict(self._j["prediction"]))
    logit = property(lambda self: self._j["logit"])
    settings = property(lambda self: [e["settings"] for e in self._j["explanations"]])

    @property
    def conservation(self):
        """Per method: relevance_sum, target_value, bias_absorbed, gap (None where the method has no such check)."""
        c = [e.get("conservation") for e in self._j["explanations"]]
        return c[0] if len(c) == 1 else c

    def to_json(self):
        return self._r.json()

    def to_html(self):
        return self._r.html()

    def __str__(self):
        return self._r.terminal(False)

    def __repr__(self):
        return f"<ssmx.Attribution {', '.join(self.methods)} over {len(self.ids)} tokens, target {self.target['label']}>"

    def _repr_html_(self):
        return self._r.html()

    def save(self, path):
        """Writes .json, .html or .npy (float32 relevance, [T] or [M, T]) by the file's extension."""
        path = _os.fspath(path)
        ext = _os.path.splitext(path)[1].lower()
        if ext == ".npy":
            _np.save(path, self.relevance)
        elif ext in (".json", ".html", ".htm"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n" if ext == ".json" else self.to_html())
        else:
            raise Error(f"{path}: unknown extension (use .json, .html or .npy)")


class ImageAttribution:
    """The result of Model.explain on a Vision Mamba: per-method patch maps, token relevance, overlays as images."""

    def __init__(self, report):
        self._r = report
        self._j = _json.loads(report.json())
        self.patch_map = report.patch_maps()      # float32 [grid_h, grid_w], or [M, grid_h, grid_w]
        self.relevance = report.token_relevance()  # float32 [T] (class token included), or [M, T]

    methods = property(lambda self: [e["method"] for e in self._j["explanations"]])
    target = property(lambda self: dict(self._j["target"]))
    prediction = property(lambda self: dict(self._j["prediction"]))
    logit = property(lambda self: self._j["logit"])
    class_token = property(lambda self: self._j["class_token"])
    settings = property(lambda self: [e["settings"] for e in self._j["explanations"]])

    @property
    def conservation(self):
        c = [e.get("conservation") for e in self._j["explanations"]]
        return c[0] if len(c) == 1 else c

    def overlay(self, method=0):
        """The map of one method over the image, with a colour bar: uint8 [H, W, 3]."""
        return self._r.overlay(int(method))

    @property
    def figure(self):
        """The image and every method's map side by side: uint8 [H, W, 3]."""
        return self._r.figure()

    @property
    def image(self):
        """The (un-normalised) image the model saw: uint8 [H, W, 3]."""
        return self._r.image()

    def to_json(self):
        return self._r.json()

    def to_html(self):
        return self._r.html()

    def __str__(self):
        return self._r.terminal()

    def __repr__(self):
        return f"<ssmx.ImageAttribution {', '.join(self.methods)}, target {self.target['label']}>"

    def _repr_html_(self):
        return self._r.html()

    def save(self, path):
        """.npy (patch maps), .json, .html, or .png (the side-by-side figure) by the file's extension."""
        path = _os.fspath(path)
        ext = _os.path.splitext(path)[1].lower()
        if ext == ".npy":
            _np.save(path, self.patch_map)
        elif ext == ".png":
            self._r.save_png(path, True)
        elif ext in (".json", ".html", ".htm"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n" if ext == ".json" else self.to_html())
        else:
            raise Error(f"{path}: unknown extension (use .json, .html, .png or .npy)")
