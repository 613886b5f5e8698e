#include "passes/fuse_elementwise.h"

#include <algorithm>
#include <numeric>
#include <queue>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/str.h"
#include "passes/schedule_util.h"

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

// Gives every single-result view one user, cloning it per extra user (last node first, so
// that chains of views are cloned whole).
bool duplicate_shared_views(Graph& g) {
  bool changed = false;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node* v = *it;
    if (v->info().kind != OpKind::View || v->results().size() != 1) continue;
    std::vector<Node*> users = g.uses()[v->result()];
    users.erase(std::unique(users.begin(), users.end()), users.end());
    size_t keep = returned.contains(v->result()) ? 0 : 1;
    for (size_t i = keep; i < users.size(); ++i) {
      Node* u = users[i];
      g.set_insertion_point(u);
      absl::StatusOr<Node*> c = g.add_node(v->op(), v->operands(), v->attrs(), {}, v->loc());
      g.set_insertion_point(nullptr);
      if (!c.ok()) continue;  // cannot happen: same operands and attributes as v
      for (size_t k = 0; k < u->num_operands(); ++k)
        if (u->operand(k) == v->result()) g.replace_operand(u, k, (*c)->result());
      changed = true;
    }
  }
  return changed;
}

// The reduction a group is built around: its input shape and sorted axes.
struct Domain {
  Shape shape;
  std::vector<int64_t> axes;
  bool operator==(const Domain&) const = default;
};

std::optional<Domain> domain_of(const Node& n) {
  if (n.info().kind != OpKind::Reduction) return std::nullopt;
  const Shape& x = n.operand(0)->shape();
  std::vector<int64_t> axes;
  if (n.op() == Op::ArgMax) axes = {n.attr().get_int("axis")};
  else if (n.attr().has("axes")) axes = n.attr().get_ints("axes");
  else axes.resize(x.size()), std::iota(axes.begin(), axes.end(), 0);
  absl::StatusOr<std::vector<int64_t>> ax = normalize_axes(axes, x.size());
  std::vector<int64_t> sorted = ax.ok() ? *ax : axes;
  std::sort(sorted.begin(), sorted.end());
  return Domain{x, sorted};
}

bool matches_domain(const Shape& s, const Domain& d) {
  if (s == d.shape) return true;
  Shape keep, drop;
  for (size_t i = 0; i < d.shape.size(); ++i) {
    bool reduced = std::binary_search(d.axes.begin(), d.axes.end(), static_cast<int64_t>(i));
    keep.push_back(reduced ? Dim(1) : d.shape[i]);
    if (!reduced) drop.push_back(d.shape[i]);
  }
  return s == keep || s == drop;
}

class Partitioner {
 public:
  Partitioner(Graph& g, Schedule& s) : g_(g), s_(s), uses_(g.uses()) {
    int i = 0;
    for (const auto& n : g.nodes()) pos_[n.get()] = i++;
    returned_.insert(g.outputs().begin(), g.outputs().end());
    for (const KernelGroup& grp : s.groups) {
      for (Node* n : grp.nodes) group_[n] = grp.id;
    }
    next_id_ = static_cast<int>(s.groups.size());
  }

  void run() {
    attach_gemm_prologues();
    for (const auto& n : g_.nodes()) {
      if (group_.contains(n.get()) || n->op() == Op::Constant) continue;
      int id = next_id_++;
      group_[n.get()] = id;
      members_[id] = {n.get()};
    }
    for (const auto& n : g_.nodes()) {
      if (!group_.contains(n.get()) || !members_.contains(find(n.get()))) continue;
      for (Value* v : n->operands()) {
        Node* p = v->producer();
        if (!p || !group_.contains(p) || !members_.contains(find(p))) continue;
        try_merge(find(p), find(n.get()));
      }
    }
    emit();
  }

 private:
  int find(Node* n) {
    int id = group_.at(n);
    while (alias_.contains(id)) id = alias_.at(id);
    return id;
  }
  int find_id(int id) {
    while (alias_.contains(id)) id = alias_.at(id);
    return id;
  }

  // Views whose only user is in a GEMM group become that group's prologue.
  void attach_gemm_prologues() {
    std::vector<Node*> nodes;
    for (const auto& n : g_.nodes()) nodes.push_back(n.get());
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      Node* v = *it;
      if (!is_plain_view(*v) || returned_.contains(v->result())) continue;
      auto u = uses_.find(v->result());
      if (u == uses_.end() || u->second.size() != 1 || !group_.contains(u->second[0])) continue;
      int gid = group_.at(u->second[0]);
      if (gid >= static_cast<int>(s_.groups.size())) continue;
      s_.groups[gid].prologue.insert(s_.groups[gid].prologue.begin(), v);
      group_[v] = gid;
    }
  }

  bool param_only(const Node* n) {
    if (auto it = param_only_.find(n); it != param_only_.end()) return it->second;
    bool all = n->num_operands() > 0;
    for (const Value* v : n->operands()) {
      if (v->is_input()) all = false;
      else if (v->producer() && v->producer()->op() != Op::Constant) all = all && param_only(v->producer());
    }
    return param_only_[n] = all;
  }

  // Whether the union of groups a and b satisfies fuse_elementwise's rules.
  bool legal(const std::vector<Node*>& m, int a, int b) {
    absl::flat_hash_set<const Node*> in(m.begin(), m.end());
    bool wp = param_only(m[0]);
    std::optional<Domain> dom;
    for (const Node* n : m) {
      if (param_only(n) != wp) return false;
      if (auto d = domain_of(*n)) {
        if (dom && !(*dom == *d)) return false;
        dom = d;
      }
    }
    std::optional<Shape> out_shape;
    for (const Node* n : m)
      for (const Value* r : n->results()) {
        bool outside = returned_.contains(r);
        if (auto it = uses_.find(r); it != uses_.end())
          for (const Node* u : it->second) outside |= !in.contains(u);
        if (!outside) continue;
        if (dom) {
          if (!matches_domain(r->shape(), *dom)) return false;
        } else {
          if (out_shape && *out_shape != r->shape()) return false;
          out_shape = r->shape();
        }
      }
    return !reaches_back(m, in, a, b);
  }

  int group_id_of(Node* n) { return group_.contains(n) ? find(n) : -1; }

  // Whether a path leaves the merged group and comes back (a cycle between groups).
  bool reaches_back(const std::vector<Node*>& m, const absl::flat_hash_set<const Node*>& in, int a, int b) {
    absl::flat_hash_set<int> visited;
    std::vector<int> stack;
    auto push_successors = [&](const std::vector<Node*>& nodes) {
      for (const Node* n : nodes)
        for (const Value* r : n->results())
          if (auto it = uses_.find(r); it != uses_.end())
            for (Node* u : it->second) {
              if (in.contains(u)) continue;
              int gid = group_id_of(u);
              if (gid >= 0 && visited.insert(gid).second) stack.push_back(gid);
            }
    };
    push_successors(m);
    while (!stack.empty()) {
      int gid = stack.back();
      stack.pop_back();
      std::vector<Node*> nodes = nodes_of(gid);
      for (const Node* n : nodes)
        for (const Value* v : n->operands())
          if (v->producer() && in.contains(v->producer())) return true;
      push_successors(nodes);
    }
    return false;
  }

  std::vector<Node*> nodes_of(int gid) {
    if (gid < static_cast<int>(s_.groups.size())) {
      std::vector<Node*> all = s_.groups[gid].prologue;
      all.insert(all.end(), s_.groups[gid].nodes.begin(), s_.groups[gid].nodes.end());
      return all;
    }
    return members_.at(gid);
  }

  void try_merge(int a, int b) {
    if (a == b) return;
    std::vector<Node*> m = members_.at(a);
    m.insert(m.end(), members_.at(b).begin(), members_.at(b).end());
    if (!legal(m, a, b)) return;
    std::sort(m.begin(), m.end(), [&](Node* x, Node* y) { return pos_.at(x) < pos_.at(y); });
    members_.erase(a);
    members_[b] = std::move(m);
    alias_[a] = b;
  }

  // Appends the free groups and orders all groups topologically (earliest node first).
  void emit() {
    std::vector<KernelGroup> all = std::move(s_.groups);
    for (auto& [id, nodes] : members_) {
      KernelGroup grp;
      grp.nodes = nodes;
      grp.weight_prep = param_only(nodes[0]);
      grp.kind = std::any_of(nodes.begin(), nodes.end(), [](const Node* n) { return n->info().kind == OpKind::Reduction; })
                     ? KernelGroup::Kind::Reduction
                     : KernelGroup::Kind::Elementwise;
      all.push_back(std::move(grp));
    }
    // Dependencies between groups, by the group of each node.
    absl::flat_hash_map<const Node*, size_t> where;
    for (size_t i = 0; i < all.size(); ++i) {
      for (const Node* n : all[i].prologue) where[n] = i;
      for (const Node* n : all[i].nodes) where[n] = i;
    }
    std::vector<std::vector<size_t>> succ(all.size());
    std::vector<int> indeg(all.size(), 0);
    for (size_t i = 0; i < all.size(); ++i) {
      absl::flat_hash_set<size_t> preds;
      for (const Node* n : nodes_and_prologue(all[i]))
        for (const Value* v : n->operands())
          if (auto it = where.find(v->producer()); v->producer() && it != where.end() && it->second != i)
            preds.insert(it->second);
      for (size_t p : preds) succ[p].push_back(i), ++indeg[i];
    }
    auto first_pos = [&](size_t i) {
      int best = INT32_MAX;
      for (const Node* n : nodes_and_prologue(all[i])) best = std::min(best, pos_.at(const_cast<Node*>(n)));
      return best;
    };
    using Item = std::pair<int, size_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
    for (size_t i = 0; i < all.size(); ++i)
      if (indeg[i] == 0) ready.push({first_pos(i), i});
    s_.groups.clear();
    while (!ready.empty()) {
      size_t i = ready.top().second;
      ready.pop();
      all[i].id = static_cast<int>(s_.groups.size());
      s_.groups.push_back(std::move(all[i]));
      for (size_t j : succ[i])
        if (--indeg[j] == 0) ready.push({first_pos(j), j});
    }
    compute_group_io(g_, s_);
  }

  static std::vector<const Node*> nodes_and_prologue(const KernelGroup& grp) {
    std::vector<const Node*> v(grp.prologue.begin(), grp.prologue.end());
    v.insert(v.end(), grp.nodes.begin(), grp.nodes.end());
    return v;
  }

  Graph& g_;
  Schedule& s_;
  Uses uses_;
  absl::flat_hash_set<const Value*> returned_;
  absl::flat_hash_map<const Node*, int> pos_;
  absl::flat_hash_map<const Node*, int> group_;
  absl::flat_hash_map<int, int> alias_;
  absl::flat_hash_map<int, std::vector<Node*>> members_;
  absl::flat_hash_map<const Node*, bool> param_only_;
  int next_id_ = 0;
};

}  // namespace

absl::StatusOr<bool> fuse_elementwise(Graph& g, Schedule& s) {
  duplicate_shared_views(g);
  Partitioner(g, s).run();
  return !s.groups.empty();
}

}  // namespace kiln
