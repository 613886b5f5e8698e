#!/usr/bin/env python3
"""Runs every enabled zoo model (test/onnx/zoo) through the kiln CLI on one device, as the
GPU run of issue 16 needs it; CI's zoo_test covers the reference evaluator and the CPU.

For each model and committed size set:
  - f32, every mode given: `kiln run --check` (the compiled outputs against the reference
    evaluator within their dtype's tolerance) on the committed inputs;
  - bf16 (`--float bf16`, default mode): the device's and the reference evaluator's outputs
    against onnxruntime's committed f32 outputs, as the largest error over the largest
    output magnitude; the device passes where its error is at most twice the reference
    evaluator's plus 0.5%.
Prints one table and exits 1 on any failure. Needs numpy.

  python3 tools/zoo/zoo_check.py --kiln build/compiler/kiln --device cuda
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(REPO, "test", "onnx", "zoo")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def relative_error(outputs_dir, expected):
    """max |got - want| / max |want| over every output."""
    worst = 0.0
    for name, path in expected.items():
        want = np.load(os.path.join(ZOO, path)).astype(np.float64)
        got = np.load(os.path.join(outputs_dir, name + ".npy")).astype(np.float64)
        if got.shape != want.shape:
            raise ValueError(f"{name}: shape {got.shape}, onnxruntime's {want.shape}")
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", required=True, help="the kiln CLI")
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--modes", default="default,reduce-overhead,max-autotune")
    ap.add_argument("--models", default="", help="comma-separated names (default: every enabled model)")
    args = ap.parse_args()
    models = [m for m in json.load(open(os.path.join(ZOO, "manifest.json")))["models"]
              if m["status"] == "enabled"]
    if args.models:
        models = [m for m in models if m["name"] in args.models.split(",")]
    modes = args.modes.split(",")
    failures = 0
    print(f"| model | size set | f32 --check ({', '.join(modes)}) | bf16 {args.device} | bf16 reference | bf16 |")
    print("|---|---|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            onnx = os.path.join(ZOO, m["model"])
            for s in m["size_sets"]:
                inputs = os.path.join(tmp, "in")
                shutil.rmtree(inputs, ignore_errors=True)
                os.makedirs(inputs)
                for name, path in s["inputs"].items():
                    shutil.copy(os.path.join(ZOO, path), os.path.join(inputs, name + ".npy"))
                checks = []
                for mode in modes:
                    rc, out = run([args.kiln, "run", onnx, "--device", args.device, "--mode", mode,
                                   "--inputs", inputs, "--check"])
                    checks.append("ok" if rc == 0 else "FAIL")
                    if rc != 0:
                        failures += 1
                        print(f"{m['name']} {s['name']} {mode}: {out.splitlines()[-1] if out else rc}",
                              file=sys.stderr)
                errors = {}
                for device in (args.device, "reference"):
                    outs = os.path.join(tmp, "out_" + device)
                    shutil.rmtree(outs, ignore_errors=True)
                    rc, out = run([args.kiln, "run", onnx, "--device", device, "--float", "bf16",
                                   "--inputs", inputs, "--save-outputs", outs])
                    errors[device] = relative_error(outs, s["outputs"]) if rc == 0 else None
                    if rc != 0:
                        print(f"{m['name']} {s['name']} bf16 {device}: {out}", file=sys.stderr)
                dev, ref = errors[args.device], errors["reference"]
                ok = dev is not None and ref is not None and dev <= 2 * ref + 0.005
                failures += 0 if ok else 1
                fmt = lambda e: "error" if e is None else f"{100 * e:.2f}%"
                print(f"| {m['name']} | {s['name']} | {' '.join(checks)} | {fmt(dev)} | {fmt(ref)} | "
                      f"{'ok' if ok else 'FAIL'} |")
    print(f"\n{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
