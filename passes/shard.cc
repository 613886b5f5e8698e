#include "passes/shard.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/ops_collective.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

struct Layout {
  enum Kind : uint8_t { Replicated, Split, Partial } kind = Replicated;
  int64_t axis = 0, groups = 0;  // Split only: along `axis` into `groups` chunks (shard.h)
  static Layout split(int64_t a, int64_t g) { return {Split, a, g}; }
  Layout at(int64_t a) const { return split(a, groups); }  // the same chunks along another axis
  bool operator==(const Layout&) const = default;
};

// '*' matches any run of characters, everything else itself.
bool glob(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern[0] == '*') {
    for (size_t i = 0; i <= name.size(); ++i)
      if (glob(pattern.substr(1), name.substr(i))) return true;
    return false;
  }
  return !name.empty() && pattern[0] == name[0] && glob(pattern.substr(1), name.substr(1));
}

int64_t rank_of(const Value* v) { return static_cast<int64_t>(v->shape().size()); }

int64_t norm_axis(int64_t a, int64_t rank) { return a < 0 ? a + rank : a; }

class Sharder {
 public:
  Sharder(const Graph& g, const ShardPlan& plan) : g_(g), n_(plan.ranks), plan_(plan), out_(g.name()) {}

  absl::StatusOr<ShardedGraph> run() {
    if (n_ < 1) return invalid_argument("shard: ranks must be at least 1, got ", n_);
    for (const auto& [sym, info] : g_.symbol_bounds()) KILN_RETURN_IF_ERROR(out_.set_symbol_bounds(sym, info));
    for (const Value* v : g_.args()) KILN_RETURN_IF_ERROR(add_arg(v));
    for (const auto& n : g_.nodes()) {
      if (is_collective(n->op())) return invalid_argument(n->describe(), ": the graph is sharded already");
      KILN_RETURN_IF_ERROR(node(*n));
    }
    std::vector<Value*> outs;
    for (const Value* v : g_.outputs()) {
      Value* nv = map_.at(v);
      KILN_ASSIGN_OR_RETURN(Value * o, state_storage(v) ? absl::StatusOr<Value*>(nv) : whole(nv));
      outs.push_back(o);
    }
    out_.set_outputs(std::move(outs));
    return ShardedGraph{std::move(out_), std::move(split_), std::move(notes_)};
  }

 private:
  absl::Status add_arg(const Value* v) {
    std::optional<int64_t> axis;
    int64_t groups = n_;
    for (const ShardRule& r : plan_.rules)
      if (glob(r.pattern, v->name())) {
        axis = r.axis;
        groups = r.groups ? r.groups : n_;
        break;
      }
    TensorType t = v->type();
    if (axis && n_ > 1) {
      int64_t a = norm_axis(*axis, rank_of(v));
      if (a < 0 || a >= rank_of(v))
        return invalid_argument("shard: %", v->name(), " of type ", t.to_string(), " has no axis ", *axis);
      if (groups < 1 || n_ % groups != 0)
        return invalid_argument("shard: %", v->name(), " split into ", groups, " groups, which do not divide the ", n_,
                                " ranks");
      std::optional<Dim> d = t.shape[a].divide_exact(Dim(groups));
      if (!d)
        return invalid_argument("shard: axis ", a, " of %", v->name(), " (", t.to_string(), ") does not divide into ",
                                groups, " equal chunks");
      if (v->data())
        return invalid_argument("shard: parameter %", v->name(),
                                " holds its data in the graph; a split parameter is bound per rank (shard_arguments)");
      t.shape[a] = *d;
      split_[v->name()] = {a, groups};
    }
    absl::StatusOr<Value*> nv =
        v->is_param() ? out_.add_param(v->name(), t, v->data()) : out_.add_input(v->name(), t, v->is_state());
    KILN_RETURN_IF_ERROR(nv.status());
    map_[v] = *nv;
    auto sp = split_.find(v->name());
    layout_[*nv] = sp != split_.end() ? Layout::split(sp->second.axis, sp->second.groups) : Layout{};
    return absl::OkStatus();
  }

  Layout layout(const Value* nv) const { return layout_.at(nv); }

  // A name of neither graph (the original's names all come to the result, so a name the
  // result's own counter made could be taken later).
  std::string fresh(const std::string& base) {
    std::string name = base;
    for (int k = 1; g_.find(name) || out_.find(name); ++k) name = str_cat(base, "_", k);
    return name;
  }

  // `op` of `v`, named `name` (empty: <v>.<op>).
  absl::StatusOr<Value*> collective(Op op, Value* v, Attrs attrs, std::string name = "") {
    if (name.empty()) name = fresh(str_cat(v->name(), ".", op_name(op)));
    KILN_ASSIGN_OR_RETURN(Node * c, out_.add_node(op, {v}, std::move(attrs), {name}, loc_));
    layout_[c->result()] = Layout{};
    return c->result();
  }

  // A partial value summed (all_reduce), once, where a consumer first needs the sum; the sum
  // of n's partial result (partial()) takes n's name.
  absl::StatusOr<Value*> summed(Value* v) {
    if (layout(v).kind != Layout::Partial) return v;
    if (auto it = whole_.find(v); it != whole_.end()) return it->second;
    auto named = sum_name_.find(v);
    KILN_ASSIGN_OR_RETURN(Value * r,
                          collective(Op::AllReduce, v, {{"ranks", n_}}, named == sum_name_.end() ? "" : named->second));
    return whole_[v] = r;
  }

  // The whole value on every rank: all_gather of a split one, all_reduce of a partial one.
  // A grouped split's gather holds each chunk N / g times in a row: reshaped to
  // [..., g, N / g, chunk, ...], the first copy of each is sliced out.
  absl::StatusOr<Value*> whole(Value* v) {
    Layout l = layout(v);
    if (l.kind != Layout::Split) return summed(v);
    if (auto it = whole_.find(v); it != whole_.end()) return it->second;
    KILN_ASSIGN_OR_RETURN(Value * r, collective(Op::AllGather, v, {{"axis", l.axis}, {"ranks", n_}}));
    if (l.groups != n_) {
      const size_t a = static_cast<size_t>(l.axis);
      Shape copies = v->shape(), once = v->shape();
      copies.insert(copies.begin() + static_cast<std::ptrdiff_t>(a), {Dim(l.groups), Dim(n_ / l.groups)});
      once[a] = Dim(l.groups) * once[a];
      auto op = [&](Op o, Value* in, Attrs attrs) -> absl::StatusOr<Value*> {
        KILN_ASSIGN_OR_RETURN(
            Node * m, out_.add_node(o, {in}, std::move(attrs), {fresh(str_cat(v->name(), ".", op_name(o)))}, loc_));
        layout_[m->result()] = Layout{};
        return m->result();
      };
      KILN_ASSIGN_OR_RETURN(r, op(Op::Reshape, r, {{"shape", copies}}));
      KILN_ASSIGN_OR_RETURN(r, op(Op::Slice, r, {{"axis", l.axis + 1}, {"start", int64_t{0}}, {"end", int64_t{1}}}));
      KILN_ASSIGN_OR_RETURN(r, op(Op::Reshape, r, {{"shape", once}}));
    }
    return whole_[v] = r;
  }

  // Emits `n` on `operands` with `attrs`, its results named as n's, with `layouts`.
  absl::Status emit(const Node& n, std::vector<Value*> operands, Attrs attrs, std::vector<Layout> layouts) {
    std::vector<std::string> names;
    for (const Value* r : n.results()) names.push_back(r->name());
    KILN_ASSIGN_OR_RETURN(Node * m, out_.add_node(n.op(), std::move(operands), std::move(attrs), names, loc_));
    for (size_t i = 0; i < m->results().size(); ++i) {
      map_[n.result(i)] = m->result(i);
      layout_[m->result(i)] = layouts.size() == 1 ? layouts[0] : layouts[i];
    }
    return absl::OkStatus();
  }

  // The op with every operand whole, its results replicated: for ops without a split form.
  absl::Status emit_whole(const Node& n, std::vector<Value*> ops, const std::string& why) {
    bool moved = false;
    for (Value*& v : ops) {
      moved = moved || layout(v).kind != Layout::Replicated;
      KILN_ASSIGN_OR_RETURN(v, whole(v));
    }
    if (moved) notes_.push_back(str_cat(n.describe(), ": its operands made whole first (", why, ")"));
    return emit(n, std::move(ops), n.attrs(), {Layout{}});
  }

  absl::Status node(const Node& n) {
    loc_ = n.loc();
    std::vector<Value*> ops;
    for (const Value* v : n.operands()) ops.push_back(map_.at(v));
    if (n_ == 1) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    switch (n.info().kind) {
      case OpKind::Elementwise:
      case OpKind::Broadcast: return broadcast(n, std::move(ops));
      case OpKind::Reduction: return reduction(n, std::move(ops));
      default: break;
    }
    switch (n.op()) {
      case Op::Softmax:
      case Op::LogSoftmax: return along(n, std::move(ops), {SoftmaxAttrs(n).axis()});
      case Op::LayerNorm: return along(n, std::move(ops), LayerNormAttrs(n).axes());
      case Op::RmsNorm: return along(n, std::move(ops), RmsNormAttrs(n).axes());
      case Op::Linear: return linear(n, std::move(ops));
      case Op::MatMul: return matmul(n, std::move(ops));
      case Op::Reshape: return reshape(n, std::move(ops));
      case Op::Permute: return permute(n, std::move(ops));
      case Op::Expand: return expand(n, std::move(ops));
      case Op::Squeeze:
      case Op::Unsqueeze: return squeeze(n, std::move(ops));
      case Op::Slice: return keep_if_not(n, std::move(ops), SliceAttrs(n).axis());
      case Op::Concat: return keep_if_not(n, std::move(ops), ConcatAttrs(n).axis());
      case Op::Split: return keep_if_not(n, std::move(ops), SplitAttrs(n).axis());
      case Op::Attention:
      case Op::Sdpa: return attention(n, std::move(ops));
      case Op::CacheWrite: return cache_write(n, std::move(ops));
      case Op::Gather: return gather(n, std::move(ops));
      default: return emit_whole(n, std::move(ops), str_cat(op_name(n.op()), " has no split form here"));
    }
  }

  // Elementwise and broadcast ops: split operands must be split alike along the same result
  // axis, and every replicated operand broadcast along it (size 1 or absent).
  absl::Status broadcast(const Node& n, std::vector<Value*> ops) {
    // A sum or difference of partial values is partial (sum_r a_r + sum_r b_r = sum_r
    // (a_r + b_r)): a parallel-residual block's attention and MLP outputs (GPT-J, NeoX,
    // Falcon) take one all_reduce. Only where the op is each operand's one use, so that no
    // operand is summed on its own as well. A replicated operand needs the others summed.
    if (n.op() == Op::Add || n.op() == Op::Sub) {
      bool all_partial = true;
      for (size_t i = 0; i < ops.size(); ++i) {
        const Value* v = n.operand(i);
        all_partial = all_partial && layout(ops[i]).kind == Layout::Partial &&
                      std::all_of(v->users().begin(), v->users().end(), [&](const Node* u) { return u == &n; }) &&
                      std::find(g_.outputs().begin(), g_.outputs().end(), v) == g_.outputs().end();
      }
      if (all_partial) return partial(n, std::move(ops), n.attrs()).status();
    }
    const int64_t out_rank = rank_of(n.result());
    std::optional<Layout> split;
    bool conflict = false;
    for (Value*& v : ops) {
      KILN_ASSIGN_OR_RETURN(v, summed(v));
      Layout l = layout(v);
      if (l.kind != Layout::Split) continue;
      Layout at = l.at(l.axis + out_rank - rank_of(v));
      conflict = conflict || (split && *split != at);
      split = at;
    }
    if (!split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    for (size_t i = 0; i < ops.size() && !conflict; ++i) {
      if (layout(ops[i]).kind == Layout::Split) continue;
      int64_t at = split->axis - (out_rank - rank_of(ops[i]));
      conflict = at >= 0 && !(n.operand(i)->shape()[at] == Dim(1));
    }
    if (conflict) return emit_whole(n, std::move(ops), "operands split along different axes or into different groups");
    return emit(n, std::move(ops), n.attrs(), {*split});
  }

  absl::Status reduction(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    if (l.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    const int64_t rank = rank_of(n.operand(0));
    std::vector<int64_t> axes;
    bool keepdim;
    if (n.op() == Op::ArgMax) {
      axes = {norm_axis(ArgMaxAttrs(n).axis(), rank)};
      keepdim = ArgMaxAttrs(n).keepdim();
    } else {
      ReduceAttrs at(n);
      keepdim = at.keepdim();
      if (std::optional<std::vector<int64_t>> given = at.axes())  // a named copy: *at.axes() would dangle
        for (int64_t a : *given) axes.push_back(norm_axis(a, rank));
      else
        for (int64_t a = 0; a < rank; ++a) axes.push_back(a);
    }
    if (std::find(axes.begin(), axes.end(), l.axis) != axes.end()) {
      // A sum over the split axis: each rank's sum of its chunk, one part of the whole (with
      // a chunk per rank; replicated chunks would be counted N / g times).
      if (n.op() == Op::Sum && l.groups == n_) return emit(n, std::move(ops), n.attrs(), {Layout{Layout::Partial}});
      return emit_whole(n, std::move(ops), "it reduces over the split axis");
    }
    int64_t a =
        keepdim ? l.axis : l.axis - std::count_if(axes.begin(), axes.end(), [&](int64_t x) { return x < l.axis; });
    return emit(n, std::move(ops), n.attrs(), {l.at(a)});
  }

  // Softmax and norms over `axes`: kept split along another axis, their weights replicated.
  absl::Status along(const Node& n, std::vector<Value*> ops, std::vector<int64_t> axes) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    const int64_t rank = rank_of(n.operand(0));
    bool over = false;
    for (int64_t a : axes) over = over || norm_axis(a, rank) == l.axis;
    bool weights_whole = true;
    for (size_t i = 1; i < ops.size(); ++i) weights_whole = weights_whole && layout(ops[i]).kind == Layout::Replicated;
    if (l.kind == Layout::Split && !over && weights_whole) return emit(n, std::move(ops), n.attrs(), {l});
    if (l.kind == Layout::Replicated && weights_whole) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    return emit_whole(n, std::move(ops), "it normalizes over the split axis");
  }

  // n's op on `operands` giving each rank's part of n's result (named <n>.partial), which
  // stands for n's result; summed by one all_reduce (named as n's result) where needed.
  absl::StatusOr<Value*> partial(const Node& n, std::vector<Value*> operands, Attrs attrs = {}) {
    KILN_ASSIGN_OR_RETURN(Node * p, out_.add_node(n.op(), std::move(operands), std::move(attrs),
                                                  {fresh(str_cat(n.result()->name(), ".partial"))}, loc_));
    layout_[p->result()] = Layout{Layout::Partial};
    sum_name_[p->result()] = n.result()->name();
    map_[n.result()] = p->result();
    return p->result();
  }

  // `v` stands for n's result, under its name.
  absl::Status named_result(const Node& n, Value* v) {
    KILN_RETURN_IF_ERROR(out_.rename(v, n.result()->name()));
    map_[n.result()] = v;
    return absl::OkStatus();
  }

  // linear(x [..., K], w [N, K], b [N]?).
  absl::Status linear(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    const int64_t k_axis = rank_of(n.operand(0)) - 1;
    Layout x = layout(ops[0]), w = layout(ops[1]);
    const bool bias = ops.size() == 3;
    const bool bias_whole = !bias || layout(ops[2]).kind == Layout::Replicated;
    if (w.kind == Layout::Replicated && bias_whole) {
      if (x.kind == Layout::Replicated) return emit(n, std::move(ops), n.attrs(), {Layout{}});
      if (x.axis != k_axis) return emit(n, std::move(ops), n.attrs(), {x});  // rows split
    }
    if (w.kind == Layout::Split && w.axis == 0 && x.kind == Layout::Replicated && (!bias || layout(ops[2]) == w))
      return emit(n, std::move(ops), n.attrs(), {w.at(k_axis)});  // column-parallel
    if (w.kind == Layout::Split && w.axis == 1 && w.groups == n_ && x == w.at(k_axis) && bias_whole) {
      // Row-parallel: partial products, summed, then the bias once.
      KILN_ASSIGN_OR_RETURN(Value * part, partial(n, {ops[0], ops[1]}));
      if (!bias) return absl::OkStatus();
      sum_name_.erase(part);  // the bias's add takes n's name
      KILN_ASSIGN_OR_RETURN(Value * sum, summed(part));
      KILN_ASSIGN_OR_RETURN(Node * add, out_.add_node(Op::Add, {sum, ops[2]}, {}, {n.result()->name()}, loc_));
      map_[n.result()] = add->result();
      layout_[add->result()] = Layout{};
      return absl::OkStatus();
    }
    return emit_whole(n, std::move(ops), "its input, weight and bias are split in no way a GEMM splits");
  }

  // matmul(a [..., M, K], b [..., K, N]), both of rank >= 2 (else made whole).
  absl::Status matmul(const Node& n, std::vector<Value*> ops) {
    for (Value*& v : ops) {
      KILN_ASSIGN_OR_RETURN(v, summed(v));
    }
    const int64_t ra = rank_of(n.operand(0)), rb = rank_of(n.operand(1)), ro = rank_of(n.result());
    Layout a = layout(ops[0]), b = layout(ops[1]);
    if (a.kind == Layout::Replicated && b.kind == Layout::Replicated)
      return emit(n, std::move(ops), n.attrs(), {Layout{}});
    if (ra < 2 || rb < 2) return emit_whole(n, std::move(ops), "a matmul of a vector");
    // Whether `v` (replicated, rank r) is broadcast along result axis `o`.
    auto broadcast_at = [&](size_t i, int64_t o) {
      int64_t at = o - (ro - rank_of(n.operand(i)));
      return at < 0 || n.operand(i)->shape()[at] == Dim(1);
    };
    if (a.kind == Layout::Split && b.kind == Layout::Split && a.axis == ra - 1 && b.axis == rb - 2 && a.groups == n_ &&
        b.groups == n_) {
      return partial(n, std::move(ops)).status();
    }
    if (a.kind == Layout::Split && a.axis < ra - 1) {  // rows or a batch axis of a
      int64_t o = a.axis + ro - ra;
      bool fits = b.kind == Layout::Replicated ? (a.axis == ra - 2 || broadcast_at(1, o))
                                               : b.axis < rb - 2 && b.axis + ro - rb == o && b.groups == a.groups;
      if (fits) return emit(n, std::move(ops), n.attrs(), {a.at(o)});
    }
    if (b.kind == Layout::Split && a.kind == Layout::Replicated) {
      if (b.axis == rb - 1) return emit(n, std::move(ops), n.attrs(), {b.at(ro - 1)});  // columns
      int64_t o = b.axis + ro - rb;
      if (b.axis < rb - 2 && broadcast_at(0, o)) return emit(n, std::move(ops), n.attrs(), {b.at(o)});
    }
    return emit_whole(n, std::move(ops), "its operands are split in no way a GEMM splits");
  }

  // A type's shape with axis `a` divided into `groups` chunks.
  Shape local(const Value* v, int64_t a, int64_t groups) const {
    Shape s = v->shape();
    s[a] = *s[a].divide_exact(Dim(groups));
    return s;
  }

  absl::Status reshape(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    if (l.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    const Shape &in = n.operand(0)->shape(), &out = n.result()->shape();
    // Group boundaries: prefixes of the two shapes with equal products.
    std::vector<std::pair<size_t, size_t>> cuts;
    Dim pi = 1;
    for (size_t i = 0; i <= in.size(); ++i) {
      Dim pj = 1;
      for (size_t j = 0; j <= out.size(); ++j) {
        if (pi == pj) cuts.push_back({i, j});
        if (j < out.size()) pj = pj * out[j];
      }
      if (i < in.size()) pi = pi * in[i];
    }
    const size_t a = static_cast<size_t>(l.axis);
    std::optional<std::pair<size_t, size_t>> lo, hi;
    for (const auto& c : cuts) {
      if (c.first <= a && (!lo || c.first > lo->first || (c.first == lo->first && c.second > lo->second))) lo = c;
      if (c.first > a && (!hi || c.first < hi->first || (c.first == hi->first && c.second < hi->second))) hi = c;
    }
    // Splitting the group's outermost axis of size > 1 into N contiguous chunks splits its
    // flattened elements so; the result's outermost axis of size > 1 in the group then splits
    // the same way.
    bool outermost = lo && hi;
    for (size_t i = lo ? lo->first : 0; outermost && i < a; ++i) outermost = in[i] == Dim(1);
    std::optional<size_t> target;
    for (size_t j = lo ? lo->second : 0; outermost && hi && j < hi->second && !target; ++j)
      if (!(out[j] == Dim(1))) target = j;
    if (!target || !out[*target].divide_exact(Dim(l.groups)))
      return emit_whole(n, std::move(ops), "the reshape moves the split axis inside another");
    Attrs attrs = n.attrs();
    attrs.set("shape", local(n.result(), static_cast<int64_t>(*target), l.groups));
    return emit(n, std::move(ops), std::move(attrs), {l.at(static_cast<int64_t>(*target))});
  }

  absl::Status permute(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    if (l.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    const std::vector<int64_t>& dims = PermuteAttrs(n).dims();
    const int64_t rank = static_cast<int64_t>(dims.size());
    for (int64_t j = 0; j < rank; ++j)
      if (norm_axis(dims[j], rank) == l.axis) return emit(n, std::move(ops), n.attrs(), {l.at(j)});
    return invalid_argument(n.describe(), ": permute without axis ", l.axis);
  }

  absl::Status expand(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    if (l.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    const int64_t a = l.axis + rank_of(n.result()) - rank_of(n.operand(0));
    Attrs attrs = n.attrs();
    attrs.set("shape", local(n.result(), a, l.groups));
    return emit(n, std::move(ops), std::move(attrs), {l.at(a)});
  }

  // squeeze/unsqueeze: the split axis keeps its place among the axes that stay.
  absl::Status squeeze(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    Layout l = layout(ops[0]);
    if (l.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    const int64_t in_rank = rank_of(n.operand(0)), out_rank = rank_of(n.result());
    int64_t a = l.axis;
    if (n.op() == Op::Squeeze) {
      std::vector<int64_t> gone;
      if (std::optional<std::vector<int64_t>> axes = SqueezeAttrs(n).axes())
        for (int64_t x : *axes) gone.push_back(norm_axis(x, in_rank));
      else
        for (int64_t x = 0; x < in_rank; ++x)
          if (n.operand(0)->shape()[x] == Dim(1)) gone.push_back(x);
      if (std::find(gone.begin(), gone.end(), a) != gone.end())
        return emit_whole(n, std::move(ops), "the split axis is squeezed");
      a -= std::count_if(gone.begin(), gone.end(), [&](int64_t x) { return x < l.axis; });
    } else {
      std::vector<int64_t> added;
      for (int64_t x : UnsqueezeAttrs(n).axes()) added.push_back(norm_axis(x, out_rank));
      std::sort(added.begin(), added.end());
      for (int64_t x : added)
        if (x <= a) ++a;
    }
    return emit(n, std::move(ops), n.attrs(), {l.at(a)});
  }

  // slice, concat and split along another axis than the split one keep it.
  absl::Status keep_if_not(const Node& n, std::vector<Value*> ops, int64_t axis) {
    std::optional<Layout> same;
    bool mixed = false;
    for (Value*& v : ops) {
      KILN_ASSIGN_OR_RETURN(v, summed(v));
      Layout l = layout(v);
      mixed = mixed || (same && *same != l);
      same = l;
    }
    if (!mixed && same->kind == Layout::Replicated) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    if (!mixed && norm_axis(axis, rank_of(n.operand(0))) != same->axis)
      return emit(n, std::move(ops), n.attrs(), {*same});
    return emit_whole(n, std::move(ops),
                      mixed ? "its operands are split differently" : "it works along the split axis");
  }

  // attention(q, k, v, ...) and sdpa: heads split (q [B, H, Tq, D] along 1; k and v alike
  // along their kv-head axis: 1 contiguous, 2 paged), masks, lengths and tables replicated.
  // Each rank's q heads must be those of its kv heads' groups: k and v split as q is (its
  // H / N query heads over KVH / N kv heads, the ratio of the whole), or into fewer groups
  // that divide q's, each chunk one kv head (all of the rank's query heads share it).
  absl::Status attention(const Node& n, std::vector<Value*> ops) {
    for (Value*& v : ops) {
      KILN_ASSIGN_OR_RETURN(v, summed(v));
    }
    bool paged = false;
    std::optional<size_t> mask;
    if (n.op() == Op::Attention) {
      AttentionOperands a = attention_operands(n);
      paged = a.paged();
      mask = a.mask;
    } else if (ops.size() == 4) {
      mask = 3;
    }
    bool any = false, heads = true;
    const Layout q = layout(ops[0]), kv = layout(ops[1]);
    for (size_t i = 0; i < ops.size(); ++i) {
      Layout l = layout(ops[i]);
      any = any || l.kind == Layout::Split;
      if (i == 0) {
        heads = l.kind == Layout::Split && l.axis == 1;
      } else if (i < 3) {
        const int64_t axis = paged ? 2 : 1;
        heads = heads && l == kv && l.kind == Layout::Split && l.axis == axis &&
                (l.groups == q.groups || (q.groups % l.groups == 0 && ops[i]->shape()[axis] == Dim(1)));
      } else {
        heads = heads && l.kind == Layout::Replicated;
        if (mask && i == *mask && rank_of(n.operand(i)) >= 3)
          heads = heads && n.operand(i)->shape()[rank_of(n.operand(i)) - 3] == Dim(1);
      }
    }
    if (!any) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    if (heads) return emit(n, std::move(ops), n.attrs(), {q});
    return emit_whole(n, std::move(ops), "its operands are not all split by heads");
  }

  // The rank's index (kRankInput), an input every rank binds to its own (shard_arguments).
  absl::StatusOr<Value*> rank_input() {
    if (Value* v = out_.find(std::string(kRankInput))) return v;
    if (g_.find(std::string(kRankInput)))
      return invalid_argument("shard: the graph has a value named %", kRankInput, ", which the rank's index needs");
    return out_.add_input(std::string(kRankInput), TensorType{DType::i64, {}});
  }

  // gather(table, ids, axis) with the ids whole. The table split along another axis keeps
  // that split in the result; split along the gathered axis 0 (a vocab-parallel embedding),
  // each rank looks the ids up in its own rows (shifted by rank * rows, negative ids counted
  // from the end as gather does), zeroes the rows of ids outside them, and the ranks' results
  // sum to the whole lookup (an all_reduce). Out-of-range ids then give zero rows instead of
  // the unsharded graph's index error.
  absl::Status gather(const Node& n, std::vector<Value*> ops) {
    KILN_ASSIGN_OR_RETURN(ops[0], summed(ops[0]));
    KILN_ASSIGN_OR_RETURN(ops[1], whole(ops[1]));
    Layout t = layout(ops[0]);
    const int64_t rank = rank_of(n.operand(0)), ids_rank = rank_of(n.operand(1));
    const int64_t axis = norm_axis(GatherAttrs(n).axis(), rank);
    if (t.kind != Layout::Split) return emit(n, std::move(ops), n.attrs(), {Layout{}});
    if (t.axis != axis)
      return emit(n, std::move(ops), n.attrs(), {t.at(t.axis < axis ? t.axis : t.axis + ids_rank - 1)});
    std::optional<int64_t> rows = ops[0]->shape()[0].constant();
    if (axis != 0 || !rows || t.groups != n_)
      return emit_whole(n, std::move(ops), "a gather along a split axis other than a table's rows, a chunk per rank");
    KILN_ASSIGN_OR_RETURN(Value * r, rank_input());
    // Each value named <n>.<op> (fresh: no name of either graph).
    const std::string base = n.result()->name();
    auto op = [&](Op o, std::vector<Value*> in, Attrs attrs = {}) -> absl::StatusOr<Value*> {
      KILN_ASSIGN_OR_RETURN(
          Node * m, out_.add_node(o, std::move(in), std::move(attrs), {fresh(str_cat(base, ".", op_name(o)))}, loc_));
      return m->result();
    };
    auto constant = [&](double v, DType t) {
      return op(Op::Constant, {},
                {{"value", is_float(t) ? AttrValue(v) : AttrValue(static_cast<int64_t>(v))}, {"dtype", t}});
    };
    Value* ids = ops[1];
    const DType it = ids->dtype();
    KILN_ASSIGN_OR_RETURN(Value * zero, constant(0, it));
    KILN_ASSIGN_OR_RETURN(Value * whole_rows, constant(static_cast<double>(*rows * n_), it));
    KILN_ASSIGN_OR_RETURN(Value * my_rows, constant(static_cast<double>(*rows), it));
    KILN_ASSIGN_OR_RETURN(Value * from_end, op(Op::Add, {ids, whole_rows}));
    KILN_ASSIGN_OR_RETURN(Value * negative, op(Op::Lt, {ids, zero}));
    KILN_ASSIGN_OR_RETURN(Value * wrapped, op(Op::Where, {negative, from_end, ids}));
    KILN_ASSIGN_OR_RETURN(Value * r_it,
                          it == DType::i64 ? absl::StatusOr<Value*>(r) : op(Op::Cast, {r}, {{"dtype", it}}));
    KILN_ASSIGN_OR_RETURN(Value * first, op(Op::Mul, {r_it, my_rows}));
    KILN_ASSIGN_OR_RETURN(Value * local, op(Op::Sub, {wrapped, first}));
    KILN_ASSIGN_OR_RETURN(Value * above, op(Op::Ge, {local, zero}));
    KILN_ASSIGN_OR_RETURN(Value * below, op(Op::Lt, {local, my_rows}));
    KILN_ASSIGN_OR_RETURN(Value * mine, op(Op::And, {above, below}));
    KILN_ASSIGN_OR_RETURN(Value * index, op(Op::Where, {mine, local, zero}));
    KILN_ASSIGN_OR_RETURN(Value * looked, op(Op::Gather, {ops[0], index}, n.attrs()));
    Shape keep = ids->shape();
    keep.resize(static_cast<size_t>(ids_rank + rank - 1), Dim(1));
    KILN_ASSIGN_OR_RETURN(Value * mine_rows, op(Op::Reshape, {mine}, {{"shape", keep}}));
    KILN_ASSIGN_OR_RETURN(Value * no_row, constant(0, looked->dtype()));
    KILN_ASSIGN_OR_RETURN(
        Node * m, out_.add_node(Op::Where, {mine_rows, looked, no_row}, {}, {fresh(str_cat(base, ".partial"))}, loc_));
    Value* masked = m->result();
    layout_[masked] = Layout{Layout::Partial};
    KILN_ASSIGN_OR_RETURN(Value * sum, summed(masked));
    return named_result(n, sum);
  }

  // cache_write(cache, new, positions[, table]): the cache's layout is the plan's; the rows
  // written must be split the same way (a state cannot be made whole).
  absl::Status cache_write(const Node& n, std::vector<Value*> ops) {
    for (size_t i = 1; i < ops.size(); ++i) {
      KILN_ASSIGN_OR_RETURN(ops[i], summed(ops[i]));
    }
    Layout c = layout(ops[0]), x = layout(ops[1]);
    bool rest_whole = true;
    for (size_t i = 2; i < ops.size(); ++i) rest_whole = rest_whole && layout(ops[i]).kind == Layout::Replicated;
    const int64_t heads = ops.size() == 4 ? 2 : 1;  // a block table: the paged layout
    if (c.kind == Layout::Replicated && x.kind == Layout::Replicated && rest_whole)
      return emit(n, std::move(ops), n.attrs(), {Layout{}});
    if (c.kind == Layout::Split && c.axis == heads && x == c.at(1) && rest_whole)
      return emit(n, std::move(ops), n.attrs(), {c});
    return invalid_argument(n.describe(), ": the cache %", n.operand(0)->name(), " and the rows written (%",
                            n.operand(1)->name(), ") are not split alike by kv heads (the cache along axis ", heads,
                            ", the rows along 1); a state input is never gathered, so the plan must split both");
  }

  const Graph& g_;
  const int64_t n_;
  const ShardPlan& plan_;
  Graph out_;
  std::string loc_;
  absl::flat_hash_map<const Value*, Value*> map_;     // original value -> its sharded value
  absl::flat_hash_map<const Value*, Layout> layout_;  // sharded value -> layout
  absl::flat_hash_map<const Value*, Value*> whole_;   // sharded value -> its whole form
  absl::flat_hash_map<const Value*, std::string> sum_name_;  // partial value -> its sum's name
  std::map<std::string, ArgSplit> split_;
  std::vector<std::string> notes_;
};

}  // namespace

ShardPlan llama_shard_plan(int64_t ranks, bool paged, bool vocab_parallel, int64_t kv_heads) {
  ShardPlan p;
  p.ranks = ranks;
  // Fewer kv heads than ranks: each kv head whole on ranks / kv_heads ranks (shard.h).
  const int64_t kv_groups = kv_heads > 0 && kv_heads < ranks && ranks % kv_heads == 0 ? kv_heads : 0;
  for (const char* col : {"*q_proj.weight", "*gate_proj.weight", "*up_proj.weight", "*q_proj.bias"})
    p.rules.push_back({col, 0});
  for (const char* kv : {"*k_proj.weight", "*v_proj.weight", "*k_proj.bias", "*v_proj.bias"})
    p.rules.push_back({kv, 0, kv_groups});
  for (const char* row : {"*o_proj.weight", "*down_proj.weight"}) p.rules.push_back({row, 1});
  for (const char* cache : {"k_cache.*", "v_cache.*"}) p.rules.push_back({cache, paged ? 2 : 1, kv_groups});
  if (vocab_parallel)
    for (const char* vocab : {"model.embed_tokens.weight", "lm_head.weight"}) p.rules.push_back({vocab, 0});
  return p;
}

absl::StatusOr<ShardedGraph> shard(const Graph& g, const ShardPlan& plan) { return Sharder(g, plan).run(); }

absl::StatusOr<std::vector<TensorMap>> shard_arguments(const ShardedGraph& s, int64_t ranks, const TensorMap& whole) {
  std::vector<TensorMap> out(static_cast<size_t>(ranks));
  for (const auto& [name, t] : whole) {
    auto it = s.split.find(name);
    if (it == s.split.end()) {
      for (TensorMap& m : out) m[name] = t;
      continue;
    }
    const ArgSplit& sp = it->second;
    if (sp.axis >= t.rank() || t.shape()[sp.axis] % sp.groups != 0)
      return invalid_argument("argument %", name, ": axis ", sp.axis, " of ", t.type_string(), " does not divide into ",
                              sp.groups, " equal chunks");
    for (int64_t r = 0; r < ranks; ++r) out[r][name] = t.chunk(sp.axis, sp.chunk(r, ranks), sp.groups);
  }
  if (const Value* v = s.graph.find(std::string(kRankInput)); v && v->is_input())
    for (int64_t r = 0; r < ranks; ++r) {
      HostTensor index(DType::i64, {});
      index.set_int(0, r);
      out[r][std::string(kRankInput)] = std::move(index);
    }
  return out;
}

absl::StatusOr<ShardedRun> evaluate_sharded(const Graph& g, const ShardedGraph& s, int64_t ranks,
                                            const TensorMap& whole) {
  KILN_ASSIGN_OR_RETURN(std::vector<HostTensor> want, evaluate(g, whole));
  KILN_ASSIGN_OR_RETURN(std::vector<TensorMap> shards, shard_arguments(s, ranks, whole));
  ShardedRun run;
  KILN_ASSIGN_OR_RETURN(run.got, evaluate_ranks(s.graph, shards));
  run.expected.resize(static_cast<size_t>(ranks));
  for (size_t i = 0; i < want.size(); ++i) {
    const Value* storage = state_storage(g.outputs()[i]);
    auto split = storage ? s.split.find(storage->name()) : s.split.end();
    for (int64_t r = 0; r < ranks; ++r)
      run.expected[r].push_back(
          split == s.split.end()
              ? want[i]
              : want[i].chunk(split->second.axis, split->second.chunk(r, ranks), split->second.groups));
  }
  return run;
}

}  // namespace kiln
