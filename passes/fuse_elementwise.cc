#include "passes/fuse_elementwise.h"

#include <algorithm>
#include <queue>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/log.h"
#include "ir/op_attrs.h"
#include "ir/ops_collective.h"
#include "ir/str.h"
#include "passes/schedule_util.h"
#include "passes/strided_view.h"

namespace kiln {
namespace {

using Uses = absl::flat_hash_map<const Value*, std::vector<Node*>>;

bool is_plain_view(const Node& n) {
  switch (n.op()) {
    case Op::Reshape: case Op::Permute: case Op::Expand: case Op::Squeeze: case Op::Unsqueeze: case Op::Slice:
      return true;
    default:
      return false;
  }
}

bool is_constant(const Value* v) { return v->producer() && v->producer()->op() == Op::Constant; }

// A cast from a float type to f32: exact, so a GEMM can load the narrower type and convert
// (bf16 x bf16 products accumulated in f32).
bool is_widening_cast(const Node& n) {
  return n.op() == Op::Cast && n.result()->dtype() == DType::f32 && is_float(n.operand(0)->dtype());
}

// Whether a node computes from indices and constants only (iota, a comparison of iotas, a
// view of one): like a view, it costs nothing to recompute wherever it is read. Memoized,
// and iterative: a chain of 50,000 nodes must not recurse 50,000 frames deep.
class IndexOnly {
 public:
  bool operator()(const Node& root) {
    std::vector<const Node*> stack{&root};
    while (!stack.empty()) {
      const Node* n = stack.back();
      if (memo_.contains(n)) {
        stack.pop_back();
        continue;
      }
      bool r = n->op() == Op::Iota;
      OpKind k = n->info().kind;
      if (!r && n->num_operands() > 0 && (k == OpKind::Elementwise || k == OpKind::Broadcast || is_plain_view(*n))) {
        // All operands constant or index-only; the first one not yet known is decided first.
        const Node* unknown = nullptr;
        r = true;
        for (const Value* v : n->operands()) {
          if (is_constant(v)) continue;
          const Node* p = v->producer();
          auto it = p ? memo_.find(p) : memo_.end();
          if (p && it == memo_.end()) {
            unknown = p;
            break;
          }
          if (!p || !it->second) {
            r = false;
            break;
          }
        }
        if (unknown) {
          stack.push_back(unknown);
          continue;
        }
      }
      memo_[n] = r;
      stack.pop_back();
    }
    return memo_.at(&root);
  }

 private:
  absl::flat_hash_map<const Node*, bool> memo_;
};

// Distinct users of `v`, in node order.
std::vector<Node*> users_of(const Uses& uses, const Value* v) {
  auto it = uses.find(v);
  if (it == uses.end()) return {};
  std::vector<Node*> u = it->second;
  u.erase(std::unique(u.begin(), u.end()), u.end());
  return u;
}

// Gives every single-result view and index-only node one user, cloning it per extra user
// (last node first, so that chains are cloned whole). A returned value keeps the original
// for the graph output and a clone for every user.
void duplicate_cheap_nodes(Graph& g, IndexOnly& index_only) {
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  Uses uses = g.uses();  // kept up to date as clones appear
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node* v = *it;
    if (v->results().size() != 1 || !(v->info().kind == OpKind::View || index_only(*v)) || v->op() == Op::Gather ||
        v->op() == Op::Concat)
      continue;
    std::vector<Node*> users = users_of(uses, v->result());
    for (size_t i = returned.contains(v->result()) ? 0 : 1; i < users.size(); ++i) {
      Node* u = users[i];
      g.set_insertion_point(u);
      absl::StatusOr<Node*> c = g.add_node(v->op(), v->operands(), v->attrs(), {}, v->loc());
      g.set_insertion_point(nullptr);
      if (!c.ok()) continue;  // cannot happen: same operands and attributes as v
      for (Value* o : v->operands()) uses[o].push_back(*c);
      for (size_t k = 0; k < u->num_operands(); ++k)
        if (u->operand(k) == v->result()) g.replace_operand(u, k, (*c)->result());
    }
  }
}

// The iteration space of a reduction: its input shape and sorted, normalized axes, and the
// two shapes its rows take (with reduced dims kept as 1, and without them).
struct Domain {
  Shape shape;
  std::vector<int64_t> axes;
  Shape keep, kept;
  bool operator==(const Domain& o) const { return shape == o.shape && axes == o.axes; }
};

std::optional<Domain> domain_of(const Node& n) {
  if (n.info().kind != OpKind::Reduction) return std::nullopt;
  const Shape& x = n.operand(0)->shape();
  absl::StatusOr<std::vector<int64_t>> axes = reduction_axes(n);
  if (!axes.ok()) return std::nullopt;  // cannot happen: the node's axes were checked when it was made
  Domain d{x, *std::move(axes), {}, {}};
  for (size_t i = 0; i < x.size(); ++i) {
    bool reduced = std::binary_search(d.axes.begin(), d.axes.end(), static_cast<int64_t>(i));
    d.keep.push_back(reduced ? Dim(1) : x[i]);
    if (!reduced) d.kept.push_back(x[i]);
  }
  return d;
}

class Partitioner {
 public:
  Partitioner(Graph& g, Schedule& s, IndexOnly& index_only)
      : g_(g), s_(s), uses_(g.uses()), index_only_(index_only) {
    int i = 0;
    for (const auto& n : g.nodes()) pos_[n.get()] = i++;
    returned_.insert(g.outputs().begin(), g.outputs().end());
    // GEMMs run per call (fuse_linear makes none weight prep), and so does what reads them;
    // so does a value of a symbolic shape (an expand of a constant to [T]): weight prep is
    // not run again when only the call's symbols change. Node order is topological.
    for (const auto& n : g.nodes()) {
      bool all = n->num_operands() > 0 && n->info().kind != OpKind::Gemm && !is_collective(n->op()) &&
                 shape_is_static(n->result()->shape());
      for (const Value* v : n->operands()) {
        if (v->is_input()) all = false;
        else if (v->producer() && v->producer()->op() != Op::Constant) all = all && param_only_.at(v->producer());
      }
      param_only_[n.get()] = all;
    }
    for (KernelGroup& grp : s_.groups) {
      int id = new_group(grp.nodes);
      gemm_of_[id] = &grp;
    }
  }

  void run() {
    attach_to_attentions();
    attach_to_gemms();
    for (const auto& n : g_.nodes()) {
      // A constant belongs to no group (it is inlined where read) unless it is returned.
      if (group_.contains(n.get()) || (n->op() == Op::Constant && !returned_.contains(n->result()))) continue;
      new_group({n.get()});
    }
    init_summaries();
    for (const auto& n : g_.nodes()) {
      if (!group_.contains(n.get())) continue;
      if (fixed(find(n.get()))) {
        for (Value* v : n->operands())
          if (Node* p = v->producer(); p && group_.contains(p) && find(p) != find(n.get()) && !fixed(find(p)))
            log_line(LogTopic::fusion, 1, str_cat("not fused: ", describe(p), " -> ", describe(n.get()),
                                                  ": a GEMM's kernel takes no prologue beyond views and widening casts"));
        continue;
      }
      for (Value* v : n->operands()) {
        Node* p = v->producer();
        if (!p || !group_.contains(p)) continue;
        if (fixed(find(p))) {
          log_line(LogTopic::fusion, 1, str_cat("not fused: ", describe(p), " -> ", describe(n.get()),
                                                ": a GEMM's kernel takes no epilogue beyond what fuse_linear gave it"));
          continue;
        }
        try_merge(find(p), find(n.get()), p, n.get());
      }
    }
    merge_sibling_writes();
    emit();
  }

 private:
  int new_group(std::vector<Node*> nodes) {
    int id = static_cast<int>(parent_.size());
    parent_.push_back(id);
    first_.push_back(INT32_MAX);
    last_.push_back(-1);
    members_.emplace_back();
    for (Node* n : nodes) add_member(id, n);
    return id;
  }
  void add_member(int id, Node* n) {
    group_[n] = id;
    members_[id].push_back(n);
    first_[id] = std::min(first_[id], pos_.at(n));
    last_[id] = std::max(last_[id], pos_.at(n));
  }
  int find_id(int id) {
    while (parent_[id] != id) id = parent_[id] = parent_[parent_[id]];
    return id;
  }
  int find(const Node* n) { return find_id(group_.at(n)); }
  bool fixed(int id) const { return gemm_of_.contains(id); }

  // Views and widening casts whose only user is the GEMM or its prologue become the
  // prologue (strided loads that convert); views and index-only nodes whose only user is in
  // a GEMM's epilogue join the prologue or the epilogue.
  void attach_to_gemms() {
    std::vector<Node*> nodes;
    for (const auto& n : g_.nodes()) nodes.push_back(n.get());
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      Node* v = *it;
      // (A cast may already be a GEMM's epilogue.)
      if (v->results().size() != 1 || returned_.contains(v->result()) || group_.contains(v)) continue;
      std::vector<Node*> users = users_of(uses_, v->result());
      if (users.size() != 1 || !group_.contains(users[0]) || !fixed(find(users[0]))) continue;
      int id = find(users[0]);
      KernelGroup& grp = *gemm_of_.at(id);
      bool in_epilogue = users[0] != grp.nodes[0] &&
                         std::find(grp.nodes.begin(), grp.nodes.end(), users[0]) != grp.nodes.end();
      if (index_only_(*v) && in_epilogue) {
        grp.nodes.insert(grp.nodes.begin() + 1, v);
      } else if (is_plain_view(*v) || (is_widening_cast(*v) && !in_epilogue)) {
        grp.prologue.insert(grp.prologue.begin(), v);
      } else {
        continue;
      }
      add_member(id, v);
    }
  }

  // Each attention node becomes its group with the views it reads through and writes
  // through: the longest chain of single-user views producing q, k or v that one strided
  // view of a stored value can replace (the prologue), and a permute that is the only user
  // of its result and keeps the head dim last (stored in its layout: [B, T, H, D] for the
  // heads-merge reshape of the next GEMM). Only views whose last stride is 1 and whose
  // other strides and offset are multiples of 8 elements (the 16-byte rows of a bf16/f16
  // kernel) are taken.
  void attach_to_attentions() {
    for (const auto& node : g_.nodes()) {
      Node* att = node.get();
      if (att->op() != Op::Attention) continue;
      std::vector<Node*> members{att};
      std::vector<Node*> out = users_of(uses_, att->result());
      if (out.size() == 1 && out[0]->op() == Op::Permute && !returned_.contains(att->result())) {
        const std::vector<int64_t>& dims = PermuteAttrs(*out[0]).dims();
        // Its strides over the permuted buffer are products of trailing dims ending in D.
        if (dims.size() == 4 && (dims[3] == 3 || dims[3] == -1) && att->result()->shape()[3].divide_exact(Dim(8)))
          members.push_back(out[0]);
      }
      for (size_t i = 0; i < 3 && i < att->num_operands(); ++i) {
        std::vector<Node*> chain;
        if (std::find(att->operands().begin(), att->operands().begin() + i, att->operand(i)) !=
            att->operands().begin() + i)
          continue;  // q and k one value: its views are taken once
        for (Node* p = att->operand(i)->producer(); p && is_plain_view(*p) && !group_.contains(p) &&
                                                    !returned_.contains(p->result()) &&
                                                    users_of(uses_, p->result()).size() == 1;
             p = p->operand(0)->producer())
          chain.push_back(p);
        while (!chain.empty() && !aligned_view(att->operand(i), chain)) chain.pop_back();
        members.insert(members.end(), chain.begin(), chain.end());
      }
      new_group(members);
    }
  }

  // Whether `v`, computed from a stored value by `chain` (consecutive producers from v's),
  // is a strided view of it with rows of 8-element multiples.
  static bool aligned_view(const Value* v, const std::vector<Node*>& chain) {
    absl::flat_hash_set<const Node*> in(chain.begin(), chain.end());
    std::optional<StridedView> sv = strided_view(v, [&](const Node* n) { return in.contains(n); });
    if (!sv || sv->strides.empty() || !(sv->strides.back() == Dim(1))) return false;
    auto by8 = [](const Dim& d) { return d.divide_exact(Dim(8)).has_value(); };
    return by8(sv->offset) && std::all_of(sv->strides.begin(), sv->strides.end() - 1, by8);
  }

  bool param_only(const Node* n) const { return param_only_.at(n); }

  // Why one kernel cannot compute the nodes `m` (in node order) under fuse_elementwise's
  // rules (see the header), or "" when it can. Reduction groups also need every value that
  // depends on a reduction of the group to be read at the row the kernel computes it for:
  // only elementwise ops touch such values, and they read them at the same shape, or at the
  // reduction's keepdim shape from the full input shape (broadcast along the reduced axes).
  std::string why_not_legal(const std::vector<Node*>& m) {
    // A state write is a scatter kernel (codegen/lower.h) over what computes its new rows.
    if (m.size() > 1 && std::any_of(m.begin(), m.end(), [](const Node* n) { return writes_state(*n); }))
      return why_not_write_group(m);
    if (m.size() > 1 && std::any_of(m.begin(), m.end(), [](const Node* n) { return n->op() == Op::Attention; }))
      return "a fused attention step runs alone";
    if (m.size() > 1 && std::any_of(m.begin(), m.end(), [](const Node* n) { return n->op() == Op::ExternCall; }))
      return "an extern call runs alone (the user's function over stored operands)";
    if (m.size() > 1 && std::any_of(m.begin(), m.end(), [](const Node* n) { return is_collective(n->op()); }))
      return "a collective runs alone (the communicator's call over stored operands)";
    absl::flat_hash_set<const Node*> in(m.begin(), m.end());
    // A window reads each input element once per kernel position: what the group computes
    // upstream of it would be computed that many times (a GroupNorm's SiLU and a resize's
    // index arithmetic, 9x for a 3x3 conv), and its im2col would no longer be a plain copy.
    // Only reshapes, casts (as cheap as the load) and index-only values are read through.
    for (const Node* n : m) {
      if (n->op() != Op::Window) continue;
      for (const Node* p = n->operand(0)->producer(); p && in.contains(p) && !index_only_(*p);
           p = p->operand(0)->producer())
        if (p->op() != Op::Reshape && p->op() != Op::Cast)
          return str_cat("a window reads its input once per kernel position: ", describe(p),
                         " is computed by the kernel before it");
    }
    bool wp = param_only(m[0]);
    std::optional<Domain> dom;
    for (const Node* n : m) {
      if (param_only(n) != wp)
        return str_cat("one kernel cannot mix per-call ops (", describe(wp ? n : m[0]), ") with weight prep run once (",
                       describe(wp ? m[0] : n), ", from parameters only)");
      if (auto d = domain_of(*n)) {
        if (dom && !(*dom == *d))
          return str_cat("two reductions over different rows: ", shape_to_string(dom->shape), " axes ",
                         str_join(dom->axes, ",", [](int64_t a) { return str_cat(a); }), " and ",
                         shape_to_string(d->shape), " axes ",
                         str_join(d->axes, ",", [](int64_t a) { return str_cat(a); }));
        dom = d;
      }
    }
    std::optional<Shape> out_shape;
    for (const Node* n : m)
      for (const Value* r : n->results()) {
        bool outside = returned_.contains(r);
        for (const Node* u : users_of(uses_, r)) outside |= !in.contains(u);
        if (!outside) continue;
        if (dom) {
          if (r->shape() != dom->shape && r->shape() != dom->keep && r->shape() != dom->kept)
            return str_cat(describe(n), " is read outside the kernel at ", shape_to_string(r->shape()),
                           ", neither the reduction's input ", shape_to_string(dom->shape), " nor its rows");
        } else {
          if (out_shape && *out_shape != r->shape())
            return str_cat("the kernel would write results of two shapes, ", shape_to_string(*out_shape), " and ",
                           shape_to_string(r->shape()), " (", describe(n), ")");
          out_shape = r->shape();
        }
      }
    if (dom) {
      absl::flat_hash_set<const Value*> dep;  // values depending on a reduction of the group
      for (const Node* n : m) {
        bool reduce = n->info().kind == OpKind::Reduction;
        bool reads_dep = std::any_of(n->operands().begin(), n->operands().end(),
                                     [&](const Value* v) { return dep.contains(v); });
        if (!reduce && !reads_dep) continue;
        dep.insert(n->result());
        if (reduce) continue;
        OpKind k = n->info().kind;
        if (k != OpKind::Elementwise && k != OpKind::Broadcast)
          return str_cat(describe(n), " (", op_kind_name(k), ") reads a result of the reduction: only elementwise ops may");
        const Shape& rs = n->result()->shape();
        for (const Value* v : n->operands()) {
          if (!dep.contains(v)) continue;
          bool ok = rs == dom->shape ? v->shape() == dom->shape || v->shape() == dom->keep
                                     : (rs == dom->keep || rs == dom->kept) && v->shape() == rs;
          if (!ok)
            return str_cat(describe(n), " reads the reduction's result at ", shape_to_string(v->shape()),
                           ", not at the row the kernel computes it for");
        }
      }
    }
    return "";
  }

  // "%h = mul": a node as the fusion log names it.
  static std::string describe(const Node* n) { return str_cat("%", n->result()->name(), " = ", op_name(n->op())); }

  // ---- per-group summaries ------------------------------------------------------
  // why_not_legal looks at every node of a candidate merge: as the only check it makes a
  // chain of n ops cost n^2. A merge is decided instead from what each group keeps about
  // itself (below) and the edges between the two groups, found from the smaller one; the
  // members of the larger are never visited. why_not_legal gives the reason when the log
  // asks for it, and decides the same.

  int shape_id(const Shape& s) { return shape_ids_.try_emplace(s, static_cast<int>(shape_ids_.size())).first->second; }
  bool outside(const Value* v) const { return ext_.at(v) > 0; }
  // Whether `v` depends on a reduction of its group (only results(0) do, as in why_not_legal).
  bool dep(const Value* v) const { return v->producer() && v == v->producer()->result() && dep_.contains(v->producer()); }

  // Group summaries from the initial groups (GEMM groups and single nodes).
  void init_summaries() {
    size_t n = parent_.size();
    summary_.resize(n);
    generation_.assign(n, 0);
    for (const auto& node : g_.nodes()) {
      if (!group_.contains(node.get())) continue;
      int id = find(node.get());
      for (const Value* r : node->results()) {
        int ext = returned_.contains(r) ? 1 : 0;
        for (Node* u : users_of(uses_, r))
          if (group_.contains(u) && find(u) != id) {
            ++ext;
            summary_[id].out_users.push_back(u);
          } else if (!group_.contains(u)) {
            ++ext;
          }
        ext_[r] = ext;
        if (ext > 0) ++summary_[id].out_shapes[shape_id(r->shape())];
      }
    }
    for (size_t id = 0; id < n; ++id) {
      if (fixed(static_cast<int>(id))) continue;  // never merged: only its out_users matter
      Summary& s = summary_[id];
      const Node* node = members_[id][0];
      s.state_write = writes_state(*node);
      s.attention = node->op() == Op::Attention;
      s.alone = node->op() == Op::ExternCall || is_collective(node->op());
      if (node->op() == Op::Window) s.windows.push_back(node);
      s.weight_prep = param_only(node);
      s.dom = domain_of(*node);
      if (s.dom) dep_.insert(node);
    }
  }

  // Whether two state writes scatter the same rows: new values of one shape, at the same
  // positions (and through the same block table): one loop nest stores both.
  static bool same_rows(const Node& a, const Node& b) {
    return a.operand(1)->shape() == b.operand(1)->shape() && a.operand(2) == b.operand(2) &&
           a.num_operands() == b.num_operands() && (a.num_operands() < 4 || a.operand(3) == b.operand(3));
  }

  // Why one scatter kernel cannot compute `m` (holding state writes): it takes state writes
  // of the same rows (same_rows) and the elementwise, broadcast and view nodes (no gather, no
  // window) computing the rows they write (a RoPE, the permute of a fused projection's
  // slice), whose results nothing else reads; "" when it can.
  std::string why_not_write_group(const std::vector<Node*>& m) {
    absl::flat_hash_set<const Node*> in(m.begin(), m.end());
    const Node* first = *std::find_if(m.begin(), m.end(), [](const Node* n) { return writes_state(*n); });
    for (const Node* n : m) {
      if (writes_state(*n)) {
        if (in.contains(n->operand(0)->producer())) return "a state write updates a state argument in place";
        if (!same_rows(*first, *n)) return "state writes of one kernel write rows of one shape at the same positions";
        continue;
      }
      OpKind k = n->info().kind;
      bool view = k == OpKind::View && n->op() != Op::Gather && n->op() != Op::Window;  // no index checks, no windows
      if (k != OpKind::Elementwise && k != OpKind::Broadcast && !view)
        return str_cat("a state write's kernel computes its rows with elementwise ops and views only, not ",
                       describe(n));
      for (const Value* r : n->results()) {
        const std::vector<Node*>& users = users_of(uses_, r);
        if (returned_.contains(r) || std::any_of(users.begin(), users.end(), [&](Node* u) { return !in.contains(u); }))
          return str_cat("a state write's kernel stores the state only, and ", describe(n), " is read outside it");
      }
    }
    return "";
  }

  struct Summary {
    bool state_write = false, attention = false, alone = false, weight_prep = false;  // alone: extern call, collective
    std::optional<Domain> dom;               // the reductions' iteration space
    std::vector<const Node*> windows;
    absl::flat_hash_map<int, int> out_shapes;  // shape id -> results read outside the group
    std::vector<Node*> out_users;           // users outside the group, some now inside (lazy)
  };

  // The edges between groups a and b: (value, user) once per distinct pair, from the
  // smaller group's members.
  std::vector<std::pair<const Value*, Node*>> edges_between(int a, int b) {
    int small = members_[a].size() <= members_[b].size() ? a : b, large = small == a ? b : a;
    std::vector<std::pair<const Value*, Node*>> out;
    for (Node* n : members_[small]) {
      for (size_t i = 0; i < n->num_operands(); ++i) {
        Value* v = n->operand(i);
        bool repeated = std::find(n->operands().begin(), n->operands().begin() + i, v) != n->operands().begin() + i;
        if (Node* p = v->producer(); !repeated && p && group_.contains(p) && find(p) == large) out.push_back({v, n});
      }
      for (const Value* r : n->results())
        for (Node* u : users_of(uses_, r))
          if (group_.contains(u) && find(u) == large) out.push_back({r, u});
    }
    return out;
  }

  // What a merge of a and b changes in the summaries: the values no longer read outside,
  // and the nodes that come to depend on a reduction.
  struct MergeDelta {
    std::vector<std::pair<const Value*, int>> ext_drop;  // value -> users that become inside
    std::vector<const Node*> new_dep;
  };

  // Whether one kernel can compute groups a and b: why_not_legal(members of both) == "".
  bool legal(int a, int b, MergeDelta& delta) {
    const Summary &sa = summary_[a], &sb = summary_[b];
    if (sa.attention || sb.attention || sa.alone || sb.alone) return false;
    if (sa.state_write || sb.state_write) {  // a scatter kernel over the rows' computation
      const Summary& rows = sa.state_write ? sb : sa;
      if (rows.state_write || rows.dom || !rows.windows.empty() || rows.weight_prep) return false;
      std::vector<Node*> m = members_[a];
      m.insert(m.end(), members_[b].begin(), members_[b].end());
      if (!why_not_write_group(m).empty()) return false;
      for (const auto& e : edges_between(a, b)) delta.ext_drop.push_back({e.first, 1});
      return true;
    }
    auto in = [&](const Node* p) {
      if (!p || !group_.contains(p)) return false;
      int id = find(p);
      return id == a || id == b;
    };
    for (const std::vector<const Node*>* ws : {&sa.windows, &sb.windows})
      for (const Node* w : *ws)
        for (const Node* p = w->operand(0)->producer(); in(p) && !index_only_(*p); p = p->operand(0)->producer())
          if (p->op() != Op::Reshape && p->op() != Op::Cast) return false;
    if (sa.weight_prep != sb.weight_prep) return false;
    if (sa.dom && sb.dom && !(*sa.dom == *sb.dom)) return false;
    const std::optional<Domain>& dom = sa.dom ? sa.dom : sb.dom;

    std::vector<std::pair<const Value*, Node*>> edges = edges_between(a, b);
    absl::flat_hash_map<const Value*, int> drop;
    for (const auto& e : edges) ++drop[e.first];
    absl::flat_hash_map<int, int> shapes = sa.out_shapes;
    for (const auto& [id, count] : sb.out_shapes) shapes[id] += count;
    for (const auto& [v, count] : drop) {
      delta.ext_drop.push_back({v, count});
      if (ext_.at(v) == count && --shapes[shape_id(v->shape())] == 0) shapes.erase(shape_id(v->shape()));
    }
    if (dom) {
      int ids[3] = {shape_id(dom->shape), shape_id(dom->keep), shape_id(dom->kept)};
      for (const auto& kv : shapes)
        if (kv.first != ids[0] && kv.first != ids[1] && kv.first != ids[2]) return false;
    } else if (shapes.size() > 1) {
      return false;
    }
    if (!dom) return true;

    // Reads of a value depending on a reduction that the merge adds: across the two groups,
    // and onwards from each node that comes to depend on one.
    absl::flat_hash_set<const Node*> added;
    auto is_dep = [&](const Value* v) { return dep(v) || (v->producer() && v == v->producer()->result() && added.contains(v->producer())); };
    std::vector<std::pair<const Value*, const Node*>> work;
    for (const auto& e : edges)
      if (is_dep(e.first)) work.push_back(e);
    while (!work.empty()) {
      auto [v, n] = work.back();
      work.pop_back();
      if (n->info().kind == OpKind::Reduction) continue;
      OpKind k = n->info().kind;
      if (k != OpKind::Elementwise && k != OpKind::Broadcast) return false;
      const Shape& rs = n->result()->shape();
      bool ok = rs == dom->shape ? v->shape() == dom->shape || v->shape() == dom->keep
                                 : (rs == dom->keep || rs == dom->kept) && v->shape() == rs;
      if (!ok) return false;
      if (dep_.contains(n) || !added.insert(n).second) continue;
      delta.new_dep.push_back(n);
      for (Node* u : users_of(uses_, n->result()))
        if (in(u)) work.push_back({n->result(), u});
    }
    return true;
  }

  // Groups that read a result of group `id` (other than itself); drops the users that
  // merges brought inside.
  std::vector<int> successors(int id) {
    std::vector<Node*>& users = summary_[id].out_users;
    std::erase_if(users, [&](const Node* u) { return find(u) == id; });
    std::sort(users.begin(), users.end());
    users.erase(std::unique(users.begin(), users.end()), users.end());
    std::vector<int> out;
    for (const Node* u : users)
      if (int gid = find(u); std::find(out.begin(), out.end(), gid) == out.end()) out.push_back(gid);
    return out;
  }

  // Whether a path of group edges leads from `from` to `to` through some other group. Node
  // order is topological, so a group on such a path starts before `to` ends: later groups
  // are not searched.
  bool indirect_path(int from, int to) {
    absl::flat_hash_set<int> seen;
    std::vector<int> stack;
    auto visit = [&](int s) {
      if (s != to && first_[s] < last_[to] && seen.insert(s).second) stack.push_back(s);
    };
    for (int s : successors(from)) visit(s);
    while (!stack.empty()) {
      int gid = stack.back();
      stack.pop_back();
      for (int s : successors(gid)) {
        if (s == to) return true;
        visit(s);
      }
    }
    return false;
  }

  // State writes of the same rows next to each other in node order (a layer's k and v cache
  // writes) become one scatter kernel, where no other kernel lies on a path between them.
  void merge_sibling_writes() {
    int prev = -1;
    for (const auto& node : g_.nodes()) {
      if (!writes_state(*node) || !group_.contains(node.get())) continue;
      int id = find(node.get());
      if (prev >= 0 && prev != id && members_[prev].size() + members_[id].size() <= kMaxFusedNodes) {
        std::vector<Node*> m = members_[prev];
        m.insert(m.end(), members_[id].begin(), members_[id].end());
        if (why_not_write_group(m).empty() && !indirect_path(prev, id) && !indirect_path(id, prev) &&
            !successors_contain(prev, id) && !successors_contain(id, prev)) {
          merge(prev, id, MergeDelta{});
          log_line(LogTopic::fusion, 2, str_cat("fused sibling state writes into ", describe(node.get()), "'s kernel"));
        }
      }
      prev = find(node.get());
    }
  }

  bool successors_contain(int from, int to) {
    std::vector<int> s = successors(from);
    return std::find(s.begin(), s.end(), to) != s.end();
  }

  // Merges the groups of `producer` (a) and `consumer` (b) when one kernel can compute both;
  // when not, the fusion log says why. A pair once refused is refused again at once.
  void try_merge(int a, int b, const Node* producer, const Node* consumer) {
    if (a == b) return;
    // A root that grows gets a new generation: the refusal was about its old members.
    std::tuple<int, int, int, int> key{std::min(a, b), generation_[std::min(a, b)], std::max(a, b),
                                       generation_[std::max(a, b)]};
    auto refused = refused_.find(key);
    if (refused == refused_.end()) {
      MergeDelta delta;
      bool too_big = members_[a].size() + members_[b].size() > kMaxFusedNodes;
      bool ok = !too_big && legal(a, b, delta);
      bool cycle = ok && (indirect_path(a, b) || indirect_path(b, a));
      if (ok && !cycle) return merge(a, b, delta);
      std::string why;
      if (too_big) {
        why = str_cat("the kernel would hold more than ", kMaxFusedNodes, " nodes");
      } else if (log_enabled(LogTopic::fusion, 1)) {
        std::vector<Node*> m = members_[a];
        m.insert(m.end(), members_[b].begin(), members_[b].end());
        std::sort(m.begin(), m.end(), [&](Node* x, Node* y) { return pos_.at(x) < pos_.at(y); });
        why = cycle ? "another kernel both reads one and feeds the other (fusing would make a cycle)" : why_not_legal(m);
      }
      refused = refused_.emplace(key, std::move(why)).first;
    }
    if (log_enabled(LogTopic::fusion, 1))
      log_line(LogTopic::fusion, 1, str_cat("not fused: ", describe(producer), " -> ", describe(consumer), ": ", refused->second));
  }

  // Group a joins group b (the root that stays); the larger member list is kept, the
  // smaller appended.
  void merge(int a, int b, const MergeDelta& delta) {
    Summary &sa = summary_[a], &sb = summary_[b];
    for (const auto& [v, count] : delta.ext_drop) {
      int& ext = ext_.at(v);
      if (ext == count) {
        int id = shape_id(v->shape());
        int& c = (find(v->producer()) == a ? sa : sb).out_shapes[id];
        if (--c == 0) (find(v->producer()) == a ? sa : sb).out_shapes.erase(id);
      }
      ext -= count;
    }
    for (const Node* n : delta.new_dep) dep_.insert(n);
    sb.state_write = sb.state_write || sa.state_write;
    for (const auto& [id, count] : sa.out_shapes) sb.out_shapes[id] += count;
    sb.windows.insert(sb.windows.end(), sa.windows.begin(), sa.windows.end());
    if (!sb.dom) sb.dom = std::move(sa.dom);
    if (sa.out_users.size() > sb.out_users.size()) std::swap(sa.out_users, sb.out_users);
    sb.out_users.insert(sb.out_users.end(), sa.out_users.begin(), sa.out_users.end());
    sa = Summary();
    if (members_[a].size() > members_[b].size()) std::swap(members_[a], members_[b]);
    members_[b].insert(members_[b].end(), members_[a].begin(), members_[a].end());
    members_[a].clear();
    first_[b] = std::min(first_[a], first_[b]);
    last_[b] = std::max(last_[a], last_[b]);
    parent_[a] = b;
    ++generation_[b];
  }

  // All groups in an executable order: repeatedly the ready group whose first node comes
  // earliest in the graph.
  void emit() {
    std::vector<int> ids;
    for (int id = 0; id < static_cast<int>(members_.size()); ++id)
      if (parent_[id] == id) ids.push_back(id);
    auto first_pos = [&](int id) { return first_[id]; };
    absl::flat_hash_map<int, int> indeg;
    for (int id : ids) indeg[id] += 0;
    for (int id : ids)
      for (int s : successors(id)) ++indeg[s];
    using Item = std::pair<int, int>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
    for (int id : ids)
      if (indeg[id] == 0) ready.push({first_pos(id), id});
    std::vector<KernelGroup> out;
    while (!ready.empty()) {
      int id = ready.top().second;
      ready.pop();
      out.push_back(make_group(id));
      out.back().id = static_cast<int>(out.size()) - 1;
      for (int s : successors(id))
        if (--indeg[s] == 0) ready.push({first_pos(s), s});
    }
    s_.groups = std::move(out);
    compute_group_io(g_, s_);
  }

  KernelGroup make_group(int id) {
    if (fixed(id)) return std::move(*gemm_of_.at(id));
    KernelGroup grp;
    grp.nodes = members_[id];
    std::sort(grp.nodes.begin(), grp.nodes.end(), [&](Node* x, Node* y) { return pos_.at(x) < pos_.at(y); });
    grp.weight_prep = param_only(grp.nodes[0]);
    bool reduces = std::any_of(grp.nodes.begin(), grp.nodes.end(),
                               [](const Node* n) { return n->info().kind == OpKind::Reduction; });
    grp.kind = reduces ? KernelGroup::Kind::Reduction : KernelGroup::Kind::Elementwise;
    if (grp.nodes[0]->op() == Op::ExternCall) grp.kind = KernelGroup::Kind::Extern;
    if (is_collective(grp.nodes[0]->op())) grp.kind = KernelGroup::Kind::Collective;
    auto att = std::find_if(grp.nodes.begin(), grp.nodes.end(), [](const Node* n) { return n->op() == Op::Attention; });
    if (att != grp.nodes.end()) {  // attach_to_attentions: the views before it read its operands
      grp.kind = KernelGroup::Kind::Attention;
      grp.prologue.assign(grp.nodes.begin(), att);
      grp.nodes.erase(grp.nodes.begin(), att);
    }
    return grp;
  }

  Graph& g_;
  Schedule& s_;
  Uses uses_;
  IndexOnly& index_only_;
  absl::flat_hash_set<const Value*> returned_;
  absl::flat_hash_map<const Node*, int> pos_;
  absl::flat_hash_map<const Node*, int> group_;   // node -> a group id (find() gives the root)
  std::vector<int> parent_;                       // union-find over group ids
  std::vector<std::vector<Node*>> members_;       // per root: its nodes (in node order once emitted)
  std::vector<int> first_, last_;                 // per root: its nodes' first and last positions
  absl::flat_hash_map<int, KernelGroup*> gemm_of_;  // fuse_linear's groups: never merged
  absl::flat_hash_map<const Node*, bool> param_only_;
  std::vector<Summary> summary_;                   // per root
  absl::flat_hash_map<const Value*, int> ext_;     // users outside the value's group (+1 if returned)
  absl::flat_hash_set<const Node*> dep_;           // nodes depending on a reduction of their group
  absl::flat_hash_map<Shape, int> shape_ids_;
  std::vector<int> generation_;                    // per root: how many merges it took in
  absl::flat_hash_map<std::tuple<int, int, int, int>, std::string> refused_;  // -> why (if logged)
};

}  // namespace

absl::StatusOr<bool> fuse_elementwise(Graph& g, Schedule& s) {
  IndexOnly index_only;
  duplicate_cheap_nodes(g, index_only);
  Partitioner(g, s, index_only).run();
  return !s.groups.empty();
}

}  // namespace kiln
