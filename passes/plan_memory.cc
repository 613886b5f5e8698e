#include "passes/memory_plan.h"

#include <algorithm>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/checked.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

int64_t align(int64_t n) { return (n + MemoryPlan::kAlignment - 1) / MemoryPlan::kAlignment * MemoryPlan::kAlignment; }

// Whether the kernel of Elementwise group `grp` reads input `v` only at the index it
// writes: every path from a group output back to `v` runs through elementwise/broadcast
// nodes whose values all have the outputs' shape (no view, no broadcast of `v` itself).
// Then element i of the outputs depends only on element i of `v`, loaded before it is
// stored, and an output may overwrite `v`.
bool read_pointwise(const KernelGroup& grp, const Value* v) {
  const Shape& shape = grp.outputs.front()->shape();
  for (const Value* o : grp.outputs)
    if (o->shape() != shape) return false;
  // Values read somewhere at another index, found from the outputs backwards: a node's
  // users come after it, so its result is settled when the node is reached.
  absl::flat_hash_set<const Value*> off_index;
  for (auto it = grp.nodes.rbegin(); it != grp.nodes.rend(); ++it) {
    const Node* n = *it;
    OpKind k = n->info().kind;
    bool at_index = (k == OpKind::Elementwise || k == OpKind::Broadcast) && n->result()->shape() == shape &&
                    !off_index.contains(n->result());
    for (const Value* o : n->operands())
      if (!at_index || o->shape() != shape) off_index.insert(o);
  }
  return v->shape() == shape && !off_index.contains(v);
}

// The join of collective group `c` (see plan_memory); where groups run before it, the overlap
// and its operand's and result's lifetimes through the group before the join.
void plan_overlap(const Schedule& s, const KernelGroup& c, const absl::flat_hash_map<const Value*, size_t>& index,
                  MemoryPlan& plan) {
  std::vector<const Value*> touched(c.nodes[0]->operands().begin(), c.nodes[0]->operands().end());
  const std::vector<Value*>& results = c.stored();
  touched.insert(touched.end(), results.begin(), results.end());
  auto in = [](const auto& vs, const Value* v) { return v && std::find(vs.begin(), vs.end(), v) != vs.end(); };
  const int end = static_cast<int>(s.groups.size());
  int join = end, between = 0;
  for (int j = c.id + 1; j < end && join == end; ++j) {
    const KernelGroup& g = s.groups[j];
    if (g.weight_prep) continue;
    bool waits = g.kind == KernelGroup::Kind::Collective;
    for (const Value* v : g.inputs) waits |= in(results, v);
    for (const Value* v : g.stored()) {
      auto it = index.find(v);
      waits |= it != index.end() && in(touched, plan.buffers[it->second].reuses);
      for (const Value* t : touched) waits |= state_storage(v) && state_storage(v) == state_storage(t);
    }
    if (waits) join = j;
    else ++between;
  }
  if (between == 0) return;
  plan.overlaps.push_back({c.id, join});
  for (const Value* v : touched)
    if (auto it = index.find(v); it != index.end())
      plan.buffers[it->second].last = std::max(plan.buffers[it->second].last, join - 1);
}

}  // namespace

absl::StatusOr<bool> plan_memory(const Graph& g, const Schedule& s, MemoryPlan& plan) {
  plan.buffers.clear();
  plan.overlaps.clear();
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  absl::flat_hash_map<const Value*, size_t> index;
  for (const KernelGroup& grp : s.groups) {
    if (grp.weight_prep) continue;
    for (Value* v : grp.stored()) {
      if (returned.contains(v)) continue;
      index[v] = plan.buffers.size();
      plan.buffers.push_back({v, shape_numel(v->shape()) * dtype_size(v->dtype()), grp.id, grp.id, nullptr});
    }
  }
  for (const KernelGroup& grp : s.groups)
    for (const Value* v : grp.inputs)
      if (auto it = index.find(v); it != index.end()) plan.buffers[it->second].last = grp.id;
  absl::flat_hash_set<const Value*> donated;
  for (PlannedBuffer& b : plan.buffers) {
    const KernelGroup& grp = s.groups[b.first];
    if (grp.kind != KernelGroup::Kind::Elementwise) continue;
    for (Value* in : grp.inputs) {
      auto it = index.find(in);
      if (it == index.end() || donated.contains(in)) continue;
      const PlannedBuffer& d = plan.buffers[it->second];
      if (d.last != grp.id || in->type() != b.value->type() || !read_pointwise(grp, in)) continue;
      b.reuses = in;
      donated.insert(in);
      break;
    }
  }
  for (const KernelGroup& c : s.groups)
    if (c.kind == KernelGroup::Kind::Collective && !c.weight_prep) plan_overlap(s, c, index, plan);
  return true;
}

absl::StatusOr<ArenaLayout> MemoryPlan::layout(const Bindings& bind) const {
  ArenaLayout out;
  out.bindings = bind;
  size_t n = buffers.size();
  out.offsets.assign(n, -1);
  out.sizes.resize(n);
  // Sizes and offsets are checked: the arena of a huge binding is an error, not a wrapped number.
  auto add = [&](int64_t a, int64_t b) -> absl::StatusOr<int64_t> {
    if (std::optional<int64_t> s = checked_add(a, b)) return *s;
    return invalid_argument("memory plan: the arena under ", bindings_to_string(bind), " exceeds 2^63 bytes");
  };
  absl::flat_hash_map<const Value*, size_t> index;
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<int64_t> bytes = buffers[i].bytes.evaluate(bind);
    if (!bytes.ok()) return invalid_argument("memory plan for %", buffers[i].value->name(), ": ", status_message(bytes.status()));
    if (*bytes < 0 || *bytes > INT64_MAX - kAlignment)
      return invalid_argument("memory plan for %", buffers[i].value->name(), ": ", buffers[i].bytes.to_string(), " = ",
                              *bytes, " bytes under ", bindings_to_string(bind), " is not a size");
    out.sizes[i] = align(*bytes);
    index[buffers[i].value] = i;
  }
  // An in-place chain is one storage block: its lifetime spans every member's.
  std::vector<size_t> root(n);
  std::iota(root.begin(), root.end(), 0);
  for (size_t i = 0; i < n; ++i)
    if (buffers[i].reuses) root[i] = root[index.at(buffers[i].reuses)];
  std::vector<int> first(n, INT32_MAX), last(n, -1);
  for (size_t i = 0; i < n; ++i) {
    first[root[i]] = std::min(first[root[i]], buffers[i].first);
    last[root[i]] = std::max(last[root[i]], buffers[i].last);
  }
  std::vector<size_t> blocks;
  for (size_t i = 0; i < n; ++i)
    if (root[i] == i) blocks.push_back(i);
  std::stable_sort(blocks.begin(), blocks.end(), [&](size_t a, size_t b) { return out.sizes[a] > out.sizes[b]; });
  std::vector<size_t> placed;
  for (size_t blk : blocks) {
    // Occupied intervals of placed blocks whose lifetimes overlap this one, by offset.
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t p : placed)
      if (first[p] <= last[blk] && first[blk] <= last[p]) busy.push_back({out.offsets[p], out.offsets[p] + out.sizes[p]});
    std::sort(busy.begin(), busy.end());
    int64_t best = -1, best_gap = INT64_MAX, at = 0;
    for (auto [lo, hi] : busy) {
      if (lo - at >= out.sizes[blk] && lo - at < best_gap) best = at, best_gap = lo - at;
      at = std::max(at, hi);
    }
    out.offsets[blk] = best >= 0 ? best : at;
    placed.push_back(blk);
    KILN_ASSIGN_OR_RETURN(int64_t end, add(out.offsets[blk], out.sizes[blk]));
    out.arena_bytes = std::max(out.arena_bytes, end);
  }
  for (size_t i = 0; i < n; ++i) {
    out.offsets[i] = out.offsets[root[i]];
    KILN_ASSIGN_OR_RETURN(out.no_reuse_bytes, add(out.no_reuse_bytes, out.sizes[i]));
  }
  int steps = 0;
  for (const PlannedBuffer& b : buffers) steps = std::max(steps, b.last + 1);
  for (int t = 0; t < steps; ++t) {
    int64_t live = 0;
    for (size_t blk : blocks)
      if (first[blk] <= t && t <= last[blk]) {
        KILN_ASSIGN_OR_RETURN(live, add(live, out.sizes[blk]));
      }
    out.lower_bound_bytes = std::max(out.lower_bound_bytes, live);
  }
  return out;
}

absl::Status MemoryPlan::check_layout(const ArenaLayout& l) const {
  size_t n = buffers.size();
  if (l.offsets.size() != n || l.sizes.size() != n)
    return invalid_argument("layout of ", l.offsets.size(), " buffers for a plan of ", n);
  absl::flat_hash_map<const Value*, size_t> index;
  for (size_t i = 0; i < n; ++i) index[buffers[i].value] = i;
  // The in-place chain a buffer belongs to, named by its first buffer.
  std::vector<size_t> root(n);
  for (size_t i = 0; i < n; ++i) root[i] = buffers[i].reuses ? root[index.at(buffers[i].reuses)] : i;
  auto name = [&](size_t i) { return str_cat("%", buffers[i].value->name()); };
  for (size_t i = 0; i < n; ++i) {
    if (l.offsets[i] < 0 || l.offsets[i] % kAlignment != 0 || l.offsets[i] + l.sizes[i] > l.arena_bytes)
      return invalid_argument(name(i), " at offset ", l.offsets[i], " (", l.sizes[i], " bytes) is not an aligned place in an arena of ",
                              l.arena_bytes, " bytes");
    for (size_t j = 0; j < i; ++j) {
      bool live_together = buffers[i].first <= buffers[j].last && buffers[j].first <= buffers[i].last;
      bool overlap = l.offsets[i] < l.offsets[j] + l.sizes[j] && l.offsets[j] < l.offsets[i] + l.sizes[i];
      if (live_together && overlap && root[i] != root[j])
        return invalid_argument(name(i), " (groups ", buffers[i].first, "..", buffers[i].last, ", bytes ", l.offsets[i], "..",
                                l.offsets[i] + l.sizes[i], ") overlaps ", name(j), " (groups ", buffers[j].first, "..",
                                buffers[j].last, ", bytes ", l.offsets[j], "..", l.offsets[j] + l.sizes[j], ")");
    }
  }
  return absl::OkStatus();
}

std::string MemoryPlan::to_string(const ArenaLayout* l) const {
  std::string s = "# memory plan: buffer, bytes, live groups [first, last], offset\n";
  if (l) {
    std::vector<std::string> binds;
    for (const auto& [k, v] : l->bindings) binds.push_back(str_cat(k, "=", v));
    std::sort(binds.begin(), binds.end());
    s += str_cat("# bindings: ", str_join(binds, " ", [](const std::string& x) { return x; }), "\n");
    s += str_cat("# arena_bytes ", l->arena_bytes, ", no_reuse_bytes ", l->no_reuse_bytes, ", lower_bound_bytes ",
                 l->lower_bound_bytes, "\n");
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    const PlannedBuffer& b = buffers[i];
    s += str_cat("%", b.value->name(), "  bytes ", b.bytes.to_string(), "  live [", b.first, ", ", b.last, "]");
    if (l) s += str_cat("  offset ", l->offsets[i], "  size ", l->sizes[i]);
    if (b.reuses) s += str_cat("  in-place over %", b.reuses->name());
    s += "\n";
  }
  for (const CollectiveOverlap& o : overlaps)
    s += str_cat("# the collective of group ", o.group, " overlaps groups ", o.group + 1, "..", o.join - 1,
                 ": its operand and result live until then\n");
  return s;
}

}  // namespace kiln
