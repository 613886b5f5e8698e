"""ATen -> kiln IR: one rule per ATen op that kiln runs, used by the torch.compile backend
and kiln.from_torch (torch_backend.py). A rule reads an FX node (its args and the FakeTensor
in node.meta["val"]) and appends kiln ops to a GraphBuilder; a rule that cannot take a node
raises Unsupported with the reason, and the node then runs in PyTorch. Shapes are written as
they are in the FX graph: static ints, and SymInts (Dynamo's symbolic dims) as kiln symbols
and dim expressions.
"""
import operator

import sympy
import torch

from .builder import Dim, DType

aten = torch.ops.aten

# torch dtype -> kiln dtype, for what crosses the DLPack boundary (runtime/tensor.h).
DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.int32: "i32",
          torch.int64: "i64", torch.bool: "bool"}
# Dtypes only computed inside a graph.
INNER_DTYPES = {**DTYPES, torch.float64: "f64", torch.int8: "i8", torch.int16: "i16", torch.uint8: "u8"}
INT64_MAX = 2**63 - 1


class Unsupported(Exception):
    """A node kiln does not take; the message says why (the fallback summary shows it)."""


# ---- symbolic dims ----------------------------------------------------------------------

def sym_text(e):
    """A sympy expression over Dynamo's size symbols as a kiln dim expression."""
    if isinstance(e, sympy.Integer) or (hasattr(e, "is_Integer") and e.is_Integer):
        return str(int(e))
    if isinstance(e, sympy.Symbol):
        return e.name
    if isinstance(e, sympy.Add):
        return "(" + " + ".join(sym_text(a) for a in e.args) + ")"
    if isinstance(e, sympy.Mul):
        return "(" + " * ".join(sym_text(a) for a in e.args) + ")"
    name = type(e).__name__
    if name in ("FloorDiv", "CleanDiv") and e.args[1].is_Integer:
        return f"({sym_text(e.args[0])} / {int(e.args[1])})"
    if name in ("Mod", "PythonMod") and e.args[1].is_Integer:
        return f"({sym_text(e.args[0])} % {int(e.args[1])})"
    raise Unsupported(f"symbolic size {e} has no kiln dim expression")


# Symbols written by dim() since the last reset (a partition's graph must bind each of them).
used_symbols = set()


def dim(d):
    """An int, SymInt or FX node holding one, as a builder dim (int or Dim)."""
    if isinstance(d, torch.fx.Node):
        d = d.meta.get("val")
    if isinstance(d, torch.SymInt):
        e = d.node.expr
        if e.is_Integer:
            return int(e)
        used_symbols.update(s.name for s in e.free_symbols)
        return Dim(sym_text(e))
    if isinstance(d, int):
        return d
    raise Unsupported(f"size {d!r} is neither an int nor a SymInt")


def shape_of(val):
    return [dim(d) for d in val.shape]


def val(n):
    v = n.meta.get("val") if isinstance(n, torch.fx.Node) else None
    if v is None:
        raise Unsupported(f"no FakeTensor recorded for {n}")
    return v


def static_int(x, what):
    if isinstance(x, torch.fx.Node):
        x = x.meta.get("val")
    if isinstance(x, torch.SymInt):
        if x.node.expr.is_Integer:
            return int(x.node.expr)
        raise Unsupported(f"{what} is symbolic ({x})")
    if not isinstance(x, int):
        raise Unsupported(f"{what} is not an int ({x!r})")
    return x


# ---- the converter --------------------------------------------------------------------

class Converter:
    """Converts FX nodes into a GraphBuilder; env maps FX nodes to builder Values (or tuples
    of them for multi-result ops)."""

    def __init__(self, builder):
        self.b = builder
        self.env = {}
        self.states = set()  # FX nodes of kiln state arguments (buffers the graph writes in place)
        self.writes = {}  # per state write (an index_put / index_copy node): its positions' FX node

    def v(self, n):
        if not isinstance(n, torch.fx.Node) or n not in self.env:
            raise Unsupported(f"operand {n!r} is not a tensor of this graph")
        return self.env[n]

    def kdtype(self, n):
        v = val(n)
        t = (v[0] if isinstance(v, (tuple, list)) else v).dtype
        if t not in INNER_DTYPES:
            raise Unsupported(f"dtype {t} is not one of kiln's")
        return INNER_DTYPES[t]

    def cast(self, x, frm, to):
        return x if frm == to else self.b.op("cast", x, dtype=DType(to))

    def operand(self, a, dtype):
        """A tensor operand cast to `dtype`, or a Python scalar as a constant of it."""
        if isinstance(a, torch.fx.Node):
            return self.cast(self.v(a), self.kdtype(a), dtype)
        if isinstance(a, (bool, int, float)):
            return self.b.constant(a, dtype)
        raise Unsupported(f"operand {a!r} is neither a tensor nor a number")

    def convert(self, n):
        rule = RULES.get(n.target)
        if rule is None:
            raise Unsupported(f"no kiln rule for {n.target}")
        out = rule(self, n, *n.args, **n.kwargs)
        self.env[n] = out
        return out


RULES = {}


def rule(*targets):
    def register(f):
        for t in targets:
            RULES[t] = f
        return f
    return register


def supported_target(n):
    """Whether a rule may take `n`: results other than the first are computed only by split."""
    if n.op != "call_function":
        return False
    if n.target is operator.getitem:
        src = n.args[0]
        return n.args[1] == 0 or getattr(src, "target", None) in (aten.split.Tensor, aten.split_with_sizes.default)
    return n.target in RULES


# Elementwise unary: ATen op -> kiln op.
UNARY = {aten.neg.default: "neg", aten.abs.default: "abs", aten.exp.default: "exp", aten.log.default: "log",
         aten.sqrt.default: "sqrt", aten.rsqrt.default: "rsqrt", aten.sin.default: "sin", aten.cos.default: "cos",
         aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid", aten.relu.default: "relu",
         aten.silu.default: "silu", aten.erf.default: "erf", aten.reciprocal.default: "reciprocal",
         aten.floor.default: "floor", aten.ceil.default: "ceil", aten.logical_not.default: "not",
         aten.atan.default: "atan"}


def _unary(c, n, x, *rest, **kw):
    d = c.kdtype(n)
    return c.b.op(UNARY[n.target], c.operand(x, d))


for _t in UNARY:
    RULES[_t] = _unary


@rule(aten.gelu.default)
def _gelu(c, n, x, approximate="none"):
    return c.b.op("gelu", c.v(x), approximate=approximate)


# Binary with NumPy broadcasting; operands are brought to the result's dtype as PyTorch's type
# promotion does (comparisons: to the promoted operand dtype).
BINARY = {aten.add.Tensor: "add", aten.add.Scalar: "add", aten.sub.Tensor: "sub", aten.sub.Scalar: "sub",
          aten.mul.Tensor: "mul", aten.mul.Scalar: "mul", aten.div.Tensor: "div", aten.div.Scalar: "div",
          aten.pow.Tensor_Scalar: "pow", aten.pow.Tensor_Tensor: "pow", aten.pow.Scalar: "pow",
          aten.maximum.default: "maximum", aten.minimum.default: "minimum",
          aten.logical_and.default: "and", aten.logical_or.default: "or",
          aten.bitwise_and.Tensor: "and", aten.bitwise_or.Tensor: "or"}
COMPARE = {}
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    COMPARE[getattr(aten, _name).Tensor] = _name
    COMPARE[getattr(aten, _name).Scalar] = _name


def _binary(c, n, a, b, alpha=1):
    d = c.kdtype(n)
    op = BINARY[n.target]
    if op in ("and", "or") and d != "bool":
        raise Unsupported(f"{n.target} on {d} (kiln's and/or take bool)")
    x, y = c.operand(a, d), c.operand(b, d)
    if alpha != 1:
        y = c.b.op("mul", y, c.b.constant(alpha, d))
    return c.b.op(op, x, y)


def _compare(c, n, a, b):
    args = [val(x) if isinstance(x, torch.fx.Node) else x for x in (a, b)]
    d = INNER_DTYPES.get(torch.result_type(*args))
    if d is None:
        raise Unsupported("comparison of dtypes kiln lacks")
    return c.b.op(COMPARE[n.target], c.operand(a, d), c.operand(b, d))


for _t in BINARY:
    RULES[_t] = _binary
for _t in COMPARE:
    RULES[_t] = _compare


@rule(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(c, n, a, b, alpha=1):
    d = c.kdtype(n)
    x = c.operand(a, d)
    if alpha != 1:
        x = c.b.op("mul", x, c.b.constant(alpha, d))
    return c.b.op("sub", c.operand(b, d), x)


@rule(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def _where(c, n, cond, a, b):
    d = c.kdtype(n)
    return c.b.op("where", c.operand(cond, "bool"), c.operand(a, d), c.operand(b, d))


@rule(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(c, n, x, mask, value):
    d = c.kdtype(n)
    if isinstance(value, torch.fx.Node) and val(value).dim() != 0:
        raise Unsupported("masked_fill with a non-scalar value tensor")
    return c.b.op("where", c.operand(mask, "bool"), c.operand(value, d), c.operand(x, d))


@rule(aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default, aten.hardtanh.default)
def _clamp(c, n, x, lo=None, hi=None):
    d = c.kdtype(n)
    if n.target is aten.clamp_max.default:
        lo, hi = None, lo
    if n.target is aten.hardtanh.default:
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    y = c.operand(x, d)
    if lo is not None:
        y = c.b.op("maximum", y, c.operand(lo, d))
    if hi is not None:
        y = c.b.op("minimum", y, c.operand(hi, d))
    return y


@rule(torch.ops.prims.convert_element_type.default, aten._to_copy.default, aten.to.dtype, aten.clone.default, aten.alias.default, aten.detach.default,
      aten.lift_fresh_copy.default, aten.contiguous.default)
def _copy(c, n, x, *args, **kw):
    if isinstance(x, torch.fx.Node) and val(x).device != val(n).device:
        raise Unsupported("a copy between devices")
    return c.operand(x, c.kdtype(n))


# ---- reductions and normalizations ------------------------------------------------------

def _axes(dims, rank):
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return [int(d) for d in dims]


REDUCE = {aten.sum.dim_IntList: "sum", aten.mean.dim: "mean", aten.amax.default: "max", aten.amin.default: "min",
          aten.sum.default: "sum", aten.mean.default: "mean"}


def _reduce(c, n, x, dims=None, keepdim=False, dtype=None):
    d = c.kdtype(n)
    r = val(x).dim()
    return c.b.op(REDUCE[n.target], c.operand(x, d), axes=_axes(dims, r), keepdim=bool(keepdim))


for _t in REDUCE:
    RULES[_t] = _reduce


@rule(aten.argmax.default)
def _argmax(c, n, x, dim=None, keepdim=False):
    if dim is None:
        raise Unsupported("argmax over all elements")
    return c.b.op("argmax", c.v(x), axis=int(dim), keepdim=bool(keepdim))


@rule(aten._softmax.default, aten._log_softmax.default)
def _softmax(c, n, x, axis, half_to_float):
    d = c.kdtype(n)
    op = "softmax" if n.target is aten._softmax.default else "log_softmax"
    return c.b.op(op, c.operand(x, d), axis=int(axis))


@rule(aten.native_layer_norm.default)
def _layer_norm(c, n, x, normalized_shape, w, b, eps):
    k = len(normalized_shape)
    ops = [c.v(x)] + [c.v(t) for t in (w, b) if t is not None]
    if w is None and b is not None:
        raise Unsupported("layer_norm with a bias and no weight")
    return (c.b.op("layer_norm", *ops, axes=list(range(-k, 0)), eps=float(eps)), None, None)


@rule(aten._native_batch_norm_legit_no_training.default)
def _batch_norm(c, n, x, w, b, mean, var, momentum, eps):
    d = c.kdtype(n)
    rank = val(x).dim()
    per_channel = lambda t: c.b.op("reshape", c.operand(t, d), shape=[val(t).shape[0]] + [1] * (rank - 2))
    inv = c.b.op("rsqrt", c.b.op("add", per_channel(var), c.b.constant(eps, d)))
    y = c.b.op("mul", c.b.op("sub", c.v(x), per_channel(mean)), inv)
    if w is not None:
        y = c.b.op("mul", y, per_channel(w))
    if b is not None:
        y = c.b.op("add", y, per_channel(b))
    return (y, None, None)


# ---- linear algebra, convolution, pooling ------------------------------------------------

def _transposed_weight(c, m):
    """The [N, K] weight w when `m` is t(w) / permute(w, [1, 0]) / transpose(w, 0, 1)."""
    if not isinstance(m, torch.fx.Node) or m.op != "call_function" or m.args[0] not in c.env:
        return None
    if m.target is aten.t.default or (m.target is aten.permute.default and list(m.args[1]) == [1, 0]) or \
            (m.target is aten.transpose.int and sorted(d % 2 for d in m.args[1:3]) == [0, 1]):
        return c.env[m.args[0]] if val(m.args[0]).dim() == 2 else None
    return None


@rule(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _mm(c, n, a, b):
    w = _transposed_weight(c, b) if n.target is aten.mm.default else None
    if w is not None:
        return c.b.op("linear", c.v(a), w)
    return c.b.op("matmul", c.v(a), c.v(b))


@rule(aten.addmm.default)
def _addmm(c, n, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        raise Unsupported("addmm with alpha or beta other than 1")
    w = _transposed_weight(c, b)
    if w is not None and val(bias).dim() == 1:
        return c.b.op("linear", c.v(a), w, c.v(bias))
    return c.b.op("add", c.b.op("matmul", c.v(a), c.v(b)), c.v(bias))


@rule(aten.linear.default)
def _linear(c, n, x, w, b=None):
    return c.b.op("linear", c.v(x), c.v(w), *([c.v(b)] if b is not None else []))


@rule(aten.convolution.default)
def _conv(c, n, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    ops = [c.v(x), c.v(w)] + ([c.v(b)] if b is not None else [])
    pads = [static_int(p, "padding") for p in padding] * 2
    common = dict(strides=[int(s) for s in stride], pads=pads, dilations=[int(d) for d in dilation], groups=int(groups))
    if transposed:
        return c.b.op("conv_transpose", *ops, output_padding=[int(p) for p in output_padding], **common)
    return c.b.op("conv", *ops, **common)


@rule(aten.max_pool2d_with_indices.default, aten.max_pool2d.default)
def _max_pool(c, n, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    k = [int(v) for v in kernel]
    sp = len(k)
    stride = [int(s) for s in stride] if stride else k
    padding = [int(padding)] * sp if isinstance(padding, int) else [int(p) for p in padding]
    dilation = [int(dilation)] * sp if isinstance(dilation, int) else [int(d) for d in dilation]
    y = c.b.op("max_pool", c.v(x), kernel=k, strides=stride, pads=padding * 2, dilations=dilation,
               ceil_mode=bool(ceil_mode))
    return (y, None) if n.target is aten.max_pool2d_with_indices.default else y


@rule(aten.avg_pool2d.default)
def _avg_pool(c, n, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise Unsupported("avg_pool2d with divisor_override")
    k = [int(v) for v in kernel]
    stride = [int(s) for s in stride] if stride else k
    padding = [int(padding)] * 2 if isinstance(padding, int) else [int(p) for p in padding]
    return c.b.op("avg_pool", c.v(x), kernel=k, strides=stride, pads=padding * 2, ceil_mode=bool(ceil_mode),
                  count_include_pad=bool(count_include_pad))


@rule(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool(c, n, x, output_size):
    if [static_int(s, "output size") for s in output_size] != [1, 1]:
        raise Unsupported("adaptive_avg_pool2d to a size other than 1x1")
    return c.b.op("mean", c.v(x), axes=[-2, -1], keepdim=True)


SDPA = {aten._scaled_dot_product_flash_attention_for_cpu.default, aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default, aten.scaled_dot_product_attention.default}
if hasattr(aten, "_scaled_dot_product_cudnn_attention"):
    SDPA.add(aten._scaled_dot_product_cudnn_attention.default)


@rule(*SDPA)
def _sdpa(c, n, q, k, v, *args, **kw):
    t = n.target
    mask, dropout, causal = None, 0.0, False
    if t is aten.scaled_dot_product_attention.default:
        mask = args[0] if len(args) > 0 else kw.get("attn_mask")
        dropout = args[1] if len(args) > 1 else kw.get("dropout_p", 0.0)
        causal = args[2] if len(args) > 2 else kw.get("is_causal", False)
        if kw.get("enable_gqa"):
            raise Unsupported("sdpa with enable_gqa")
    elif t in (aten._scaled_dot_product_flash_attention_for_cpu.default, aten._scaled_dot_product_flash_attention.default):
        dropout = args[0] if len(args) > 0 else kw.get("dropout_p", 0.0)
        causal = args[1] if len(args) > 1 else kw.get("is_causal", False)
        mask = kw.get("attn_mask")
    else:  # efficient / cudnn: (q, k, v, attn_bias, compute_log_sumexp, dropout_p, is_causal, ...)
        mask = args[0] if len(args) > 0 else kw.get("attn_bias")
        dropout = args[2] if len(args) > 2 else kw.get("dropout_p", 0.0)
        causal = args[3] if len(args) > 3 else kw.get("is_causal", False)
    if dropout:
        raise Unsupported("sdpa with dropout")
    tq, tk = val(q).shape[-2], val(k).shape[-2]
    if causal and str(tq) != str(tk):
        raise Unsupported("causal sdpa with query and key lengths that may differ (PyTorch aligns it top-left)")
    scale = kw.get("scale")
    ops = [c.v(q), c.v(k), c.v(v)] + ([c.v(mask)] if mask is not None else [])
    attrs = dict(causal=bool(causal))
    if scale is not None:
        attrs["scale"] = float(scale)
    y = c.b.op("scaled_dot_product_attention", *ops, **attrs)
    if t is aten.scaled_dot_product_attention.default:
        return y
    return (y,) + (None,) * 8


@rule(aten.embedding.default)
def _embedding(c, n, w, idx, *rest):
    return c.b.op("gather", c.v(w), c.v(idx), axis=0)


@rule(aten.index_select.default)
def _index_select(c, n, x, axis, idx):
    if val(idx).dim() != 1:
        raise Unsupported("index_select with indices of rank != 1")
    return c.b.op("gather", c.v(x), c.v(idx), axis=int(axis))


# ---- views and data movement ---------------------------------------------------------------

@rule(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.flatten.using_ints)
def _reshape(c, n, x, *rest):
    return c.b.op("reshape", c.v(x), shape=shape_of(val(n)))


@rule(aten.expand.default)
def _expand(c, n, x, *rest, **kw):
    return c.b.op("expand", c.v(x), shape=shape_of(val(n)))


@rule(aten.permute.default)
def _permute(c, n, x, dims):
    return c.b.op("permute", c.v(x), dims=[int(d) % val(x).dim() for d in dims])


@rule(aten.t.default, aten.transpose.int)
def _transpose(c, n, x, d0=0, d1=1):
    r = val(x).dim()
    if r < 2:
        return c.v(x)
    perm = list(range(r))
    d0, d1 = d0 % r, d1 % r
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return c.b.op("permute", c.v(x), dims=perm)


@rule(aten.unsqueeze.default)
def _unsqueeze(c, n, x, d):
    return c.b.op("unsqueeze", c.v(x), axes=[int(d) % val(n).dim()])


@rule(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default)
def _squeeze(c, n, x, dims=None):
    xv = val(x)
    dims = list(range(xv.dim())) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    dims = [d % xv.dim() for d in dims if not isinstance(xv.shape[d], torch.SymInt) and xv.shape[d] == 1]
    return c.b.op("squeeze", c.v(x), axes=dims) if dims else c.v(x)


@rule(aten.slice.Tensor)
def _slice(c, n, x, axis=0, start=None, end=None, step=1):
    attrs = dict(axis=int(axis), step=static_int(step, "slice step"))
    if start is not None and not (isinstance(start, int) and start == 0):
        attrs["start"] = _bound(start)
    if end is not None and not (isinstance(end, int) and end >= INT64_MAX):
        attrs["end"] = _bound(end)
    return c.b.op("slice", c.v(x), **attrs)


def _bound(b):
    d = dim(b)
    return Dim(d.text) if isinstance(d, Dim) else d


@rule(aten.select.int)
def _select(c, n, x, axis, index):
    axis = int(axis) % val(x).dim()
    i = static_int(index, "select index")
    s = c.b.op("slice", c.v(x), axis=axis, start=i, end=(i + 1) if i != -1 else INT64_MAX)
    return c.b.op("squeeze", s, axes=[axis])


@rule(aten.cat.default)
def _cat(c, n, xs, axis=0):
    d = c.kdtype(n)
    xs = [x for x in xs if not (val(x).dim() == 1 and val(x).shape[0] == 0)]  # torch skips empty 1-D
    return c.b.op("concat", *[c.operand(x, d) for x in xs], axis=int(axis))


@rule(aten.split.Tensor, aten.split_with_sizes.default)
def _split(c, n, x, sizes, axis=0):
    outs = val(n)
    sizes = [dim(o.shape[axis]) for o in outs]
    return tuple(c.b.op("split", c.v(x), axis=int(axis), sizes=sizes, results=len(outs)))


@rule(operator.getitem)
def _getitem(c, n, tup, i):
    r = c.v(tup)
    if not isinstance(r, tuple) or r[i] is None:
        raise Unsupported(f"result {i} of {tup.target} (kiln computes only its first result)")
    return r[i]


@rule(aten.arange.start_step, aten.arange.default, aten.arange.start)
def _arange(c, n, *args, **kw):
    nums = [a for a in args]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums + [1])[:3]
    d = c.kdtype(n)
    length = shape_of(val(n))[0]
    y = c.b.op("iota", shape=[length], axis=0, dtype=DType(d))
    if step != 1:
        y = c.b.op("mul", y, c.b.constant(static_int(step, "arange step"), d))
    if not (isinstance(start, int) and start == 0):
        if isinstance(start, torch.fx.Node):
            raise Unsupported("arange with a symbolic start")
        y = c.b.op("add", y, c.operand(start, d))
    return y


@rule(aten.full.default, aten.zeros.default, aten.ones.default, aten.scalar_tensor.default,
      aten.new_zeros.default, aten.new_ones.default, aten.full_like.default, aten.zeros_like.default,
      aten.ones_like.default)
def _full(c, n, *args, **kw):
    t = n.target
    value = {aten.zeros.default: 0, aten.new_zeros.default: 0, aten.zeros_like.default: 0, aten.ones.default: 1,
             aten.new_ones.default: 1, aten.ones_like.default: 1}.get(t)
    if t is aten.full.default or t is aten.full_like.default:
        value = args[1]
    elif t is aten.scalar_tensor.default:
        value = args[0]
    if isinstance(value, torch.fx.Node) or not isinstance(value, (int, float, bool)):
        raise Unsupported("a fill value that is not a number")
    out = val(n)
    k = c.b.constant(value, c.kdtype(n))
    return c.b.op("expand", k, shape=shape_of(out)) if out.dim() > 0 else k


# ---- in-place state: KV caches (DESIGN.md, State) ----------------------------------------

@rule(aten.index_put.default, aten.index_copy.default)
def _cache_write(c, n, cache, *args):
    """A functionalized write of rows into a buffer the graph mutates: cache [B, KVH, S, D]
    with new [B, KVH, T, D] at sequence positions pos [T] (k_cache[:, :, pos] = new, or
    k_cache.index_copy_(2, pos, new)) is kiln's cache_write with positions [B, T]."""
    if n.target is aten.index_put.default:
        indices, new = args[0], args[1]
        if (args[2] if len(args) > 2 else False):
            raise Unsupported("index_put with accumulate=True")
        if len(indices) != 3 or indices[0] is not None or indices[1] is not None or indices[2] is None:
            raise Unsupported("index_put other than cache[:, :, positions] = new")
        pos = indices[2]
    else:
        axis, pos, new = args
        if int(axis) % max(val(cache).dim(), 1) != 2:
            raise Unsupported(f"index_copy along axis {axis} (kiln writes a cache along axis 2)")
    if cache not in c.states:
        raise Unsupported(f"{cache} is not a buffer the graph writes in place (one kiln takes as state: "
                          "read by this write alone, then copied back into)")
    cv, xv, pv = val(cache), val(new), val(pos)
    if cv.dim() != 4:
        raise Unsupported(f"a write into a buffer of rank {cv.dim()} (kiln's caches are [B, KVH, S, D])")
    if pv.dim() != 1 or pv.dtype not in (torch.int32, torch.int64):
        raise Unsupported(f"cache positions {pv.dtype}{list(pv.shape)} (kiln takes one integer position per token)")
    cs = shape_of(cv)
    rows = [cs[0], cs[1], dim(pv.shape[0]), cs[3]]  # the new rows, [B, KVH, T, D]
    xs = shape_of(xv)  # broadcast to `rows` (PyTorch drops leading 1s, e.g. B = 1)
    if len(xs) > 4 or any(str(x) != str(r) and str(x) != "1" for x, r in zip(xs[::-1], rows[::-1])):
        raise Unsupported(f"new rows {list(xv.shape)} at {list(pv.shape)} positions do not fit the cache {list(cv.shape)}")
    if xv.dtype != cv.dtype:
        raise Unsupported(f"new rows of dtype {xv.dtype} into a {cv.dtype} cache")
    x = c.v(new)
    if [str(d) for d in xs] != [str(d) for d in rows]:
        x = c.b.op("expand", x, shape=rows)
    per_token = c.b.op("expand", c.b.op("unsqueeze", c.v(pos), axes=[0]), shape=[rows[0], rows[2]])
    out = c.b.op("cache_write", c.v(cache), x, per_token)
    c.writes[n] = pos
    return out


@rule(aten.repeat_interleave.self_int)
def _repeat_interleave(c, n, x, repeats, axis=None, *rest, **kw):
    """x repeated `repeats` times along `axis`, each element in turn (GQA's repeated heads)."""
    xv = val(x)
    if axis is None:
        raise Unsupported("repeat_interleave without an axis")
    axis, r = int(axis) % xv.dim(), static_int(repeats, "repeat_interleave repeats")
    xs = shape_of(xv)
    y = c.b.op("expand", c.b.op("unsqueeze", c.v(x), axes=[axis + 1]), shape=xs[:axis + 1] + [r] + xs[axis + 1:])
    return c.b.op("reshape", y, shape=shape_of(val(n)))
