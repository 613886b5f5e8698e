"""The Python side of compile() and calls: arguments in (NumPy arrays, DLPack objects) and
outputs back in the caller's kind of array, the caller's CUDA stream, stats."""
import json

import numpy as np

from . import _kiln
from ._kiln import Graph, KilnError

_MODES = ("default", "reduce-overhead", "max-autotune")


def parse(text, filename="<input>"):
    """Parses kiln's text IR; errors name filename:line:col."""
    return _kiln.parse(text, filename)


def parse_file(path):
    return _kiln.parse_file(str(path))


def import_onnx(path):
    return _kiln.import_onnx(str(path))


def device_available(device="cuda"):
    """None when this build and machine can run `device` ("cpu", "cuda"), else why not."""
    return _kiln.device_available(device)


def _framework(x):
    mod = type(x).__module__.split(".")[0]
    return mod if mod in ("numpy", "torch", "cupy") else "dlpack"


def _current_stream(x, kind):
    """The caller's current CUDA stream for a CUDA tensor of `kind` (0: none or the default)."""
    if kind == "torch" and x.is_cuda:
        import torch
        return torch.cuda.current_stream(x.device).cuda_stream
    if kind == "cupy":
        import cupy
        return cupy.cuda.get_current_stream().ptr
    return 0


def to_kiln(x, stream=0):
    """A kiln.Tensor viewing `x` (a NumPy array or any object with __dlpack__) without
    copying; a NumPy array that is not C-contiguous or not writable is copied first (kiln
    takes contiguous arguments; DLPack cannot signal read-only memory before NumPy 2)."""
    if isinstance(x, _kiln.Tensor):
        return x
    if isinstance(x, np.ndarray) or np.isscalar(x):
        x = np.asarray(x)
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = np.array(x, order="C", copy=True)
    elif _framework(x) == "torch":
        x = x.detach()  # a view (no copy): DLPack refuses tensors that require grad
        if not x.is_contiguous():
            x = x.contiguous()
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"kiln: cannot pass a {type(x).__name__}: expected a NumPy array or a DLPack object")
    device_type = x.__dlpack_device__()[0] if hasattr(x, "__dlpack_device__") else 1
    cap = x.__dlpack__(stream=stream or None) if device_type == 2 else x.__dlpack__()
    return _kiln.tensor_from_capsule(cap)


class _Export:
    """A kiln.Tensor as a DLPack producer (what np.from_dlpack / torch.from_dlpack read)."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, stream=None, **_):
        # kiln's outputs are complete on the stream the call ran on, which is the consumer's.
        return self._t.capsule()

    def __dlpack_device__(self):
        return (2, self._t.device_index) if self._t.is_cuda else (1, 0)


def from_kiln(t, like="numpy"):
    """`t` (a kiln.Tensor) as an array of the framework `like` names, without copying."""
    if like == "torch":
        import torch
        return torch.from_dlpack(_Export(t))
    if like == "cupy":
        import cupy
        return cupy.from_dlpack(_Export(t))
    if like == "numpy":
        if t.is_cuda:
            t = _kiln.to_host(t)
        return np.from_dlpack(_Export(t))
    return t


def evaluate(graph, args):
    """The reference evaluator (kiln's oracle): `args` maps argument names to arrays; returns
    the outputs as NumPy arrays."""
    return [from_kiln(t) for t in _kiln.evaluate(graph, {k: to_kiln(v) for k, v in args.items()})]


class CompiledGraph:
    """A graph compiled by kiln. Call it with the graph's arguments in signature order
    (inputs, then parameters without data); it returns a list of outputs of the kind of the
    first argument (NumPy, torch, CuPy). CUDA calls run on the caller's current stream
    (torch's or CuPy's) unless `stream=` (a CUstream as an int) says otherwise."""

    def __init__(self, native):
        self._cg = native

    def _args(self, args, stream):
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        kind = _framework(args[0]) if args else "numpy"
        if stream is None:
            stream = next((_current_stream(a, kind) for a in args if _framework(a) in ("torch", "cupy")), 0)
        return [to_kiln(a, stream) for a in args], kind, stream

    def __call__(self, *args, stream=None, like=None):
        """`like` ("numpy", "torch", "cupy"; default: the first argument's kind) picks the
        kind of array the outputs come back as."""
        targs, kind, stream = self._args(args, stream)
        return [from_kiln(t, like or kind) for t in self._cg(targs, stream)]

    def run(self, args, outputs, stream=None):
        """Writes the outputs into `outputs` (one per graph output: an array of the right
        dtype, shape and device, written in place, or None to allocate)."""
        targs, kind, stream = self._args(tuple(args), stream)
        touts = [None if o is None else to_kiln(o, stream) for o in outputs]
        res = self._cg.run_into(targs, [t if t is not None else _kiln.Tensor() for t in touts], stream)
        return [o if o is not None else from_kiln(r, kind) for o, r in zip(outputs, res)]

    def synchronize(self, stream=0):
        self._cg.synchronize(stream)

    def stats(self):
        """Compiles, recompiles and their reasons, guard hits, kernels, cache hits, times."""
        return json.loads(self._cg.stats_json())

    def stats_text(self):
        return self._cg.stats_text()

    def specializations(self):
        """The guard set of every specialization built so far: ["B >= 2"]."""
        return self._cg.specializations()

    def warm_up(self, **symbols):
        """Builds the specialization that calls with these symbol values use: warm_up(B=8)."""
        self._cg.warm_up(symbols)

    def static_slots(self, **symbols):
        """reduce-overhead on CUDA: (inputs, outputs) slots of the captured CUDA graph for
        these symbol values, as kiln.Tensor (wrap with torch.from_dlpack via kiln.from_kiln)."""
        return self._cg.static_slots(symbols)

    def memory(self):
        """Bytes held for calls: arena, scratch, weight_prep, constants (every specialization's),
        parameters (the runtime parameters' own bytes), weight_store."""
        return self._cg.memory()

    def parameters_changed(self):
        """Call after writing new values into a parameter in place."""
        self._cg.parameters_changed()

    @property
    def device(self):
        return self._cg.device

    @property
    def graph(self):
        return self._cg.graph

    def optimized_graph(self):
        """The graph after kiln's passes, as text IR."""
        return self._cg.optimized_graph_text()


def compile(graph, mode="default", device="auto", *, dynamic=True, dump_dir="", compile_only=False,
            fused_attention=True, cuda_device=0):
    """Compiles `graph` (kiln.Graph, or text IR). mode: default | reduce-overhead |
    max-autotune; device: auto | cpu | cuda. Nothing is built until the first call or warm_up."""
    if isinstance(graph, str):
        graph = parse(graph)
    if mode not in _MODES:
        raise KilnError(f"unknown mode '{mode}' (expected one of {', '.join(_MODES)})")
    return CompiledGraph(_kiln.compile(graph, mode, device, dynamic, dump_dir, compile_only,
                                       fused_attention, cuda_device))
