#!/usr/bin/env python3
"""kiln's CPU backend against onnxruntime's CPU execution provider on the model zoo
(test/onnx/zoo, issue 16): the same committed inputs, the same thread counts (1 and all
cores), interleaved rounds. Each round runs kiln (kiln_bench_zoo, one process per thread
count, KILN_CPU_THREADS set) and then onnxruntime (bench/cpu/zoo_ort.py's sessions, kept
across rounds in this process) over every enabled model; the table gives each side's median
over rounds, its range, and kiln / onnxruntime, then the median and range of each round's own
ratio (both sides of a round run seconds apart, so a load that drifts over minutes moves
them alike), plus the geometric means.

  python3 bench/cpu/zoo_compare.py --kiln-bench BUILD/bench/cpu/kiln_bench_zoo [--rounds 5]
      [--round-ms 200] [--threads 1,16] [--models gpt2 bert] [--clock wall|cpu]
--clock cpu times both sides in process CPU time (1 thread only: a loaded machine's fair
measure of a call's cost; with more threads CPU time sums the threads and means nothing here).
Needs numpy and onnxruntime (the GPU machine's Python has both; here: /work/zoo-venv).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_ort  # noqa: E402  (session, time_round, ZOO)


def kiln_round(bench, threads, models, round_ms, size_set, clock):
    env = dict(os.environ, KILN_CPU_THREADS=str(threads))
    cmd = [bench, "--zoo", zoo_ort.ZOO, "--rounds", "1", "--round-ms", str(round_ms), "--models", ",".join(models),
           "--clock", clock]
    if size_set:
        cmd += ["--size-set", size_set]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kiln_bench_zoo failed: {out.stderr.strip()}")
    res, machine = {}, ""
    for line in out.stdout.splitlines():
        if line.startswith("KILN_ZOO "):
            r = json.loads(line.split(" ", 1)[1])
            res[r["model"]] = (r["size_set"], r["round_us"][0])
            machine = r["machine"]
    return res, machine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln-bench", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-ms", type=float, default=200)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--size-set", help="the size set's name (default: each model's last)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = ap.parse_args()
    manifest = json.load(open(os.path.join(zoo_ort.ZOO, "manifest.json")))
    entries = [m for m in manifest["models"] if m["status"] == "enabled" and (not a.models or m["name"] in a.models)]
    names = [m["name"] for m in entries]
    threads = [int(t) for t in a.threads.split(",")]
    if a.clock == "cpu" and threads != [1]:
        sys.exit("--clock cpu needs --threads 1")
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    feeds, sessions = {}, {}
    for m in entries:
        sets = {s["name"]: s for s in m["size_sets"]}
        s = sets.get(a.size_set, m["size_sets"][-1])
        feeds[m["name"]] = (s["name"], {k: np.load(os.path.join(zoo_ort.ZOO, v)) for k, v in s["inputs"].items()})
        for t in threads:
            sessions[m["name"], t] = zoo_ort.session(os.path.join(zoo_ort.ZOO, m["model"]), t)
            sessions[m["name"], t].run(None, feeds[m["name"]][1])
    kiln = {(n, t): [] for n in names for t in threads}
    ort = {(n, t): [] for n in names for t in threads}
    for _ in range(a.rounds):
        for t in threads:
            res, machine = kiln_round(a.kiln_bench, t, names, a.round_ms, a.size_set, a.clock)
            for n, (size_set, us) in res.items():
                if size_set != feeds[n][0]:
                    sys.exit(f"{n}: kiln ran size set {size_set}, onnxruntime {feeds[n][0]}")
                kiln[n, t].append(us)
            for n in names:
                ort[n, t].append(zoo_ort.time_round(sessions[n, t], feeds[n][1], a.round_ms / 1e3, clock) * 1e6)
    print(f"kiln's CPU: {machine}")
    print(f"{os.cpu_count()} cores; {a.rounds} interleaved rounds of {a.round_ms:.0f} ms ({a.clock} clock) per model and side; "
          "microseconds per call, median [min, max] over rounds\n")
    # Each round's own ratio too (kiln's and onnxruntime's times of the same round, seconds
    # apart): a machine whose load drifts over minutes moves both sides of a round alike.
    print("| model | size set | threads | kiln | onnxruntime | kiln / onnxruntime | per round |")
    print("|---|---|---:|---:|---:|---:|---:|")
    logs = {t: [] for t in threads}
    round_logs = {t: [] for t in threads}
    for n in names:
        for t in threads:
            k, o = statistics.median(kiln[n, t]), statistics.median(ort[n, t])
            r = [a / b for a, b in zip(kiln[n, t], ort[n, t])]
            logs[t].append(math.log(k / o))
            round_logs[t].append(math.log(statistics.median(r)))
            print(f"| {n} | {feeds[n][0]} | {t} | {k:.0f} [{min(kiln[n, t]):.0f}, {max(kiln[n, t]):.0f}] | "
                  f"{o:.0f} [{min(ort[n, t]):.0f}, {max(ort[n, t]):.0f}] | {k / o:.2f}x | "
                  f"{statistics.median(r):.2f}x [{min(r):.2f}, {max(r):.2f}] |")
    for t in threads:
        print(f"\ngeometric mean of kiln / onnxruntime at {t} thread(s): {math.exp(statistics.mean(logs[t])):.2f}x "
              f"(of the per-round medians: {math.exp(statistics.mean(round_logs[t])):.2f}x)")


if __name__ == "__main__":
    main()
