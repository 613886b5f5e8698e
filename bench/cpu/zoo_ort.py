#!/usr/bin/env python3
"""onnxruntime's CPU latency on the model zoo (test/onnx/zoo), the baseline a kiln CPU
benchmark of the same models sits beside (issue 16).

Each model runs on its committed inputs of one size set (default: the manifest's last, the
larger) in onnxruntime's CPU execution provider with all graph optimizations, at 1 thread and
at all cores (intra-op threads; inter-op 1, sequential execution). Rounds are interleaved:
every round times every model at every thread count once, so drift on a shared machine lands
on all of them alike. A round's time is the mean per call over back-to-back calls lasting at
least --round-ms; the line gives the median over rounds and their range. One JSON line per model.

  /work/zoo-venv/bin/python bench/cpu/zoo_ort.py [--rounds 7] [--round-ms 200] [--models gpt2 bert]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort

ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "test", "onnx", "zoo")


def session(path, threads):
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def time_round(sess, feeds, round_s, clock=time.perf_counter):
    """Mean seconds per call over back-to-back calls lasting at least round_s on `clock`
    (time.process_time: the process's CPU time, for 1 thread on a busy machine)."""
    calls, start = 0, clock()
    while True:
        sess.run(None, feeds)
        calls += 1
        elapsed = clock() - start
        if elapsed >= round_s:
            return elapsed / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-ms", type=float, default=200)
    ap.add_argument("--models", nargs="*", help="only these models (default: all in the manifest)")
    ap.add_argument("--size-set", help="the size set's name (default: each model's last)")
    a = ap.parse_args()
    manifest = json.load(open(os.path.join(ZOO, "manifest.json")))
    thread_counts = sorted({1, os.cpu_count() or 1})
    runs = []
    for m in manifest["models"]:
        if a.models and m["name"] not in a.models:
            continue
        sets = {s["name"]: s for s in m["size_sets"]}
        s = sets[a.size_set] if a.size_set else m["size_sets"][-1]
        feeds = {n: np.load(os.path.join(ZOO, rel)) for n, rel in s["inputs"].items()}
        path = os.path.join(ZOO, m["model"])
        sessions = {t: session(path, t) for t in thread_counts}
        for sess in sessions.values():  # warm-up: first-call allocations and arena growth
            for _ in range(3):
                sess.run(None, feeds)
        runs.append({"model": m, "set": s, "feeds": feeds, "sessions": sessions, "times": {t: [] for t in thread_counts}})
    for _ in range(a.rounds):
        for r in runs:
            for t, sess in r["sessions"].items():
                r["times"][t].append(time_round(sess, r["feeds"], a.round_ms / 1e3))
    for r in runs:
        line = {"model": r["model"]["name"], "size_set": r["set"]["name"], "bindings": r["set"]["bindings"],
                "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider, ORT_ENABLE_ALL",
                "rounds": a.rounds, "cpus": os.cpu_count()}
        for t, ts in r["times"].items():
            us = [x * 1e6 for x in ts]
            line[f"threads_{t}"] = {"median_us": round(statistics.median(us), 1), "min_us": round(min(us), 1),
                                    "max_us": round(max(us), 1)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
