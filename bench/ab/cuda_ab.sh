#!/usr/bin/env bash
# A/B of two builds of kiln_bench_cuda on one GPU, alternating (A B A B ...), every workload of
# bench/cuda/workloads.py in every mode:
#   bench/ab/cuda_ab.sh BENCH_A BENCH_B OUTDIR [ROUNDS=2] [bench options]
# Each round runs A then B as separate processes over the same manifest with one kernel cache
# per build; OUTDIR/log keeps every KILN_RESULT line tagged with its build and round, and
# OUTDIR/ab.md is the table (bench/ab/ab_report.py).
set -euo pipefail
a=$1 b=$2 out=$3 rounds=${4:-2}
shift 3; [ $# -gt 0 ] && shift
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
python3 "$here/../cuda/workloads.py" --emit "$work/w"
: > "$out/log"
for r in $(seq 1 "$rounds"); do
  for build in A B; do
    bin=$a; [ $build = B ] && bin=$b
    KILN_CACHE_DIR=$work/cache_$build "$bin" "$work/w/manifest.json" "$@" | sed "s/^KILN_/KILN_${build}${r}_/" >> "$out/log"
  done
done
python3 "$here/ab_report.py" "$out/log" | tee "$out/ab.md"
