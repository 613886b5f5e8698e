#!/usr/bin/env python3
"""kiln's line budget, as tinygrad's sz.py: source lines per folder against a budget.

Counts the non-blank, non-comment lines of the C++ sources directly in each folder of
BUDGETS (a folder's subfolders have their own row), prints a table, and fails when a
folder is over its budget, when a library folder holding sources has no budget, or when
any source file of the repository is over MAX_FILE_LINES lines, the table-like files of
TABLE_FILES excepted. Raising a budget is a
decision made in review: change the number in BUDGETS in the same commit.

usage: tools/line_budget.py [REPO_ROOT]   (default: the checkout holding this script)
"""
import os
import subprocess
import sys

# Folder -> most non-blank, non-comment lines its own sources may have (set 10-15% over
# the counts when the budget was introduced).
BUDGETS = {
    "ir": 5600,  # 5400 until the collectives and evaluate_ranks (issue 22)
    "passes": 3250,  # 3100 until the vocab-parallel gather and collectives along axis 0 (issue 22); 2575 until the shard pass (issue 22); 2200 until fuse_elementwise's per-group summaries (linear merges, issue 21); 2450 until strided views of attention operands (issue 17)
    "codegen": 3700,  # 3650 until overlapped collectives (CollectiveStep::join) and Program::buffers_of, moved from the executor (issue 22); + the fused attention step (codegen/attention.*), native depthwise, bias-clamp and row-reduction detection
    "codegen/cuda": 1900,  # + the flash-attention kernel (attention.cuh) and its generator
    "codegen/cpu": 1150,  # 1000 until collapse.* (a kernel's innermost domain dims merged, and a last dim read as o // c split, issue 16)
    "runtime": 3100,  # 2800 until communicators (the host group) and collective steps (issue 22); + a GEMM library's residual add (cuBLASLt's C, beta = 1); 2700 until index checks (the check words, a host copy; issue 21) and extern op steps (issue 18 item 6); + profiling marks in the executor, the dlopen loader, checked cache entries, weights a store holds, the shared memory pool (batch buckets)
    "runtime/cuda": 1650,  # 1250 until cuDNN's fused attention (runtime/cuda/cudnn_attention.*, issue 17); 1075 until NCCL communicators (issue 22); + the attention launcher (runtime/cuda/attention.*) and step; 950 until its max-autotune tunable and lazy configs
    "runtime/cpu": 2475,  # 2400 until the sixteen-plane depthwise's masked tails and eight chains, and the epilogue's row streams (issue 16); 2300 until the attention routine's 8-lane softmax and P.V block and the row routines' tails (issue 16); + the fused attention routine (attention.*), native depthwise (depthwise.*) and epilogue (epilogue.*)
    "compiler": 3450,  # 3150 until parallel.* (RankGroup, sharded checkpoint reads; issue 22); 975 until issue 19's tools; 1550 until weights.* (issue 18); 2050 until reduce.cc, the minifier (issue 21); 2450 until package.* (issue 19's saved packages) and batch buckets (buckets.*, issue 18)
    "compiler/cli": 1250,  # 1200 until `kiln shard --device`; 1100 until `kiln shard` (issue 22); 575 until `kiln bench` and the JSON errors (issue 19); + `kiln generate` (issue 18), `kiln reduce` (issue 21); + compile --save, run FILE.kilnpkg, generate --buckets
    "frontends/onnx": 3700,
    "frontends/trace": 650,
    "frontends/safetensors": 375,  # the safetensors reader and writer, sharded checkpoints (issue 18)
    "models": 1000,  # 900 until generate --tp (the step runner over a RankGroup, issue 22); the Llama-family builder and the generate loop (issue 18); 800 until the decode step's buckets and the compile breakdown
    "python/src": 300,  # the nanobind extension of the Python package (issue 20)
}

# Trees outside the library (fuzz/: libFuzzer harnesses), which have no budget (their files
# still obey MAX_FILE_LINES).
UNBUDGETED_TREES = {"test", "examples", "bench", "tools", "fuzz"}

# No source file is longer than this (all lines counted, as wc -l does)...
MAX_FILE_LINES = 800
# ...except tables, which are long by nature and read row by row.
TABLE_FILES = {
    "ir/ops.def",  # the op registry
    "ir/reference.cc",  # the reference evaluator: one case per op
    "frontends/onnx/onnx_ops.cc",  # one handler per ONNX op type
}

SOURCE_SUFFIXES = (".cc", ".h", ".def", ".cu", ".cuh")


def source_files(root):
    """Repository-relative paths of the C++ sources: tracked and untracked-but-not-ignored
    files when `root` is a git checkout (so build folders never count), else a walk that
    skips hidden and build folders."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
        paths = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if not x.startswith((".", "build")))
            paths += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return sorted(p for p in paths if p.endswith(SOURCE_SUFFIXES) and os.path.isfile(os.path.join(root, p)))


def count_code_lines(text):
    """Lines that are neither blank nor only comment (// lines and /* ... */ blocks)."""
    n = 0
    in_block = False
    for line in text.splitlines():
        s = line.strip()
        if in_block:
            if "*/" not in s:
                continue
            in_block = False
            s = s.split("*/", 1)[1].strip()
        if s.startswith("/*"):
            if "*/" not in s:
                in_block = True
                continue
            s = s.split("*/", 1)[1].strip()
        if s and not s.startswith("//"):
            n += 1
    return n


def main(argv):
    root = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    files = source_files(root)
    lines_of, total_of = {}, {}
    for path in files:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines_of[path] = count_code_lines(text)
        total_of[path] = text.count("\n") + (0 if text.endswith("\n") or not text else 1)

    failures = []
    print(f"{'folder':<18}{'files':>6}{'lines':>8}{'budget':>8}{'used':>6}")
    for folder, budget in BUDGETS.items():
        own = [p for p in files if os.path.dirname(p) == folder]
        lines = sum(lines_of[p] for p in own)
        print(f"{folder:<18}{len(own):>6}{lines:>8}{budget:>8}{100 * lines // budget:>5}%")
        if lines > budget:
            failures.append(f"{folder}: {lines} lines, over its budget of {budget}")
    total = sum(lines_of[p] for p in files if os.path.dirname(p) in BUDGETS)
    print(f"{'total':<18}{'':>6}{total:>8}{sum(BUDGETS.values()):>8}")

    unbudgeted = sorted({os.path.dirname(p) for p in files
                         if os.path.dirname(p) not in BUDGETS and p.split("/")[0] not in UNBUDGETED_TREES})
    for folder in unbudgeted:
        failures.append(f"{folder}: holds sources but has no budget (add it to BUDGETS)")
    for path in files:
        if total_of[path] > MAX_FILE_LINES and path not in TABLE_FILES:
            failures.append(f"{path}: {total_of[path]} lines, over {MAX_FILE_LINES} (split it)")
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
