#!/usr/bin/env python3
"""torch.compile(backend="kiln") against inductor and eager on the backend's module set
(python/tests/torch_models.py): per module, the compile time (first call), the median time
per call, the largest difference from eager in f32, and what fell back to PyTorch. Prints a
Markdown table for bench/RESULTS.md. "decode" is one decode step (T = 1) of a gpt-fast-style
decoder whose static KV caches are buffers written in place (kiln: a cache_write on state).
A module whose package is missing (torchvision, transformers) is a row saying so.

usage: PYTHONPATH=build/python bench/torch/kiln_vs_inductor.py [--device cuda] [--dtype bf16]
       [--modules mlp,decoder,decode,gpt2,bert,llama,resnet] [--backends eager,inductor,kiln] [--iters 50]
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python", "tests"))
import kiln.torch_backend as kt  # noqa: E402
from torch_models import MLP, DecoderLayer, KVDecoder, hf_model, ids  # noqa: E402


def _resnet():
    import torchvision
    return torchvision.models.resnet18(num_classes=1000)


def _decoder_with_cache():
    m = KVDecoder(batch=4, max_seq=2048, dim=1024, heads=8, kv_heads=4, vocab=32000)
    m.k_cache.normal_()  # a cache holding earlier tokens: attention reads every row
    m.v_cache.normal_()
    return m


def module_set(device):
    """name -> (model factory, inputs): sizes like a small serving batch."""
    return {
        "mlp": (lambda: MLP(), lambda: (torch.randn(64, 32, device=device),)),
        "decoder": (lambda: DecoderLayer(dim=1024, heads=8, kv_heads=4, hidden=2816),
                    lambda: (torch.randn(4, 128, 1024, device=device),)),
        "gpt2": (lambda: hf_model("gpt2", "small"), lambda: (ids(32000, 4, 128, device),)),
        "bert": (lambda: hf_model("bert", "small"), lambda: (ids(32000, 4, 128, device),)),
        "llama": (lambda: hf_model("llama", "small"), lambda: (ids(32000, 4, 128, device),)),
        "decode": (_decoder_with_cache, lambda: (ids(32000, 4, 1, device), torch.tensor([1500], device=device))),
        "resnet": (_resnet, lambda: (torch.randn(8, 3, 224, 224, device=device),)),
    }


def first(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]


def timed(fn, inputs, iters, device):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    sync()
    t0 = time.perf_counter()
    out = first(fn(*inputs))
    sync()
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        fn(*inputs)
    times = []
    for _ in range(iters):
        sync()
        t = time.perf_counter()
        fn(*inputs)
        sync()
        times.append(time.perf_counter() - t)
    return out, compile_s, statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--modules", default="mlp,decoder,decode,gpt2,bert,llama,resnet")
    ap.add_argument("--backends", default="eager,inductor,kiln")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--mode", default="default", help="kiln's mode: default, reduce-overhead, max-autotune")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    sets = module_set(args.device)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), {args.dtype}, "
          f"torch {torch.__version__}, kiln mode {args.mode}\n")
    print("| module | eager ms | inductor ms | kiln ms | inductor compile s | kiln compile s | "
          "max abs diff vs eager f32 (eager / inductor / kiln) | kiln subgraphs | fallback |")
    print("|---|---|---|---|---|---|---|---|---|")
    backends = args.backends.split(",")
    nan = (float("nan"), float("nan"), "-")
    for name in args.modules.split(","):
        make, make_inputs = sets[name]
        torch.manual_seed(0)
        try:
            ref_model = make().eval().to(args.device)
        except ImportError as e:  # torchvision or transformers not installed here
            print(f"| {name} | skipped: {e} | | | | | | | |")
            continue
        inputs = make_inputs()
        cast = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
        with torch.no_grad():
            ref = first(ref_model(*inputs)).float()
            model = ref_model.to(dtype)
            row = {"eager": nan, "inductor": nan, "kiln": nan}
            for label in backends:
                torch._dynamo.reset()
                try:
                    fn = model if label == "eager" else torch.compile(
                        model, backend=label, options={"mode": args.mode} if label == "kiln" else None)
                    out, cs, ms = timed(fn, cast, args.iters, args.device)
                    row[label] = (ms, cs, (out.float() - ref).abs().max().item())
                except Exception as e:  # a failing backend is a row entry, not the end of the table
                    row[label] = (float("nan"), float("nan"), f"error: {str(e).splitlines()[0][:80]}")
            summ = kt.fallback_summary()[-1] if "kiln" in backends and kt.fallback_summary() else \
                {"kiln_subgraphs": [], "fallback": {}}
        diffs = " / ".join(f"{row[k][2]:.3g}" if isinstance(row[k][2], float) else row[k][2] for k in row)
        torch._dynamo.reset()
        print(f"| {name} | {row['eager'][0]:.3f} | {row['inductor'][0]:.3f} | {row['kiln'][0]:.3f} | "
              f"{row['inductor'][1]:.1f} | {row['kiln'][1]:.1f} | {diffs} | "
              f"{len(summ['kiln_subgraphs'])} ({sum(s['nodes'] for s in summ['kiln_subgraphs'])} nodes) | "
              f"{', '.join(sorted(summ['fallback'])) or '-'} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
