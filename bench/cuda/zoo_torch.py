#!/usr/bin/env python3
"""The model zoo (test/onnx/zoo, issue 16) on the GPU: kiln (kiln_bench_zoo --device cuda)
against PyTorch eager and torch.compile on the same architectures, at each model's larger
committed size set, in f32 and bf16. The PyTorch modules come from tools/zoo/make_zoo.py's
builders (random weights: latency does not depend on them); kiln reads the committed ONNX
files (bf16: kiln's --float bf16, PyTorch's module.to(torch.bfloat16)). Microseconds per
call, median over interleaved rounds [min, max]; each round is the mean over calls lasting
at least --round-ms, up to the device having finished them.

  python3 bench/cuda/zoo_torch.py --kiln-bench BUILD/bench/cpu/kiln_bench_zoo [--rounds 3]
      [--round-ms 100] [--models gpt2 bert] [--floats f32,bf16]
Needs torch, transformers, torchvision, numpy, onnx and onnxruntime (the GPU machine has them).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "zoo"))
import make_zoo  # noqa: E402

ZOO = os.path.join(ROOT, "test", "onnx", "zoo")
KILN_MODES = ["default", "reduce-overhead"]
TORCH_MODES = ["eager", "compile", "compile-ro"]  # torch.compile default and mode="reduce-overhead"


def kiln_round(bench, models, mode, float_type, round_ms):
    cmd = [bench, "--zoo", ZOO, "--device", "cuda", "--mode", mode, "--rounds", "1", "--round-ms", str(round_ms),
           "--models", ",".join(models)]
    if float_type != "f32":
        cmd += ["--float", float_type]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kiln_bench_zoo failed: {out.stderr.strip()}")
    res = {}
    for line in out.stdout.splitlines():
        if line.startswith("KILN_ZOO "):
            r = json.loads(line.split(" ", 1)[1])
            res[r["model"]] = r["round_us"][0]
    return res


def torch_callable(model, mode):
    if mode == "eager":
        return model.module
    return torch.compile(model.module, mode="reduce-overhead" if mode == "compile-ro" else "default", dynamic=False)


def time_round(fn, args, round_ms):
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn(*args)
        calls += 1
        if (time.perf_counter() - t0) * 1e3 >= round_ms:
            break
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln-bench", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-ms", type=float, default=100)
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--floats", default="f32,bf16")
    a = ap.parse_args()
    manifest = json.load(open(os.path.join(ZOO, "manifest.json")))
    enabled = {e["name"]: e for e in manifest["models"] if e["status"] == "enabled"}
    builders = {b.__name__: b for b in make_zoo.BUILDERS}
    names = [n for n in (a.models or list(enabled)) if n in enabled]
    torch.manual_seed(0)
    cols = ["kiln " + m for m in KILN_MODES] + ["torch " + m for m in TORCH_MODES]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; microseconds per call, median [min, max] of {a.rounds} rounds")
    print("| model | size set | float | " + " | ".join(cols) + " | best kiln / best torch |")
    print("|---|---|---|" + "---:|" * (len(cols) + 1), flush=True)
    for float_type in a.floats.split(","):
        dtype = torch.float32 if float_type == "f32" else torch.bfloat16
        for n in names:  # one model at a time, its row printed when done
            m = builders[n]()
            m.module = m.module.to(device="cuda", dtype=dtype).eval()
            ss = enabled[n]["size_sets"][-1]
            args = []
            for inp in enabled[n]["inputs"]:
                x = torch.from_numpy(np.load(os.path.join(ZOO, ss["inputs"][inp["name"]]))).cuda()
                args.append(x.to(dtype) if x.is_floating_point() else x)
            sides = {}
            for mode in TORCH_MODES:
                fn = torch_callable(m, mode)
                with torch.inference_mode():
                    for _ in range(3):  # compiles, captures, warms up
                        fn(*args)
                torch.cuda.synchronize()
                sides[mode] = fn
            results = {}
            for r in range(a.rounds):
                for mode in KILN_MODES:
                    for _, us in kiln_round(a.kiln_bench, [n], mode, float_type, a.round_ms).items():
                        results.setdefault("kiln " + mode, []).append(us)
                with torch.inference_mode():
                    for mode, fn in sides.items():
                        results.setdefault("torch " + mode, []).append(time_round(fn, args, a.round_ms))
            cells, med = [], {}
            for c in cols:
                v = results[c]
                med[c] = statistics.median(v)
                cells.append(f"{med[c]:.0f} [{min(v):.0f}, {max(v):.0f}]")
            bk = min(med[c] for c in cols if c.startswith("kiln"))
            bt = min(med[c] for c in cols if c.startswith("torch"))
            print(f"| {n} | {ss['name']} | {float_type} | " + " | ".join(cells) + f" | {bk / bt:.2f}x |", flush=True)
            del sides
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
