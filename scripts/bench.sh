#!/usr/bin/env bash
# Runs the benchmarks and puts them next to the PyTorch reference measured on this machine.
#
#   scripts/bench.sh            forward of a mamba-130m-shaped model at T=512 and 2048
#   scripts/bench.sh --grad     gradient×input and MambaLRP (forward + backward) at T=256 and 1024
#   scripts/bench.sh --vim      forward of a Vim-S-shaped Vision Mamba at 224×224 (197 tokens, D 384, 24 layers)
#   scripts/bench.sh --families forward (T=512, 2048) and `explain --method grad-input` (T=512) of mamba2-130m-,
#                               rwkv-4-169m- and ~110M RecurrentGemma-shaped models, each next to PyTorch
#                               (--mamba2, --rwkv, --griffin: one family)
#
# The PyTorch side needs Debian's python3-torch (installed here if missing: it is large, and only benchmarks and
# fixture scripts use it). Results: bench/results/reference_forward.json and bench/results/forward.json
# (--grad: bench/results/reference_grad.json and bench/results/grad.json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq python3-torch python3-numpy >/dev/null
fi
mkdir -p bench/results
if [ "${1:-}" = "--grad" ]; then
  echo "bench: PyTorch reference gradient and MambaLRP (this takes several minutes)"
  /usr/bin/python3 scripts/bench_reference.py --grad --out bench/results/reference_grad.json
  build/bench_grad --reference=bench/results/reference_grad.json --json=bench/results/grad.json
  exit 0
fi
if [ "${1:-}" = "--vim" ]; then
  echo "bench: PyTorch Vision Mamba reference (this takes several minutes)"
  /usr/bin/python3 scripts/bench_vim_reference.py --out bench/results/reference_vim.json
  build/bench_vim --reference=bench/results/reference_vim.json --json=bench/results/vim.json
  exit 0
fi
family() {  # name, reference script's output flag
  echo "bench: PyTorch $1 reference (forward and autograd explanation; this takes a few minutes)"
  /usr/bin/python3 "scripts/bench_$1_reference.py" "$2" "bench/results/reference_$1.json"
  "build/bench_$1" --reference="bench/results/reference_$1.json" --json="bench/results/$1.json" --benchmark_repetitions=3
}
case "${1:-}" in
  --mamba2) family mamba2 --json; exit 0 ;;
  --rwkv) family rwkv --out; exit 0 ;;
  --griffin) family griffin --out; exit 0 ;;
  --families) family mamba2 --json; family rwkv --out; family griffin --out; exit 0 ;;
esac
echo "bench: PyTorch reference forward (this takes a few minutes)"
/usr/bin/python3 scripts/bench_reference.py --out bench/results/reference_forward.json
build/bench_forward --reference=bench/results/reference_forward.json --json=bench/results/forward.json
