#include "passes/schedule_util.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/ops_collective.h"
#include "ir/printer.h"
#include "ir/str.h"

namespace kiln {

std::string_view group_kind_name(KernelGroup::Kind k) {
  switch (k) {
    case KernelGroup::Kind::Elementwise: return "elementwise";
    case KernelGroup::Kind::Reduction: return "reduction";
    case KernelGroup::Kind::Gemm: return "gemm";
    case KernelGroup::Kind::Attention: return "attention";
    case KernelGroup::Kind::Extern: return "extern";
    case KernelGroup::Kind::Collective: return "collective";
  }
  return "?";
}

namespace {

std::vector<Node*> members(const KernelGroup& grp) {
  std::vector<Node*> all = grp.prologue;
  all.insert(all.end(), grp.nodes.begin(), grp.nodes.end());
  return all;
}

void group_io(const absl::flat_hash_map<const Node*, int>& pos,
              const absl::flat_hash_map<const Value*, std::vector<Node*>>& uses,
              const absl::flat_hash_set<const Value*>& returned, KernelGroup& grp) {
  std::vector<Node*> all = members(grp);
  absl::flat_hash_set<const Node*> in(all.begin(), all.end());
  absl::flat_hash_set<const Value*> seen;
  grp.inputs.clear();
  grp.outputs.clear();
  // Operands in node order; prologue nodes come first in `all` but may be read by the
  // GEMM only, so first use follows node order of the group's members.
  for (const Node* n : all)
    for (Value* v : n->operands()) {
      const Node* p = v->producer();
      if ((p && (in.contains(p) || p->op() == Op::Constant)) || !seen.insert(v).second) continue;
      grp.inputs.push_back(v);
    }
  // Outputs in node order: the members sorted by position, not a walk of the whole graph
  // per group (quadratic in a model of many layers).
  std::sort(all.begin(), all.end(), [&](const Node* a, const Node* b) { return pos.at(a) < pos.at(b); });
  for (const Node* n : all) {
    for (Value* r : n->results()) {
      bool outside = returned.contains(r);
      if (auto it = uses.find(r); it != uses.end())
        for (const Node* u : it->second) outside |= !in.contains(u);
      if (outside) grp.outputs.push_back(r);
    }
  }
}

}  // namespace

void compute_group_io(const Graph& g, Schedule& s) {
  auto uses = g.uses();
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  absl::flat_hash_map<const Node*, int> pos;
  for (const auto& n : g.nodes()) pos.emplace(n.get(), static_cast<int>(pos.size()));
  for (KernelGroup& grp : s.groups) group_io(pos, uses, returned, grp);
}

absl::Status verify_schedule(const Graph& g, const Schedule& s, bool complete) {
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  absl::flat_hash_map<const Node*, int> group_of;
  for (const KernelGroup& grp : s.groups) {
    if (grp.id != &grp - s.groups.data()) return invalid_argument("group ", grp.id, " is at position ", &grp - s.groups.data());
    if (grp.nodes.empty()) return invalid_argument("group ", grp.id, " has no nodes");
    if (grp.kind == KernelGroup::Kind::Gemm && grp.nodes[0]->info().kind != OpKind::Gemm)
      return invalid_argument("gemm group ", grp.id, " starts with ", grp.nodes[0]->describe());
    if (grp.kind == KernelGroup::Kind::Attention &&
        (grp.nodes.size() > 2 || grp.nodes[0]->op() != Op::Attention ||
         (grp.nodes.size() == 2 && grp.nodes[1]->op() != Op::Permute)))
      return invalid_argument("attention group ", grp.id, " must hold one attention node (and a permute of its result)");
    if (grp.kind == KernelGroup::Kind::Extern && (grp.nodes.size() != 1 || grp.nodes[0]->op() != Op::ExternCall))
      return invalid_argument("extern group ", grp.id, " must hold one extern_call node");
    if (grp.kind == KernelGroup::Kind::Collective && (grp.nodes.size() != 1 || !is_collective(grp.nodes[0]->op())))
      return invalid_argument("collective group ", grp.id,
                              " must hold one all_reduce, all_gather or reduce_scatter node");
    if (grp.kind != KernelGroup::Kind::Gemm && grp.kind != KernelGroup::Kind::Attention && !grp.prologue.empty())
      return invalid_argument("group ", grp.id, " is neither a gemm nor an attention group but has a prologue");
    for (const Node* n : members(grp)) {
      if (n->op() == Op::Constant && !returned.contains(n->result()))
        return invalid_argument("group ", grp.id, " holds constant ", n->describe(), ", which the graph does not return");
      if (!group_of.emplace(n, grp.id).second)
        return invalid_argument(n->describe(), " is in groups ", group_of[n], " and ", grp.id);
    }
  }
  absl::flat_hash_set<const Value*> available;
  for (const Value* v : g.args()) available.insert(v);
  for (const auto& n : g.nodes()) {
    if (n->op() == Op::Constant && !group_of.contains(n.get())) available.insert(n->result());
    else if (complete && !group_of.contains(n.get())) return invalid_argument(n->describe(), " is in no group");
  }
  Schedule expect = s;
  compute_group_io(g, expect);
  for (const KernelGroup& grp : s.groups) {
    const KernelGroup& e = expect.groups[grp.id];
    if (e.inputs != grp.inputs || e.outputs != grp.outputs)
      return invalid_argument("group ", grp.id, ": inputs/outputs do not match its nodes");
    if (complete) {
      for (const Value* v : grp.inputs)
        if (!available.contains(v))
          return invalid_argument("group ", grp.id, " reads %", v->name(), " before any group computes it");
      for (const Value* v : grp.outputs) available.insert(v);
    }
  }
  return absl::OkStatus();
}

std::string print_scheduled(const Graph& g, const Schedule& s) {
  absl::flat_hash_map<const Node*, std::string> note;
  for (const KernelGroup& grp : s.groups) {
    std::string tag = str_cat(grp.weight_prep ? "weight-prep " : "", group_kind_name(grp.kind));
    for (const Node* n : grp.prologue) note[n] = str_cat("  # group ", grp.id, " (", tag, " prologue)");
    for (const Node* n : grp.nodes) note[n] = str_cat("  # group ", grp.id, " (", tag, ")");
  }
  std::string text = print_graph(g);
  // print_graph writes the signature line, one line per symbol bound, one per node in order.
  std::string out;
  size_t pos = 0, line = 0, first_node = 1 + g.symbol_bounds().size();
  auto it = g.nodes().begin();
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    out.append(text, pos, nl - pos);
    if (line >= first_node && it != g.nodes().end()) {
      if (auto n = note.find(it->get()); n != note.end()) out += n->second;
      ++it;
    }
    out += '\n';
    pos = nl + 1;
    ++line;
  }
  if (s.groups.empty()) return out;
  out += "# schedule:\n";
  for (const KernelGroup& grp : s.groups) {
    auto names = [](const std::vector<Value*>& vs) { return str_join(vs, ", ", [](const Value* v) { return "%" + v->name(); }); };
    out += str_cat("#   group ", grp.id, " ", grp.weight_prep ? "weight-prep " : "", group_kind_name(grp.kind), ": ",
                   grp.nodes.size() + grp.prologue.size(), " nodes, reads (", names(grp.inputs), ") writes (",
                   names(grp.outputs), ")\n");
  }
  return out;
}

}  // namespace kiln
