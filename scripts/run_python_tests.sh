#!/usr/bin/env bash
# Runs the Python package's tests (python/tests) with the given interpreter; ctest calls this with PYTHONPATH set to
# build/python. Exits 77 (ctest: skipped) when pytest or NumPy is missing, so a missing tool is never a pass.
set -uo pipefail
PY="${1:-/usr/bin/python3}"
cd "$(dirname "$0")/.."
if ! "$PY" -c "import pytest, numpy" 2>/dev/null; then
  echo "python tests skipped: $PY lacks pytest or numpy (apt-get install python3-pytest python3-numpy)"
  exit 77
fi
exec "$PY" -m pytest -q -p no:cacheprovider python/tests
