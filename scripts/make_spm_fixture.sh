#!/usr/bin/env bash
# Regenerates tests/data/tokenizer/spm/: a tiny SentencePiece BPE model with byte fallback (the kind Gemma and
# RecurrentGemma ship as tokenizer.model), trained by Debian's spm_train on generated sentences, and the ids that
# Debian's spm_encode gives for a few test sentences (the reference for tests/io/test_sentencepiece.cpp).
# Needs the Debian package `sentencepiece` (spm_train, spm_encode).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tests/data/tokenizer/spm
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/corpus.txt" <<'PY'
import random, sys
random.seed(7)
words = "the a movie film plot acting was is not bad good great dull but although very quite music ending story".split()
with open(sys.argv[1], "w") as f:
    for _ in range(2000):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(3, 12))) + " .\n")
PY
spm_train --input="$WORK/corpus.txt" --model_prefix="$WORK/tiny" --vocab_size=320 --model_type=bpe \
  --byte_fallback=true --character_coverage=1.0 --normalization_rule_name=identity --add_dummy_prefix=false \
  --remove_extra_whitespaces=false --split_digits=true --allow_whitespace_only_pieces=true --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 \
  --minloglevel=2 > /dev/null 2>&1
cp "$WORK/tiny.model" "$OUT/tokenizer.model"
printf '%s\n' "the movie was not bad" "  great   acting, but a dull plot!" "ünïcödé 日本 words" "" "the" "film 2024 was great" > "$WORK/sents.txt"
spm_encode --model="$OUT/tokenizer.model" --output_format=id < "$WORK/sents.txt" > "$WORK/ids.txt"
python3 - "$WORK/sents.txt" "$WORK/ids.txt" "$OUT/expected.json" <<'PY'
import json, sys
sents = open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1]
ids = open(sys.argv[2]).read().split("\n")[:-1]
cases = [{"text": s, "ids": [int(x) for x in i.split()]} for s, i in zip(sents, ids)]
json.dump({"cases": cases}, open(sys.argv[3], "w"), ensure_ascii=False, indent=1)
PY
echo "wrote $OUT"
