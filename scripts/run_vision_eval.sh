#!/usr/bin/env bash
# Regenerates docs/results/vision_{perturbation,segmentation}.{md,csv,json} and the perturbation curves
# (docs/results/vision_perturbation/): the vision faithfulness and localisation suites of every image method on the
# bundled Vision Mamba models/colours-vim and its 64 held-out images with object masks. Each run is split into two
# shards and merged, as a cluster job array would do it (docs/vision-eval.md).
# Usage: scripts/run_vision_eval.sh [--threads N] [LIMIT]   (default: all threads, all 64 images)
set -euo pipefail
cd "$(dirname "$0")/.."
SSMX="${SSMX:-build/ssmx}"
GLOBAL=()
if [ "${1:-}" = "--threads" ]; then
  GLOBAL=(--threads "$2")
  shift 2
fi
LIMIT="${1:-0}"
MODEL=models/colours-vim
DATA=$MODEL/heldout.jsonl
METHODS=random,gradient,grad-input,integrated-gradients,smoothgrad,raw-attention,rollout,mamba-attr,unified-attr,lrp-ln,mamba-lrp
OUT=docs/results
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
for KIND in perturbation segmentation; do
  for I in 0 1; do
    "$SSMX" "${GLOBAL[@]}" eval "$KIND" "$MODEL" --data "$DATA" --method "$METHODS" --limit "$LIMIT" \
      --shard "$I/2" --out "$WORK/$KIND.$I.jsonl" > /dev/null
  done
  PLOT=()
  if [ "$KIND" = perturbation ]; then PLOT=(--plot "$OUT/vision_perturbation"); fi
  "$SSMX" eval merge "$WORK/$KIND.0.jsonl" "$WORK/$KIND.1.jsonl" --markdown "$OUT/vision_$KIND.md" \
    --csv "$OUT/vision_$KIND.csv" --json "$OUT/vision_$KIND.json" "${PLOT[@]}"
done
