"""Buffer mutations in the torch.compile backend and kiln.from_torch: a gpt-fast-style decoder
whose static KV caches are buffers written at input_pos runs the cache write inside kiln (a
cache_write on a state argument, the buffer updated at its address), against eager PyTorch
step by step; positions out of the cache's range are kiln's error; a mutation kiln cannot
express falls back to PyTorch with its reason."""
import copy

import pytest
# The same fixtures as the module set: a fresh Dynamo per test, the cpu-f32 / cuda-bf16 targets.
from test_torch import _need, fresh_dynamo, target  # noqa: F401

torch = _need("torch")
import kiln  # noqa: E402
import kiln.torch_backend as kt  # noqa: E402
from torch_models import KVDecoder, ids  # noqa: E402

VOCAB, PROMPT, STEPS = 101, 5, 8


def _pair(target, **kw):
    device, dtype = target
    eager = KVDecoder(**kw).eval().to(device=device, dtype=dtype)
    with torch.no_grad():  # random caches (never zeros): rows not yet written must not matter
        eager.k_cache.normal_()
        eager.v_cache.normal_()
    return eager, copy.deepcopy(eager)


def _state_summaries(first):
    """The fallback summaries of the graphs compiled since `first`; asserts that every cache
    write ran in kiln (a state subgraph, no index_put / index_copy / copy_ fallback)."""
    summaries = kt.fallback_summary()[first:]
    assert summaries
    for s in summaries:
        assert sum(g["states"] for g in s["kiln_subgraphs"]) == 2, s
        fell = [k for k in s["fallback"] if k.split(".")[0] in ("index_put", "index_copy", "copy_")]
        assert not fell, s["fallback"]
    return summaries


def _decode(eager, run, mine, target, batch):
    """`run` (mine compiled) against `eager`: a prefill of PROMPT tokens (positions 0..PROMPT-1), then STEPS greedy decode steps,
    comparing logits, tokens and both caches with eager after each call."""
    device, dtype = target
    tol = dict(rtol=5e-2, atol=5e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    idx_e = idx_k = ids(VOCAB, batch, PROMPT, device)
    pos = torch.arange(PROMPT, device=device)
    with torch.no_grad():
        for step in range(STEPS + 1):
            want, got = eager(idx_e, pos), run(idx_k, pos)
            torch.testing.assert_close(got, want, **tol, msg=lambda m: f"logits at step {step}: {m}")
            for name in ("k_cache", "v_cache"):
                torch.testing.assert_close(getattr(mine, name), getattr(eager, name), **tol,
                                           msg=lambda m: f"{name} after step {step}: {m}")
            idx_e = want[:, -1].argmax(-1, keepdim=True)
            if dtype == torch.float32:
                idx_k = got[:, -1].argmax(-1, keepdim=True)
                assert torch.equal(idx_k, idx_e), f"tokens at step {step}"
            else:  # bf16 rounding may flip a near tie: both go on from eager's token
                idx_k = idx_e
            pos = torch.tensor([PROMPT + step], device=device)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("write", ["index", "index_copy"])
def test_decode_with_static_kv_cache(target, batch, write):
    eager, mine = _pair(target, batch=batch, write=write)
    ptrs = (mine.k_cache.data_ptr(), mine.v_cache.data_ptr())
    first = len(kt.fallback_summary())
    compiled = torch.compile(mine, backend="kiln")
    _decode(eager, compiled, mine, target, batch)
    assert (mine.k_cache.data_ptr(), mine.v_cache.data_ptr()) == ptrs  # written where the module keeps them
    summaries = _state_summaries(first)
    print("fallback:", [s["fallback"] for s in summaries])


def test_cache_is_not_copied():
    # Heads == KV heads (no repeated cache) and a long cache: whatever kiln holds for calls
    # (arenas, scratch, over every specialization) is smaller than one cache.
    eager, mine = _pair(("cpu", torch.float32), batch=2, max_seq=1024, kv_heads=4)
    compiled = torch.compile(mine, backend="kiln")
    with torch.no_grad():
        for t, p in ((PROMPT, 0), (1, PROMPT)):
            x, pos = ids(VOCAB, 2, t), torch.arange(p, p + t)
            torch.testing.assert_close(compiled(x, pos), eager(x, pos), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mine.k_cache, eager.k_cache, rtol=1e-5, atol=1e-5)
    cache_bytes = mine.k_cache.numel() * mine.k_cache.element_size()
    held = [m.cg.memory() for m in kt._live if any(a.role == "state" for a in m.cg.graph.args())]
    assert held
    for m in held:
        assert m["arena"] + m["scratch"] < cache_bytes, (m, cache_bytes)


def test_from_torch_decode(target):
    eager, mine = _pair(target, batch=3)
    device = target[0]
    t = torch.export.Dim("T", min=1, max=64)
    fm = kiln.from_torch(mine, (ids(VOCAB, 3, PROMPT, device), torch.arange(PROMPT, device=device)),
                         dynamic_shapes={"idx": {1: t}, "input_pos": {0: t}})
    ptr = mine.k_cache.data_ptr()
    _decode(eager, fm, mine, target, 3)
    assert mine.k_cache.data_ptr() == ptr
    s = fm.fallback_summary()
    assert sum(g["states"] for g in s["kiln_subgraphs"]) == 2, s
    assert not [k for k in s["fallback"] if k.split(".")[0] in ("index_put", "index_copy", "copy_")], s["fallback"]


def test_position_outside_the_cache_is_an_error():
    eager, mine = _pair(("cpu", torch.float32), batch=1, max_seq=16)
    compiled = torch.compile(mine, backend="kiln")
    with torch.no_grad():
        compiled(ids(VOCAB, 1, 3), torch.arange(3))
        before = mine.k_cache.clone()
        for bad in (16, -1):
            with pytest.raises(kiln.KilnError, match=rf"position {bad} is outside the cache's 16 rows"):
                compiled(ids(VOCAB, 1, 1), torch.tensor([bad]))
        with pytest.raises(kiln.KilnError, match="position 16 is outside"):
            compiled(ids(VOCAB, 1, 2), torch.tensor([15, 16]))
    assert torch.equal(mine.k_cache, before)  # nothing written by the refused calls


class RunningMean(torch.nn.Module):
    """Mutations kiln does not express: a buffer updated by arithmetic (no cache write) and
    a rank-2 row write."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)
        self.register_buffer("mean", torch.randn(4, 16))
        self.register_buffer("rows", torch.randn(8, 16))

    def forward(self, x, pos):
        y = torch.tanh(self.lin(x))
        self.mean.mul_(0.5).add_(y)
        self.rows[pos] = y[:1]
        return self.lin(self.mean).relu() + self.rows.sum(0)


def test_mutation_kiln_cannot_express_falls_back():
    eager = RunningMean().eval()
    mine = copy.deepcopy(eager)
    compiled = torch.compile(mine, backend="kiln")
    with torch.no_grad():
        for p in (2, 5, 5):
            x, pos = torch.randn(4, 16), torch.tensor([p])
            torch.testing.assert_close(compiled(x, pos), eager(x, pos), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.mean, eager.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.rows, eager.rows, rtol=1e-4, atol=1e-5)
    s = kt.fallback_summary()[-1]
    print("fallback:", s["fallback"])
    assert s["kiln_subgraphs"], s
    # The mean's update and the rank-2 row write (its copy_ back with it) ran in PyTorch.
    assert "not a cache write" in s["fallback"].get("copy_.default", ""), s["fallback"]
    assert "cache[:, :, positions]" in s["fallback"].get("index_put.default", ""), s["fallback"]


class ReadBeforeWrite(torch.nn.Module):
    """Reads the cache's old value, then writes it: the write stays with PyTorch (an in-place
    write by kiln could land before the read)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.register_buffer("cache", torch.randn(2, 2, 16, 8))

    def forward(self, x, pos):
        old = self.cache.sum(dim=2)
        self.cache[:, :, pos] = torch.tanh(self.lin(x))
        return self.lin(old).relu() + self.cache.mean(dim=2)


def test_cache_read_before_its_write_stays_with_pytorch():
    eager = ReadBeforeWrite().eval()
    mine = copy.deepcopy(eager)
    compiled = torch.compile(mine, backend="kiln")
    with torch.no_grad():
        for p in (3, 4):
            x, pos = torch.randn(2, 2, 1, 8), torch.tensor([p])
            torch.testing.assert_close(compiled(x, pos), eager(x, pos), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.cache, eager.cache, rtol=1e-5, atol=1e-6)
    s = kt.fallback_summary()[-1]
    print("fallback:", s["fallback"])
    assert "not a buffer the graph writes in place" in s["fallback"].get("index_put.default", ""), s["fallback"]
