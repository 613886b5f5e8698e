"""torch.compile(model, backend="kiln") and kiln.from_torch.

The backend takes Dynamo's FX graph through AOTAutograd (ATen ops, functionalized; under
torch.no_grad its inference graph), finds the nodes kiln has a rule for (aten.py), groups
them into connected partitions, converts each into one kiln graph compiled with
kiln.compile, and leaves every other node to PyTorch between those subgraphs. Tensors cross
by DLPack without copies; parameters and buffers are passed where PyTorch keeps them and
marked as kiln parameters (kiln derives merged or packed weights once per address). A buffer
the module writes rows into (a static KV cache: k_cache[:, :, input_pos] = k, or index_copy_)
is a kiln state argument: the functionalized graph's index_put / index_copy becomes a
cache_write that updates the buffer in place, at its address, and the graph's copy_ back into
the buffer is dropped (positions are checked against the cache's rows before the call). If
the write's partition runs in PyTorch, the copy_ stays and PyTorch does both. What fell back to
PyTorch, and why, is in fallback_summary() (and logged on the "kiln" logger).

Options (torch.compile(..., options={...})): mode ("default", "reduce-overhead",
"max-autotune"), device ("auto" follows the inputs), fused_attention, dump_dir,
check_positions (default True; False skips the positions' range check on CUDA, which waits
for the positions to reach the host: a write out of range is then skipped, as kiln's devices do).
"""
import logging
import operator
import weakref

import torch
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupport

from . import _api, aten
from .aten import DTYPES, Converter, Unsupported, shape_of, supported_target
from .builder import GraphBuilder

log = logging.getLogger("kiln")

_summaries = []  # one dict per compiled FX graph, newest last
_live = weakref.WeakSet()  # every _KilnSubgraph alive


def parameters_changed():
    """Call after writing new values into parameters or buffers in place (same addresses):
    kiln remakes what it derived from them (merged or packed weights) at the next call."""
    for m in list(_live):
        m.cg.parameters_changed()


def fallback_summary():
    """Per graph compiled by the backend: kiln subgraphs, the ATen ops each holds, and the
    ops left to PyTorch with the reason: [{"kiln_subgraphs": [...], "fallback": {op: reason}}]."""
    return list(_summaries)


def _kind(n):
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))


def _makes_tensor(n):
    """Whether `n` computes tensors (not SymInts: those stay with PyTorch and are no fallback)."""
    v = n.meta.get("val")
    return any(isinstance(x, torch.Tensor) for x in (v if isinstance(v, (tuple, list)) else [v]))


class _Support(OperatorSupport):
    """A node kiln can take: a rule exists, its result's dtypes are kiln's, and the rule
    converts it on its own (tried on a scratch builder so that its reason is known up front)."""

    def __init__(self, reasons, states):
        super().__init__()
        self.reasons = reasons
        self.states = states

    def is_node_supported(self, submodules, n):
        if n.op != "call_function" or not _makes_tensor(n):
            return False  # SymInt arithmetic stays with PyTorch and is no fallback
        if n.target is torch.ops.aten.copy_.default:  # dropped once kiln wrote the buffer (compile_fx)
            if n.args[0] not in self.states:
                self.reasons.setdefault(_kind(n), "a write into a buffer or input that is not a cache write "
                                                  "(cache[:, :, positions] = rows, or index_copy_ along axis 2)")
            return False
        if not supported_target(n):
            if n.target is operator.getitem:
                self.reasons.setdefault(f"{_kind(n.args[0])}[{n.args[1]}]", "kiln computes only the first result")
            else:
                self.reasons.setdefault(_kind(n), "no kiln rule for this op")
            return False
        vals = n.meta.get("val")
        ins = [a.meta.get("val") for a in n.all_input_nodes]
        for v in (list(vals) if isinstance(vals, (tuple, list)) else [vals]) + ins:
            if isinstance(v, torch.Tensor) and v.dtype not in DTYPES:
                self.reasons.setdefault(_kind(n), f"dtype {v.dtype} does not cross into kiln")
                return False
        if n.target is operator.getitem:
            return True
        try:
            _probe(n, self.states)
        except Unsupported as e:
            self.reasons.setdefault(_kind(n), str(e))
            return False
        return True


def _probe(n, states):
    """Converts `n` alone, its tensor operands as fresh inputs (`states`' as state)."""
    b = GraphBuilder("probe")
    c = Converter(b)
    for a in n.all_input_nodes:
        v = a.meta.get("val")
        if isinstance(v, torch.Tensor):
            c.env[a] = (b.state if a in states else b.input)("a", DTYPES.get(v.dtype, "f32"), shape_of(v))
            if a in states:
                c.states.add(a)
        elif isinstance(v, (tuple, list)):
            c.env[a] = tuple(b.input("a", "f32", shape_of(x)) if isinstance(x, torch.Tensor) else None for x in v)
    c.convert(n)


def _host_scalar(v):
    """A 0-dim CPU tensor, which PyTorch lets meet tensors of any device: Dynamo passes a
    Python float it does not specialize this way (a norm's eps under dynamic=True). kiln takes
    it as an input and moves it to the partition's device at each call (8 bytes)."""
    return isinstance(v, torch.Tensor) and v.dim() == 0 and v.device.type == "cpu"


def _written_buffers(gm):
    """The placeholders of `gm` that it writes rows into, copy_(p, index_put/index_copy(p, ...)),
    and reads nowhere else (a read of the old value could run after kiln's in-place write)."""
    writes = (torch.ops.aten.index_put.default, torch.ops.aten.index_copy.default)
    return {n.args[0] for n in gm.graph.nodes
            if n.op == "call_function" and n.target is torch.ops.aten.copy_.default and n.args[0].op == "placeholder"
            and isinstance(n.args[1], torch.fx.Node) and n.args[1].target in writes and n.args[1].args[0] is n.args[0]
            and set(n.args[0].users) == {n, n.args[1]}}


class _KilnSubgraph(torch.nn.Module):
    """A partition compiled by kiln: forward takes the partition's arguments (SymInts are
    dropped: kiln binds its symbols from the tensors' shapes) and returns its outputs."""

    def __init__(self, cg, tensor_positions, symbol_positions, device, single, num_outputs, state_checks, options,
                 host_scalars=()):
        super().__init__()
        self.cg = cg
        self.tensor_positions = tensor_positions
        self.host_scalars = set(host_scalars) if device.type != "cpu" else set()  # moved to `device` per call
        self.symbol_positions = symbol_positions
        self.device = device
        self.single = single
        self.num_outputs = num_outputs  # the partition's; kiln's graph also returns the states it wrote
        self.state_checks = state_checks  # (positions' argument, cache's argument, what) per cache write
        self.check_positions = options.get("check_positions", True)
        _live.add(self)

    def _check(self, args):
        for pi, ci, what in self.state_checks:
            cache = args[ci]
            if not cache.is_contiguous():
                raise _api.KilnError(f"kiln: {what}: the cache {list(cache.shape)} is not contiguous, and kiln writes "
                                     "it in place (a copy would not be the buffer)")
            pos = None if pi is None else args[pi]
            if pos is None or pos.numel() == 0 or (pos.is_cuda and not self.check_positions):
                continue
            lo, hi = (int(x) for x in torch.aminmax(pos))
            rows = cache.shape[2]
            if lo < 0 or hi >= rows:
                raise _api.KilnError(f"kiln: {what}: position {lo if lo < 0 else hi} is outside the cache's {rows} rows "
                                     f"(positions must be in [0, {rows}))")

    def forward(self, *args):
        self._check(args)
        ins = [args[i].to(self.device) if i in self.host_scalars else args[i] for i in self.tensor_positions]
        # A symbol no tensor argument carries comes as an empty bool[s] tensor (no copy, no init).
        ins += [torch.empty(int(args[i]), dtype=torch.bool, device=self.device) for i in self.symbol_positions]
        outs = self.cg(*[t if t.is_contiguous() else t.contiguous() for t in ins], like="torch")[:self.num_outputs]
        return outs[0] if self.single else tuple(outs)


def _convert_partition(sub, name, param_positions, state_positions, options):
    """A kiln graph for the partition GraphModule `sub`, compiled; and the positions of its
    tensor arguments."""
    b = GraphBuilder(name)
    c = Converter(b)
    positions, host_scalars, device = [], [], None
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    aten.used_symbols.clear()
    for i, p in enumerate(placeholders):
        v = p.meta.get("val")
        if isinstance(v, torch.Tensor):
            if v.dtype not in DTYPES:
                raise Unsupported(f"argument {p.name} of dtype {v.dtype}")
            if _host_scalar(v) and i not in state_positions:
                host_scalars.append(i)
            elif device is not None and v.device != device:
                raise Unsupported("arguments on several devices")
            else:
                device = v.device
            make = b.state if i in state_positions else b.param if i in param_positions else b.input
            c.env[p] = make(p.name, DTYPES[v.dtype], shape_of(v))
            if i in state_positions:
                c.states.add(p)
            positions.append(i)
    out_node = next(n for n in sub.graph.nodes if n.op == "output")
    for n in sub.graph.nodes:
        if n.op == "call_function":
            v = n.meta.get("val")
            for t in (v if isinstance(v, (tuple, list)) else [v]):
                if isinstance(t, torch.Tensor) and not _host_scalar(t):
                    if device is not None and t.device != device:
                        raise Unsupported(f"{n.name} is on {t.device}, other values on {device}")
                    device = t.device
            c.convert(n)
    outs = out_node.args[0]
    single = not isinstance(outs, (tuple, list))
    outs = [outs] if single else list(outs)
    for o in outs:
        if o not in c.env or isinstance(c.env[o], tuple) or o.op == "placeholder":
            raise Unsupported(f"output {o} is not a value kiln computes")
        ov = o.meta["val"]
        if ov.dtype not in DTYPES:
            raise Unsupported(f"output {o.name} of dtype {ov.dtype}")
        if _host_scalar(ov) and device is not None and device.type != "cpu":
            raise Unsupported(f"output {o.name} is a host scalar (kiln would return it on {device})")
    bound = set()
    for i in positions:
        for d in placeholders[i].meta["val"].shape:
            if isinstance(d, torch.SymInt):
                bound.update(s.name for s in d.node.expr.free_symbols)
    symbol_positions = []
    for sym in sorted(aten.used_symbols - bound):
        at = [i for i, p in enumerate(placeholders)
              if isinstance(p.meta.get("val"), torch.SymInt) and str(p.meta["val"].node.expr) == sym]
        if not at:
            raise Unsupported(f"symbol {sym} is carried by no argument of the partition")
        b.input(f"size_{sym}", "bool", [sym])
        symbol_positions.append(at[0])
    # A state a cache write updated is returned too (kiln's rule: the graph returns what it
    # wrote); that output is the buffer itself, and the partition's caller does not see it.
    written = [w for w in c.writes if w not in outs]
    b.output(*[c.env[o] for o in outs + written])
    checks = [(placeholders.index(pos) if pos in placeholders else None, placeholders.index(w.args[0]),
               f"{name}: {w.name} into {w.args[0].name}") for w, pos in c.writes.items()]
    graph = b.build()
    dev = options.get("device", "auto")
    if dev == "auto":
        dev = "cuda" if device is not None and device.type == "cuda" else "cpu"
    cg = _api.compile(graph, mode=options.get("mode", "default"), device=dev,
                      fused_attention=options.get("fused_attention", True), dump_dir=options.get("dump_dir", ""),
                      cuda_device=(device.index or 0) if device is not None and device.type == "cuda" else 0)
    return _KilnSubgraph(cg, positions, symbol_positions, device or torch.device("cpu"), single, len(outs), checks,
                         options, host_scalars), graph


def compile_fx(gm, example_inputs, options=None, param_indices=()):
    """Partitions the ATen FX graph `gm` into kiln subgraphs and PyTorch ops; returns the
    GraphModule that runs them (a callable with the same signature as gm)."""
    options = dict(options or {})
    reasons = {}
    states = _written_buffers(gm)
    partitioner = CapabilityBasedPartitioner(gm, _Support(reasons, states), allows_single_node_partition=False)
    partitions = partitioner.propose_partitions()
    # A partition of views, getitems and copies alone is not worth a kiln call.
    trivial = {"view", "_unsafe_view", "getitem", "clone", "alias", "permute", "t", "expand", "unsqueeze",
               "squeeze", "_to_copy", "slice", "detach", "lift_fresh_copy"}
    partitions = [p for p in partitions
                  if any(_kind(n).split(".")[0] not in trivial for n in p.nodes)]
    fused = partitioner.fuse_partitions(partitions) if partitions else gm
    params = {n for i, n in enumerate(n for n in gm.graph.nodes if n.op == "placeholder") if i in set(param_indices)}
    state_names = {n.name for n in states}  # fusing made new placeholder nodes
    summary = {"kiln_subgraphs": [], "fallback": {}}
    written = set()  # states a kiln subgraph wrote in place: their copy_ back goes
    for node in list(fused.graph.nodes):
        if node.op != "call_module" or not node.target.startswith("fused_"):
            continue
        sub = getattr(fused, node.target)
        param_positions = {i for i, a in enumerate(node.args) if a in params}
        state_positions = {i for i, a in enumerate(node.args) if a.op == "placeholder" and a.name in state_names}
        ops = sorted({_kind(n) for n in sub.graph.nodes if n.op == "call_function"})
        try:
            module, graph = _convert_partition(sub, f"{node.target}", param_positions, state_positions, options)
        except (Unsupported, _api.KilnError) as e:
            log.info("kiln: partition %s runs in PyTorch: %s", node.target, e)
            summary["fallback"][f"{node.target} ({len(ops)} op kinds)"] = str(e).splitlines()[0]
            continue
        setattr(fused, node.target, module)
        written.update(node.args[ci].name for _, ci, _ in module.state_checks)
        summary["kiln_subgraphs"].append({"name": node.target, "ops": ops, "nodes": graph.num_nodes,
                                           "params": sum(a.role == "param" for a in graph.args()),
                                           "states": sum(a.role == "state" for a in graph.args())})
    for node in list(fused.graph.nodes):
        if node.target is torch.ops.aten.copy_.default and node.args[0].name in written and not node.users:
            fused.graph.erase_node(node)
    # Every tensor op still in the outer graph runs in PyTorch: say why.
    for node in fused.graph.nodes:
        if node.op != "call_function" or not _makes_tensor(node):
            continue
        k = _kind(node)
        if node.target is operator.getitem:
            k = f"{_kind(node.args[0])}[{node.args[1]}]"
            if k not in reasons:
                continue  # picks a result of an op listed on its own
        why = "the buffer's write ran in PyTorch" if node.target is torch.ops.aten.copy_.default and \
            node.args[0].name in state_names else "left alone: a partition of views only, or between partitions"
        summary["fallback"].setdefault(k, reasons.get(k, why))
    fused.recompile()
    _summaries.append(summary)
    if summary["fallback"]:
        log.info("kiln: ops run by PyTorch: %s", "; ".join(f"{k}: {v}" for k, v in summary["fallback"].items()))
    return fused


def _static_input_indices():
    """Indices of the AOT graph's inputs that are parameters or buffers not mutated by it."""
    try:
        ctx = torch._guards.TracingContext.try_get()
        meta = ctx.fw_metadata
        idx = set(meta.static_input_indices or [])
        return {i for i in idx if i < len(meta.input_info) and not meta.input_info[i].mutates_data}
    except Exception:  # older torch: no parameter marking, everything is an input
        return set()


def kiln_backend(gm, example_inputs, **kwargs):
    """The torch.compile backend (registered as "kiln" through the torch_dynamo_backends
    entry point, and when this module is imported)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    options = kwargs.get("options") or {}

    def fw(aten_gm, aten_inputs):
        return make_boxed_func(compile_fx(aten_gm, aten_inputs, options, _static_input_indices()).forward)

    return aot_autograd(fw_compiler=fw, inference_compiler=fw, keep_inference_input_mutations=True)(gm, example_inputs)


try:
    from torch._dynamo import register_backend
    from torch._dynamo.backends.registry import _BACKENDS
    if "kiln" not in _BACKENDS or _BACKENDS["kiln"] is None:
        register_backend(name="kiln")(kiln_backend)
except ImportError:  # a torch without Dynamo
    pass


class FromTorch:
    """A module exported with torch.export and compiled by kiln: call it with the example
    inputs' kind of tensors; parameters and buffers are read in place."""

    def __init__(self, program, compiled, constants, summary_index):
        self.exported_program = program
        self.graph_module = compiled
        self._constants = constants
        self._summary_index = summary_index

    def __call__(self, *args):
        flat = [a for a in torch.utils._pytree.tree_leaves(args) if isinstance(a, torch.Tensor)]
        # Mutated buffers are written by the graph (kiln's state, or a copy_ in PyTorch).
        out = self.graph_module(*self._constants(), *flat)
        return out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out

    def fallback_summary(self):
        return _summaries[self._summary_index]


def _copy_back_mutations(gm, sig):
    """torch.export returns a mutated buffer's new value as an output (BUFFER_MUTATION);
    Dynamo's AOT graph copies it back into the buffer instead. This makes `gm` the latter
    (copy_ nodes, user outputs only), which the partitioner maps onto kiln's state."""
    by_name = {n.name: n for n in gm.graph.nodes}
    buffers = {target: by_name[name] for name, target in sig.inputs_to_buffers.items()}
    out = next(n for n in gm.graph.nodes if n.op == "output")
    kept = []
    for spec, value in zip(sig.output_specs, out.args[0]):
        if spec.kind.name != "BUFFER_MUTATION":
            kept.append(value)
            continue
        with gm.graph.inserting_before(out):
            cp = gm.graph.call_function(torch.ops.aten.copy_.default, (buffers[spec.target], value))
        cp.meta["val"] = buffers[spec.target].meta.get("val")
    out.args = (tuple(kept),)
    gm.recompile()


def from_torch(module, example_inputs, dynamic_shapes=None, **options):
    """kiln.from_torch(module, (x,), dynamic_shapes={"x": {0: torch.export.Dim("B")}}):
    torch.export's ATen graph of `module` (eval mode), compiled by kiln with the same
    partitioning as the torch.compile backend. Returns a callable."""
    module = module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
        ep = ep.run_decompositions({})
    sig = ep.graph_signature
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    lifted = []
    for spec in sig.input_specs:
        if spec.kind.name in ("PARAMETER", "BUFFER"):
            lifted.append(("state", spec.target))
        elif spec.kind.name == "CONSTANT_TENSOR":
            lifted.append(("const", spec.target))
    # Lifted parameters, buffers and constants come first among the placeholders.
    other = [f"{s.kind.name.lower()} {s.arg.name}" for s in sig.output_specs
             if s.kind.name not in ("USER_OUTPUT", "BUFFER_MUTATION")]
    if other:
        raise _api.KilnError(f"kiln.from_torch: the module mutates its inputs ({', '.join(other)}), which kiln does "
                             "not take (buffers it does)")
    gm = torch.fx.GraphModule(ep.graph_module, ep.graph_module.graph)
    _copy_back_mutations(gm, sig)
    params = {i for i, (kind, t) in enumerate(lifted) if kind == "state"}
    compiled = compile_fx(gm, [p.meta.get("val") for p in placeholders], options, params)

    def constants():
        return [state[t] if kind == "state" else ep.constants[t] for kind, t in lifted]

    return FromTorch(ep, compiled, constants, len(_summaries) - 1)
