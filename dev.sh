#!/usr/bin/env bash
# kiln's developer entry point on Debian 12 (run as root, or with sudo available):
#   ./dev.sh demo    install what is missing, build the demo only, run it: the decoder layer
#                    compiled on the best device present, checked and timed
#   ./dev.sh test    install what is missing, build, run the whole test suite
#   ./dev.sh build   install what is missing and build
# Idempotent: with everything present it installs nothing and prints only results.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake ninja-build git pkg-config
  libfmt-dev libabsl-dev catch2 libcli11-dev nlohmann-json3-dev libdlpack-dev
  libonnx-dev libprotobuf-dev protobuf-compiler libonnx-testdata python3-onnx python3-numpy
  llvm-16-dev libzstd-dev libopenblas-dev graphviz python3-venv python3-dev
)
# Only for `test`: the headless browser that loads `kiln compile --graph x.html` (about 30 s
# and 122 MB to install); clang and its sanitizer/libFuzzer runtimes for CI's .ci/sanitize
# and .ci/fuzz.
TEST_PACKAGES=(chromium clang libclang-rt-14-dev)
BUILD_DIR=${KILN_BUILD_DIR:-build}
JOBS=${KILN_JOBS:-$(nproc)}
# The Python venv the build (nanobind for kiln's Python package) and its tests use.
VENV=$BUILD_DIR/venv
PY_PACKAGES=(nanobind==3.1.0 numpy==2.4.6 pytest==9.2.0)
# Only for `test`: the torch.compile backend's tests (about 5 min and 5.7 GB from PyPI, whose
# torch wheel is the CUDA build; it runs on the CPU).
PY_TEST_PACKAGES=(torch==2.15.0 torchvision==0.29.2 transformers==5.25.0)

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# venv [PACKAGE==VERSION...]: makes $VENV once and pip-installs the packages it lacks.
venv() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local missing=()
  for spec in "${PY_PACKAGES[@]}" "$@"; do
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('${spec%%==*}') != '${spec##*==}')" \
      2>/dev/null || missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: pip installing ${missing[*]}"
  # No wheel cache: torch's CUDA wheels (about 3 GB) would otherwise be kept twice on disk.
  if ! "$VENV/bin/pip" install -q --no-cache-dir "${missing[@]}" >/dev/null; then
    echo "dev.sh: pip install failed; space left beside $VENV: $(df -h --output=avail "$VENV" | tail -n 1)" >&2
    exit 1
  fi
}

# build [TARGET...]: configures once, then builds the targets (default: everything).
build() {
  if ! grep -qs "KILN_BUILD_PYTHON:BOOL=ON" "$BUILD_DIR/CMakeCache.txt"; then
    local launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
      -DKILN_BUILD_PYTHON=ON -DPython_EXECUTABLE="$(realpath -m "$VENV")/bin/python" >/dev/null
  fi
  local targets=()
  [ $# -gt 0 ] && targets=(--target "$@")
  # Quiet unless something fails: ninja's output is shown only on error.
  if ! out=$(cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}" 2>&1); then
    echo "$out" | tail -n 60
    echo "dev.sh: build failed" >&2
    exit 1
  fi
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_missing
    venv
    build kiln_example_demo
    "$BUILD_DIR/examples/demo"
    ;;
  test)
    install_missing "${TEST_PACKAGES[@]}"
    venv "${PY_TEST_PACKAGES[@]}"
    build
    cd "$BUILD_DIR"
    ctest --output-on-failure -j "$JOBS" --timeout 900
    ;;
  build)
    install_missing
    venv
    build
    ;;
  *)
    echo "usage: ./dev.sh demo|test|build" >&2
    exit 2
    ;;
esac
