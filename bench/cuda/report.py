# Turns a run.sh log (KILN_* and TORCH_RESULT lines) into the markdown table of
# bench/RESULTS.md: per workload, kiln's time per mode, PyTorch's per mode, the ratio of
# the best PyTorch mode to the best kiln mode (> 1: kiln faster), bandwidth as a share of
# the measured 1 GiB copy bandwidth and of a copy of the workload's own size, TFLOP/s,
# launches per call, compile times, and the best modes' times for one synchronized call.
import json
import sys


def lines(path, tag):
    for line in open(path):
        if line.startswith(tag + " "):
            yield json.loads(line[len(tag) + 1:])


def main():
    log = sys.argv[1]
    copy = next(lines(log, "KILN_COPY"), {"copy_gbps": float("nan"), "device": "?"})
    kiln, torch = {}, {}
    for r in lines(log, "KILN_RESULT"):
        kiln.setdefault(r["name"], {})[r["mode"]] = r
    for r in lines(log, "TORCH_RESULT"):
        torch.setdefault(r["name"], {})[r["mode"]] = r
    cold = {r["name"]: r for r in lines(log, "KILN_COLD")}
    warm = {r["name"]: r for r in lines(log, "KILN_WARM")}
    kmodes = ["default", "reduce-overhead", "max-autotune"]
    tmodes = ["eager", "default", "reduce-overhead", "max-autotune"]
    print(f"Device: {copy['device']}; measured device-to-device copy {copy['copy_gbps']:.0f} GB/s (read + write).\n")
    print("Times in microseconds per call: back-to-back calls between CUDA events (median over repeats); the "
          "overhead row is host time per call. The last column times one call between two events and a wait "
          "(it adds the host's time from the event to the call's first launch).\n")
    print("| workload | kiln default | kiln reduce-overhead | kiln max-autotune | torch eager | torch.compile | "
          "torch reduce-overhead | torch max-autotune | best torch / best kiln | kiln GB/s (% of 1 GiB copy, "
          "% of same-size copy) | kiln TFLOP/s | "
          "launches | kiln compile cold / warm ms | torch compile ms | one synchronized call: best kiln / best torch |")
    print("|" + "---|" * 15)
    for name, k in kiln.items():
        t = torch.get(name, {})
        kt = [k[m]["us"] if m in k else None for m in kmodes]
        tt = [t[m]["us"] if m in t and "us" in t[m] else None for m in tmodes]
        best_k = min(x for x in kt if x is not None)
        best_t = min((x for x in tt if x is not None), default=None)
        best_km = min((m for m in kmodes if m in k), key=lambda m: k[m]["us"])
        kb = k[best_km]
        fmt = lambda x: "-" if x is None else f"{x:.1f}"
        ratio = "-" if best_t is None else f"{best_t / best_k:.2f}"
        bw = "-"
        if kb["kind"] in ("memory", "model"):
            same = f", {kb['pct_same_size_copy']:.0f}%" if kb.get("pct_same_size_copy") else ""
            bw = f"{kb['gbps']:.0f} ({kb['pct_copy']:.0f}%{same})"
        tf = f"{kb['tflops']:.0f}" if kb["tflops"] > 0 else "-"
        c, w = cold.get(name, {}), warm.get(name, {})
        comp = f"{c.get('compile_ms', float('nan')):.0f} / {w.get('compile_ms', float('nan')):.0f}"
        tc = t.get("default", {}).get("compile_ms")
        sync = lambda rs: min((r["sync_us"] for r in rs if r.get("sync_us")), default=None)
        one = f"{fmt(sync(k.values()))} / {fmt(sync(t.values()))}"
        print(f"| {name} | {' | '.join(fmt(x) for x in kt)} | {' | '.join(fmt(x) for x in tt)} | {ratio} | {bw} | "
              f"{tf} | {kb['launches']} | {comp} | {fmt(tc)} | {one} |")


if __name__ == "__main__":
    main()
