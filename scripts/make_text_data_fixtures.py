#!/usr/bin/env python3
"""Writes the small text-data fixtures of tests/eval/test_text_data.cpp into tests/data/eval/.

The files follow the real formats exactly:
  sst2_dev.tsv   GLUE SST-2 dev.tsv: header `sentence<TAB>label`, lower-cased PTB-tokenised sentences with a trailing
                 space before the tab, no quoting (quotes appear raw inside sentences), LF line ends.
  reviews.csv    RFC 4180 CSV as Python's csv module writes it (minimal quoting, CRLF line ends): fields with commas,
                 doubled quotes and an embedded newline are quoted.
  reviews.jsonl  one JSON object per line with "text", an integer or string "label" and an optional "target".
  labels.json    a label -> target token map.
Run from the repository root: python3 scripts/make_text_data_fixtures.py
"""
import csv
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "eval")


def main():
    os.makedirs(OUT, exist_ok=True)
    sst2 = [
        ("it 's a charming and often affecting journey . ", 1),
        ("unflinchingly bleak and desperate ", 0),
        ("the acting , costumes , music , cinematography and sound are all astounding given the production 's "
         "austere locales . ", 1),
        ("\" it 's slow -- very , very slow . \" ", 0),
    ]
    with open(os.path.join(OUT, "sst2_dev.tsv"), "w", newline="\n", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for s, l in sst2:
            f.write(f"{s}\t{l}\n")
    rows = [
        ("a good film, really", "1"),
        ('she said "dull" twice', "0"),
        ("two\nlines", "1"),
        ("plain", "0"),
    ]
    with open(os.path.join(OUT, "reviews.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "label"])
        for i, (t, l) in enumerate(rows):
            w.writerow([str(i), t, l])
    with open(os.path.join(OUT, "reviews.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": "a good film", "label": 1}) + "\n")
        f.write(json.dumps({"text": "caf\u00e9 \"noir\"\tbad", "label": "0"}, ensure_ascii=False) + "\n")
        f.write("\n")
        f.write(json.dumps({"text": "no label at all", "target": " positive"}) + "\n")
    with open(os.path.join(OUT, "labels.json"), "w", encoding="utf-8") as f:
        json.dump({"0": " negative", "1": " positive"}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
