#!/usr/bin/env bash
# Packs the Python package built in BUILD_DIR (default build) into a relocatable archive for
# a machine without kiln's build dependencies (the GPU machine): the package's Python files,
# the extension and libkiln.so stripped with $ORIGIN rpaths, and the shared Abseil and
# protobuf libraries libkiln links (kiln/__init__.py loads them). The extension is built for
# BUILD_DIR's Python (its version must match the one that imports it).
#   python/pack_device.sh [BUILD_DIR] [OUT.tar.gz]      then:  tar xzf OUT.tar.gz; PYTHONPATH=kiln-device
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
OUT=${2:-$BUILD_DIR/kiln-device.tar.gz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cmake -DKILN_PYTHON_BUNDLE_DEPS=ON "$BUILD_DIR" >/dev/null
cmake --build "$BUILD_DIR" --target _kiln kiln_python_files >/dev/null
cmake --install "$BUILD_DIR" --component python --prefix "$stage/kiln-device" --strip >/dev/null
cp -r "$BUILD_DIR"/python/kiln/*.py "$BUILD_DIR"/python/kiln/*.pyi "$BUILD_DIR"/python/kiln/py.typed "$stage/kiln-device/kiln/"
cp -r "$BUILD_DIR"/python/kiln-*.dist-info "$stage/kiln-device/"
tar czf "$OUT" -C "$stage" kiln-device
ls -la "$OUT"
