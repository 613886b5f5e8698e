#include "test/fuzz/random_graph.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/op_attrs.h"
#include "ir/str.h"

namespace kiln {
namespace {

constexpr int64_t kToEnd = std::numeric_limits<int64_t>::max();

class Generator {
 public:
  Generator(uint64_t seed, const RandomGraphOptions& o) : rng_(seed * 0x9E3779B97F4A7C15ull + 1), o_(o),
                                                           g_(str_cat("fuzz", seed)) {}

  RandomGraph run() {
    using Family = bool (Generator::*)();
    std::vector<std::pair<int, Family>> families = {{6, &Generator::unary}, {7, &Generator::binary}};
    if (o_.integers) families.insert(families.end(), {{2, &Generator::compare_where}, {2, &Generator::cast}});
    if (o_.reductions) families.push_back({4, &Generator::reduction});
    if (o_.views)
      families.insert(families.end(), {{3, &Generator::reshape}, {2, &Generator::permute}, {2, &Generator::expand},
                                       {2, &Generator::squeeze_unsqueeze}, {3, &Generator::slice},
                                       {2, &Generator::concat}, {1, &Generator::split}, {1, &Generator::gather},
                                       {1, &Generator::iota}});
    if (o_.gemms) families.insert(families.end(), {{2, &Generator::matmul}, {3, &Generator::linear}});
    if (o_.composites) families.insert(families.end(), {{2, &Generator::softmax}, {2, &Generator::norm}, {1, &Generator::sdpa}});
    int total = 0;
    for (auto& f : families) total += f.first;
    for (int i = 0; i < o_.ops; ++i) {
      for (int attempt = 0; attempt < 20; ++attempt) {
        int r = uniform(0, total - 1);
        size_t k = 0;
        while (r >= families[k].first) r -= families[k++].first;
        if ((this->*families[k].second)()) break;
      }
    }
    finish();
    RandomGraph out{std::move(g_), {}};
    std::vector<std::string> syms = out.graph.symbols();
    for (auto [b, t] : {std::pair{1, 1}, {3, 2}, {2, 5}}) {
      Bindings bind;
      for (const std::string& s : syms) bind[s] = s == "B" ? b : t;
      out.bindings.push_back(bind);
      if (syms.empty()) break;
    }
    return out;
  }

 private:
  // ---- randomness -----------------------------------------------------------
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[uniform(0, static_cast<int>(v.size()) - 1)]; }

  // A dim: mostly small static sizes (1 and odd ones included), sometimes a symbol; a
  // symbol no argument has yet only when the dim is for a new argument.
  Dim random_dim(bool for_argument) {
    if (o_.symbolic && chance(0.25)) {
      std::vector<std::string> syms = for_argument ? std::vector<std::string>{"B", "T"} : g_.symbols();
      if (!syms.empty()) return Dim::symbol(pick(syms));
    }
    return Dim(pick(std::vector<int64_t>{1, 1, 2, 3, 4, 5, 7}));
  }
  Shape random_shape(int min_rank, bool for_argument) {
    Shape s(uniform(min_rank, std::max(min_rank, o_.max_rank)));
    for (Dim& d : s) d = random_dim(for_argument);
    return s;
  }
  DType float_dtype() {
    if (!o_.low_precision) return DType::f32;
    return pick(std::vector<DType>{DType::f32, DType::f32, DType::f32, DType::bf16, DType::f16});
  }
  DType any_dtype() {
    if (!o_.integers || chance(0.75)) return float_dtype();
    return pick(std::vector<DType>{DType::i32, DType::i64, DType::boolean});
  }

  // ---- values ---------------------------------------------------------------
  Value* argument(Shape s, DType t, bool param = false) {
    std::string name = str_cat(param ? "w" : "x", next_arg_++);
    absl::StatusOr<Value*> v = param ? g_.add_param(name, {t, std::move(s)}) : g_.add_input(name, {t, std::move(s)});
    return v.ok() ? *v : nullptr;
  }

  // A value of the pool meeting `ok`: mostly one that nothing reads yet (so that the ops
  // chain up and few die), the latest first; else a new input of a random shape and of
  // dtype `t` when given.
  Value* operand(const std::function<bool(const Value*)>& ok, std::optional<DType> t = std::nullopt) {
    std::vector<Value*> fit, unread;
    for (Value* v : pool_)
      if (ok(v)) (read_.contains(v) ? fit : unread).push_back(v);
    if (!unread.empty() && chance(0.75)) return chance(0.6) ? unread.back() : pick(unread);
    fit.insert(fit.end(), unread.begin(), unread.end());
    if (!fit.empty() && chance(0.85)) return pick(fit);
    if (!t) return nullptr;
    Value* v = argument(random_shape(0, true), *t);
    return v && ok(v) ? keep(v) : nullptr;
  }
  Value* keep(Value* v) {
    if (v) pool_.push_back(v);
    return v;
  }
  bool exact(const Value* v) const { return !inexact_.contains(v); }

  // Adds a node; its results join the pool, inexact when an operand is or `rounds` (the op
  // accumulates in another order than the reference). Null when the op rejects operands.
  std::vector<Value*> add(Op op, std::vector<Value*> operands, Attrs attrs = {}, bool rounds = false) {
    for (Value* v : operands)
      if (!v) return {};
    absl::StatusOr<Node*> n = g_.add_node(op, operands, std::move(attrs));
    if (!n.ok()) return {};
    bool inexact = rounds || std::any_of(operands.begin(), operands.end(), [&](Value* v) { return !exact(v); });
    read_.insert(operands.begin(), operands.end());
    const Shape& rs = (*n)->result()->shape();
    // Ops that may repeat one value along an axis: broadcasts, clamps, quantizers, selects,
    // concats (of one value twice) and gathers (of one index twice).
    bool spread = op == Op::Expand || op == Op::Iota || op == Op::Where || op == Op::Maximum || op == Op::Minimum ||
                  op == Op::Concat || op == Op::Gather ||
                  op == Op::Relu || op == Op::Floor || op == Op::Ceil || !is_float(operands.empty() ? DType::f32 : operands[0]->dtype()) ||
                  std::any_of(operands.begin(), operands.end(), [&](Value* v) {
                    return spread_.contains(v) || ((*n)->info().kind == OpKind::Broadcast && v->shape() != rs);
                  });
    double m = magnitude(**n);
    for (Value* r : (*n)->results()) {
      if (inexact) inexact_.insert(r);
      if (spread) spread_.insert(r);
      magnitude_[r] = m;
      keep(r);
    }
    return (*n)->results();
  }

  // A bound on |value| (infinity when none): arguments are in [-1, 1) (integers below 2).
  double magnitude(const Value* v) const {
    if (auto c = constant_value_of(v)) return std::fabs(*c);
    auto it = magnitude_.find(v);
    return it != magnitude_.end() ? it->second : 2;
  }
  // A bool constant counts as 1 whatever its value.
  static std::optional<double> constant_value_of(const Value* v) {
    std::optional<double> c = constant_value(v);
    return c && v->dtype() == DType::boolean ? 1.0 : c;
  }
  // The number of elements a reduction or GEMM sums (symbols counted as 8).
  static double extent(const Shape& s, const std::vector<int64_t>& axes) {
    double e = 1;
    for (int64_t a : axes) e *= static_cast<double>(s[a < 0 ? a + static_cast<int64_t>(s.size()) : a].constant().value_or(8));
    return e;
  }
  double magnitude(const Node& n) const {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    std::vector<double> m;
    for (const Value* v : n.operands()) m.push_back(magnitude(v));
    double m0 = m.empty() ? 0 : m[0];
    switch (n.op()) {
      case Op::Sin: case Op::Cos: case Op::Tanh: case Op::Sigmoid: case Op::Erf: case Op::Softmax:
      case Op::Not: case Op::Eq: case Op::Ne: case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge:
      case Op::And: case Op::Or: return 1;
      case Op::Exp: return std::exp(std::min(m0, 700.0));
      case Op::Sqrt: return std::sqrt(m0);
      case Op::Log: case Op::Rsqrt: case Op::Reciprocal: case Op::Div: case Op::LogSoftmax: return kInf;
      case Op::Floor: case Op::Ceil: return m0 + 1;
      case Op::Add: case Op::Sub: return m0 + m[1];
      case Op::Mul: return m0 * m[1];
      case Op::Pow: return std::pow(std::max(m0, 1.0), m[1]);
      case Op::Maximum: case Op::Minimum: return std::max(m0, m[1]);
      case Op::Where: return std::max(m[1], m[2]);
      case Op::Iota: return 8 * 8;
      case Op::Sum: {
        const Shape& s = n.operand(0)->shape();
        std::vector<int64_t> all(s.size());
        std::iota(all.begin(), all.end(), 0);
        return m0 * extent(s, ReduceAttrs(n).axes().value_or(all));
      }
      case Op::Prod: return std::pow(std::max(m0, 1.0), 6);
      case Op::ArgMax: return 8 * 8;
      case Op::MatMul: case Op::Linear: {
        const Shape& s = n.operand(0)->shape();
        return m0 * m[1] * static_cast<double>(s.back().constant().value_or(8)) + (m.size() > 2 ? m[2] : 0);
      }
      case Op::LayerNorm: case Op::RmsNorm: {
        // |normalized| <= sqrt(row length); then the weight and the bias.
        double rows = extent(n.operand(0)->shape(),
                             n.op() == Op::LayerNorm ? LayerNormAttrs(n).axes() : RmsNormAttrs(n).axes());
        return std::sqrt(rows) * (m.size() > 1 ? m[1] : 1) + (m.size() > 2 ? m[2] : 0);
      }
      case Op::Sdpa: return m[2];
      case Op::Cast: return n.result()->dtype() == DType::boolean ? 1 : m0;
      default: return m0;  // neg, abs, relu, gelu, silu, views, concat, gather, reductions that pick
    }
  }
  bool added(const std::vector<Value*>& r) { return !r.empty(); }

  // A scalar constant (0 and 1 included, for simplify's identities); not in the pool.
  Value* constant(DType t, std::optional<double> value = std::nullopt) {
    AttrValue v;
    if (value) v = *value;
    else if (is_float(t)) v = pick(std::vector<double>{0.0, 1.0, 0.5, -1.5, 2.0, 3.0, -0.25});
    else if (t == DType::boolean) v = chance(0.5);
    else v = static_cast<int64_t>(uniform(0, 3));
    absl::StatusOr<Node*> n = g_.add_node(Op::Constant, {}, {{"value", v}, {"dtype", t}});
    return n.ok() ? (*n)->result() : nullptr;
  }

  // A shape that broadcasts with `s`: dims set to 1, leading dims dropped, size-1 dims grown.
  Shape partner_shape(const Shape& s) {
    Shape p = s;
    for (Dim& d : p) {
      if (chance(0.25)) d = 1;
      else if (d == Dim(1) && chance(0.3)) d = random_dim(false);
    }
    if (!p.empty() && chance(0.25)) p.erase(p.begin(), p.begin() + uniform(1, static_cast<int>(p.size())));
    if (static_cast<int>(p.size()) < o_.max_rank && chance(0.1)) p.insert(p.begin(), random_dim(false));
    return p;
  }
  // A second operand for `a`: a pool value that broadcasts with it, a new input or a scalar.
  Value* partner(Value* a, DType t, bool must_be_exact) {
    if (chance(0.3)) return constant(t);
    if (chance(0.5)) {
      std::vector<Value*> fit;
      for (Value* v : pool_)
        if (v != a && v->dtype() == t && (!must_be_exact || exact(v)) && broadcast_shapes(a->shape(), v->shape()).ok())
          fit.push_back(v);
      if (!fit.empty()) return pick(fit);
    }
    return keep(argument(partner_shape(a->shape()), t));
  }

  static bool is_float_value(const Value* v) { return is_float(v->dtype()); }

  // ---- op families ------------------------------------------------------------
  bool unary() {
    Value* x = operand([&](const Value* v) { return v->dtype() != DType::boolean; }, any_dtype());
    if (!x) return false;
    if (!is_float(x->dtype())) return added(add(pick(std::vector<Op>{Op::Neg, Op::Abs, Op::Relu}), {x}));
    std::vector<Op> ops = {Op::Neg, Op::Abs, Op::Exp, Op::Tanh, Op::Sigmoid, Op::Relu, Op::Gelu, Op::Silu, Op::Erf};
    // sin and cos of a large inexact value are as uncertain as its absolute error.
    if (exact(x) || magnitude(x) < 100) ops.insert(ops.end(), {Op::Sin, Op::Cos});
    if (exact(x)) ops.insert(ops.end(), {Op::Log, Op::Sqrt, Op::Rsqrt, Op::Reciprocal, Op::Floor, Op::Ceil});
    Op op = pick(ops);
    Attrs attrs;
    if (op == Op::Gelu && chance(0.5)) attrs.set("approximate", std::string("tanh"));
    return added(add(op, {x}, attrs));
  }

  bool binary() {
    Value* a = operand([&](const Value* v) { return v->dtype() != DType::boolean || o_.integers; }, any_dtype());
    if (!a) return false;
    DType t = a->dtype();
    if (t == DType::boolean) return added(add(chance(0.5) ? Op::And : Op::Or, {a, partner(a, t, false)}));
    std::vector<Op> ops = {Op::Add, Op::Sub, Op::Mul, Op::Maximum, Op::Minimum};
    if (is_float(t)) ops.push_back(Op::Div);
    if (is_float(t) && exact(a)) ops.push_back(Op::Pow);  // powers widen rounding errors
    Op op = pick(ops);
    if (op == Op::Pow) return added(add(op, {a, constant(t, pick(std::vector<double>{0.5, 2.0, 3.0}))}));
    Value* b = partner(a, t, op == Op::Div);
    // Division by an exact zero turns an inexact numerator's sign into the sign of infinity.
    if (op == Op::Div && constant_value_of(b) == 0.0) b = constant(t, 2.0);
    if (!b) return false;
    return added(chance(0.5) || op == Op::Div ? add(op, {a, b}) : add(op, {b, a}));
  }

  bool compare_where() {
    Value* a = operand([&](const Value* v) { return exact(v) && v->dtype() != DType::boolean; }, any_dtype());
    if (!a) return false;
    Op op = pick(std::vector<Op>{Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge});
    std::vector<Value*> c = add(op, {a, partner(a, a->dtype(), true)});
    if (c.empty() || chance(0.3)) return !c.empty();
    Value* x = operand([&](const Value* v) { return broadcast_shapes(v->shape(), c[0]->shape()).ok(); }, float_dtype());
    if (!x) return false;
    std::vector<Value*> cond = chance(0.3) ? add(Op::Not, {c[0]}) : c;
    if (cond.empty()) return false;
    return added(add(Op::Where, {cond[0], x, partner(x, x->dtype(), false)}));
  }

  bool cast() {
    Value* x = operand([](const Value*) { return true; }, any_dtype());
    if (!x) return false;
    DType t = exact(x) ? any_dtype() : float_dtype();
    return added(add(Op::Cast, {x}, {{"dtype", t}}));
  }

  std::vector<int64_t> random_axes(size_t rank) {
    std::vector<int64_t> axes;
    for (size_t i = 0; i < rank; ++i)
      if (chance(0.45)) axes.push_back(chance(0.5) ? static_cast<int64_t>(i) : static_cast<int64_t>(i) - static_cast<int64_t>(rank));
    if (axes.empty()) axes.push_back(-1);
    std::shuffle(axes.begin(), axes.end(), rng_);
    return axes;
  }

  bool reduction() {
    Value* x = operand([&](const Value* v) { return v->dtype() != DType::boolean && !v->shape().empty(); }, float_dtype());
    if (!x) return false;
    // max, min and argmax of nothing are errors: not over a tensor with an empty dim.
    bool empty = std::any_of(x->shape().begin(), x->shape().end(), [](const Dim& d) { return d == Dim(0); });
    std::vector<Op> ops = {Op::Sum};
    if (!empty) ops.insert(ops.end(), {Op::Max, Op::Min});
    if (is_float(x->dtype())) ops.insert(ops.end(), {Op::Sum, Op::Mean, Op::Mean});
    if (exact(x) && !empty) ops.push_back(Op::ArgMax);
    Attrs attrs{{"keepdim", chance(0.5)}};
    size_t rank = x->shape().size();
    std::vector<int64_t> axes = random_axes(rank);
    // A product of a few values only: long products leave f32's range, where f32 and f64
    // accumulation part ways.
    int64_t extent = 1;
    for (int64_t a : axes) extent *= x->shape()[a < 0 ? a + static_cast<int64_t>(rank) : a].constant().value_or(100);
    if (is_float(x->dtype()) && extent <= 6) ops.push_back(Op::Prod);
    Op op = pick(ops);
    if (op == Op::ArgMax) {
      attrs.set("axis", static_cast<int64_t>(uniform(-static_cast<int>(rank), static_cast<int>(rank) - 1)));
    } else if (op == Op::Prod || chance(0.85)) {
      attrs.set("axes", axes);
    }
    // Sums and products round in another order than the reference; max/min pick a value.
    return added(add(op, {x}, attrs, op == Op::Sum || op == Op::Mean || op == Op::Prod));
  }

  bool reshape() {
    Value* x = operand([](const Value*) { return true; }, any_dtype());
    if (!x) return false;
    const Shape& s = x->shape();
    std::vector<SymExpr> out;
    switch (uniform(0, 3)) {
      case 0: out = {-1}; break;  // flatten
      case 1: {                   // merge two adjacent dims
        if (s.size() < 2) return false;
        size_t i = uniform(0, static_cast<int>(s.size()) - 2);
        out.assign(s.begin(), s.begin() + i);
        out.push_back(s[i] * s[i + 1]);
        out.insert(out.end(), s.begin() + i + 2, s.end());
        break;
      }
      case 2: {  // split a static dim in two
        std::vector<size_t> splittable;
        for (size_t i = 0; i < s.size(); ++i)
          if (auto c = s[i].constant(); c && *c >= 4 && *c % 2 == 0) splittable.push_back(i);
        if (splittable.empty()) return false;
        size_t i = pick(splittable);
        out.assign(s.begin(), s.begin() + i);
        out.push_back(2);
        out.push_back(chance(0.5) ? SymExpr(-1) : SymExpr(*s[i].constant() / 2));
        out.insert(out.end(), s.begin() + i + 1, s.end());
        break;
      }
      default: {  // insert a 1 and write one dim as -1
        out.assign(s.begin(), s.end());
        out.insert(out.begin() + uniform(0, static_cast<int>(out.size())), 1);
        if (out.size() > 1) out[uniform(0, static_cast<int>(out.size()) - 1)] = -1;
        break;
      }
    }
    return added(add(Op::Reshape, {x}, {{"shape", out}}));
  }

  bool permute() {
    Value* x = operand([](const Value* v) { return v->shape().size() >= 2; }, any_dtype());
    if (!x) return false;
    std::vector<int64_t> dims(x->shape().size());
    std::iota(dims.begin(), dims.end(), 0);
    std::shuffle(dims.begin(), dims.end(), rng_);
    if (chance(0.3)) dims[0] -= static_cast<int64_t>(dims.size());  // a negative axis
    return added(add(Op::Permute, {x}, {{"dims", dims}}));
  }

  bool expand() {
    Value* x = operand([](const Value*) { return true; }, any_dtype());
    if (!x) return false;
    std::vector<SymExpr> out(x->shape().begin(), x->shape().end());
    for (SymExpr& d : out) {
      if (d == SymExpr(1) && chance(0.6)) d = random_dim(false);
      else if (chance(0.2)) d = -1;
    }
    if (static_cast<int>(out.size()) < o_.max_rank && chance(0.4)) out.insert(out.begin(), random_dim(false));
    return added(add(Op::Expand, {x}, {{"shape", out}}));
  }

  bool squeeze_unsqueeze() {
    Value* x = operand([](const Value*) { return true; }, any_dtype());
    if (!x) return false;
    const Shape& s = x->shape();
    std::vector<int64_t> ones;
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i] == Dim(1)) ones.push_back(static_cast<int64_t>(i));
    if (!ones.empty() && chance(0.5)) {
      Attrs attrs;
      if (chance(0.7)) attrs.set("axes", std::vector<int64_t>{pick(ones)});
      return added(add(Op::Squeeze, {x}, attrs));
    }
    if (static_cast<int>(s.size()) >= o_.max_rank) return false;
    int64_t rank = static_cast<int64_t>(s.size()) + 1;
    int64_t axis = uniform(0, static_cast<int>(rank) - 1);
    return added(add(Op::Unsqueeze, {x}, {{"axes", std::vector<int64_t>{chance(0.5) ? axis : axis - rank}}}));
  }

  bool slice() {
    Value* x = operand([](const Value* v) { return !v->shape().empty(); }, any_dtype());
    if (!x) return false;
    int rank = static_cast<int>(x->shape().size());
    int axis = uniform(0, rank - 1);
    const Dim& d = x->shape()[axis];
    int64_t start = 0, end = kToEnd, step = 1;
    if (auto n = d.constant()) {
      int m = static_cast<int>(*n);
      step = pick(std::vector<int64_t>{1, 1, 2, 3, -1, -2});
      start = uniform(-m - 1, m);
      end = chance(0.3) ? (step > 0 ? kToEnd : std::numeric_limits<int64_t>::min()) : uniform(-m - 1, m + 1);
    } else {
      // Symbolic: bounds that give a non-negative length for every value >= 1.
      step = pick(std::vector<int64_t>{1, 2});
      start = chance(0.3) ? -1 : 0;
    }
    Attrs attrs{{"axis", static_cast<int64_t>(chance(0.5) ? axis : axis - rank)}, {"start", start}, {"step", step}};
    if (end != kToEnd) attrs.set("end", end);
    return added(add(Op::Slice, {x}, attrs));
  }

  bool concat() {
    Value* x = operand([](const Value* v) { return !v->shape().empty(); }, any_dtype());
    if (!x) return false;
    int rank = static_cast<int>(x->shape().size());
    int axis = uniform(0, rank - 1);
    std::vector<Value*> parts = {x};
    for (int i = uniform(1, 2); i > 0; --i) {
      if (chance(0.3)) {
        parts.push_back(x);
        continue;
      }
      Shape s = x->shape();
      s[axis] = random_dim(false);
      parts.push_back(keep(argument(s, x->dtype())));
    }
    std::shuffle(parts.begin(), parts.end(), rng_);
    return added(add(Op::Concat, parts, {{"axis", static_cast<int64_t>(chance(0.5) ? axis : axis - rank)}}));
  }

  bool split() {
    Value* x = operand([](const Value* v) {
      return std::any_of(v->shape().begin(), v->shape().end(), [](const Dim& d) { return d.constant().value_or(0) >= 2; });
    }, std::nullopt);
    if (!x) return false;
    std::vector<int> axes;
    for (size_t i = 0; i < x->shape().size(); ++i)
      if (x->shape()[i].constant().value_or(0) >= 2) axes.push_back(static_cast<int>(i));
    int axis = pick(axes);
    int64_t n = *x->shape()[axis].constant();
    int64_t first = uniform(1, static_cast<int>(n) - 1);
    std::vector<SymExpr> sizes = {first, n - first};
    if (n - first >= 2 && chance(0.4)) sizes = {first, 1, n - first - 1};
    return added(add(Op::Split, {x}, {{"axis", static_cast<int64_t>(axis)}, {"sizes", sizes}}));
  }

  bool gather() {
    // Indices are random in [0, 2) (random_args), so the gathered dim has 2 or more.
    Value* x = operand([](const Value* v) {
      return std::any_of(v->shape().begin(), v->shape().end(), [](const Dim& d) { return d.constant().value_or(0) >= 2; });
    }, std::nullopt);
    if (!x) return false;
    std::vector<int> axes;
    for (size_t i = 0; i < x->shape().size(); ++i)
      if (x->shape()[i].constant().value_or(0) >= 2) axes.push_back(static_cast<int>(i));
    Shape is(uniform(0, 2));
    for (Dim& d : is) d = random_dim(false);
    Value* idx = keep(argument(is, chance(0.5) ? DType::i64 : DType::i32));
    return added(add(Op::Gather, {x, idx}, {{"axis", static_cast<int64_t>(pick(axes))}}));
  }

  bool iota() {
    Shape s = random_shape(1, false);
    DType t = pick(std::vector<DType>{DType::i64, DType::i32, DType::f32});
    std::vector<SymExpr> dims(s.begin(), s.end());
    return added(add(Op::Iota, {}, {{"shape", dims}, {"axis", static_cast<int64_t>(uniform(0, static_cast<int>(s.size()) - 1))}, {"dtype", t}}));
  }

  bool matmul() {
    Value* a = operand([](const Value* v) { return is_float(v->dtype()) && !v->shape().empty(); }, float_dtype());
    if (!a) return false;
    const Shape& as = a->shape();
    Dim k = as.back();
    Shape bs;
    if (as.size() >= 2 && chance(0.5)) {
      // Batch dims that broadcast against a's.
      Shape batch(as.begin(), as.end() - 2);
      for (Dim& d : batch)
        if (chance(0.3)) d = 1;
      if (!batch.empty() && chance(0.3)) batch.erase(batch.begin());
      bs = batch;
    }
    bs.push_back(k);
    if (chance(0.85)) bs.push_back(random_dim(false));
    Value* b = keep(argument(bs, a->dtype(), bs.size() == 2 && chance(0.5)));
    return added(add(Op::MatMul, chance(0.9) ? std::vector<Value*>{a, b} : std::vector<Value*>{b, a}, {}, true));
  }

  // One to three linears over one input (horizontal fusion), each with or without a bias.
  bool linear() {
    Value* x = operand([](const Value* v) { return is_float(v->dtype()) && !v->shape().empty(); }, float_dtype());
    if (!x) return false;
    bool bias = chance(0.4);
    bool any = false;
    for (int i = uniform(1, 3); i > 0; --i) {
      Dim n = pick(std::vector<int64_t>{1, 2, 3, 5, 8});
      std::vector<Value*> ops = {x, keep(argument({n, x->shape().back()}, x->dtype(), true))};
      if (bias) ops.push_back(keep(argument({n}, x->dtype(), true)));
      any |= added(add(Op::Linear, ops, {}, true));
    }
    return any;
  }

  static bool nonempty_float(const Value* v) {
    return is_float(v->dtype()) && !v->shape().empty() &&
           std::none_of(v->shape().begin(), v->shape().end(), [](const Dim& d) { return d == Dim(0); });
  }

  bool softmax() {
    Value* x = operand(nonempty_float, float_dtype());
    if (!x) return false;
    int rank = static_cast<int>(x->shape().size());
    return added(add(chance(0.7) ? Op::Softmax : Op::LogSoftmax, {x},
                     {{"axis", static_cast<int64_t>(uniform(-rank, rank - 1))}}, true));
  }

  bool norm() {
    // Norms divide by a row's size: only of exact rows (an inexact row may be a sum that
    // cancels to rounding noise), bounded ones (they square in f32, the reference in f64),
    // and for layer_norm rows that do not repeat one value (broadcast, expanded), whose
    // f32 and f64 variances would both be noise.
    bool layer = chance(0.5);
    Value* x = operand([&](const Value* v) {
      return nonempty_float(v) && exact(v) && magnitude(v) < 1e15 && (!layer || !spread_.contains(v));
    }, float_dtype());
    if (!x) return false;
    int rank = static_cast<int>(x->shape().size());
    std::vector<int64_t> axes = rank >= 2 && chance(0.3) ? std::vector<int64_t>{-2, -1} : std::vector<int64_t>{-1};
    Shape ns(x->shape().end() - axes.size(), x->shape().end());
    std::vector<Value*> ops = {x};
    for (int i = uniform(0, layer ? 2 : 1); i > 0; --i) ops.push_back(keep(argument(ns, x->dtype(), true)));
    return added(add(layer ? Op::LayerNorm : Op::RmsNorm, ops,
                     {{"axes", axes}, {"eps", pick(std::vector<double>{1e-5, 1e-6})}}, true));
  }

  bool sdpa() {
    DType t = float_dtype();
    Shape batch(uniform(1, 2));
    for (Dim& d : batch) d = random_dim(true);
    Dim lq = random_dim(true), lk = random_dim(true), e = random_dim(true), ev = random_dim(true);
    auto shape = [&](const Dim& a, const Dim& b) {
      Shape s = batch;
      s.push_back(a);
      s.push_back(b);
      return s;
    };
    std::vector<Value*> ops = {keep(argument(shape(lq, e), t)), keep(argument(shape(lk, e), t)),
                               keep(argument(shape(lk, ev), t))};
    if (chance(0.3)) ops.push_back(keep(argument({lq, lk}, chance(0.5) ? DType::boolean : t)));
    Attrs attrs{{"causal", chance(0.5)}};
    if (!e.constant() || chance(0.3)) attrs.set("scale", 0.3);
    return added(add(Op::Sdpa, ops, attrs, true));
  }

  // Returns the values nothing reads (the leaves: the last four of them), and sometimes one
  // more from the pool (arguments included), so that intermediates are outputs too.
  void finish() {
    std::vector<Value*> outs;
    for (auto it = pool_.rbegin(); it != pool_.rend() && outs.size() < 4; ++it)
      if ((*it)->producer() && !read_.contains(*it)) outs.push_back(*it);
    if (!pool_.empty() && chance(0.4)) {
      Value* v = pick(pool_);
      if (std::find(outs.begin(), outs.end(), v) == outs.end()) outs.push_back(v);
    }
    if (outs.empty()) outs.push_back(keep(argument({2}, DType::f32)));
    g_.set_outputs(outs);
    g_.remove_dead_nodes();
  }

  std::mt19937_64 rng_;
  const RandomGraphOptions& o_;
  Graph g_;
  std::vector<Value*> pool_;
  absl::flat_hash_set<const Value*> inexact_;
  absl::flat_hash_set<const Value*> read_;    // values some node reads
  absl::flat_hash_set<const Value*> spread_;  // values that may repeat one value along an axis
  absl::flat_hash_map<const Value*, double> magnitude_;  // bounds on |value| of node results
  int next_arg_ = 0;
};

}  // namespace

RandomGraph random_graph(uint64_t seed, const RandomGraphOptions& options) {
  return Generator(seed, options).run();
}

}  // namespace kiln
