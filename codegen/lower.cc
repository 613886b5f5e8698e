#include "codegen/lower.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "codegen/index_simplify.h"
#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using kir::Expr;
using kir::Index;
using kir::Kernel;
using kir::Stage;
using Indices = std::vector<Index>;

bool is_one(const Dim& d) { return d == SymExpr(1); }

// Row-major flat offset of `idx` in a dense tensor of `shape` (Horner form).
Index flatten(const Indices& idx, const Shape& shape) {
  Index off(0);
  for (size_t i = 0; i < shape.size(); ++i) off = off * Index::from_dim(shape[i]) + idx[i];
  return off;
}

// The multi-index of flat offset `lin` in `shape`.
Indices unflatten(Index lin, const Shape& shape) {
  Indices idx(shape.size());
  for (size_t j = shape.size(); j-- > 1;) {
    Index d = Index::from_dim(shape[j]);
    idx[j] = Index::mod(lin, d);
    lin = Index::floordiv(lin, d);
  }
  if (!shape.empty()) idx[0] = lin;
  return idx;
}

// The index into an operand of shape `x` that NumPy broadcasting reads for output index
// `idx` (shape aligned right; size-1 dims read element 0).
Indices broadcast_index(const Indices& idx, const Shape& x) {
  Indices out(x.size());
  size_t off = idx.size() - x.size();
  for (size_t j = 0; j < x.size(); ++j) out[j] = is_one(x[j]) ? Index(0) : idx[off + j];
  return out;
}

// The loop variables over `shape`, one per dim, except that a dim of extent 1 reads 0: the
// index that broadcasting produces for it, so that every path to a value gives one index.
Indices vars(const Shape& shape, Index (*make)(int)) {
  Indices v;
  for (size_t i = 0; i < shape.size(); ++i) v.push_back(is_one(shape[i]) ? Index(0) : make(static_cast<int>(i)));
  return v;
}

bool same_indices(const Indices& a, const Indices& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!a[i].same_as(b[i])) return false;
  return true;
}

std::string indices_text(const Indices& idx) {
  return str_cat("[", str_join(idx, ", ", [](const Index& i) { return kir::print_index(i); }), "]");
}

class Lowerer {
 public:
  Lowerer(const KernelGroup& group, const LowerLog& log) : group_(group), log_(log) {}

  absl::StatusOr<Kernel> run() {
    for (Node* n : group_.nodes) nodes_.insert(n);
    for (Node* n : group_.prologue) nodes_.insert(n);
    std::vector<const Node*> writers;
    for (const Node* n : group_.nodes)
      if (writes_state(*n)) writers.push_back(n);
    // The state a writer updates is its output buffer (the same memory), never an input.
    for (Value* v : group_.inputs)
      if (std::none_of(writers.begin(), writers.end(), [&](const Node* w) { return v == w->operand(0); }))
        input_buffer(v);
    for (Value* v : group_.outputs) {
      if (!v->producer() || !nodes_.contains(v->producer()))
        return err("output %", v->name(), " is not computed by the group");
    }
    const Node* gemm = nullptr;
    std::vector<const Node*> reductions;
    for (const Node* n : group_.nodes) {
      if (n->info().kind == OpKind::Gemm) gemm = n;
      if (n->info().kind == OpKind::Reduction) reductions.push_back(n);
    }
    const Node* main = gemm ? gemm : !reductions.empty() ? reductions.front() : group_.nodes.empty() ? nullptr
                       : group_.kind == KernelGroup::Kind::Elementwise ? group_.nodes.back() : group_.nodes.front();
    k_.name = str_cat("k", group_.id, main ? str_cat("_", op_name(main->op())) : std::string());
    say(str_cat("lower group ", group_.id, " (", group_.nodes.size(), " nodes) as ", k_.name));

    absl::Status s;
    if (!writers.empty()) s = lower_cache_writes(writers);
    else if (group_.kind == KernelGroup::Kind::Attention) s = routine_buffers("a fused attention step");
    else if (group_.kind == KernelGroup::Kind::Extern) s = routine_buffers("a call of the extern op");
    else if (group_.kind == KernelGroup::Kind::Collective) s = routine_buffers("the communicator's collective");
    else if (group_.kind == KernelGroup::Kind::Gemm) s = lower_gemm(gemm);
    else if (gemm) s = err(gemm->describe(), " is a GEMM outside a Gemm group");
    else if (!reductions.empty()) s = lower_reduction(reductions);
    else s = lower_elementwise();
    KILN_RETURN_IF_ERROR(s);
    kir::simplify_indices(k_);

    // Output buffers follow the input buffers, so they are numbered only now; stores
    // recorded them by position in group_.outputs.
    int first_output = static_cast<int>(k_.buffers.size());
    for (Value* v : group_.outputs)
      k_.buffers.push_back({v->name(), v->dtype(), v->shape(), kir::Buffer::Role::Output});
    if (!k_.checks.empty())  // stored at position outputs.size() (check_site)
      k_.buffers.push_back({str_cat(k_.name, ".checks"), DType::i64,
                            {SymExpr(2 * static_cast<int64_t>(k_.checks.size()))}, kir::Buffer::Role::Check});
    for (Stage& st : k_.stages)
      for (kir::Store& store : st.stores) store.buffer += first_output;

    std::set<std::string> syms;
    for (const kir::Buffer& b : k_.buffers)
      for (const Dim& d : b.shape) d.collect_symbols(syms);
    for (const std::vector<Node*>* list : {&group_.nodes, &group_.prologue})
      for (const Node* n : *list)
      for (const Value* v : n->results())
        for (const Dim& d : v->shape()) d.collect_symbols(syms);
    k_.symbols.assign(syms.begin(), syms.end());
    say(str_cat("kernel ", k_.name, ": ", k_.buffers.size(), " buffers, ", k_.stages.size(), " stages, ",
                next_let_, " lets"));
    return std::move(k_);
  }

 private:
  template <typename... A>
  absl::Status err(const A&... parts) const {
    return invalid_argument("lowering group ", group_.id, ": ", parts...);
  }
  void say(const std::string& line) const {
    if (log_) log_(line);
  }

  int input_buffer(const Value* v) {
    auto it = buffers_.find(v);
    if (it != buffers_.end()) return it->second;
    int id = static_cast<int>(k_.buffers.size());
    k_.buffers.push_back({v->name(), v->dtype(), v->shape(), kir::Buffer::Role::Input});
    buffers_[v] = id;
    return id;
  }

  int output_position(const Value* v) const {
    return static_cast<int>(std::find(group_.outputs.begin(), group_.outputs.end(), v) - group_.outputs.begin());
  }

  Stage& stage() { return k_.stages.back(); }

  void begin_stage(Stage::Kind kind, std::vector<Dim> extents) {
    Stage st;
    st.kind = kind;
    st.extents = std::move(extents);
    k_.stages.push_back(std::move(st));
    memo_.clear();
  }

  // Names `e` with a let of the current stage so that every later use shares it. Leaves
  // (constants, lets, stage results, the GEMM accumulator) are already names.
  Expr bind(Expr e) {
    switch (e.kind()) {
      case kir::ExprKind::Const:
      case kir::ExprKind::Let:
      case kir::ExprKind::StageResult:
      case kir::ExprKind::GemmAcc: return e;
      default: break;
    }
    int id = next_let_++;
    stage().lets.push_back({id, e});
    return Expr::let(id, e.dtype());
  }

  absl::Status store(const Value* v, const Indices& idx) {
    KILN_ASSIGN_OR_RETURN(Expr e, value_at(v, idx));
    stage().stores.push_back({output_position(v), flatten(idx, v->shape()), Expr::cast(e, v->dtype())});
    return absl::OkStatus();
  }

  // ---- iteration spaces -------------------------------------------------------

  absl::Status lower_elementwise() {
    bool one_shape = std::all_of(group_.outputs.begin(), group_.outputs.end(),
                                 [&](Value* v) { return v->shape() == group_.outputs.front()->shape(); });
    if (one_shape && !group_.outputs.empty()) {
      const Shape& s = group_.outputs.front()->shape();
      k_.domain = s;
      say(str_cat("  domain ", shape_to_string(s)));
      begin_stage(Stage::Kind::Map, {});
      for (Value* v : group_.outputs)
        KILN_RETURN_IF_ERROR(store(v, vars(s, Index::outer)));
      say(str_cat("  map stage: ", stage().lets.size(), " lets, ", stage().stores.size(), " stores"));
      return absl::OkStatus();
    }
    // Outputs of different shapes: one map stage per shape, each over its own extents.
    std::vector<Shape> shapes;
    for (Value* v : group_.outputs)
      if (std::find(shapes.begin(), shapes.end(), v->shape()) == shapes.end()) shapes.push_back(v->shape());
    for (const Shape& s : shapes) {
      begin_stage(Stage::Kind::Map, s);
      for (Value* v : group_.outputs)
        if (v->shape() == s)
          KILN_RETURN_IF_ERROR(store(v, vars(s, Index::inner)));
      say(str_cat("  map stage over ", shape_to_string(s), ": ", stage().lets.size(), " lets, ",
                  stage().stores.size(), " stores"));
    }
    return absl::OkStatus();
  }

  // An Attention group runs as the device's fused routine (codegen/attention.h), an Extern
  // group as the user's function (ir/extern_op.h), a Collective group as the communicator's
  // call (runtime/communicator.h), never as kernel IR: its kernel is its
  // buffers alone, over the (first) output's domain, with no stage.
  absl::Status routine_buffers(std::string_view what) {
    k_.domain = group_.nodes[0]->result()->shape();
    say(str_cat("  no loop nest (the program runs it as ", what, ")"));
    return absl::OkStatus();
  }

  // cache_write (ops.def) as a scatter over new's elements: each stores into the cache row
  // that its position (and the block table) names, masked off where that row lies outside the
  // cache; indices are clamped so that every address formed is in bounds. Writes of one
  // group (fuse_elementwise: new rows of one shape at the same positions) share the loop.
  absl::Status lower_cache_writes(const std::vector<const Node*>& writers) {
    k_.domain = writers[0]->operand(1)->shape();
    begin_stage(Stage::Kind::Map, {});
    for (const Node* w : writers) KILN_RETURN_IF_ERROR(lower_cache_write(*w, vars(k_.domain, Index::outer)));
    return absl::OkStatus();
  }

  absl::Status lower_cache_write(const Node& n, const Indices& o) {
    const Value &x = *n.operand(1), &cache = *n.operand(0);
    const Shape &xs = x.shape(), &cs = cache.shape();
    const Value* table = n.num_operands() > 3 ? n.operand(3) : nullptr;
    auto i64 = [](const Expr& e) { return Expr::cast(e, DType::i64); };
    auto within = [&](const Expr& v, const Index& hi) {  // 0 <= v < hi, as a bool let
      Expr lo_ok = Expr::binary(Op::Ge, v, Expr::constant(0, DType::i64), DType::boolean);
      Expr hi_ok = Expr::binary(Op::Lt, v, Expr::index_value(hi), DType::boolean);
      return bind(Expr::binary(Op::And, bind(lo_ok), bind(hi_ok), DType::boolean));
    };
    auto clamp = [](const Expr& v, const Index& hi) { return Index::min(Index::max(Index::scalar(v), 0), hi - Index(1)); };
    KILN_ASSIGN_OR_RETURN(Expr value, value_at(&x, o));
    const Value& pos = *n.operand(2);  // [B]: row positions[b] + t; [B, T]: row positions[b, t]
    bool per_token = pos.shape().size() == 2;
    KILN_ASSIGN_OR_RETURN(Expr start, value_at(&pos, per_token ? Indices{o[0], o[2]} : Indices{o[0]}));
    Expr row = bind(per_token ? i64(start) : Expr::binary(Op::Add, i64(start), Expr::index_value(o[2]), DType::i64));
    Index rows = table ? Index::from_dim(table->shape()[1]) * Index::from_dim(cs[1]) : Index::from_dim(cs[2]);
    Expr ok = within(row, rows);
    Index r = clamp(row, rows), at;
    if (table) {
      Index bs = Index::from_dim(cs[1]), blocks = Index::from_dim(cs[0]);
      KILN_ASSIGN_OR_RETURN(Expr blk, value_at(table, {o[0], Index::floordiv(r, bs)}));
      Expr b = bind(i64(blk));
      ok = bind(Expr::binary(Op::And, ok, within(b, blocks), DType::boolean));
      at = flatten({clamp(b, blocks), Index::mod(r, bs), o[1], o[3]}, cs);
    } else {
      at = flatten({o[0], o[1], r, o[3]}, cs);
    }
    stage().stores.push_back({output_position(n.result()), at, Expr::cast(value, cache.dtype()), ok});
    say(str_cat("  scatter over ", shape_to_string(xs), table ? " through the block table" : ""));
    return absl::OkStatus();
  }

  absl::Status lower_reduction(const std::vector<const Node*>& reductions) {
    const Node& first = *reductions.front();
    const Shape& x = first.operand(0)->shape();
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, reduction_axes(first));
    auto reduced = [&](size_t i) { return std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i)); };
    Shape inner, keep_shape, kept;
    Indices full, keep_row;
    for (size_t i = 0; i < x.size(); ++i) {
      if (reduced(i)) {
        full.push_back(is_one(x[i]) ? Index(0) : Index::inner(static_cast<int>(inner.size())));
        inner.push_back(x[i]);
        keep_shape.push_back(1);
        keep_row.push_back(0);
      } else {
        Index o = is_one(x[i]) ? Index(0) : Index::outer(static_cast<int>(k_.domain.size()));
        full.push_back(o);
        keep_row.push_back(o);
        k_.domain.push_back(x[i]);
        keep_shape.push_back(x[i]);
      }
    }
    kept = k_.domain;
    Indices row = vars(kept, Index::outer);
    say(str_cat("  domain ", shape_to_string(k_.domain), ", reduced extents ", shape_to_string(inner)));

    for (const Node* r : reductions) {
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> r_axes, reduction_axes(*r));
      if (r->operand(0)->shape() != x || r_axes != axes)
        return err(r->describe(), " reduces ", r->operand(0)->type().to_string(), " over other axes than ",
                   first.describe(), " (one iteration space per kernel)");
      begin_stage(Stage::Kind::Reduce, inner);
      DType in_t = r->operand(0)->dtype();
      Stage& st = stage();
      // u64 keeps its type so that max/min/argmax compare unsigned; f64 accumulates in f64.
      st.acc_dtype = in_t == DType::f64 || in_t == DType::u64 ? in_t : is_float(in_t) ? DType::f32 : DType::i64;
      switch (r->op()) {
        case Op::Sum: case Op::Mean: st.combiner = kir::Combiner::Sum; break;
        case Op::Prod: st.combiner = kir::Combiner::Prod; break;
        case Op::Max: st.combiner = kir::Combiner::Max; break;
        case Op::Min: st.combiner = kir::Combiner::Min; break;
        default: st.combiner = kir::Combiner::ArgMax; break;
      }
      KILN_ASSIGN_OR_RETURN(Expr value, value_at(r->operand(0), full));
      stage().value = Expr::cast(value, stage().acc_dtype);
      reductions_[r] = {static_cast<int>(k_.stages.size()) - 1, reduction_keepdim(*r) ? keep_row : row};
      say(str_cat("  s", k_.stages.size() - 1, " = reduce ", kir::combiner_name(stage().combiner), " of ",
                  r->describe(), ": ", stage().lets.size(), " lets"));
    }

    std::vector<Value*> row_outputs, full_outputs;
    for (Value* v : group_.outputs) {
      if (v->shape() == x) full_outputs.push_back(v);
      else if (v->shape() == kept || v->shape() == keep_shape) row_outputs.push_back(v);
      else
        return err("output %", v->name(), ": ", v->type().to_string(), " is neither the reduced input's shape ",
                   shape_to_string(x), " nor the reduction's result shape");
    }
    if (!row_outputs.empty()) {
      begin_stage(Stage::Kind::Map, {});
      for (Value* v : row_outputs)
        KILN_RETURN_IF_ERROR(store(v, v->shape() == kept ? row : keep_row));
      say(str_cat("  row map stage: ", stage().lets.size(), " lets, ", stage().stores.size(), " stores"));
    }
    if (!full_outputs.empty()) {
      begin_stage(Stage::Kind::Map, inner);
      for (Value* v : full_outputs)
        KILN_RETURN_IF_ERROR(store(v, full));
      say(str_cat("  map stage over ", shape_to_string(inner), ": ", stage().lets.size(), " lets, ",
                  stage().stores.size(), " stores"));
    }
    return absl::OkStatus();
  }

  absl::Status lower_gemm(const Node* gemm) {
    if (!gemm || group_.nodes.empty() || group_.nodes.front() != gemm)
      return err("a Gemm group must start with its matmul or linear");
    const Shape& o = gemm->result()->shape();
    k_.domain = o;
    gemm_index_ = vars(o, Index::outer);
    kir::GemmSpec spec;
    const Value *a = gemm->operand(0), *b = gemm->operand(1);
    const Shape &as = a->shape(), &bs = b->shape();
    Index k = Index::inner(0);
    Indices a_idx, b_idx;
    if (gemm->op() == Op::Linear) {
      // x [.., K] @ w[N, K]^T: the leading dims of x make M.
      spec.m = shape_numel(Shape(as.begin(), as.end() - 1));
      spec.n = bs[0];
      spec.k = bs[1];
      spec.m_dims = static_cast<int>(o.size()) - 1;
      spec.n_dims = 1;
      a_idx.assign(gemm_index_.begin(), gemm_index_.end() - 1);
      a_idx.push_back(k);
      b_idx = {gemm_index_.back(), k};
    } else {
      bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
      size_t nb = o.size() - (a_vec ? 0 : 1) - (b_vec ? 0 : 1);
      spec.batch.assign(o.begin(), o.begin() + nb);
      spec.m = a_vec ? Dim(1) : as[as.size() - 2];
      spec.n = b_vec ? Dim(1) : bs.back();
      spec.k = as.back();
      spec.m_dims = a_vec ? 0 : 1;
      spec.n_dims = b_vec ? 0 : 1;
      Index m = a_vec ? Index(0) : gemm_index_[nb];
      Index n = b_vec ? Index(0) : gemm_index_[nb + (a_vec ? 0 : 1)];
      // Batch dims broadcast like NumPy's: an operand's size-1 (or missing) dim reads 0.
      auto operand_index = [&](const Shape& s, bool vec, const Index& row, const Index& col) {
        if (vec) return Indices{k};
        Indices batch(gemm_index_.begin(), gemm_index_.begin() + nb);
        Indices idx = broadcast_index(batch, Shape(s.begin(), s.end() - 2));
        idx.push_back(row);
        idx.push_back(col);
        return idx;
      };
      a_idx = operand_index(as, a_vec, m, k);
      b_idx = operand_index(bs, b_vec, k, n);
    }
    for (auto [op, v, idx] : {std::tuple{&spec.a, a, a_idx}, std::tuple{&spec.b, b, b_idx}}) {
      KILN_ASSIGN_OR_RETURN(auto src, through_views(v, idx));
      op->buffer = input_buffer(src.first);
      op->index = kir::simplify_index(flatten(src.second, src.first->shape()), {o, {spec.k}});
      if (std::optional<kir::AffineIndex> aff = kir::affine_index(op->index, o.size(), 1))
        op->strides = kir::GemmStrides{aff->offset, aff->outer, aff->inner[0]};
    }
    if (a->dtype() == DType::f64) spec.acc_dtype = DType::f64;  // f64 GEMMs accumulate in f64
    k_.gemm = spec;
    say(str_cat("  gemm ", gemm->describe(), ": batch ", shape_to_string(spec.batch), " m ", spec.m.to_string(),
                " n ", spec.n.to_string(), " k ", spec.k.to_string()));
    begin_stage(Stage::Kind::Map, {});
    for (Value* v : group_.outputs) {
      if (v->shape() != o)
        return err("epilogue output %", v->name(), ": ", v->type().to_string(), " does not have the GEMM's shape ",
                   shape_to_string(o));
      KILN_RETURN_IF_ERROR(store(v, gemm_index_));
    }
    say(str_cat("  epilogue: ", stage().lets.size(), " lets, ", stage().stores.size(), " stores"));
    return absl::OkStatus();
  }

  // ---- values at an index ---------------------------------------------------

  static std::string memo_key(const Value* v, const Indices& idx) {
    return str_cat(static_cast<const void*>(v), indices_text(idx));
  }

  // The expression of `v` at `idx` in the current stage. Iterative, so that a chain of
  // 50,000 ops does not recurse 50,000 deep: an evaluation (evaluate() and what it calls)
  // that reads a value not yet memoized stops there, the value is evaluated first, and the
  // evaluation runs again, finding its earlier operands in the memo. Operands are thus
  // evaluated depth first in operand order, as a recursion would, and no evaluation binds a
  // let before it has read every operand (gather memoizes the one it binds early), so the
  // lets come out in the same order.
  absl::StatusOr<Expr> value_at(const Value* v, const Indices& idx) {
    std::string key = memo_key(v, idx);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    if (evaluating_) {
      missing_.emplace(v, idx);
      return absl::UnavailableError("evaluated later");  // never seen outside value_at
    }
    evaluating_ = true;
    std::vector<std::pair<const Value*, Indices>> stack{{v, idx}};
    absl::Status failed;
    while (!stack.empty() && failed.ok()) {
      auto [sv, sidx] = stack.back();
      std::string skey = memo_key(sv, sidx);
      if (memo_.contains(skey)) {
        stack.pop_back();
        continue;
      }
      missing_.reset();
      absl::StatusOr<Expr> e = evaluate(sv, sidx);
      if (missing_) {
        stack.push_back(*std::move(missing_));
      } else if (e.ok()) {
        memo_[skey] = *e;
        stack.pop_back();
      } else {
        failed = e.status();
      }
    }
    evaluating_ = false;
    if (!failed.ok()) return failed;
    return memo_.at(key);
  }

  absl::StatusOr<Expr> evaluate(const Value* v, const Indices& idx) {
    const Node* n = v->producer();
    if (n && n->num_operands() == 0) return compute(*n, idx);  // constants belong to no group: inlined where read
    if (!n || !nodes_.contains(n)) return bind(Expr::load(input_buffer(v), flatten(idx, v->shape()), v->dtype()));
    switch (n->info().kind) {
      case OpKind::Elementwise:
      case OpKind::Broadcast: return compute(*n, idx);
      case OpKind::Reduction: return reduction_result(*n, idx);
      case OpKind::View: return view(*n, *v, idx);
      case OpKind::Gemm: return gemm_result(*n, idx);
      default: return err(n->describe(), ": ", op_name(n->op()), " must be decomposed before lowering");
    }
  }

  absl::StatusOr<Expr> compute(const Node& n, const Indices& idx) {
    const Value& out = *n.result();
    DType t = out.dtype();
    std::vector<Expr> x;
    for (const Value* operand : n.operands()) {
      KILN_ASSIGN_OR_RETURN(Expr e, value_at(operand, broadcast_index(idx, operand->shape())));
      x.push_back(e);
    }
    switch (n.op()) {
      case Op::Constant: return Expr::constant_of(n);
      case Op::Iota: {
        int64_t axis = IotaAttrs(n).axis();
        size_t ax = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(idx.size()) : axis);
        return bind(Expr::cast(Expr::index_value(idx[ax]), t));
      }
      case Op::Cast: return bind(Expr::cast(x[0], t));
      case Op::Where: return bind(Expr::select(x[0], x[1], x[2]));
      case Op::Gelu: return bind(gelu(x[0], GeluAttrs(n).approximate() == "tanh", t));
      default: break;
    }
    if (x.size() == 1) return bind(Expr::unary(n.op(), x[0], t));
    return bind(Expr::binary(n.op(), x[0], x[1], t));
  }

  // gelu in f32 primitives (the reference's formula), rounded once to t.
  static Expr gelu(const Expr& in, bool tanh_form, DType t) {
    auto c = [](double v) { return Expr::constant(v, DType::f32); };
    auto bin = [](Op op, const Expr& a, const Expr& b) { return Expr::binary(op, a, b, DType::f32); };
    Expr x = Expr::cast(in, DType::f32);
    Expr inner;
    if (tanh_form) {
      Expr cube = bin(Op::Mul, bin(Op::Mul, bin(Op::Mul, c(0.044715), x), x), x);
      inner = Expr::unary(Op::Tanh, bin(Op::Mul, c(std::sqrt(2.0 / M_PI)), bin(Op::Add, x, cube)), DType::f32);
    } else {
      inner = Expr::unary(Op::Erf, bin(Op::Mul, x, c(M_SQRT1_2)), DType::f32);
    }
    return Expr::cast(bin(Op::Mul, bin(Op::Mul, c(0.5), x), bin(Op::Add, c(1.0), inner)), t);
  }

  absl::StatusOr<Expr> reduction_result(const Node& n, const Indices& idx) {
    auto it = reductions_.find(&n);
    if (it == reductions_.end()) return err(n.describe(), " is read before its reduce stage");
    if (!same_indices(idx, it->second.row))
      return err(n.describe(), " is read at ", indices_text(idx), " but the kernel computes it at ",
                 indices_text(it->second.row), " (a consumer broadcasts it across rows)");
    const Stage& st = k_.stages[it->second.stage];
    Expr r = Expr::stage_result(it->second.stage, st.combiner == kir::Combiner::ArgMax ? DType::i64 : st.acc_dtype);
    if (n.op() == Op::Mean)
      r = Expr::binary(Op::Div, r, Expr::cast(Expr::index_value(Index::from_dim(shape_numel(st.extents))), st.acc_dtype),
                       st.acc_dtype);
    return bind(Expr::cast(r, n.result()->dtype()));
  }

  absl::StatusOr<Expr> gemm_result(const Node& n, const Indices& idx) {
    if (!same_indices(idx, gemm_index_))
      return err(n.describe(), " is read at ", indices_text(idx), ", not at the GEMM's own output index");
    DType t = n.operand(0)->dtype() == DType::f64 ? DType::f64 : DType::f32;  // the GEMM's acc_dtype
    Expr acc = Expr::gemm_acc(t);
    if (n.op() == Op::Linear && n.num_operands() == 3) {
      KILN_ASSIGN_OR_RETURN(Expr bias, value_at(n.operand(2), {idx.back()}));
      acc = Expr::binary(Op::Add, acc, Expr::cast(bias, t), t);
    }
    return bind(Expr::cast(acc, n.result()->dtype()));
  }

  // Follows single-operand views of the group back to a value read from outside (the
  // GEMM prologue): the value and the index it is read at. A cast to f32 of a float value
  // is passed through too: the GEMM converts what it loads, exactly.
  absl::StatusOr<std::pair<const Value*, Indices>> through_views(const Value* v, Indices idx) {
    while (v->producer() && nodes_.contains(v->producer())) {
      const Node& n = *v->producer();
      if (n.op() == Op::Cast && v->dtype() == DType::f32 && is_float(n.operand(0)->dtype())) {
        v = n.operand(0);
        continue;
      }
      if (n.info().kind != OpKind::View || n.op() == Op::Concat || n.op() == Op::Gather || n.op() == Op::Window)
        return err("GEMM operand %", v->name(), " is computed by ", n.describe(), ", not by a strided view");
      idx = view_operand_index(n, *v, idx);
      v = n.operand(0);
    }
    return std::pair{v, idx};
  }

  absl::StatusOr<Expr> view(const Node& n, const Value& v, const Indices& idx) {
    auto axis_of = [](int64_t axis, size_t rank) {
      return static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
    };
    if (n.op() == Op::Concat) return concat(n, v, idx, axis_of(ConcatAttrs(n).axis(), v.shape().size()));
    if (n.op() == Op::Gather) return gather(n, idx, axis_of(GatherAttrs(n).axis(), n.operand(0)->shape().size()));
    if (n.op() == Op::Window) return window(n, v, idx);
    return value_at(n.operand(0), view_operand_index(n, v, idx));
  }

  // The index of a single-operand view's operand read for result index `idx`.
  static Indices view_operand_index(const Node& n, const Value& v, const Indices& idx) {
    const Shape &xs = n.operand(0)->shape(), &os = v.shape();
    auto axis_of = [&](int64_t axis, size_t rank) {
      return static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
    };
    switch (n.op()) {
      case Op::Reshape: {
        // Equal leading and trailing dims map straight through; the middle goes through
        // the flat offset.
        size_t p = 0, q = 0;
        while (p < xs.size() && p < os.size() && xs[p] == os[p]) ++p;
        while (q < xs.size() - p && q < os.size() - p && xs[xs.size() - 1 - q] == os[os.size() - 1 - q]) ++q;
        Indices mid(idx.begin() + p, idx.end() - q);
        Indices xi(idx.begin(), idx.begin() + p);
        Indices unf = unflatten(flatten(mid, Shape(os.begin() + p, os.end() - q)), Shape(xs.begin() + p, xs.end() - q));
        xi.insert(xi.end(), unf.begin(), unf.end());
        xi.insert(xi.end(), idx.end() - q, idx.end());
        return xi;
      }
      case Op::Permute: {
        const std::vector<int64_t>& dims = PermuteAttrs(n).dims();
        Indices xi(xs.size());
        for (size_t i = 0; i < dims.size(); ++i) xi[axis_of(dims[i], xs.size())] = idx[i];
        return xi;
      }
      case Op::Expand: return broadcast_index(idx, xs);
      case Op::Squeeze: {
        std::vector<bool> squeezed(xs.size(), false);
        if (std::optional<std::vector<int64_t>> axes = SqueezeAttrs(n).axes())
          for (int64_t ax : *axes) squeezed[axis_of(ax, xs.size())] = true;
        else
          for (size_t i = 0; i < xs.size(); ++i) squeezed[i] = is_one(xs[i]);
        Indices xi;
        size_t next = 0;
        for (size_t i = 0; i < xs.size(); ++i) xi.push_back(squeezed[i] ? Index(0) : idx[next++]);
        return xi;
      }
      case Op::Unsqueeze: {
        std::vector<bool> added(os.size(), false);
        for (int64_t ax : UnsqueezeAttrs(n).axes()) added[axis_of(ax, os.size())] = true;
        Indices xi;
        for (size_t i = 0; i < os.size(); ++i)
          if (!added[i]) xi.push_back(idx[i]);
        return xi;
      }
      case Op::Slice: {
        SliceAttrs a(n);
        size_t ax = axis_of(a.axis(), xs.size());
        SliceBounds b = slice_bounds(n);
        Indices xi = idx;
        xi[ax] = Index::from_dim(b.start) + idx[ax] * Index(a.step());
        return xi;
      }
      default: {  // Split
        size_t ax = axis_of(SplitAttrs(n).axis(), xs.size());
        Dim offset(0);
        const std::vector<SymExpr>& sizes = SplitAttrs(n).sizes();
        for (int i = 0; i < v.result_index(); ++i) offset = offset + sizes[i];
        Indices xi = idx;
        xi[ax] = idx[ax] + Index::from_dim(offset);
        return xi;
      }
    }
  }

  // Every operand is read at its clamped index (always in bounds); selects pick the one
  // whose range holds idx[axis].
  absl::StatusOr<Expr> concat(const Node& n, const Value& v, const Indices& idx, size_t axis) {
    std::vector<Expr> parts;
    std::vector<Index> ends;
    Dim at(0);
    for (const Value* x : n.operands()) {
      const Dim& len = x->shape()[axis];
      if (len == SymExpr(0)) continue;
      Indices xi = idx;
      xi[axis] = Index::min(Index::max(idx[axis] - Index::from_dim(at), 0), Index::from_dim(len) - Index(1));
      KILN_ASSIGN_OR_RETURN(Expr e, value_at(x, xi));
      parts.push_back(e);
      at = at + len;
      ends.push_back(Index::from_dim(at));
    }
    if (parts.empty()) return Expr::constant(0, v.dtype());
    Expr result = parts.back();
    Expr pos = Expr::index_value(idx[axis]);
    for (size_t i = parts.size() - 1; i-- > 0;) {
      Expr inside = bind(Expr::binary(Op::Lt, pos, Expr::index_value(ends[i]), DType::boolean));
      result = bind(Expr::select(inside, parts[i], result));
    }
    return result;
  }

  // x[lead.., o*stride + k*dilation - pad_begin] for result index [lead.., k.., o..], read at
  // the index clamped into x (always in bounds) and replaced by pad_value outside it.
  absl::StatusOr<Expr> window(const Node& n, const Value& v, const Indices& idx) {
    KILN_ASSIGN_OR_RETURN(WindowDims w, window_dims(n));
    const Shape& xs = n.operand(0)->shape();
    size_t d = w.rank(), lead = xs.size() - d;
    Indices xi(idx.begin(), idx.begin() + lead);
    std::optional<Expr> inside;
    for (size_t i = 0; i < d; ++i) {
      Index pos = idx[lead + d + i] * Index(w.strides[i]) + idx[lead + i] * Index(w.dilations[i]) - Index(w.pads_begin[i]);
      Index size = Index::from_dim(xs[lead + i]);
      if (w.pads_begin[i] == 0 && w.pads_end[i] == 0 && !w.ceil_mode) {  // never outside x
        xi.push_back(pos);
        continue;
      }
      xi.push_back(Index::min(Index::max(pos, 0), size - Index(1)));
      Expr p = Expr::index_value(pos);
      Expr in = Expr::binary(Op::And, Expr::binary(Op::Ge, p, Expr::constant(0, DType::i64), DType::boolean),
                             Expr::binary(Op::Lt, p, Expr::index_value(size), DType::boolean), DType::boolean);
      inside = inside ? Expr::binary(Op::And, *inside, in, DType::boolean) : in;
    }
    KILN_ASSIGN_OR_RETURN(Expr x, value_at(n.operand(0), xi));
    if (!inside) return x;
    return bind(Expr::select(bind(*inside), x, Expr::constant(WindowAttrs(n).pad_value(), v.dtype())));
  }

  // Where `wrapped` (gather n's index i, wrapped once) is outside [0, dim), the current stage
  // stores dim + 1 and i into the words of n's check (kir::IndexCheck): the Check buffer
  // follows the outputs, so its stores name position outputs.size(), renumbered with them.
  void check_site(const Node& n, int axis, const Expr& i, const Expr& wrapped, const Expr& dim) {
    auto [it, added] = checks_.try_emplace(&n, static_cast<int>(k_.checks.size()));
    if (added) k_.checks.push_back({n.result()->name(), axis, n.operand(0)->shape()[axis]});
    auto cmp = [](Op op, const Expr& a, const Expr& b) { return Expr::binary(op, a, b, DType::boolean); };
    Expr bad = bind(Expr::binary(Op::Or, cmp(Op::Lt, wrapped, Expr::constant(0, DType::i64)), cmp(Op::Ge, wrapped, dim),
                                 DType::boolean));
    int buffer = static_cast<int>(group_.outputs.size()), word = 2 * it->second;
    stage().stores.push_back({buffer, Index(word), Expr::binary(Op::Add, dim, Expr::constant(1, DType::i64), DType::i64), bad});
    stage().stores.push_back({buffer, Index(word + 1), i, bad});
  }

  // data[.., indices[..], ..]: a negative index wraps once; the result is clamped into the
  // dim so that the load stays in bounds, and an index outside [-dim, dim) is reported
  // through the kernel's index check (check_site), as the reference reports it as an error.
  absl::StatusOr<Expr> gather(const Node& n, const Indices& idx, size_t axis) {
    const Value &data = *n.operand(0), &indices = *n.operand(1);
    size_t ir = indices.shape().size();
    Indices ii(idx.begin() + axis, idx.begin() + axis + ir);
    KILN_ASSIGN_OR_RETURN(Expr raw, value_at(&indices, ii));
    Expr i = Expr::cast(raw, DType::i64);
    Expr dim = Expr::index_value(Index::from_dim(data.shape()[axis]));
    Expr neg = Expr::binary(Op::Lt, i, Expr::constant(0, DType::i64), DType::boolean);
    // Bound before `data` is read: kept for the evaluation that runs again once it is.
    std::string key = str_cat("gather ", memo_key(n.result(), idx));
    auto it = memo_.find(key);
    if (it == memo_.end()) {
      it = memo_.emplace(key, bind(Expr::select(neg, Expr::binary(Op::Add, i, dim, DType::i64), i))).first;
      check_site(n, static_cast<int>(axis), i, it->second, dim);
    }
    Expr wrapped = it->second;
    Indices di(idx.begin(), idx.begin() + axis);
    di.push_back(Index::min(Index::max(Index::scalar(wrapped), 0), Index::from_dim(data.shape()[axis]) - Index(1)));
    di.insert(di.end(), idx.begin() + axis + ir, idx.end());
    return value_at(&data, di);
  }

  const KernelGroup& group_;
  const LowerLog& log_;
  Kernel k_;
  absl::flat_hash_set<const Node*> nodes_;
  absl::flat_hash_map<const Value*, int> buffers_;
  std::map<std::string, Expr> memo_;  // (value, index) -> its expression in the current stage
  bool evaluating_ = false;           // value_at is evaluating: a value not in memo_ is missing_
  std::optional<std::pair<const Value*, Indices>> missing_;
  int next_let_ = 0;
  struct ReduceInfo {
    int stage;
    Indices row;  // the index at which its consumers may read it
  };
  absl::flat_hash_map<const Node*, ReduceInfo> reductions_;
  absl::flat_hash_map<const Node*, int> checks_;  // a gather's check in k_.checks
  Indices gemm_index_;
};

}  // namespace

absl::StatusOr<kir::Kernel> lower_group(const Graph& g, const KernelGroup& group, const LowerLog& log) {
  return Lowerer(group, log).run();
}

absl::StatusOr<std::vector<kir::Kernel>> lower_schedule(const Graph& g, const Schedule& s, const LowerLog& log) {
  std::vector<kir::Kernel> out;
  for (const KernelGroup& group : s.groups) {
    KILN_ASSIGN_OR_RETURN(kir::Kernel k, lower_group(g, group, log));
    out.push_back(std::move(k));
  }
  return out;
}

}  // namespace kiln
