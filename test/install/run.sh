#!/usr/bin/env bash
# Installs kiln from BUILD_DIR into a temporary prefix, then builds examples/consumer against
# that prefix with find_package(kiln) and with pkg-config, each against the shared libkiln.so
# and the static libkiln.a, and runs all four. Checks that
# the consumer needs no CUDA library at load time (ldd, and a run with LD_LIBRARY_PATH set to
# nowhere) and, where kiln was built with CUDA, that a missing NVRTC is an error naming it.
#   run.sh SOURCE_DIR BUILD_DIR cuda|nocuda
set -euo pipefail
src=$1 build=$2 cuda=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fail() { echo "install test: $*" >&2; exit 1; }
quiet() { "$@" > "$work/log" 2>&1 || { cat "$work/log" >&2; fail "failed: $*"; }; }

quiet cmake --install "$build" --prefix "$prefix"
for f in include/kiln/compiler/compile.h include/kiln/version.h lib/cmake/kiln/kilnConfig.cmake \
         lib/cmake/kiln/kilnConfigVersion.cmake lib/pkgconfig/kiln.pc lib/pkgconfig/kiln-static.pc lib/libkiln.a; do
  [ -f "$prefix/$f" ] || fail "$f was not installed"
done
# The installed headers include each other only through the kiln/ prefix.
if grep -rnE '#include "(ir|passes|codegen|runtime|compiler|frontends)/' "$prefix/include/kiln"; then
  fail "installed headers include kiln headers without the kiln/ prefix"
fi

launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== find_package(kiln)"
quiet cmake -S "$src/examples/consumer" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}"
quiet cmake --build "$work/cmake"
"$work/cmake/consumer"

echo "== find_package(kiln COMPONENTS static): kiln::kiln_static"
[ -x "$work/cmake/consumer_static" ] || fail "find_package(kiln) gave no kiln::kiln_static"
if ldd "$work/cmake/consumer_static" | grep -q libkiln; then fail "consumer_static loads libkiln.so"; fi
"$work/cmake/consumer_static" > "$work/static_out"
cat "$work/static_out"
grep -q "B=33: matches the reference" "$work/static_out" || fail "the static build did not run to the end"

echo "== pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion kiln)" = "$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$prefix/lib/cmake/kiln/kilnConfigVersion.cmake")" ] \
  || fail "kiln.pc and kilnConfigVersion.cmake disagree on the version"
read -r -a flags <<< "$(pkg-config --cflags --libs kiln)"
quiet ${CXX:-c++} -O1 "$src/examples/consumer/main.cc" "${flags[@]}" -Wl,-rpath,"$prefix/lib" -o "$work/pc_consumer"
"$work/pc_consumer" > "$work/pc_out"
cat "$work/pc_out"
grep -q "B=33: matches the reference" "$work/pc_out" || fail "the pkg-config build did not run to the end"

echo "== pkg-config kiln-static"
read -r -a flags <<< "$(pkg-config --cflags --libs kiln-static)"
quiet ${CXX:-c++} -O1 "$src/examples/consumer/main.cc" "${flags[@]}" -o "$work/pc_consumer_static"
if ldd "$work/pc_consumer_static" | grep -q libkiln; then fail "the kiln-static.pc build loads libkiln.so"; fi
"$work/pc_consumer_static" > "$work/pc_static_out"
grep -q "B=33: matches the reference" "$work/pc_static_out" || fail "the kiln-static.pc build did not run to the end"
echo "static: matches the reference"

echo "== no CUDA library at load time"
deps=$(ldd "$work/cmake/consumer" "$work/cmake/consumer_static")
if grep -E 'libnvrtc|libcublas|libcuda|libcudnn|libnccl' <<< "$deps"; then
  fail "a CPU-only program links CUDA libraries"
fi
LD_LIBRARY_PATH=/nonexistent "$work/cmake/consumer" > /dev/null || fail "the consumer fails with LD_LIBRARY_PATH=/nonexistent"
echo "ldd: no CUDA libraries; runs with LD_LIBRARY_PATH=/nonexistent"

if [ "$cuda" = cuda ]; then
  echo "== NVRTC missing"
  status=0
  KILN_NVRTC_LIBRARY=/nonexistent/libnvrtc.so.13 "$work/cmake/consumer" cuda-compile > "$work/nvrtc_out" 2>&1 || status=$?
  cat "$work/nvrtc_out"
  [ "$status" -ne 0 ] || fail "compiling CUDA kernels without NVRTC succeeded"
  grep -q "cannot load /nonexistent/libnvrtc.so.13, NVRTC" "$work/nvrtc_out" || fail "the error does not name NVRTC's library"
fi
echo "install test: ok"
