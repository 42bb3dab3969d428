#!/usr/bin/env bash
# Sets up ssmx on Debian 12 / Ubuntu: installs the Debian packages the build needs (only those missing), then
# configures and builds everything into build/ (library, CLI build/ssmx, tests, benchmarks).
#
#   scripts/setup.sh            install what is missing, build
#   scripts/setup.sh --deps     only install packages
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev   # BLAS for every projection (the OpenMP build: one thread pool with ours)
  nlohmann-json3-dev       # config.json, tokenizer.json, safetensors headers, JSON output
  libpcre2-dev             # the tokenizer's pre-tokenizer regexes (Unicode classes)
  libutf8proc-dev          # NFC/NFKC normalisation
  libcli11-dev             # the command line
  libstb-dev               # PNG output (stb_image_write) and label text (stb_easy_font)
  libgtest-dev             # tests
  libsentencepiece-dev     # RecurrentGemma's tokenizer.model (src/io/sentencepiece.cpp)
  libhdf5-dev              # ImageNet-Segmentation's gtsegs_ijcv.mat (MATLAB v7.3 = HDF5), src/io/imagenet.cpp
  libbenchmark-dev         # bench/
  pybind11-dev python3-dev # the Python module (build/python/ssmx)
  python3-numpy python3-pytest   # its tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" = "--deps" ] && exit 0

BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "setup: built $BUILD_DIR/ssmx"
