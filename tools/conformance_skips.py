#!/usr/bin/env python3
"""Writes or checks test/onnx/conformance_skips.md: every ONNX node test that
`kiln onnx-conformance` skips, grouped by why, with what each group would need.

The runner's output is the source of truth; this script only classifies its SKIP lines by
the rules in CATEGORIES (first match wins). A skip no rule matches is an error, so a new
kind of skip must be explained here before the document can be regenerated, and --check
(a CTest test) fails whenever the document and the runner disagree.

usage: tools/conformance_skips.py --kiln PATH_TO_KILN (--write | --check) FILE
"""
import argparse
import difflib
import re
import subprocess
import sys
from collections import OrderedDict

# (title, explanation, rule): rule(op_type, reason) -> subgroup name, or None if the category
# does not apply. op_type is None for skips found before any node (graph inputs, test data).
def op_in(*ops):
    return lambda op, reason: op if op in ops else None


def element_type(op, reason):
    m = re.search(r"unsupported element type (\w+)", reason) or re.search(r"dtype (\w+) is not supported", reason)
    return m.group(1) if m and m.group(1) != "STRING" else None


CATEGORIES = [
    ("Element types kiln lacks",
     "kiln's dtypes are f64, f32, f16, bf16, the signed and unsigned integers of 8, 16, 32 and "
     "64 bits, and bool. Other ONNX element types (8-bit floats, 4-bit integers, complex) would "
     "each need a DType, host tensor storage, reference arithmetic, CPU and CUDA code generation "
     "and ONNX import. Grouped by the element type met first.",
     element_type),
    ("Strings",
     "Text processing (string tensors, StringNormalizer, TfIdfVectorizer's string form, casts "
     "to and from strings) is outside a numeric graph compiler.",
     lambda op, reason: "STRING" if "STRING" in reason else None),
    ("Sequences, maps and optionals",
     "kiln's values are tensors; ONNX sequence, map and optional types (and the ops on them) "
     "would need a value kind beside tensors through the IR and the runtime. Out of scope.",
     lambda op, reason: "not a tensor" if "not a tensor" in reason else None),
    ("Training",
     "kiln compiles inference graphs: optimizers (ai.onnx.preview.training), training-mode "
     "Dropout (random masks) and BatchNormalization's running statistics are out of scope.",
     lambda op, reason: op if ("ai.onnx.preview.training" in reason or "training mode" in reason) else None),
    ("Random number generation",
     "Outputs drawn at random cannot be compared with fixed expected values; kiln has no RNG "
     "op. Out of scope for inference.",
     op_in("Bernoulli", "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal", "Multinomial")),
    ("Control flow",
     "If, Loop and Scan carry subgraphs; kiln's IR is one straight-line graph. Needs nested "
     "graphs in the IR and host-side control in the executor.",
     op_in("If", "Loop", "Scan")),
    ("Recurrent networks",
     "RNN, GRU and LSTM import unrolled over a static sequence length; a symbolic one would "
     "need the control flow above (or a dedicated recurrent op with its own kernels).",
     op_in("RNN", "GRU", "LSTM")),
    ("Signal processing",
     "DFT and STFT import as real matmuls with constant cos/sin matrices (ONNX's trailing "
     "real/imaginary dim) over a static length. The window functions and MelWeightMatrix take "
     "their sizes as graph inputs in these tests: their output shape is the input's value.",
     op_in("DFT", "STFT", "BlackmanWindow", "HammingWindow", "HannWindow", "MelWeightMatrix")),
    ("Convolution, pooling, resizing: what is left",
     "Einsum's diagonal form (a repeated index within one operand, ii->i) is not handled.",
     op_in("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Pad", "Resize", "Upsample", "Mod", "TopK",
           "Clip", "Sign", "CumSum", "Einsum", "HardSwish", "HardSigmoid", "InstanceNormalization",
           "GroupNormalization")),
    ("Output shapes that depend on values",
     "The result's shape is known only from the data (NonZero, Unique, Compress, "
     "NonMaxSuppression), or the op's size operand is fed at run time (OneHot's depth as a "
     "float graph input, Range's bounds): kiln's shapes are symbolic expressions fixed at "
     "import time. Needs data-dependent dims (an upper bound plus a runtime size).",
     lambda op, reason: op if (op in ("NonZero", "Unique", "Compress", "NonMaxSuppression", "OneHot")
                               or "must be known at import time" in reason) else None),
    ("Not yet implemented",
     "Inference ops kiln could support with the existing machinery: RoiAlign needs a "
     "handler (a gather-based bilinear sampler like GridSample's); TfIdfVectorizer needs "
     "n-gram counting.",
     op_in("Pow", "ScatterND", "ReverseSequence", "Det", "LRN", "MaxUnpool",
           "GridSample", "RoiAlign", "TfIdfVectorizer")),
    ("Test data that contradicts the model",
     "The data set feeds a shape the model's declared input does not allow; kiln checks "
     "inputs against declared shapes, so the test cannot be run as written.",
     lambda op, reason: "declared shape" if "but the model declares" in reason else None),
    ("Semantics kiln defines differently on purpose",
     "The expected values truncate f32 to bf16; kiln rounds to nearest even, as PyTorch does.",
     lambda op, reason: "bf16 rounding" if "truncate f32 to bf16" in reason else None),
]

LINE = re.compile(r"^(test_\S+)\s+(PASS|FAIL|SKIP)\s*(.*)$")
NODE = re.compile(r"node (?:#\d+|'[^']*') \((\w+), opset \d+\): (.*)$")


def classify(lines):
    """category title -> subgroup -> [tests]; raises on a skip no rule explains."""
    groups = OrderedDict((title, OrderedDict()) for title, _, _ in CATEGORIES)
    unexplained = []
    summary = None
    for line in lines:
        if line.startswith("onnx node tests:"):
            summary = line.strip()
        m = LINE.match(line)
        if not m or m.group(2) != "SKIP":
            continue
        test, reason = m.group(1), m.group(3)
        n = NODE.search(reason)
        op, why = (n.group(1), n.group(2)) if n else (None, reason)
        for title, _, rule in CATEGORIES:
            sub = rule(op, why)
            if sub:
                groups[title].setdefault(sub, []).append(test)
                break
        else:
            unexplained.append(line.rstrip())
    if summary is None:
        raise SystemExit("conformance_skips: no 'onnx node tests:' line in the runner's output")
    if unexplained:
        raise SystemExit("conformance_skips: skips no rule in tools/conformance_skips.py explains:\n  " +
                         "\n  ".join(unexplained))
    return groups, summary


def render(groups, summary):
    out = ["# ONNX node tests kiln skips, and why",
           "",
           "Generated by `tools/conformance_skips.py --write` from `kiln onnx-conformance`; the "
           "CTest test `onnx_conformance_skips` fails when this file and the runner disagree.",
           "",
           f"Runner: `{summary}`",
           ""]
    for title, text, _ in CATEGORIES:
        subs = groups[title]
        if not subs:
            continue
        count = sum(len(t) for t in subs.values())
        out += [f"## {title} ({count} {'test' if count == 1 else 'tests'})", "", text, ""]
        for sub, tests in subs.items():
            out.append(f"- **{sub}** ({len(tests)}): " + ", ".join(sorted(tests)))
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE")
    mode.add_argument("--check", metavar="FILE")
    args = ap.parse_args()
    run = subprocess.run([args.kiln, "onnx-conformance"], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"conformance_skips: {args.kiln} onnx-conformance failed:\n{run.stderr}")
    text = render(*classify(run.stdout.splitlines()))
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
        return 0
    with open(args.check) as f:
        have = f.read()
    if have == text:
        print(f"conformance_skips: {args.check} matches the runner")
        return 0
    sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), text.splitlines(True), args.check, "runner"))
    print("\nconformance_skips: regenerate with tools/conformance_skips.py --kiln build/compiler/kiln --write",
          args.check)
    return 1


if __name__ == "__main__":
    sys.exit(main())
