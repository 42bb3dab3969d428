#!/usr/bin/env bash
# Installs the ssmx Python package (built by scripts/setup.sh into build/python/ssmx) into a Python environment,
# offline, with Debian's Python:
#
#   scripts/install_python.sh            into ./.venv (created with --system-site-packages, so Debian's NumPy is used)
#   scripts/install_python.sh DIR        into the virtual environment DIR (created if missing)
#   scripts/install_python.sh --user     into ~/.local for /usr/bin/python3 (pip --user; Debian marks the system
#                                        interpreter externally managed, hence --break-system-packages)
#
# Nothing is downloaded: the package is the module CMake built plus its __init__.py, installed by pip from a local
# directory with --no-index --no-build-isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
if [ ! -f "$BUILD_DIR/python/ssmx/__init__.py" ] || ! ls "$BUILD_DIR"/python/ssmx/_ssmx*.so >/dev/null 2>&1; then
  scripts/setup.sh
fi
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -r "$BUILD_DIR/python/ssmx" "$stage/"
version="$(sed -n 's/^project(ssmx VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
cat > "$stage/setup.py" <<PY
from setuptools import setup
from setuptools.dist import Distribution

class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True

setup(name="ssmx", version="$version", packages=["ssmx"], package_data={"ssmx": ["_ssmx*.so"]},
      distclass=BinaryDistribution, install_requires=[])
PY
target="${1:-.venv}"
if [ "$target" = "--user" ]; then
  /usr/bin/python3 -m pip install --user --break-system-packages --no-index --no-build-isolation "$stage"
  echo "installed ssmx for /usr/bin/python3 (user site)"
else
  [ -x "$target/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$target"
  "$target/bin/python" -m pip install --no-index --no-build-isolation "$stage"
  echo "installed ssmx into $target: $target/bin/python -c 'import ssmx'"
fi
