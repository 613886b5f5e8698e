"""PyTorch's scaled_dot_product_attention at kiln_bench_attention's sizes, every backend
(flash, cuDNN, memory-efficient) timed with CUDA events (median of 20 after 5 warm-ups);
one JSON object per line, matching kiln_bench_attention's rows. Run on the GPU machine in
the same call as kiln_bench_attention (bench/RESULTS.md)."""
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def median_ms(fn, warmup=5, repeat=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def each_backend(call):
    out = {}
    for name, backend in BACKENDS.items():
        try:
            with sdpa_kernel([backend]):
                out[name] = median_ms(call)
        except RuntimeError as e:  # the backend does not take this form
            out[name] = None
    return out


def main():
    quick = "--quick" in sys.argv
    dev = torch.cuda.get_device_name()
    g = torch.Generator(device="cuda").manual_seed(0)
    sizes = [(1, 2048)] if quick else [(1, 512), (8, 512), (1, 2048), (4, 4096), (1, 16384)]
    for B, T in sizes:
        q, k, v = (torch.rand(B, 32, T, 128, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1 for _ in range(3))
        ms = each_backend(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        flops = 4.0 * B * 32 * T * T * 128 / 2
        row = {"kind": "prefill", "B": B, "T": T, "device": dev, "torch": True}
        row.update({f"{n}_TFLOPs": (flops / t / 1e9 if t else None) for n, t in ms.items()})
        best = min((t, n) for n, t in ms.items() if t)
        row.update({"ms": best[0], "best": best[1], "TFLOPs": flops / best[0] / 1e9})
        print(json.dumps(row), flush=True)
        del q, k, v
    batches, contexts = ([8], [8192]) if quick else ([1, 8, 64], [1024, 8192, 32768])
    for B in batches:
        for S in contexts:
            q = torch.rand(B, 32, 1, 128, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
            k, v = (torch.rand(B, 8, S, 128, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1 for _ in range(2))
            ms = each_backend(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
            # The same attention with k/v repeated to 32 heads beforehand (what models without
            # enable_gqa do): the repeat is not timed.
            kr, vr = k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1)
            rep = each_backend(lambda: F.scaled_dot_product_attention(q, kr, vr))
            del kr, vr
            cand = [(t, n) for n, t in ms.items() if t] + [(t, n + "_repeated_kv") for n, t in rep.items() if t]
            best = min(cand)
            bytes_ = 2.0 * B * 8 * S * 128 * 2
            print(json.dumps({"kind": "decode", "B": B, "context": S, "paged": False, "device": dev, "torch": True,
                              "ms": best[0], "best": best[1], "GBps": bytes_ / best[0] / 1e6}), flush=True)
            del q, k, v


if __name__ == "__main__":
    main()
