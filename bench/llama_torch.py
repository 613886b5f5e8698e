#!/usr/bin/env python3
"""The PyTorch baseline for `kiln generate` (issue 18): a gpt-fast-style Llama-family model
(Llama 3, Qwen2 QKV bias, Mistral sliding window, tied embeddings) reading the same HF
checkpoint directory (config.json + *.safetensors, sharded or not), with a static KV cache
[B, KVH, S, D] per layer, timed eager and under torch.compile (default mode for prefill,
reduce-overhead for decode), as kiln generate times itself.

  # a random-weight checkpoint of a preset, written once, read by both:
  python bench/llama_torch.py --init /tmp/l1b --preset llama3.2-1b
  python bench/llama_torch.py --checkpoint /tmp/l1b --batch 1 --prompt-len 1024 --new-tokens 128
  kiln generate --checkpoint /tmp/l1b --batch 1 --prompt-len 1024 --new-tokens 128 --device cuda \
      --mode reduce-overhead --fixed-len --prompts /tmp/prompts.npy --logits-out /tmp/kiln_logits.npy > kiln.txt
  python bench/llama_torch.py --checkpoint /tmp/l1b --prompts /tmp/prompts.npy --new-tokens 32 \
      --compare kiln.txt --compare-logits /tmp/kiln_logits.npy

  # timing only, random weights drawn on the GPU (no 16 GB checkpoint for the 8B shapes), several shapes:
  python bench/llama_torch.py --random --preset llama3-8b --modes compile --batch 1,8 --prompt-len 1024,8192

--prompts writes the prompts (i32 [B, T], .npy) when the file does not exist, else reads them,
so both tools decode the same batch; --compare checks that kiln's greedy tokens (the
`tokens[b]` lines it prints) equal the eager model's, --compare-logits its prefill logits.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=96, vocab_size=256),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                        rope_theta=500000.0, tie_word_embeddings=True,
                        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "llama3-8b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, intermediate_size=14336, vocab_size=128256, rope_theta=500000.0),
}
ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
             "I32": torch.int32}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


# ---- safetensors, read and written directly (no dependency beyond torch) ------------------
def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = bytearray(data[8 + n + b:8 + n + end])
        t = torch.frombuffer(buf, dtype=ST_DTYPES[e["dtype"]]) if buf else torch.empty(0, dtype=ST_DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(path + ".tmp", path)


def load_checkpoint(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    weights = {}
    for f in files:
        weights.update(read_safetensors(os.path.join(d, f)))
    return weights


# ---- the model -------------------------------------------------------------------------------
class Config:
    def __init__(self, j):
        self.dim = j["hidden_size"]
        self.layers = j["num_hidden_layers"]
        self.heads = j["num_attention_heads"]
        self.kv_heads = j.get("num_key_value_heads") or self.heads
        self.head_dim = j.get("head_dim") or self.dim // self.heads
        self.ffn = j["intermediate_size"]
        self.vocab = j["vocab_size"]
        rope = j.get("rope_parameters") or {}
        self.rope_theta = rope.get("rope_theta", j.get("rope_theta", 10000.0))
        self.rope_scaling = rope if rope.get("rope_type") == "llama3" else j.get("rope_scaling")
        self.eps = j.get("rms_norm_eps", 1e-5)
        self.tied = j.get("tie_word_embeddings", False)
        self.qkv_bias = j["model_type"] == "qwen2"
        self.window = (j.get("sliding_window") or 0) if j["model_type"] == "mistral" else 0
        self.dtype = TORCH_DTYPES[j.get("torch_dtype", j.get("dtype", "bfloat16"))]


def inv_freq(c, device):
    # As transformers computes it (f32), with Llama 3's scaling.
    f = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim))
    s = c.rope_scaling
    if s and s.get("rope_type", s.get("type")) == "llama3":
        old = s["original_max_position_embeddings"]
        low, high, factor = s["low_freq_factor"], s["high_freq_factor"], s["factor"]
        wavelen = 2 * math.pi / f
        scaled = torch.where(wavelen > old / low, f / factor, f)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        f = torch.where(medium, smoothed, scaled)
    return f.to(device)


def rms_norm(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Llama(torch.nn.Module):
    def __init__(self, c, w, batch, max_seq, device):
        super().__init__()
        self.c = c
        # Weights and caches are registered buffers, so that torch.compile treats them as static
        # (CUDA graphs of reduce-overhead may then update the caches in place), as gpt-fast does.
        for name, t in w.items():
            if not (c.tied and name == "lm_head.weight"):
                self.register_buffer(name.replace(".", "__"), t.to(device=device, dtype=c.dtype))
        self.register_buffer("inv_freq", inv_freq(c, device))
        shape = (batch, c.kv_heads, max_seq, c.head_dim)
        for i in range(c.layers):
            self.register_buffer(f"k_cache_{i}", torch.zeros(shape, dtype=c.dtype, device=device))
            self.register_buffer(f"v_cache_{i}", torch.zeros(shape, dtype=c.dtype, device=device))

    def w(self, name):
        return getattr(self, name.replace(".", "__"), None)

    def weight_bytes(self):
        return sum(t.numel() * t.element_size() for n, t in self.named_buffers() if "cache" not in n)

    def forward(self, tokens, start, lens):
        """tokens [B, T] (prompts padded to T, or T = 1 when decoding), start [B] (cache row of
        the first token), lens [B] (real tokens per row). Returns the last real token's logits
        (f32 [B, V]) and the greedy next tokens."""
        c, w = self.c, self.w
        B, T = tokens.shape
        S = self.k_cache_0.shape[2]
        pos = start[:, None] + torch.arange(T, device=tokens.device)[None, :]               # [B, T]
        ang = pos[:, :, None].float() * self.inv_freq
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos().to(c.dtype)[:, None], emb.sin().to(c.dtype)[:, None]           # [B, 1, T, D]
        key = torch.arange(S, device=tokens.device)
        seen = key[None, None, :] <= pos[:, :, None]                                        # causal, [B, T, S]
        if c.window:
            seen &= key[None, None, :] > pos[:, :, None] - c.window
        mask = seen[:, None]
        rows = pos.clamp(max=S - 1)
        batch = torch.arange(B, device=tokens.device)[:, None].expand(B, T)
        x = F.embedding(tokens, w("model.embed_tokens.weight"))
        for i in range(c.layers):
            p = f"model.layers.{i}."
            h = rms_norm(x, w(p + "input_layernorm.weight"), c.eps)
            proj = lambda n, heads: F.linear(h, w(p + f"self_attn.{n}_proj.weight"), w(p + f"self_attn.{n}_proj.bias")).view(
                B, T, heads, c.head_dim).transpose(1, 2)
            q, k, v = proj("q", c.heads), proj("k", c.kv_heads), proj("v", c.kv_heads)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            kc, vc = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            kc[batch, :, rows] = k.transpose(1, 2)
            vc[batch, :, rows] = v.transpose(1, 2)
            a = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask,
                                               enable_gqa=c.kv_heads != c.heads)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), w(p + "self_attn.o_proj.weight"))
            m = rms_norm(x, w(p + "post_attention_layernorm.weight"), c.eps)
            x = x + F.linear(F.silu(F.linear(m, w(p + "mlp.gate_proj.weight"))) * F.linear(m, w(p + "mlp.up_proj.weight")),
                             w(p + "mlp.down_proj.weight"))
        last = x[torch.arange(B, device=x.device), lens - 1]
        head = w("model.embed_tokens.weight") if c.tied else w("lm_head.weight")
        logits = F.linear(rms_norm(last, w("model.norm.weight"), c.eps), head).float()
        return logits, logits.argmax(-1)


# ---- driver ----------------------------------------------------------------------------------
def random_weights(preset, dtype, seed, device="cpu"):
    """A preset's config (as config.json holds it) and random weights: uniform in [-1, 1),
    scaled by 1/sqrt(fan-in), norms near 1. Drawn on `device` (the GPU draws the 8B shapes in
    seconds; a checkpoint of them would be 16 GB on disk)."""
    j = dict(PRESETS[preset], hidden_act="silu", rms_norm_eps=1e-5, torch_dtype=dtype)
    c = Config(j)
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (c.vocab, c.dim), "model.norm.weight": (c.dim,)}
    if not c.tied:
        shapes["lm_head.weight"] = (c.vocab, c.dim)
    for i in range(c.layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (c.dim,), p + "post_attention_layernorm.weight": (c.dim,),
                       p + "self_attn.q_proj.weight": (c.heads * c.head_dim, c.dim),
                       p + "self_attn.k_proj.weight": (c.kv_heads * c.head_dim, c.dim),
                       p + "self_attn.v_proj.weight": (c.kv_heads * c.head_dim, c.dim),
                       p + "self_attn.o_proj.weight": (c.dim, c.heads * c.head_dim),
                       p + "mlp.gate_proj.weight": (c.ffn, c.dim), p + "mlp.up_proj.weight": (c.ffn, c.dim),
                       p + "mlp.down_proj.weight": (c.dim, c.ffn)})
    weights = {}
    for name, shape in shapes.items():
        t = torch.rand(shape, generator=g, device=device) * 2 - 1
        t = 1 + 0.2 * t if name.endswith("norm.weight") else t * (1.0 if "embed" in name else 1 / math.sqrt(shape[-1]))
        weights[name] = t.to(c.dtype)
    return j, weights


def init_checkpoint(d, preset, dtype, seed):
    j, weights = random_weights(preset, dtype, seed)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), weights)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(j, f, indent=2)
    print(f"wrote {d}: {sum(t.numel() * t.element_size() for t in weights.values()) / 2**30:.2f} GiB of weights")


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, (time.perf_counter() - t) * 1e3


def run(model, prompts, lens, new_tokens, prefill_fn, decode_fn, device):
    B = prompts.shape[0]
    zeros = torch.zeros(B, dtype=torch.int64, device=device)
    prefill_fn(prompts, zeros, lens)  # warm (compiles)
    (logits, nxt), prefill_ms = timed(lambda: prefill_fn(prompts, zeros, lens), device)
    tokens, steps, pos = [nxt.clone()], [], lens.clone()
    ones = torch.ones(B, dtype=torch.int64, device=device)
    for _ in range(new_tokens - 1):
        (_, nxt), ms = timed(lambda: decode_fn(tokens[-1][:, None], pos, ones), device)
        tokens.append(nxt.clone())
        steps.append(ms)
        pos += 1
    return logits, torch.stack(tokens, 1).cpu(), prefill_ms, steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", help="write a random-weight checkpoint of --preset here and stop")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(TORCH_DTYPES))
    ap.add_argument("--checkpoint", help="an HF checkpoint directory")
    ap.add_argument("--random", action="store_true",
                    help="random weights of --preset drawn on the device instead of a checkpoint (timing only)")
    ap.add_argument("--batch", default="1", help="sequences; a comma list times each in turn")
    ap.add_argument("--prompt-len", default="16", help="tokens per prompt; a comma list times each in turn")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompts", help=".npy i32 [B, T]: read if present, else written (random)")
    ap.add_argument("--modes", default="eager,compile", help="eager and/or compile (default / reduce-overhead)")
    ap.add_argument("--compare", help="kiln generate's output: its tokens[b] lines must equal eager's tokens")
    ap.add_argument("--compare-logits", help="kiln's prefill logits (.npy f32 [B, V]), compared with eager's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    if a.init:
        return init_checkpoint(a.init, a.preset, a.dtype, a.seed)
    if not a.checkpoint and not a.random:
        ap.error("--checkpoint, --random or --init is needed")
    device = torch.device(a.device)
    if a.random:
        j, w = random_weights(a.preset, a.dtype, a.seed, device)
        c = Config(j)
    else:
        c = Config(json.load(open(os.path.join(a.checkpoint, "config.json"))))
        w = load_checkpoint(a.checkpoint)
    batches = [int(x) for x in a.batch.split(",")]
    lengths = [int(x) for x in a.prompt_len.split(",")]
    if a.prompts and (len(batches) > 1 or len(lengths) > 1):
        ap.error("--prompts takes one --batch and one --prompt-len")
    ok = True
    for B in batches:
        for T in lengths:
            ok &= run_shape(a, c, w, B, T, device)
    return 0 if ok else 1


def run_shape(a, c, w, B, T, device):
    """Times eager and/or compiled prefill + decode for B prompts of T tokens; compares with
    kiln's output where asked. True when every comparison holds."""
    if a.prompts and os.path.exists(a.prompts):
        prompts = torch.from_numpy(np.load(a.prompts)).long()
    else:
        g = torch.Generator().manual_seed(a.seed)
        prompts = torch.randint(0, c.vocab, (B, T), generator=g)
        if a.prompts:
            np.save(a.prompts, prompts.int().numpy())
    prompts = prompts.to(device)
    B, T = prompts.shape
    lens = torch.full((B,), T, dtype=torch.int64, device=device)
    model = Llama(c, w, B, T + a.new_tokens, device)
    weight_bytes = model.weight_bytes()
    print(f"model  {c.layers} layers, dim {c.dim}, heads {c.heads}/{c.kv_heads}, ffn {c.ffn}, vocab {c.vocab}, {c.dtype}; "
          f"batch {B} x {T}, {a.new_tokens} new tokens on {device}; weights {weight_bytes / 2**30:.2f} GiB")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    eager_tokens = eager_logits = tokens = None
    with torch.no_grad():
        for mode in a.modes.split(","):
            if mode == "eager":
                prefill_fn = decode_fn = model.forward
            else:
                torch._dynamo.reset()
                prefill_fn = torch.compile(model.forward)
                decode_fn = torch.compile(model.forward, mode="reduce-overhead")
            t0 = time.perf_counter()
            logits, tokens, prefill_ms, steps = run(model, prompts, lens, a.new_tokens, prefill_fn, decode_fn, device)
            total_s = time.perf_counter() - t0
            med = sorted(steps)[len(steps) // 2] if steps else float("nan")
            print(f"{mode:8s} prefill {prefill_ms:.3f} ms, decode {med:.3f} ms/token (median of {len(steps)}), "
                  f"{B * 1e3 / med:.1f} tokens/s; whole run incl. compiles {total_s:.1f} s")
            if mode == "eager":
                eager_tokens, eager_logits = tokens, logits.cpu()
            elif eager_tokens is not None and not torch.equal(tokens, eager_tokens):
                print(f"note: {mode} tokens differ from eager's")
        if device.type == "cuda":
            print(f"memory  peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    del model
    for b in range(min(B, 4)):
        print(f"tokens[{b}]   " + " ".join(str(int(x)) for x in (eager_tokens if eager_tokens is not None else tokens)[b]))
    ok = True
    if a.compare:
        kiln = {}
        for line in open(a.compare):
            if line.startswith("tokens["):
                head, _, rest = line.partition("]")
                kiln[int(head[7:])] = [int(x) for x in rest.split()]
        for b, toks in sorted(kiln.items()):
            n = min(len(toks), eager_tokens.shape[1])
            same = toks[:n] == eager_tokens[b, :n].tolist()
            ok &= same
            print(f"compare sequence {b}: {n} greedy tokens {'identical' if same else 'DIFFER'}")
    if a.compare_logits:
        k = torch.from_numpy(np.load(a.compare_logits)).float()
        err = (k - eager_logits).abs().max().item()
        scale = eager_logits.abs().max().item()
        good = err <= 2e-2 * scale + 1e-2
        ok &= good
        print(f"compare prefill logits: max |kiln - torch| {err:.3e} (max |logit| {scale:.3e}) {'ok' if good else 'TOO LARGE'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
