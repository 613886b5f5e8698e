#include "passes/decompose.h"

#include <cmath>
#include <limits>
#include <numeric>

#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"
#include "passes/match_attention.h"

namespace kiln {
namespace {

// A rule's replacement for n's result; an error says why n cannot be decomposed.
using Rule = absl::StatusOr<Value*> (*)(Builder& b, const Node& n);

Attrs reduce_attrs(std::vector<int64_t> axes) { return {{"axes", std::move(axes)}, {"keepdim", true}}; }

// exp(x - max(x)) and its sum over `axis`, on an f32 value: the stable softmax pieces.
struct SoftmaxParts {
  Value* shifted;  // x - max
  Value* exps;     // exp(shifted)
  Value* sum;      // sum(exps), keepdim
};
SoftmaxParts softmax_parts(Builder& b, Value* x, int64_t axis) {
  Value* m = b.op(Op::Max, {x}, reduce_attrs({axis}));
  Value* shifted = b.op(Op::Sub, {x, m});
  Value* e = b.op(Op::Exp, {shifted});
  return {shifted, e, b.op(Op::Sum, {e}, reduce_attrs({axis}))};
}

// Composites compute in f32 (f16/bf16 widened), f64 in f64.
DType compute_type(const Value* v) { return v->dtype() == DType::f64 ? DType::f64 : DType::f32; }

absl::StatusOr<Value*> softmax(Builder& b, const Node& n) {
  Value* x = b.cast(n.operand(0), compute_type(n.operand(0)));
  SoftmaxParts p = softmax_parts(b, x, SoftmaxAttrs(n).axis());
  return b.cast(b.op(Op::Div, {p.exps, p.sum}), n.result()->dtype());
}

absl::StatusOr<Value*> log_softmax(Builder& b, const Node& n) {
  Value* x = b.cast(n.operand(0), compute_type(n.operand(0)));
  SoftmaxParts p = softmax_parts(b, x, SoftmaxAttrs(n).axis());
  return b.cast(b.op(Op::Sub, {p.shifted, b.op(Op::Log, {p.sum})}), n.result()->dtype());
}

// (x - mean) * rsqrt(var + eps) * w + b for layer_norm, x * rsqrt(mean(x^2) + eps) * w for
// rms_norm; weight and bias are applied in f32 before the single cast back.
absl::StatusOr<Value*> norm(Builder& b, const Node& n) {
  bool layer = n.op() == Op::LayerNorm;
  const std::vector<int64_t>& axes = layer ? LayerNormAttrs(n).axes() : RmsNormAttrs(n).axes();
  DType ct = compute_type(n.operand(0));
  Value* x = b.cast(n.operand(0), ct);
  Value* centered = layer ? b.op(Op::Sub, {x, b.op(Op::Mean, {x}, reduce_attrs(axes))}) : x;
  Value* var = b.op(Op::Mean, {b.op(Op::Mul, {centered, centered})}, reduce_attrs(axes));
  Value* eps = b.constant(layer ? LayerNormAttrs(n).eps() : RmsNormAttrs(n).eps(), ct);
  Value* y = b.op(Op::Mul, {centered, b.op(Op::Rsqrt, {b.op(Op::Add, {var, eps})})});
  if (n.num_operands() > 1) y = b.op(Op::Mul, {y, b.cast(n.operand(1), ct)});
  if (n.num_operands() > 2) y = b.op(Op::Add, {y, b.cast(n.operand(2), ct)});
  return b.cast(y, n.result()->dtype());
}

// softmax(q @ k^T * scale + mask) @ v with FlashAttention's numerics: the scores are f32
// (q and k^T are cast to f32 on the way into the first GEMM: exact widenings, which
// fuse_elementwise makes part of the GEMM's loads, so it still reads the storage type and
// accumulates in f32); scaling, masking and the softmax run in f32; the probabilities are
// rounded to v's type for the second GEMM. Rounding the scores instead would cost exp()
// their absolute error, a few percent for scores near 10 in bf16.
absl::StatusOr<Value*> sdpa(Builder& b, const Node& n) {
  Value *q = n.operand(0), *k = n.operand(1), *v = n.operand(2);
  int64_t r = static_cast<int64_t>(q->shape().size());
  double scale = 0;
  if (std::optional<double> given = SdpaAttrs(n).scale()) {
    scale = *given;
  } else if (auto e = q->shape().back().constant()) {
    scale = 1.0 / std::sqrt(static_cast<double>(*e));
  } else {
    return invalid_argument("the default scale 1/sqrt(E) needs a static head dim, got ",
                            n.operand(0)->type().to_string(), "; give scale=");
  }
  std::vector<int64_t> swap(r);
  for (int64_t i = 0; i < r; ++i) swap[i] = i;
  std::swap(swap[r - 1], swap[r - 2]);
  Value* kt = b.op(Op::Permute, {b.cast(k, DType::f32)}, {{"dims", swap}});
  Value* s = b.op(Op::MatMul, {b.cast(q, DType::f32), kt});
  s = b.op(Op::Mul, {s, b.constant(scale, DType::f32)});
  Value* neg_inf = b.constant(-std::numeric_limits<double>::infinity(), DType::f32);
  if (SdpaAttrs(n).causal()) {
    const Dim &lq = q->shape()[r - 2], &lk = k->shape()[r - 2];
    Value* i = b.op(Op::Iota, {}, {{"shape", std::vector<SymExpr>{lq, 1}}, {"axis", int64_t{0}}});
    Value* j = b.op(Op::Iota, {}, {{"shape", std::vector<SymExpr>{1, lk}}, {"axis", int64_t{1}}});
    s = b.op(Op::Where, {b.op(Op::Le, {j, i}), s, neg_inf});
  }
  if (n.num_operands() > 3) {
    Value* mask = n.operand(3);
    s = mask->dtype() == DType::boolean ? b.op(Op::Where, {mask, s, neg_inf})
                                        : b.op(Op::Add, {s, b.cast(mask, DType::f32)});
  }
  SoftmaxParts p = softmax_parts(b, s, -1);
  Value* probs = b.cast(b.op(Op::Div, {p.exps, p.sum}), v->dtype());
  return b.op(Op::MatMul, {probs, v});
}

// attention (ops.def) as sdpa's GEMM -> softmax -> GEMM with its numerics. GQA: the G = H /
// KVH query heads sharing a kv head are rows of one GEMM (q as [B, KVH, G*Tq, D]); a paged
// k/v is gathered through the block table into [B, KVH, Tk, D]. Which keys a query sees is
// a bool [B|1, 1, Tq, Tk] from iotas and kv_lens; past kv_lens, v is zeroed so that stale
// cache rows (even NaN) cannot reach the output through a zero probability.
absl::StatusOr<Value*> attention(Builder& b, const Node& n) {
  AttentionOperands ops = attention_operands(n);
  AttentionAttrs at(n);
  Value *q = n.operand(0), *k = n.operand(1), *v = n.operand(2);
  const Shape& qs = q->shape();
  if (ops.paged()) {  // [NB, BS, KVH, D] gathered by block_table [B, MB]: [B, KVH, MB*BS, D]
    for (Value** x : {&k, &v}) {
      const Shape& xs = (*x)->shape();
      Value* rows = b.op(Op::Gather, {*x, n.operand(*ops.block_table)}, {{"axis", int64_t{0}}});
      Shape flat{qs[0], n.operand(*ops.block_table)->shape()[1] * xs[1], xs[2], xs[3]};
      *x = b.op(Op::Permute, {b.op(Op::Reshape, {rows}, {{"shape", flat}})}, {{"dims", std::vector<int64_t>{0, 2, 1, 3}}});
    }
  }
  const Dim &h = qs[1], &tq = qs[2], &kvh = k->shape()[1], &tk = k->shape()[2];
  double scale = 0;
  if (std::optional<double> given = at.scale()) scale = *given;
  else if (auto d = qs[3].constant()) scale = 1.0 / std::sqrt(static_cast<double>(*d));
  else return invalid_argument("the default scale 1/sqrt(D) needs a static head dim, got ", q->type().to_string(), "; give scale=");
  std::optional<int64_t> g = kvh == h ? std::optional<int64_t>(1) : h.constant() && kvh.constant() ? std::optional(*h.constant() / *kvh.constant()) : std::nullopt;
  if (!g) return invalid_argument("GQA needs static head counts, got ", q->type().to_string(), " and ", k->type().to_string());
  Shape rows_shape{qs[0], kvh, tq * *g, qs[3]}, scores_shape{qs[0], h, tq, tk};
  Value* qr = *g == 1 ? q : b.op(Op::Reshape, {q}, {{"shape", rows_shape}});
  Value* kt = b.op(Op::Permute, {b.cast(k, DType::f32)}, {{"dims", std::vector<int64_t>{0, 1, 3, 2}}});
  Value* s = b.op(Op::MatMul, {b.cast(qr, DType::f32), kt});
  if (*g != 1) s = b.op(Op::Reshape, {s}, {{"shape", scores_shape}});
  s = b.op(Op::Mul, {s, b.constant(scale, DType::f32)});
  if (double cap = at.softcap(); cap > 0)
    s = b.op(Op::Mul, {b.op(Op::Tanh, {b.op(Op::Mul, {s, b.constant(1 / cap, DType::f32)})}), b.constant(cap, DType::f32)});
  // Visibility: key j < L, and for causal/window, j against last = i + L - Tq.
  auto iota = [&](Shape shape, int64_t axis) { return b.op(Op::Iota, {}, {{"shape", shape}, {"axis", axis}}); };
  // A dim as an i64 value: a constant, or the sum of that many ones.
  auto dim_value = [&](const Dim& d) {
    if (std::optional<int64_t> c = d.constant()) return b.constant(static_cast<double>(*c), DType::i64);
    return b.op(Op::Sum, {b.op(Op::Expand, {b.constant(1, DType::i64)}, {{"shape", Shape{d}}})});
  };
  Value *i = iota({tq, 1}, 0), *j = iota({1, tk}, 1), *len = nullptr, *seen = nullptr, *off = nullptr;
  if (ops.kv_lens) {
    len = b.op(Op::Reshape, {b.cast(n.operand(*ops.kv_lens), DType::i64)}, {{"shape", Shape{qs[0], 1, 1, 1}}});
    seen = b.op(Op::Lt, {j, len});
    if (at.causal() || at.window() > 0) off = b.op(Op::Sub, {len, dim_value(tq)});
  } else if (at.causal() || at.window() > 0) {
    std::optional<int64_t> diff = (tk - tq).constant();
    off = diff ? b.constant(static_cast<double>(*diff), DType::i64) : b.op(Op::Sub, {dim_value(tk), dim_value(tq)});
  }
  Value* last = off ? b.op(Op::Add, {i, off}) : nullptr;
  auto both = [&](Value* a, Value* c) { return a ? b.op(Op::And, {a, c}) : c; };
  if (at.causal()) seen = both(seen, b.op(Op::Le, {j, last}));
  if (at.window() > 0) seen = both(seen, b.op(Op::Gt, {j, b.op(Op::Sub, {last, b.constant(static_cast<double>(at.window()), DType::i64)})}));
  Value* neg_inf = b.constant(-std::numeric_limits<double>::infinity(), DType::f32);
  if (seen) s = b.op(Op::Where, {seen, s, neg_inf});
  if (ops.mask) {
    Value* mask = n.operand(*ops.mask);
    s = mask->dtype() == DType::boolean ? b.op(Op::Where, {mask, s, neg_inf}) : b.op(Op::Add, {s, b.cast(mask, DType::f32)});
  }
  SoftmaxParts p = softmax_parts(b, s, -1);
  Value* probs = b.cast(b.op(Op::Div, {p.exps, p.sum}), v->dtype());
  if (*g != 1) probs = b.op(Op::Reshape, {probs}, {{"shape", Shape{qs[0], kvh, tq * *g, tk}}});
  if (ops.kv_lens) {
    Value* key_ok = b.op(Op::Lt, {iota({1, 1, tk, 1}, 2), len});
    v = b.op(Op::Where, {key_ok, v, b.constant(0, v->dtype())});
  }
  Value* out = b.op(Op::MatMul, {probs, v});
  return *g == 1 ? out : b.op(Op::Reshape, {out}, {{"shape", n.result()->shape()}});
}

// ---- convolution and pooling -----------------------------------------------------

Attrs window_attrs(const WindowDims& w) {
  std::vector<int64_t> pads = w.pads_begin;
  pads.insert(pads.end(), w.pads_end.begin(), w.pads_end.end());
  return {{"kernel", w.kernel}, {"strides", w.strides}, {"pads", pads}, {"dilations", w.dilations},
          {"ceil_mode", w.ceil_mode}};
}

// Axes [2, 2 + r): the kernel dims of window(x [N, C, s...]).
std::vector<int64_t> kernel_axes(size_t r) {
  std::vector<int64_t> axes(r);
  std::iota(axes.begin(), axes.end(), 2);
  return axes;
}

// ---- how a convolution is computed (the one place that decides) ---------------------
//
// Contract: given a conv's geometry and weight shape, picks its strategy; both strategies
// compute in f32 (f16/bf16 operands widened on load, one rounding at the end, as the
// reference does) and leave the bias to the same fused epilogue.
//  - Direct: each output channel reads a single input channel (C/G = 1: depthwise convs,
//    with any channel multiplier). The conv is sum over the kernel dims of window(x) times
//    the weight, one reduction kernel that reads x through the window view; no im2col
//    columns are materialized and no GEMM runs (as a GEMM its K would be the kernel size,
//    a handful of multiply-adds per call of a grouped GEMM).
//  - Gemm: everything else: im2col columns times the weight matrix (conv_gemm), where a
//    library GEMM does the multiply-adds and the bias/activation/residual fuse into its
//    epilogue.
// The choice is visible in the IR after decompose (a `sum` over a window, or a matmul).
enum class ConvStrategy { Direct, Gemm };

ConvStrategy choose_conv_strategy(const Shape& w) {
  return w[1].constant() == std::optional<int64_t>(1) ? ConvStrategy::Direct : ConvStrategy::Gemm;
}

Value* reshape_to(Builder& b, Value* v, Shape s) { return b.op(Op::Reshape, {v}, {{"shape", std::move(s)}}); }

// conv(x [N, C, s...], w [Cout, C/G, k...], bias?) as a GEMM over im2col columns:
// window(x) [N, C, k..., o...] -> [N, G, C/G*K, L] (a plain reshape of x for a 1x1 kernel
// with stride 1 and no padding), times w as [G, Cout/G, C/G*K] (as [Cout, C*K] when G is 1),
// plus bias, then [N, Cout, o...]. f16/bf16 operands are widened on load and the f32 sum
// (with the bias) is rounded once, as the reference does; f64 computes in f64.
absl::StatusOr<Value*> conv_gemm(Builder& b, Value* x, Value* w, Value* bias, const WindowDims& wd, int64_t groups,
                                 DType out_t) {
  const Shape &xs = x->shape(), &ws = w->shape();
  size_t r = wd.rank();
  SymExpr n = xs[0], cout = ws[0], cg = ws[1], k = 1, l = 1;
  Shape out_shape{n, cout};
  for (size_t i = 0; i < r; ++i) {
    KILN_ASSIGN_OR_RETURN(SymExpr o, wd.out(i, xs[2 + i]));
    out_shape.push_back(o);
    l *= o;
    k *= wd.kernel[i];
  }
  std::optional<SymExpr> cog = cout.divide_exact(groups);
  if (!cog) return invalid_argument("output channels ", cout.to_string(), " do not divide into ", groups, " groups");
  bool pointwise = true;
  for (size_t i = 0; i < r; ++i)
    pointwise = pointwise && wd.kernel[i] == 1 && wd.strides[i] == 1 && wd.pads_begin[i] == 0 && wd.pads_end[i] == 0;
  Value* cols = pointwise ? x : b.op(Op::Window, {x}, window_attrs(wd));
  Value* y;
  DType ct = out_t == DType::f64 ? DType::f64 : DType::f32;  // f64 convolutions compute in f64
  if (groups == 1) {
    cols = b.cast(reshape_to(b, cols, {n, cg * k, l}), ct);
    y = b.op(Op::MatMul, {b.cast(reshape_to(b, w, {cout, cg * k}), ct), cols});
    if (bias) y = b.op(Op::Add, {y, reshape_to(b, b.cast(bias, ct), {cout, 1})});
  } else {
    cols = b.cast(reshape_to(b, cols, {n, groups, cg * k, l}), ct);
    y = b.op(Op::MatMul, {b.cast(reshape_to(b, w, {groups, *cog, cg * k}), ct), cols});
    if (bias) y = b.op(Op::Add, {y, reshape_to(b, b.cast(bias, ct), {groups, *cog, 1})});
  }
  return reshape_to(b, b.cast(y, out_t), out_shape);
}

// conv(x [N, C, s...], w [C*M, 1, k...], bias?) with C/G = 1 (G = C, M outputs per input
// channel): window(x) [N, C, k..., o...] times w as [C, k..., 1...], summed over the kernel
// dims, plus bias. With M > 1, the window is [N, C, 1, k..., o...], w [C, M, k..., 1...] and
// the sum [N, C, M, o...] is [N, C*M, o...]; with M = 1 no reshape follows the sum, so that
// the bias and what follows fuse into the reduction kernel.
absl::StatusOr<Value*> conv_direct(Builder& b, Value* x, Value* w, Value* bias, const WindowDims& wd, int64_t groups,
                                   DType out_t) {
  const Shape &xs = x->shape(), &ws = w->shape();
  size_t r = wd.rank();
  std::optional<SymExpr> mult = ws[0].divide_exact(groups);
  if (!mult) return invalid_argument("output channels ", ws[0].to_string(), " do not divide into ", groups, " groups");
  bool one = *mult == SymExpr(1);
  Shape win_shape{xs[0], xs[1]}, w_shape{groups}, out_shape{xs[0], ws[0]};
  if (!one) {
    win_shape.push_back(1);
    w_shape.push_back(*mult);
  }
  std::vector<int64_t> axes;
  for (size_t i = 0; i < r; ++i) {
    axes.push_back(static_cast<int64_t>(win_shape.size()));
    win_shape.push_back(wd.kernel[i]);
    w_shape.push_back(wd.kernel[i]);
  }
  for (size_t i = 0; i < r; ++i) {
    KILN_ASSIGN_OR_RETURN(SymExpr o, wd.out(i, xs[2 + i]));
    win_shape.push_back(o);
    w_shape.push_back(1);
    out_shape.push_back(o);
  }
  DType ct = out_t == DType::f64 ? DType::f64 : DType::f32;  // f64 convolutions compute in f64
  Value* cols = b.op(Op::Window, {b.cast(x, ct)}, window_attrs(wd));
  if (!one) cols = reshape_to(b, cols, win_shape);
  Value* prod = b.op(Op::Mul, {cols, reshape_to(b, b.cast(w, ct), w_shape)});
  Value* y = b.op(Op::Sum, {prod}, {{"axes", axes}, {"keepdim", false}});
  if (!one) y = reshape_to(b, y, out_shape);
  if (bias) {
    Shape bias_shape{ws[0]};
    for (size_t i = 0; i < r; ++i) bias_shape.push_back(1);
    y = b.op(Op::Add, {y, reshape_to(b, b.cast(bias, ct), bias_shape)});
  }
  return b.cast(y, out_t);
}

absl::StatusOr<Value*> conv_as(Builder& b, Value* x, Value* w, Value* bias, const WindowDims& wd, int64_t groups,
                               DType out_t) {
  switch (choose_conv_strategy(w->shape())) {
    case ConvStrategy::Direct: return conv_direct(b, x, w, bias, wd, groups, out_t);
    case ConvStrategy::Gemm: break;
  }
  return conv_gemm(b, x, w, bias, wd, groups, out_t);
}

absl::StatusOr<Value*> conv(Builder& b, const Node& n) {
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(n));
  return conv_as(b, n.operand(0), n.operand(1), n.num_operands() > 2 ? n.operand(2) : nullptr, wd,
                 ConvAttrs(n).groups(), n.result()->dtype());
}

// conv_transpose as the conv it is the adjoint of: x with stride-1 zeros inserted between
// its elements along each spatial dim, padded by dilation*(k-1) - pads (plus output_padding
// at the end), convolved at stride 1 with w flipped along the spatial dims and its channel
// dims swapped within each group.
absl::StatusOr<Value*> conv_transpose(Builder& b, const Node& n) {
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(n));
  ConvTransposeAttrs a(n);
  int64_t groups = a.groups();
  size_t r = wd.rank();
  std::vector<int64_t> out_pad = a.output_padding().value_or(std::vector<int64_t>(r, 0));
  Value *x = n.operand(0), *w = n.operand(1);
  WindowDims cd = wd;
  for (size_t i = 0; i < r; ++i) {
    int64_t s = wd.strides[i], axis = static_cast<int64_t>(2 + i);
    cd.strides[i] = 1;
    cd.pads_begin[i] = wd.span(i) - 1 - wd.pads_begin[i];
    cd.pads_end[i] = wd.span(i) - 1 - wd.pads_end[i] + out_pad[i];
    if (cd.pads_begin[i] < 0 || cd.pads_end[i] < 0)
      return invalid_argument("pads ", wd.pads_begin[i], "+", wd.pads_end[i], " larger than dilation*(kernel-1) = ",
                              wd.span(i) - 1, " are not supported");
    if (s == 1) continue;
    // [.., H, ..] -> [.., H, s, ..] (x then s-1 zeros) -> [.., H*s, ..]: the last s-1 zeros
    // replace as much end padding, or are sliced off.
    Shape xs = x->shape();
    Value* u = b.op(Op::Unsqueeze, {x}, {{"axes", std::vector<int64_t>{axis + 1}}});
    Shape zs = u->shape();
    zs[axis + 1] = s - 1;
    Value* z = b.op(Op::Expand, {b.constant(0, x->dtype())}, {{"shape", zs}});
    Shape merged = xs;
    merged[axis] = xs[axis] * s;
    x = b.op(Op::Reshape, {b.op(Op::Concat, {u, z}, {{"axis", axis + 1}})}, {{"shape", merged}});
    if (cd.pads_end[i] >= s - 1) {
      cd.pads_end[i] -= s - 1;
    } else {
      SymExpr keep = merged[axis] - (s - 1);
      std::optional<int64_t> len = keep.constant();
      if (!len) return invalid_argument("stride ", s, " with end pad ", wd.pads_end[i], " needs a static spatial size");
      x = b.op(Op::Slice, {x}, {{"axis", axis}, {"start", int64_t{0}}, {"end", *len}});
    }
  }
  // w [G*Cig, Cog, k...] -> [G, Cig, Cog, k...] -> [G, Cog, Cig, k...] -> [G*Cog, Cig, k...], flipped.
  const Shape& ws = w->shape();
  std::optional<SymExpr> cig = ws[0].divide_exact(groups);
  if (!cig) return invalid_argument("input channels ", ws[0].to_string(), " do not divide into ", groups, " groups");
  Shape split{groups, *cig, ws[1]}, merged{ws[1] * groups, *cig};
  std::vector<int64_t> perm{0, 2, 1};
  for (size_t i = 0; i < r; ++i) {
    split.push_back(ws[2 + i]);
    merged.push_back(ws[2 + i]);
    perm.push_back(static_cast<int64_t>(3 + i));
  }
  Value* wt = b.op(Op::Permute, {b.op(Op::Reshape, {w}, {{"shape", split}})}, {{"dims", perm}});
  wt = b.op(Op::Reshape, {wt}, {{"shape", merged}});
  for (size_t i = 0; i < r; ++i)
    wt = b.op(Op::Slice, {wt}, {{"axis", static_cast<int64_t>(2 + i)}, {"start", int64_t{-1}},
                               {"end", -(wd.kernel[i] + 1)}, {"step", int64_t{-1}}});
  KILN_RETURN_IF_ERROR(b.status());
  return conv_as(b, x, wt, n.num_operands() > 2 ? n.operand(2) : nullptr, cd, groups, n.result()->dtype());
}

// The number of positions of each window inside [-pad_begin, in + pad_end), f32 [o...], as
// a parameter computed here: with count_include_pad only ceil_mode's last windows are short,
// and where they end depends on the static spatial sizes.
absl::StatusOr<Value*> padded_window_count(Builder& b, const WindowDims& wd, const Shape& in, const Shape& out) {
  size_t r = wd.rank();
  std::vector<int64_t> in_n, out_n;
  for (size_t i = 0; i < r; ++i) {
    std::optional<int64_t> a = in[i].constant(), o = out[i].constant();
    if (!a || !o) return invalid_argument("count_include_pad with ceil_mode needs static spatial sizes, got ", shape_to_string(in));
    in_n.push_back(*a);
    out_n.push_back(*o);
  }
  auto t = std::make_shared<HostTensor>(DType::f32, out_n);
  for (int64_t at = 0; at < t->numel(); ++at) {
    double count = 1;
    for (size_t i = r, rest = at; i-- > 0; rest /= out_n[i]) {
      int64_t o = rest % out_n[i], extent = in_n[i] + wd.pads_begin[i] + wd.pads_end[i], inside = 0;
      for (int64_t k = 0; k < wd.kernel[i]; ++k) inside += o * wd.strides[i] + k * wd.dilations[i] < extent;
      count *= static_cast<double>(inside);
    }
    t->set(at, count);
  }
  Graph& g = b.graph();
  return g.add_param(g.fresh_name("pool_count"), TensorType{DType::f32, Shape(out.begin(), out.end())}, std::move(t));
}

// max_pool: the max over the kernel dims of window(x) padded with -inf. avg_pool: the f32
// sum over window(x) padded with 0, divided by the window size (no padding, or padding
// counted, without ceil_mode), else by a count per output position: the sum of the same
// window over ones (padding not counted) or the padded window count.
absl::StatusOr<Value*> pool(Builder& b, const Node& n) {
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(n));
  Value* x = n.operand(0);
  size_t r = wd.rank();
  Attrs wa = window_attrs(wd);
  Attrs reduce{{"axes", kernel_axes(r)}, {"keepdim", false}};
  if (n.op() == Op::MaxPool) {
    wa.set("pad_value", -std::numeric_limits<double>::infinity());
    return b.op(Op::Max, {b.op(Op::Window, {x}, wa)}, reduce);
  }
  Value* sum = b.op(Op::Sum, {b.op(Op::Window, {b.cast(x, DType::f32)}, wa)}, reduce);
  bool padded = false;
  int64_t k = 1;
  for (size_t i = 0; i < r; ++i) {
    padded = padded || wd.pads_begin[i] > 0 || wd.pads_end[i] > 0;
    k *= wd.kernel[i];
  }
  Value* count;
  if (!wd.ceil_mode && (!padded || PoolAttrs(n).count_include_pad())) {
    count = b.constant(static_cast<double>(k), DType::f32);
  } else if (!PoolAttrs(n).count_include_pad()) {
    Shape ones_shape{1, 1};
    ones_shape.insert(ones_shape.end(), x->shape().begin() + 2, x->shape().end());
    Value* ones = b.op(Op::Expand, {b.constant(1, DType::f32)}, {{"shape", ones_shape}});
    count = b.op(Op::Sum, {b.op(Op::Window, {ones}, wa)}, reduce);
  } else {
    KILN_ASSIGN_OR_RETURN(count, padded_window_count(b, wd, Shape(x->shape().begin() + 2, x->shape().end()),
                                                     Shape(n.result()->shape().begin() + 2, n.result()->shape().end())));
  }
  return b.cast(b.op(Op::Div, {sum, count}), n.result()->dtype());
}

// all_gather and reduce_scatter along an axis a other than 0: the operand permuted so that a
// comes first, the collective along 0 (what devices do: they concatenate or cut whole buffers,
// rank after rank), its result permuted back.
absl::StatusOr<Value*> collective(Builder& b, const Node& n) {
  const int64_t rank = static_cast<int64_t>(n.operand(0)->shape().size());
  const int64_t a = CollectiveAttrs(n).axis() < 0 ? CollectiveAttrs(n).axis() + rank : CollectiveAttrs(n).axis();
  std::vector<int64_t> to_front{a}, back(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i)
    if (i != a) to_front.push_back(i);
  for (int64_t j = 0; j < rank; ++j) back[to_front[j]] = j;
  Value* x = b.op(Op::Permute, {n.operand(0)}, {{"dims", to_front}});
  Value* c = b.op(n.op(), {x}, {{"axis", int64_t{0}}, {"ranks", CollectiveAttrs(n).ranks()}});
  return b.op(Op::Permute, {c}, {{"dims", back}});
}

// Whether its rule applies to `n` (to a collective only along another axis than 0).
bool to_decompose(const Node& n) {
  if (n.op() != Op::AllGather && n.op() != Op::ReduceScatter) return true;
  const int64_t a = CollectiveAttrs(n).axis();
  return a != 0 && a != -static_cast<int64_t>(n.operand(0)->shape().size());
}

Rule rule_for(Op op) {
  switch (op) {
    case Op::AllGather:
    case Op::ReduceScatter: return collective;
    case Op::Conv: return conv;
    case Op::ConvTranspose: return conv_transpose;
    case Op::MaxPool: case Op::AvgPool: return pool;
    case Op::Softmax: return softmax;
    case Op::LogSoftmax: return log_softmax;
    case Op::LayerNorm: case Op::RmsNorm: return norm;
    case Op::Sdpa: return sdpa;
    case Op::Attention: return attention;
    default: return nullptr;
  }
}

// Each sdpa over [B, H, T, E] operands of one batch and head count (nothing broadcast) that
// the target keeps whole as attention becomes that attention node: causal sdpa is top-left
// aligned and attention bottom-right, the same where Tq = Tk (required then).
absl::StatusOr<bool> sdpa_to_attention(Graph& g, const KeepAttention& keep) {
  std::vector<Node*> sdpas;
  for (const auto& n : g.nodes())
    if (n->op() == Op::Sdpa) sdpas.push_back(n.get());
  bool changed = false;
  for (Node* n : sdpas) {
    const Shape &qs = n->operand(0)->shape(), &ks = n->operand(1)->shape(), &vs = n->operand(2)->shape();
    SdpaAttrs sa(*n);
    if (qs.size() != 4 || ks[0] != qs[0] || vs[0] != qs[0] || ks[1] != qs[1] || vs[1] != qs[1] || vs[3] != qs[3] ||
        (sa.causal() && qs[2] != ks[2]))
      continue;
    Attrs a{{"causal", sa.causal()}};
    if (std::optional<double> s = sa.scale()) a.set("scale", *s);
    Value* att = nullptr;
    {
      Builder b(g, n, n->loc());
      att = b.op(Op::Attention, n->operands(), a);
      if (!b.status().ok()) continue;  // not an attention after all (a mask of another dtype)
    }
    if (!keep(*att->producer())) {
      g.erase(att->producer());
      continue;
    }
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), att);
    g.erase(n);
    KILN_RETURN_IF_ERROR(g.rename(att, name));
    changed = true;
  }
  return changed;
}

}  // namespace

absl::StatusOr<bool> decompose(Graph& g, const KeepAttention& keep_attention) {
  KILN_ASSIGN_OR_RETURN(bool matched, match_attention(g));
  if (keep_attention) {
    KILN_ASSIGN_OR_RETURN(bool fused, sdpa_to_attention(g, keep_attention));
    matched = matched || fused;
  }
  std::vector<Node*> todo;
  for (const auto& n : g.nodes())
    if (rule_for(n->op()) && to_decompose(*n) && !(n->op() == Op::Attention && keep_attention && keep_attention(*n)))
      todo.push_back(n.get());
  for (Node* n : todo) {
    Builder b(g, n, n->loc());
    absl::StatusOr<Value*> out_or = rule_for(n->op())(b, *n);
    absl::Status st = out_or.ok() ? b.status() : out_or.status();
    if (!st.ok()) return invalid_argument("decompose ", n->describe(), ": ", status_message(st));
    Value* out = *out_or;
    // The value keeps its name (dumps stay readable): the composite's result is retired.
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), out);
    g.erase(n);
    if (out->producer() && !g.find(name)) {
      KILN_RETURN_IF_ERROR(g.rename(out, name));
    }
  }
  return matched || !todo.empty();
}

}  // namespace kiln
