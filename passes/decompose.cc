#include "passes/decompose.h"

#include <cmath>
#include <limits>

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"

namespace kiln {
namespace {

using Rule = Value* (*)(Builder& b, const Node& n);

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

Value* softmax(Builder& b, const Node& n) {
  Value* x = b.cast(n.operand(0), DType::f32);
  SoftmaxParts p = softmax_parts(b, x, SoftmaxAttrs(n).axis());
  return b.cast(b.op(Op::Div, {p.exps, p.sum}), n.result()->dtype());
}

Value* log_softmax(Builder& b, const Node& n) {
  Value* x = b.cast(n.operand(0), DType::f32);
  SoftmaxParts p = softmax_parts(b, x, SoftmaxAttrs(n).axis());
  return b.cast(b.op(Op::Sub, {p.shifted, b.op(Op::Log, {p.sum})}), n.result()->dtype());
}

// (x - mean) * rsqrt(var + eps) * w + b for layer_norm, x * rsqrt(mean(x^2) + eps) * w for
// rms_norm; weight and bias are applied in f32 before the single cast back.
Value* norm(Builder& b, const Node& n) {
  bool layer = n.op() == Op::LayerNorm;
  const std::vector<int64_t>& axes = layer ? LayerNormAttrs(n).axes() : RmsNormAttrs(n).axes();
  Value* x = b.cast(n.operand(0), DType::f32);
  Value* centered = layer ? b.op(Op::Sub, {x, b.op(Op::Mean, {x}, reduce_attrs(axes))}) : x;
  Value* var = b.op(Op::Mean, {b.op(Op::Mul, {centered, centered})}, reduce_attrs(axes));
  Value* eps = b.constant(layer ? LayerNormAttrs(n).eps() : RmsNormAttrs(n).eps(), DType::f32);
  Value* y = b.op(Op::Mul, {centered, b.op(Op::Rsqrt, {b.op(Op::Add, {var, eps})})});
  if (n.num_operands() > 1) y = b.op(Op::Mul, {y, b.cast(n.operand(1), DType::f32)});
  if (n.num_operands() > 2) y = b.op(Op::Add, {y, b.cast(n.operand(2), DType::f32)});
  return b.cast(y, n.result()->dtype());
}

// softmax(q @ k^T * scale + mask) @ v with FlashAttention's numerics: the scores are f32
// (q and k^T are cast to f32 on the way into the first GEMM: exact widenings, which
// fuse_elementwise makes part of the GEMM's loads, so it still reads the storage type and
// accumulates in f32); scaling, masking and the softmax run in f32; the probabilities are
// rounded to v's type for the second GEMM. Rounding the scores instead would cost exp()
// their absolute error, a few percent for scores near 10 in bf16.
Value* sdpa(Builder& b, const Node& n) {
  Value *q = n.operand(0), *k = n.operand(1), *v = n.operand(2);
  int64_t r = static_cast<int64_t>(q->shape().size());
  double scale = 0;
  if (std::optional<double> given = SdpaAttrs(n).scale()) {
    scale = *given;
  } else if (auto e = q->shape().back().constant()) {
    scale = 1.0 / std::sqrt(static_cast<double>(*e));
  } else {
    return nullptr;  // reported by the caller: the default scale needs a static head dim
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

Rule rule_for(Op op) {
  switch (op) {
    case Op::Softmax: return softmax;
    case Op::LogSoftmax: return log_softmax;
    case Op::LayerNorm: case Op::RmsNorm: return norm;
    case Op::Sdpa: return sdpa;
    default: return nullptr;
  }
}

}  // namespace

absl::StatusOr<bool> decompose(Graph& g) {
  std::vector<Node*> todo;
  for (const auto& n : g.nodes())
    if (rule_for(n->op())) todo.push_back(n.get());
  for (Node* n : todo) {
    Builder b(g, n, n->loc());
    Value* out = rule_for(n->op())(b, *n);
    if (!b.status().ok())
      return invalid_argument("decompose ", n->describe(), ": ", status_message(b.status()));
    if (!out)
      return invalid_argument("decompose ", n->describe(), ": the default scale 1/sqrt(E) needs a static head dim, got ",
                              n->operand(0)->type().to_string(), "; give scale=");
    // The value keeps its name (dumps stay readable): the composite's result is retired.
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), out);
    g.erase(n);
    if (out->producer() && !g.find(name)) {
      KILN_RETURN_IF_ERROR(g.rename(out, name));
    }
  }
  return !todo.empty();
}

}  // namespace kiln
