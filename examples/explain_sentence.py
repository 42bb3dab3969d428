#!/usr/bin/python3
"""Explains why the bundled demo model calls a review negative, and writes the HTML report.

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
