#!/usr/bin/env bash
# A/B of two builds of kiln_bench_cpu on this machine, alternating (A B A B ...):
#   bench/ab/cpu_ab.sh BENCH_A BENCH_B OUTDIR [ROUNDS=3]
# Each round runs A then B as separate processes; OUTDIR/log keeps every table row tagged
# with its build and round ("A1| gelu... | 3.777 | ..."), OUTDIR/ab.md is the table of the
# compiled-ms column (bench/ab/ab_report.py --cpu).
set -euo pipefail
a=$1 b=$2 out=$3 rounds=${4:-3}
here=$(cd "$(dirname "$0")" && pwd)
: > "$out/log"
for r in $(seq 1 "$rounds"); do
  for build in A B; do
    bin=$a; [ $build = B ] && bin=$b
    "$bin" | sed "s/^|/${build}${r}|/" >> "$out/log"
  done
done
python3 "$here/ab_report.py" --cpu "$out/log" | tee "$out/ab.md"
