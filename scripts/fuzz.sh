#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a while on seed corpora taken from the test
# data. Any crash, leak, timeout or sanitizer report makes the script fail and leaves the reproducer in fuzz-corpus/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs: clang and libclang-rt-14-dev (Debian), installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
scripts/setup.sh --deps
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -qq "$p" >/dev/null; }
done
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSSMX_FUZZ=ON -DSSMX_TESTS=OFF -DSSMX_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_safetensors fuzz_torch_zip fuzz_tokenizer fuzz_image

seed() {  # seed <target> <files...>
  local dir="fuzz-corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "$dir/" 2>/dev/null || true; done
  echo "$dir"
}
st=$(seed safetensors $(find tests/data models -name '*.safetensors' -size -200k))
tz=$(seed torch_zip $(find tests/data -name '*.bin' -size -200k -o -name '*.pt' -size -200k -o -name '*.pth' -size -200k))
tk=$(seed tokenizer $(find tests/data models -name 'tokenizer*.json' -size -300k))
im=$(seed image $(find tests/data/images -name '*.png' -size -40k -o -name '*.jpg' -size -40k))

status=0
for t in "safetensors:$st" "torch_zip:$tz" "tokenizer:$tk" "image:$im"; do
  name="${t%%:*}"; corpus="${t#*:}"
  echo "fuzz: fuzz_$name for ${SECONDS_PER_TARGET}s"
  ./build-fuzz/fuzz_"$name" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz-corpus/$name-" "$corpus" 2>"fuzz-corpus/$name.log" || { status=1; tail -30 "fuzz-corpus/$name.log"; }
  grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units" "fuzz-corpus/$name.log" | tail -1 || true
done
exit $status
