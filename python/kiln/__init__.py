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
from ._kiln import KilnError, Graph, Tensor
from ._api import (CompiledGraph, compile, device_available, evaluate, import_onnx, parse,
                   parse_file)
from .builder import GraphBuilder, Value

__version__ = "0.1.0"


def from_torch(module, example_inputs, dynamic_shapes=None, **compile_options):
    """Exports `module` with torch.export and compiles it with kiln (see kiln.torch_backend)."""
    from .torch_backend import from_torch as _from_torch
    return _from_torch(module, example_inputs, dynamic_shapes=dynamic_shapes, **compile_options)


__all__ = ["KilnError", "Graph", "Tensor", "CompiledGraph", "GraphBuilder", "Value", "compile",
           "device_available", "evaluate", "from_torch", "import_onnx", "parse", "parse_file"]
