# The A/B table of bench/ab/cuda_ab.sh's log: per workload and mode, each round's time for
# build A and build B (us per call, back to back), B's best over A's best as a change in
# percent (negative: B faster), and the workloads where B is slower by more than 2%.
import json
import re
import sys


def main():
    runs = {}  # (name, mode) -> {"A": [us...], "B": [us...]}
    copy = {}
    for line in open(sys.argv[1]):
        m = re.match(r"KILN_([AB])(\d+)_(RESULT|COPY) (.*)", line)
        if not m:
            continue
        build, rnd, tag, body = m.group(1), int(m.group(2)), m.group(3), json.loads(m.group(4))
        if tag == "COPY":
            copy.setdefault(build, []).append(body["copy_gbps"])
            continue
        runs.setdefault((body["name"], body["mode"]), {"A": [], "B": []})[build].append(body["us"])
    print("| workload | mode | A, us per round | B, us per round | best B / best A |")
    print("|---|---|---|---|---:|")
    slower = []
    for (name, mode), r in runs.items():
        a, b = r["A"], r["B"]
        change = 100.0 * (min(b) / min(a) - 1) if a and b else float("nan")
        if change > 2:
            slower.append(f"{name} {mode} ({change:+.1f}%)")
        fmt = lambda v: " / ".join(f"{x:.1f}" for x in v)
        print(f"| {name} | {mode} | {fmt(a)} | {fmt(b)} | {change:+.1f}% |")
    for build in ("A", "B"):
        if build in copy:
            print(f"\ncopy bandwidth, build {build}: " + " / ".join(f"{c:.0f}" for c in copy[build]) + " GB/s")
    print("\nslower by more than 2%: " + (", ".join(slower) if slower else "none"))


if __name__ == "__main__":
    main()
