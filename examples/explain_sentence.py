#!/usr/bin/python3
"""Explains why the bundled demo models decide what they decide — a review's sentiment and an image's object colour —
and writes the HTML reports.

    scripts/install_python.sh && .venv/bin/python examples/explain_sentence.py
    (or, without installing: PYTHONPATH=build/python /usr/bin/python3 examples/explain_sentence.py)
"""
import os
import sys

import ssmx

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
model = ssmx.load(os.path.join(root, "models", "sentiment-mamba"))
text = sys.argv[1] if len(sys.argv) > 1 else "review: the acting was not bad , but the plot was dull . sentiment:"

a = model.explain(text, method=["mamba-lrp", "grad-input", "rollout"])
print(a)  # the same table as `ssmx explain ... --no-color`
print("prediction:", a.prediction["label"], "target:", a.target["label"])
for name, rel in zip(a.methods, a.relevance):
    top = rel.argmax()
    print(f"{name:>10}: most relevant token {a.tokens[top]!r} ({rel[top]:.3g})")
print("MambaLRP conservation:", a.conservation[0])

out = "explanation.html"
a.save(out)
print("wrote", out)

# An image: the bundled Vision Mamba names the colour of the one object on a textured background.
vim = ssmx.load(os.path.join(root, "models", "colours-vim"))
img = os.path.join(root, "models", "colours-vim", "heldout", "000.png")
ia = vim.explain(image=img, method=["mamba-lrp", "rollout"])
print(ia)  # prediction, target and each method's most relevant patch
print("patch maps:", ia.patch_map.shape, "overlay image:", ia.overlay().shape)
ia.save("image-explanation.html")
ia.save("image-explanation.png")
print("wrote image-explanation.html and image-explanation.png")
