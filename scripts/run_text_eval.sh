#!/usr/bin/env bash
# Regenerates docs/results/text_flipping_*: the text faithfulness suite (MoRF/LeRF token flipping, activation and
# pruning tasks) of every text method on the bundled demo model and its 400 held-out reviews, with zero-embedding
# masking and with token removal. The run is split into two shards and merged, as a cluster job array would do it.
# Usage: scripts/run_text_eval.sh [--threads N] [LIMIT]   (default: all threads, all 400 examples)
set -euo pipefail
cd "$(dirname "$0")/.."
SSMX="${SSMX:-build/ssmx}"
GLOBAL=()
if [ "${1:-}" = "--threads" ]; then
  GLOBAL=(--threads "$2")
  shift 2
fi
LIMIT="${1:-0}"
MODEL=models/sentiment-mamba
DATA=$MODEL/heldout.jsonl
METHODS=random,gradient,grad-input,integrated-gradients,smoothgrad,raw-attention,rollout,mamba-attr,unified-attr,lrp-ln,mamba-lrp
OUT=docs/results
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
# The prompt template "review: … sentiment:" is kept out of the perturbation: the first 2 tokens ("review", ":")
# and the last 2 (" sentiment", ":") are never flipped.
for MASK in zero remove; do
  for I in 0 1; do
    "$SSMX" "${GLOBAL[@]}" eval flipping "$MODEL" --data "$DATA" --method "$METHODS" --mask "$MASK" --skip-first 2 --skip-last 2 \
      --limit "$LIMIT" --shard "$I/2" --out "$WORK/$MASK.$I.jsonl" > /dev/null
  done
  "$SSMX" eval merge "$WORK/$MASK.0.jsonl" "$WORK/$MASK.1.jsonl" --markdown "$OUT/text_flipping_$MASK.md" \
    --csv "$OUT/text_flipping_$MASK.csv" --json "$OUT/text_flipping_$MASK.json" --plot "$OUT/text_flipping_$MASK"
done
