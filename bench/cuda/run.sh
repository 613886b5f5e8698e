#!/usr/bin/env bash
# The CUDA benchmark on a GPU machine, kiln and PyTorch in one run:
#   bench/cuda/run.sh BENCH_BINARY OUTDIR [torch_bench.py options]
# Compiles every workload twice with a fresh kernel cache (cold, then warm from disk), times
# kiln in its three modes and PyTorch in its four, and writes OUTDIR/log and OUTDIR/report.md.
set -euo pipefail
bin=$1 out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
export KILN_CACHE_DIR=$work/cache
python3 "$here/workloads.py" --emit "$work/w"
log=$out/log
: > "$log"
"$bin" "$work/w/manifest.json" --compile-only | sed 's/^KILN_COMPILE /KILN_COLD /' | tee -a "$log"
"$bin" "$work/w/manifest.json" --compile-only | sed 's/^KILN_COMPILE /KILN_WARM /' | tee -a "$log"
"$bin" "$work/w/manifest.json" | tee -a "$log"
python3 "$here/torch_bench.py" "$@" 2>&1 | grep -v "^W[0-9]" | tee -a "$log"
python3 "$here/report.py" "$log" | tee "$out/report.md"
