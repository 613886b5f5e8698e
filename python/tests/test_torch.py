"""The torch.compile backend and kiln.from_torch on the CPU: each module of the set (an MLP,
a Llama-style decoder layer, HF GPT-2 / BERT / Llama tiny configs with random weights, a
torchvision ResNet) against eager PyTorch, and the fallback summary. Skipped, with the
reason printed, where torch (or transformers / torchvision) is not installed."""
import importlib.metadata
import os

import pytest

# CI (KILN_TEST_REQUIRE_TOOLS=1, dev.sh installs them) fails rather than skips without them.
REQUIRED = os.environ.get("KILN_TEST_REQUIRE_TOOLS") == "1"


def _need(module):
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (./dev.sh test installs it)")


torch = _need("torch")
import kiln  # noqa: E402
import kiln.torch_backend as kt  # noqa: E402

nn = torch.nn


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch.manual_seed(torch.seed() % 2**31)
    yield
    torch._dynamo.reset()


def check(model, inputs_list, rtol=1e-4, atol=1e-4, dynamic=None, **options):
    model = model.eval()
    compiled = torch.compile(model, backend="kiln", dynamic=dynamic, options=options or None)
    with torch.no_grad():
        for inputs in inputs_list:
            want = model(*inputs)
            got = compiled(*inputs)
            want = want if isinstance(want, torch.Tensor) else want[0]
            got = got if isinstance(got, torch.Tensor) else got[0]
            torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    summary = kt.fallback_summary()[-1]
    print("kiln subgraphs:", [(s["name"], s["nodes"]) for s in summary["kiln_subgraphs"]])
    print("fallback:", summary["fallback"])
    assert summary["kiln_subgraphs"], summary
    return summary


def test_entry_point_registered():
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    assert any(e.name == "kiln" and e.value == "kiln.torch_backend:kiln_backend" for e in eps)
    assert "kiln" in torch._dynamo.list_backends()


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(32, 64), nn.Linear(64, 16), nn.LayerNorm(16)

    def forward(self, x):
        return torch.softmax(self.norm(self.fc2(torch.nn.functional.gelu(self.fc1(x)))), dim=-1)


def test_mlp_dynamic_batch():
    summary = check(MLP(), [(torch.randn(b, 32),) for b in (1, 7, 300)], dynamic=True)
    assert not summary["fallback"], summary["fallback"]


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
        freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) / half))
        ang = torch.arange(t, dtype=torch.float32)[:, None] * freq[None, :]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
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


def test_decoder_layer():
    check(DecoderLayer(), [(torch.randn(b, t, 64),) for b, t in ((1, 5), (2, 16), (3, 1))])


def test_decoder_layer_dynamic():
    check(DecoderLayer(), [(torch.randn(2, t, 64),) for t in (3, 17, 40)], dynamic=True)


class WithUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.cumsum(y, dim=-1)  # no kiln rule: runs in PyTorch between two kiln subgraphs
        return self.b(y).tanh()


def test_partition_around_unsupported_op():
    summary = check(WithUnsupported(), [(torch.randn(b, 16),) for b in (3, 8)])
    assert len(summary["kiln_subgraphs"]) == 2, summary
    assert "cumsum.default" in summary["fallback"] and "no kiln rule" in summary["fallback"]["cumsum.default"]


def test_from_torch_dynamic():
    m = MLP().eval()
    b = torch.export.Dim("B", min=2, max=1024)
    fm = kiln.from_torch(m, (torch.randn(4, 32),), dynamic_shapes={"x": {0: b}})
    with torch.no_grad():
        for n in (2, 9, 100):
            x = torch.randn(n, 32)
            torch.testing.assert_close(fm(x), m(x), rtol=1e-4, atol=1e-5)
    assert fm.fallback_summary()["kiln_subgraphs"]


def test_parameters_read_in_place():
    m = MLP().eval()
    compiled = torch.compile(m, backend="kiln")
    x = torch.randn(4, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-5)
        summary = kt.fallback_summary()[-1]
        assert sum(s["params"] for s in summary["kiln_subgraphs"]) == 6, summary  # 2 linears, 1 norm
        # New values at the same addresses: kiln reads them there once told to remake what it
        # derived from them.
        m.fc1.weight.mul_(-2)
        m.fc2.bias.add_(1)
        m.norm.weight.mul_(3)
        kt.parameters_changed()
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-5)


def _hf():
    return _need("transformers")


def _ids(vocab, b, t):
    return torch.randint(0, vocab, (b, t))


def test_hf_gpt2_tiny():
    tf = _hf()
    cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=101, n_positions=64, use_cache=False)
    model = tf.GPT2LMHeadModel(cfg).eval()
    check(model, [(_ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3)


def test_hf_bert_tiny():
    tf = _hf()
    cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=101, max_position_embeddings=64)
    model = tf.BertModel(cfg).eval()
    check(model, [(_ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3)


def test_hf_llama_tiny():
    tf = _hf()
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, use_cache=False)
    model = tf.LlamaForCausalLM(cfg).eval()
    check(model, [(_ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3)


def test_torchvision_resnet():
    tv = _need("torchvision")
    model = tv.models.resnet18(num_classes=10).eval()
    check(model, [(torch.randn(2, 3, 32, 32),)], rtol=1e-3, atol=1e-3)
