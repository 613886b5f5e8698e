"""The torch module set of the backend's tests and of bench/torch/kiln_vs_inductor.py: an
MLP, a Llama-style decoder layer, HF GPT-2 / BERT / Llama tiny configs with random weights
(`hf_model`), a torchvision ResNet-18."""
import torch

nn = torch.nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(32, 64), nn.Linear(64, 16), nn.LayerNorm(16)

    def forward(self, x):
        return torch.softmax(self.norm(self.fc2(torch.nn.functional.gelu(self.fc1(x)))), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w, self.eps = nn.Parameter(1 + 0.1 * torch.randn(d)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class DecoderLayer(nn.Module):
    """A Llama-style layer: RMSNorm, rotary q/k, causal sdpa with GQA repeated heads, SwiGLU."""

    def __init__(self, dim=64, heads=4, kv_heads=2, hidden=128):
        super().__init__()
        self.h, self.kvh, self.hd = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.n1, self.n2 = RMSNorm(dim), RMSNorm(dim)

    def rope(self, x, t):
        half = self.hd // 2
        freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
        ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * freq[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype)  # on x's device, in x's dtype (bf16 on CUDA)
        sin = torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def forward(self, x):
        b, t, d = x.shape
        h = self.n1(x)
        q = self.q(h).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.kvh, self.hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.kvh, self.hd).transpose(1, 2)
        q, k = self.rope(q, t), self.rope(k, t)
        k = k.repeat_interleave(self.h // self.kvh, dim=1)
        v = v.repeat_interleave(self.h // self.kvh, dim=1)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        h = self.n2(x)
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


class KVDecoder(nn.Module):
    """A gpt-fast-style decoder with a static KV cache: buffers k_cache / v_cache [B, KVH,
    S_max, D] written at input_pos [T] (`cache[:, :, input_pos] = k`, or index_copy_), rotary
    q/k at those positions, SDPA over the whole cache with a position mask, GQA heads
    repeated, logits out. forward(idx [B, T], input_pos [T]) -> logits [B, T, vocab]."""

    def __init__(self, batch=1, max_seq=64, dim=64, heads=4, kv_heads=2, vocab=101, write="index"):
        super().__init__()
        self.h, self.kvh, self.hd, self.write = heads, kv_heads, dim // heads, write
        self.embed = nn.Embedding(vocab, dim)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.up, self.down = nn.Linear(dim, 2 * dim, bias=False), nn.Linear(2 * dim, dim, bias=False)
        self.n1, self.n2, self.head = RMSNorm(dim), RMSNorm(dim), nn.Linear(dim, vocab, bias=False)
        self.register_buffer("k_cache", torch.zeros(batch, kv_heads, max_seq, self.hd))
        self.register_buffer("v_cache", torch.zeros(batch, kv_heads, max_seq, self.hd))

    def rope(self, x, pos):
        half = self.hd // 2
        freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
        ang = pos.to(torch.float32)[:, None] * freq[None, :]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype), torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def forward(self, idx, input_pos):
        b, t = idx.shape
        x = self.embed(idx)
        h = self.n1(x)
        q = self.rope(self.wq(h).view(b, t, self.h, self.hd).transpose(1, 2), input_pos)
        k = self.rope(self.wk(h).view(b, t, self.kvh, self.hd).transpose(1, 2), input_pos)
        v = self.wv(h).view(b, t, self.kvh, self.hd).transpose(1, 2)
        if self.write == "index":
            self.k_cache[:, :, input_pos] = k
            self.v_cache[:, :, input_pos] = v
        else:
            self.k_cache.index_copy_(2, input_pos, k)
            self.v_cache.index_copy_(2, input_pos, v)
        kc, vc = self.k_cache, self.v_cache
        if self.h != self.kvh:
            kc, vc = kc.repeat_interleave(self.h // self.kvh, dim=1), vc.repeat_interleave(self.h // self.kvh, dim=1)
        mask = torch.arange(self.k_cache.shape[2], device=idx.device)[None, :] <= input_pos[:, None]
        a = torch.nn.functional.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
        x = x + self.wo(a.transpose(1, 2).reshape(b, t, -1))
        x = x + self.down(torch.nn.functional.silu(self.up(self.n2(x))))
        return self.head(x)


def hf_model(kind, size="tiny"):
    """A transformers model of `kind` ("gpt2", "bert", "llama") with random weights; "tiny"
    for tests, "small" for timings."""
    import transformers as tf
    d, layers, heads = (64, 2, 4) if size == "tiny" else (768, 4, 12)
    common = dict(vocab_size=101 if size == "tiny" else 32000)
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_layer=layers, n_embd=d, n_head=heads, n_positions=1024, use_cache=False, **common)
        return tf.GPT2LMHeadModel(cfg)
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=4 * d, max_position_embeddings=1024, **common)
        return tf.BertModel(cfg)
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=d, intermediate_size=2 * d if size == "tiny" else 2048, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=1024,
                             use_cache=False, **common)
        return tf.LlamaForCausalLM(cfg)
    raise ValueError(kind)


def ids(vocab, b, t, device="cpu"):
    return torch.randint(0, vocab, (b, t), device=device)
