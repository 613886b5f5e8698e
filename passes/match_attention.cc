#include "passes/match_attention.h"

#include "absl/container/flat_hash_set.h"
#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/status.h"
#include "passes/builder.h"

namespace kiln {
namespace {


// What one softmax's scores are made of.
struct Scores {
  Value *q = nullptr, *kt = nullptr;
  Value* factor = nullptr;  // the scalar the scores are divided or multiplied by
  bool divide = false;
  Value *keep = nullptr, *fill = nullptr;  // where(keep, scores, fill)
  Value* add = nullptr;                    // + add
};

class Matcher {
 public:
  explicit Matcher(Graph& g) : g_(g), returned_(g.outputs().begin(), g.outputs().end()) {}

  bool run() {
    std::vector<Node*> softmaxes;
    for (const auto& n : g_.nodes())
      if (n->op() == Op::Softmax) softmaxes.push_back(n.get());
    bool changed = false;
    for (Node* n : softmaxes) changed |= rewrite(*n);
    if (!changed) return false;
    g_.remove_dead_nodes();
    // Each attention takes the name of the matmul it replaced (dumps stay readable).
    for (auto& [v, name] : renames_)
      if (!g_.find(name)) g_.rename(v, name).IgnoreError();
    return true;
  }

 private:
  // The node reading `v`, when it is the only reader and `v` is no graph output.
  Node* only_user(const Value* v) const {
    if (returned_.contains(v) || v->users().size() != 1) return nullptr;
    return v->users()[0];
  }
  // `v` below its same-dtype casts, each read only by the next.
  Value* below_casts(Value* v) const {
    for (Node* p = v->producer(); p && p->op() == Op::Cast && p->operand(0)->dtype() == v->dtype() &&
                                  only_user(p->operand(0)) == p;
         p = v->producer())
      v = p->operand(0);
    return v;
  }
  // s = matmul(q, kt) [/ c | * c] [where(keep, ., fill)] [+ add], each step read only by the
  // next; `stage` is the first step still allowed (0: add, 1: where, 2: scale, 3: matmul).
  bool match(Value* s, int stage, Scores& m) const {
    s = below_casts(s);
    const Node* p = s->producer();
    if (!p) return false;
    if (stage <= 0 && p->op() == Op::Add) {
      for (int i : {0, 1}) {
        Value *chain = p->operand(i), *add = p->operand(1 - i);
        if (only_user(chain) == p && is_float(add->dtype()) && match(chain, 1, m)) {
          m.add = add;
          return true;
        }
      }
      return false;
    }
    if (stage <= 1 && p->op() == Op::Where) {
      std::optional<double> fill = constant_value(p->operand(2));
      if (!fill || *fill > -1e30 || only_user(p->operand(1)) != p || !match(p->operand(1), 2, m)) return false;
      m.keep = p->operand(0), m.fill = p->operand(2);
      return true;
    }
    if (stage <= 2 && (p->op() == Op::Div || p->op() == Op::Mul)) {
      for (int i : {0, 1}) {
        if (i == 1 && p->op() == Op::Div) break;
        Value *chain = p->operand(i), *c = p->operand(1 - i);
        if (c->shape().empty() && only_user(chain) == p && match(chain, 3, m)) {
          m.factor = c, m.divide = p->op() == Op::Div;
          return true;
        }
      }
      return false;
    }
    if (p->op() != Op::MatMul || p->operand(0)->shape().size() != 4 || p->operand(1)->shape().size() != 4) return false;
    m.q = p->operand(0), m.kt = p->operand(1);
    return true;
  }

  bool rewrite(Node& softmax) {
    const Shape& shape = softmax.result()->shape();
    int64_t axis = SoftmaxAttrs(softmax).axis();
    if (shape.size() != 4 || (axis != -1 && axis != 3)) return false;
    // Down: softmax [-> casts] -> matmul(., v), the probabilities its first operand.
    Value* probs = softmax.result();
    Node* u = only_user(probs);
    while (u && u->op() == Op::Cast && u->result()->dtype() == probs->dtype()) u = only_user(probs = u->result());
    if (!u || u->op() != Op::MatMul || u->operand(0) != probs) return false;
    Scores m;
    if (only_user(softmax.operand(0)) != &softmax || !match(softmax.operand(0), 0, m)) return false;
    Value* v = u->operand(1);
    DType t = m.q->dtype();
    // The operands' types first: nothing is built for a match the attention op rejects.
    Shape ks = m.kt->shape();
    std::swap(ks[2], ks[3]);
    std::vector<TensorType> types{m.q->type(), {t, ks}, v->type()};
    if (m.keep || m.add) {
      absl::StatusOr<Shape> ms = broadcast_shapes(m.keep ? m.keep->shape() : m.add->shape(), m.add ? m.add->shape() : Shape{});
      if (!ms.ok()) return false;
      types.push_back({t, *ms});
    }
    Attrs probe;
    absl::StatusOr<std::vector<TensorType>> out = infer_types(Op::Attention, types, probe);
    if (!out.ok() || (*out)[0] != u->result()->type()) return false;
    Builder b(g_, u, u->loc());
    Value* q = m.q;
    double scale = 1;
    if (m.factor) {
      std::optional<double> c = constant_value(m.factor);
      if (c && *c != 0) scale = m.divide ? 1 / *c : *c;
      else q = b.op(m.divide ? Op::Div : Op::Mul, {q, b.cast(m.factor, t)});
    }
    Value* k = b.op(Op::Permute, {m.kt}, {{"dims", std::vector<int64_t>{0, 1, 3, 2}}});
    Value* mask = nullptr;
    if (m.keep) mask = b.op(Op::Where, {m.keep, b.constant(0, t), b.cast(m.fill, t)});
    if (m.add) mask = mask ? b.op(Op::Add, {mask, b.cast(m.add, t)}) : b.cast(m.add, t);
    std::vector<Value*> operands{q, k, v};
    if (mask) operands.push_back(mask);
    Value* att = b.op(Op::Attention, operands, {{"scale", scale}});
    if (!b.status().ok()) return false;  // cannot happen: the types were checked above
    renames_.push_back({att, u->result()->name()});
    g_.replace_all_uses(u->result(), att);
    return true;
  }

  Graph& g_;
  absl::flat_hash_set<const Value*> returned_;
  std::vector<std::pair<Value*, std::string>> renames_;
};

}  // namespace

absl::StatusOr<bool> match_attention(Graph& g) { return Matcher(g).run(); }

}  // namespace kiln
