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
from torch_models import MLP, DecoderLayer, hf_model, ids  # noqa: E402

nn = torch.nn


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch.manual_seed(torch.seed() % 2**31)
    yield
    torch._dynamo.reset()


# Where the module set runs: the CPU in f32 (here and in CI), CUDA in bf16 where a GPU is.
TARGETS = [pytest.param(("cpu", torch.float32), id="cpu-f32"), pytest.param(("cuda", torch.bfloat16), id="cuda-bf16")]


@pytest.fixture(params=TARGETS)
def target(request):
    device, dtype = request.param
    if device == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device for PyTorch")
        why = kiln.device_available("cuda")
        if why:
            pytest.skip(f"kiln cannot use CUDA here: {why}")
    return device, dtype


def check(model, inputs_list, rtol=1e-4, atol=1e-4, dynamic=None, target=("cpu", torch.float32), **options):
    device, dtype = target
    model = model.eval().to(device=device, dtype=dtype)
    inputs_list = [tuple(x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype) for x in inputs)
                   for inputs in inputs_list]
    if dtype == torch.bfloat16:
        rtol, atol = max(rtol, 5e-2), max(atol, 5e-2)
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


def test_mlp_dynamic_batch(target):
    summary = check(MLP(), [(torch.randn(b, 32),) for b in (1, 7, 300)], dynamic=True, target=target)
    assert not summary["fallback"], summary["fallback"]


def test_decoder_layer(target):
    check(DecoderLayer(), [(torch.randn(b, t, 64),) for b, t in ((1, 5), (2, 16), (3, 1))], target=target)


def test_decoder_layer_dynamic(target):
    check(DecoderLayer(), [(torch.randn(2, t, 64),) for t in (3, 17, 40)], dynamic=True, target=target)


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


def _hf(kind):
    _need("transformers")
    return hf_model(kind)


def test_hf_gpt2_tiny(target):
    check(_hf("gpt2"), [(ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3, target=target)


def test_hf_bert_tiny(target):
    check(_hf("bert"), [(ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3, target=target)


def test_hf_llama_tiny(target):
    check(_hf("llama"), [(ids(101, b, t),) for b, t in ((1, 7), (2, 12))], rtol=1e-3, atol=1e-3, target=target)


def test_torchvision_resnet(target):
    tv = _need("torchvision")
    model = tv.models.resnet18(num_classes=10).eval()
    check(model, [(torch.randn(2, 3, 32, 32),)], rtol=1e-3, atol=1e-3, target=target)


SCALE = """graph scale(%x: f32[N, 8], %w: f32[8] param) {
  %y = mul(%x, %w)
  %z = tanh(%y)
  return %z
}
"""


def test_torch_tensors_cross_without_copies():
    cg = kiln.compile(SCALE, device="cpu")
    x, w = torch.randn(5, 8), torch.randn(8)
    t = kiln._api.to_kiln(x)
    assert t.data_ptr == x.data_ptr()
    (z,) = cg(x, w)
    assert isinstance(z, torch.Tensor)
    torch.testing.assert_close(z, torch.tanh(x * w), rtol=1e-5, atol=1e-6)
    native = cg._cg([kiln._api.to_kiln(x), kiln._api.to_kiln(w)], 0)[0]
    assert kiln._api.from_kiln(native, "torch").data_ptr() == native.data_ptr


@pytest.mark.parametrize("target", TARGETS[1:], indirect=True)
def test_cuda_call_on_the_callers_stream(target):
    cg = kiln.compile(SCALE, device="cuda")
    s = torch.cuda.Stream()
    x, w = torch.randn(4096, 8, device="cuda"), torch.randn(8, device="cuda")
    with torch.cuda.stream(s):
        x.mul_(2)  # queued on s: the kiln call must see it, so it must run on s
        (z,) = cg(x, w)
    s.synchronize()
    torch.testing.assert_close(z, torch.tanh(x * w), rtol=1e-5, atol=1e-6)
