#!/usr/bin/env bash
# Issue 18's serving table on a GPU: kiln generate (reduce-overhead) against bench/llama_torch.py
# (torch.compile: default prefill, reduce-overhead decode) for the Llama-3.2-1B and Llama-3-8B
# shapes with random weights, over batches and contexts; one process per shape and tool, each
# with its own time limit, every result appended to OUT/serving.log as it comes (a run cut by
# a limit still leaves the others), then the table as markdown in OUT/serving.md.
#
#   bench/serving_table.sh KILN OUT [SHAPES...]      SHAPE = preset:batch:context, default:
#     llama3.2-1b:{1,8,32,64}:{1024,8192} llama3.2-1b:1:2048 llama3-8b:1:1024 llama3-8b:1:2048 llama3-8b:8:1024
# Environment: KILN_CACHE_DIR (kiln's kernel cache), LIMIT (seconds per run, default 90),
# TOOLS (default "kiln torch").
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,12p "$0"; exit 2; }
KILN=$1 OUT=$2
shift 2
SHAPES=("$@")
if [ ${#SHAPES[@]} -eq 0 ]; then
  for c in 1024 8192; do for b in 1 8 32 64; do SHAPES+=("llama3.2-1b:$b:$c"); done; done
  SHAPES+=(llama3.2-1b:1:2048 llama3-8b:1:1024 llama3-8b:1:2048 llama3-8b:8:1024)
fi
LIMIT=${LIMIT:-90}
TOOLS=${TOOLS:-kiln torch}
mkdir -p "$OUT"
LOG=$OUT/serving.log
: > "$LOG"

# value FILE PATTERN: the first number after PATTERN in FILE, or "-".
value() { grep -oE "$2 *[0-9.]+" "$1" | head -1 | grep -oE "[0-9.]+$" || echo "-"; }

echo "| model | batch x context | kiln prefill ms | torch prefill ms | kiln decode ms/token | torch decode ms/token |" > "$OUT/serving.md"
echo "|---|---|---:|---:|---:|---:|" >> "$OUT/serving.md"
for s in "${SHAPES[@]}"; do
  IFS=: read -r preset b c <<< "$s"
  k=$OUT/kiln_${preset}_${b}_${c}.txt t=$OUT/torch_${preset}_${b}_${c}.txt
  : > "$k"
  : > "$t"
  if [[ " $TOOLS " == *" kiln "* ]]; then
    timeout "$LIMIT" "$KILN" generate --config "$preset" --device cuda --mode reduce-overhead --fixed-len \
      --new-tokens 32 --batch "$b" --prompt-len "$c" > "$k" 2>&1
    echo "kiln  $s rc=$? $(grep -E '^(compile|prefill|decode|memory)' "$k" | tr '\n' ' ')" >> "$LOG"
  fi
  if [[ " $TOOLS " == *" torch "* ]]; then
    timeout "$LIMIT" python3 bench/llama_torch.py --random --preset "$preset" --modes compile --new-tokens 32 \
      --batch "$b" --prompt-len "$c" > "$t" 2>&1
    echo "torch $s rc=$? $(grep -E '^(compile|memory)' "$t" | tr '\n' ' ')" >> "$LOG"
  fi
  echo "| $preset | $b x $c | $(value "$k" '^prefill') | $(value "$t" 'compile  prefill') |" \
       "$(value "$k" '^decode') | $(value "$t" 'decode') |" >> "$OUT/serving.md"
done
cat "$OUT/serving.md"
