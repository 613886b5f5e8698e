"""GraphBuilder: builds a kiln graph from Python by writing kiln's text IR, which kiln's
parser then checks like any .kiln file (types inferred, attributes checked against the op
registry, errors naming the op).

    b = kiln.GraphBuilder("mlp")
    x = b.input("x", "f32", ["B", 64])
    w = b.param("w", "f32", [128, 64])
    y = b.op("relu", b.op("linear", x, w))
    b.output(y)
    g = b.build()
"""
import math
import re

from . import _kiln

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")
_DTYPES = {"f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool"}


class Value:
    """A value of the graph being built (an argument or an op's result)."""

    def __init__(self, builder, name):
        self.builder = builder
        self.name = name

    def __repr__(self):
        return "%" + self.name


class Dim:
    """A symbolic dim expression written as kiln's IR writes it: Dim("B * T"), Dim("T - 1")."""

    def __init__(self, text):
        self.text = str(text)

    def __str__(self):
        return self.text


def _dim(d):
    if isinstance(d, bool):
        raise TypeError(f"a dim cannot be a bool ({d})")
    if isinstance(d, int):
        return str(d)
    if isinstance(d, Dim):
        return f"({d.text})"
    if isinstance(d, str):
        if not _IDENT.match(d):
            raise ValueError(f"bad symbol name {d!r} (use Dim('...') for an expression)")
        return d
    raise TypeError(f"a dim must be an int, a symbol name or a Dim, not {type(d).__name__}")


def _float(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    r = repr(float(v))
    return r if ("." in r or "e" in r) else r + ".0"


def _attr(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, Dim):
        return v.text
    if isinstance(v, DType):
        return v.name
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        if any(isinstance(e, float) for e in v):
            return "[" + ", ".join(_float(float(e)) for e in v) + "]"
        return "[" + ", ".join(_dim(e) for e in v) + "]"
    raise TypeError(f"unsupported attribute value {v!r}")


class DType:
    """An element type as an attribute value: b.op("cast", x, dtype=kiln.builder.DType("i32"))."""

    def __init__(self, name):
        if name not in _DTYPES:
            raise ValueError(f"bad dtype {name!r} (expected one of {' '.join(sorted(_DTYPES))})")
        self.name = name


class GraphBuilder:
    def __init__(self, name="main"):
        if not _IDENT.match(name):
            raise ValueError(f"bad graph name {name!r}")
        self.name = name
        self._args, self._lines, self._bounds, self._outputs = [], [], [], []
        self._names = set()
        self._counter = 0

    def _fresh(self, hint):
        hint = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
        if not re.match(r"[A-Za-z_]", hint):
            hint = "v" + hint
        name = hint
        while name in self._names:
            self._counter += 1
            name = f"{hint}_{self._counter}"
        self._names.add(name)
        return name

    def _arg(self, name, dtype, shape, role):
        if dtype not in _DTYPES:
            raise ValueError(f"bad dtype {dtype!r} for %{name}")
        v = Value(self, self._fresh(name))
        suffix = f" {role}" if role else ""
        self._args.append(f"%{v.name}: {dtype}[{', '.join(_dim(d) for d in shape)}]{suffix}")
        return v

    def input(self, name, dtype, shape):
        return self._arg(name, dtype, shape, "")

    def param(self, name, dtype, shape):
        """A parameter bound at call time (read in place where the caller keeps it)."""
        return self._arg(name, dtype, shape, "param")

    def state(self, name, dtype, shape):
        """A caller-owned buffer updated in place (a KV cache; see cache_write)."""
        return self._arg(name, dtype, shape, "state")

    def symbol_bounds(self, symbol, lo, hi=None):
        self._bounds.append(f"symbol {symbol} in [{int(lo)}, {'inf' if hi is None else int(hi)}]")

    def op(self, op, *operands, name=None, results=None, **attrs):
        """Appends one node of `op` (an op of ir/ops.def) and returns its result, or the list
        of its `results` results for an op with several (split)."""
        for o in operands:
            if not isinstance(o, Value) or o.builder is not self:
                raise TypeError(f"{op}: operands must be Values of this builder, got {o!r}")
        vs = [Value(self, self._fresh(name or op)) for _ in range(results or 1)]
        parts = [f"%{o.name}" for o in operands] + [f"{k}={_attr(a)}" for k, a in attrs.items()]
        self._lines.append(f"{', '.join('%' + v.name for v in vs)} = {op}({', '.join(parts)})")
        return vs if results else vs[0]

    def constant(self, value, dtype="f32", name=None):
        if dtype not in _DTYPES:
            raise ValueError(f"bad dtype {dtype!r}")
        if dtype == "bool":
            value = bool(value)
        elif dtype.startswith(("f", "bf")):
            value = float(value)
        else:
            value = int(value)
        return self.op("constant", name=name or "c", value=value, dtype=DType(dtype))

    def output(self, *values):
        self._outputs.extend(values)

    def text(self):
        body = [f"  {line}" for line in self._bounds + self._lines]
        ret = ", ".join(f"%{v.name}" for v in self._outputs)
        return f"graph {self.name}({', '.join(self._args)}) {{\n" + "\n".join(body + [f"  return {ret}"]) + "\n}\n"

    def build(self):
        """The graph, parsed and checked by kiln (a KilnError names the failing line)."""
        if not self._outputs:
            raise ValueError("GraphBuilder.build: no outputs (call output())")
        return _kiln.parse(self.text(), f"<GraphBuilder {self.name}>")
