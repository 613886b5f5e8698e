"""kiln: a graph compiler for deep-learning inference.

    import kiln, numpy as np
    g = kiln.parse('''graph mlp(%x: f32[B, 4], %w: f32[8, 4] param) {
      %h = linear(%x, %w)
      %y = relu(%h)
      return %y
    }''')
    cg = kiln.compile(g, device="cpu")
    (y,) = cg(np.ones((3, 4), np.float32), np.ones((8, 4), np.float32))

Graphs come from kiln's text IR (parse, parse_file), ONNX (import_onnx), the GraphBuilder, or
PyTorch (kiln.from_torch, torch.compile(model, backend="kiln")). Calls take NumPy arrays or
any DLPack object (PyTorch, CuPy) without copying and return the same kind. Errors raise
KilnError with kiln's message.
"""
import ctypes as _ctypes
import glob as _glob
import os as _os


def _preload_bundled():
    """A package built with KILN_PYTHON_BUNDLE_DEPS carries libkiln's shared Abseil and
    protobuf libraries beside it (for machines without them): load them first, each once
    the libraries it needs are in, so that the loader finds them by soname."""
    here = _os.path.dirname(__file__)
    pending = sorted(_glob.glob(_os.path.join(here, "libabsl_*.so*")) + _glob.glob(_os.path.join(here, "libprotobuf.so*")))
    while pending:
        failed = []
        for path in pending:
            try:
                _ctypes.CDLL(path, mode=_ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            return  # importing the extension below then names what is missing
        pending = failed


_preload_bundled()

from ._kiln import KilnError, Graph, Tensor  # noqa: E402
from ._api import (CompiledGraph, compile, device_available, evaluate, import_onnx,  # noqa: E402
                   parse, parse_file)
from .builder import GraphBuilder, Value  # noqa: E402

__version__ = "0.1.0"


def from_torch(module, example_inputs, dynamic_shapes=None, **compile_options):
    """Exports `module` with torch.export and compiles it with kiln (see kiln.torch_backend)."""
    from .torch_backend import from_torch as _from_torch
    return _from_torch(module, example_inputs, dynamic_shapes=dynamic_shapes, **compile_options)


__all__ = ["KilnError", "Graph", "Tensor", "CompiledGraph", "GraphBuilder", "Value", "compile",
           "device_available", "evaluate", "from_torch", "import_onnx", "parse", "parse_file"]
