#!/usr/bin/env bash
# Issue 21 item 7 on a GPU machine: the CUDA differential fuzzer (kiln_fuzz --device cuda) in
# PROCS processes per mode (default, reduce-overhead, max-autotune) for the whole budget, and
# meanwhile compute-sanitizer memcheck over the GPU tests that cover index checks, extern ops
# and fused attention and over the decoder layer in the three modes, racecheck and synccheck
# over the decoder layer in reduce-overhead and the index-check tests (a step that would run
# past the budget is skipped and says so). Needs kiln, kiln_test_cuda and kiln_fuzz on PATH
# (a Release build, LLVM off is enough) and compute-sanitizer (the CUDA toolkit's bin/).
# Every result goes to OUT as it comes; OUT/summary.txt has one line per step.
#
#   tools/gpu_reliability.sh OUT [SECONDS [SEED_BASE [fuzz-only]]]
#     SECONDS: the whole run's budget (default 560). SEED_BASE: the first fuzz seed (default
#     30000000; process i starts at SEED_BASE + i * 1000000), so that a second run can go on
#     with other graphs. fuzz-only: no sanitizers. PROCS (environment): fuzz processes per
#     mode, default 4 beside the sanitizers and 5 alone.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
OUT=$1 BUDGET=${2:-560} SEED_BASE=${3:-30000000} ONLY=${4:-}
PROCS=${PROCS:-$([ "$ONLY" = fuzz-only ] && echo 5 || echo 4)}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
log() { echo "$@" | tee -a "$OUT/summary.txt"; }
t0=$SECONDS
left() { echo $((BUDGET - (SECONDS - t0))); }
step() {  # step NAME TIMEOUT CMD...
  local name=$1 to=$2 s=$SECONDS
  shift 2
  if [ "$(left)" -lt $((to + 15)) ]; then
    log "$name skipped: $(left) s of the budget left, its timeout is $to s"
    return
  fi
  timeout "$to" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  log "$name rc=$rc $((SECONDS - s))s :: $(grep -E 'ERROR SUMMARY|All tests passed|test cases|rror' "$OUT/$name.txt" | tail -2 | tr '\n' ' ' | cut -c1-300)"
}
fuzz_time=$(($(left) - 15))
log "fuzzing for $fuzz_time s in $PROCS processes per mode"
i=0
for m in default reduce-overhead max-autotune; do
  for ((p = 0; p < PROCS; ++p)); do
    first=$((SEED_BASE + i * 1000000))
    kiln_fuzz --seeds $first:$((first + 1000000)) --device cuda --mode $m --time-limit $fuzz_time --keep-going \
      > "$OUT/fuzz_${m}_$p.txt" 2>&1 &
    i=$((i + 1))
  done
done
if [ "$ONLY" != fuzz-only ]; then
  CS=(compute-sanitizer --error-exitcode 9 --print-limit 20)
  D=(kiln run examples/decoder_layer.kiln --bind B=2 --bind T=7 --device cuda --check)
  # The kernel cache first: NVRTC under a sanitizer is slower, not more checked.
  kiln_test_cuda "[gather]" > /dev/null 2>&1
  kiln_test_cuda "[extern]" > /dev/null 2>&1
  for m in default reduce-overhead max-autotune; do "${D[@]}" --mode $m > /dev/null 2>&1; done
  step mem_gather 90 "${CS[@]}" --tool memcheck kiln_test_cuda "[gather]"
  step mem_extern 90 "${CS[@]}" --tool memcheck kiln_test_cuda "[extern]"
  step mem_attention 150 "${CS[@]}" --tool memcheck kiln_test_cuda "[attention]"
  for m in default reduce-overhead max-autotune; do step "mem_decoder_$m" 90 "${CS[@]}" --tool memcheck "${D[@]}" --mode $m; done
  step race_decoder 90 "${CS[@]}" --tool racecheck "${D[@]}" --mode reduce-overhead
  step race_gather 90 "${CS[@]}" --tool racecheck kiln_test_cuda "[gather]"
  step sync_decoder 90 "${CS[@]}" --tool synccheck "${D[@]}" --mode reduce-overhead
  step sync_gather 90 "${CS[@]}" --tool synccheck kiln_test_cuda "[gather]"
  log "sanitizers done after $((SECONDS - t0)) s"
fi
wait
for f in "$OUT"/fuzz_*.txt; do log "$(basename "$f"): $(tail -2 "$f" | tr '\n' ' ' | cut -c1-250)"; done
log "total $((SECONDS - t0)) s"
