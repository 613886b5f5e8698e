# PyTorch baselines for the kiln CUDA workloads (workloads.py), in the same run on the same
# GPU: eager, torch.compile default, reduce-overhead and max-autotune. Prints one
# "TORCH_RESULT {json}" line per workload and mode.
#   python3 torch_bench.py [--reps N] [--modes eager,default,...] [--autotune NAME,NAME]
# max-autotune compiles for minutes per GEMM shape, so it runs only for the workloads named
# by --autotune (default: all of them).
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workloads import workloads  # noqa: E402

BF16 = torch.bfloat16


def rms_norm(h, w, eps=1e-6):
    hf = h.float()
    return (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def decoder(x, cos, sin, attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down):
    b, t, d = x.shape
    h = rms_norm(x, attn_norm)
    q = F.linear(h, wq).view(b, t, 16, 128).transpose(1, 2)
    k = F.linear(h, wk).view(b, t, 16, 128).transpose(1, 2)
    v = F.linear(h, wv).view(b, t, 16, 128).transpose(1, 2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    a = a.transpose(1, 2).reshape(b, t, d)
    x = x + F.linear(a, wo)
    m = rms_norm(x, mlp_norm)
    return x + F.linear(F.silu(F.linear(m, w_gate)) * F.linear(m, w_up), w_down)


def make(w):
    """The workload's function and its arguments (random, weights scaled by 1/sqrt(fan-in))."""
    name, bind = w["name"], w["bind"]
    g = torch.Generator(device="cuda").manual_seed(2026)

    def rnd(*shape, dtype=BF16, scale=1.0):
        return ((torch.rand(*shape, device="cuda", generator=g) * 2 - 1) * scale).to(dtype)

    if name.startswith("gelu_ew"):
        dt = torch.float32 if "f32" in name else BF16
        return (lambda x: F.gelu(x * 1.5 + 0.25) * torch.sigmoid(x)), [rnd(bind["N"], dtype=dt)]
    if name.startswith("rms_norm"):
        r = bind["R"]
        return (lambda x, res, w: (lambda h: (h, rms_norm(h, w)))(x + res)), [rnd(r, 4096), rnd(r, 4096), rnd(4096)]
    if name.startswith("softmax"):
        return (lambda x: torch.softmax(x, -1)), [rnd(bind["R"], 2048)]
    if name.startswith("layer_norm"):
        r = bind["R"]
        return (lambda x, w, b: F.gelu(F.layer_norm(x, (4096,), w, b, 1e-5), approximate="tanh")), \
            [rnd(r, 4096), rnd(4096), rnd(4096)]
    if name.startswith("linear"):
        t = bind["T"]
        return (lambda x, w, b: F.gelu(F.linear(x, w, b), approximate="tanh")), \
            [rnd(t, 4096), rnd(4096, 4096, scale=1 / 64), rnd(4096)]
    if name.startswith("llama_mlp"):
        t = bind["T"]
        return (lambda x, wg, wu, wd: F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), wd)), \
            [rnd(t, 4096), rnd(11008, 4096, scale=1 / 64), rnd(11008, 4096, scale=1 / 64),
             rnd(4096, 11008, scale=1 / 105)]
    if name.startswith("overhead"):
        return (lambda x: torch.relu(x * 2 + 1)), [rnd(1024, dtype=torch.float32)]
    if name.startswith("decoder"):
        t, d, f = bind["T"], 2048, 5632
        s = 1 / math.sqrt(d)
        return decoder, [rnd(1, t, d), rnd(t, 128), rnd(t, 128), rnd(d), rnd(d, d, scale=s), rnd(d, d, scale=s),
                         rnd(d, d, scale=s), rnd(d, d, scale=s), rnd(d), rnd(f, d, scale=s), rnd(f, d, scale=s),
                         rnd(d, f, scale=1 / math.sqrt(f))]
    raise ValueError(name)


def time_gpu(fn, args, reps):
    """GPU time per call as bench_cuda.cc's time_gpu measures it: (back to back, synchronized).

    Back to back: K calls (about 1 ms of work) between two CUDA events, median over repeats.
    Synchronized: one call between two events, then a wait, median over `reps`.
    """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(calls):
        start.record()
        for _ in range(calls):
            fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / calls

    def median(t):
        return sorted(t)[len(t) // 2]

    sync_us = median([timed(1) for _ in range(reps)])
    k = min(100, max(3, int(1000 / sync_us)))
    return median([timed(k) for _ in range(max(5, reps // 3))]), sync_us


def time_host(fn, args, n=2000):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    us = (time.perf_counter() - t0) * 1e6 / n
    torch.cuda.synchronize()
    return us


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--modes", default="eager,default,reduce-overhead,max-autotune")
    p.add_argument("--autotune", default="")
    p.add_argument("--only", default="")
    a = p.parse_args()
    autotune = set(a.autotune.split(",")) if a.autotune else None
    torch.backends.cuda.matmul.allow_tf32 = False
    for w in workloads():
        if a.only and w["name"] != a.only:
            continue
        fn, args = make(w)
        for mode in a.modes.split(","):
            if mode == "max-autotune" and autotune is not None and w["name"] not in autotune:
                print("TORCH_RESULT " + json.dumps(dict(name=w["name"], mode=mode, skipped="not in --autotune")))
                continue
            torch._dynamo.reset()
            f = fn if mode == "eager" else torch.compile(fn, mode=None if mode == "default" else mode)
            t0 = time.perf_counter()
            with torch.no_grad():
                f(*args)
                torch.cuda.synchronize()
                compile_ms = (time.perf_counter() - t0) * 1e3
                for _ in range(3):
                    f(*args)
                if w["kind"] == "overhead":
                    us, sync_us = time_host(f, args), 0.0
                else:
                    us, sync_us = time_gpu(f, args, a.reps)
            r = dict(name=w["name"], mode=mode, us=us, sync_us=sync_us, compile_ms=compile_ms,
                     gbps=w["bytes"] / (us * 1e-6) / 1e9, tflops=w["flops"] / (us * 1e-6) / 1e12)
            print("TORCH_RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
