# The A/B table of bench/ab/cuda_ab.sh's log: per workload and mode, each round's time for
# build A and build B (us per call, back to back), B's best over A's best as a change in
# percent (negative: B faster), and the workloads where B is slower by more than 2%.
# With --cpu, the same of bench/ab/cpu_ab.sh's log (the compiled-ms column of each round).
import json
import re
import sys


def cpu_runs(path):
    runs = {}  # (name, "cpu") -> {"A": [ms...], "B": [ms...]}
    for line in open(path):
        m = re.match(r"([AB])(\d+)\| (.*)", line)
        if not m:
            continue
        cells = [c.strip() for c in m.group(3).split("|")]
        if len(cells) < 2 or not re.match(r"^[0-9.]+$", cells[1]):
            continue  # the header and its rule
        runs.setdefault((cells[0], "cpu"), {"A": [], "B": []})[m.group(1)].append(float(cells[1]))
    return runs, {}


def cuda_runs(path):
    runs = {}  # (name, mode) -> {"A": [us...], "B": [us...]}
    copy = {}
    for line in open(path):
        m = re.match(r"KILN_([AB])(\d+)_(RESULT|COPY) (.*)", line)
        if not m:
            continue
        build, rnd, tag, body = m.group(1), int(m.group(2)), m.group(3), json.loads(m.group(4))
        if tag == "COPY":
            copy.setdefault(build, []).append(body["copy_gbps"])
            continue
        runs.setdefault((body["name"], body["mode"]), {"A": [], "B": []})[build].append(body["us"])
    return runs, copy


def main():
    cpu = sys.argv[1] == "--cpu"
    runs, copy = (cpu_runs if cpu else cuda_runs)(sys.argv[-1])
    unit = "ms" if cpu else "us"
    print(f"| workload | mode | A, {unit} per round | B, {unit} per round | best B / best A |")
    print("|---|---|---|---|---:|")
    slower = []
    for (name, mode), r in runs.items():
        a, b = r["A"], r["B"]
        change = 100.0 * (min(b) / min(a) - 1) if a and b else float("nan")
        if change > 2:
            slower.append(f"{name} {mode} ({change:+.1f}%)")
        fmt = lambda v: " / ".join(f"{x:.3f}" if cpu else f"{x:.1f}" for x in v)
        print(f"| {name} | {mode} | {fmt(a)} | {fmt(b)} | {change:+.1f}% |")
    for build in ("A", "B"):
        if build in copy:
            print(f"\ncopy bandwidth, build {build}: " + " / ".join(f"{c:.0f}" for c in copy[build]) + " GB/s")
    print("\nslower by more than 2%: " + (", ".join(slower) if slower else "none"))


if __name__ == "__main__":
    main()
