#!/usr/bin/env bash
# Runs the whole test suite: sets up (installs missing packages, builds), then ctest.
# Tests that need ../shared (the GPT-NeoX tokenizer conformance set) report themselves skipped when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" "$@"
