// Helpers over a Schedule shared by the fusion passes, the pass manager and the memory
// planner: the group invariants check, inputs/outputs bookkeeping, and annotated printing.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

std::string_view group_kind_name(KernelGroup::Kind k);  // "elementwise", "reduction", "gemm", "attention", "extern"

// Fills every group's inputs and outputs from its nodes (and prologue): inputs are values
// read from outside the group (no constants), in first-use order; outputs are results used
// outside the group or returned by the graph, in node order.
void compute_group_io(const Graph& g, Schedule& s);

// Checks that `s` is a valid schedule of `g`: no node in two groups, Gemm groups start with
// a GEMM, group ids are their positions, every input is an argument, a constant or an
// output of an earlier group, inputs/outputs match compute_group_io. When `complete`, every
// node except constants is in a group, and a constant is in one only if the graph returns it. The error names the group and node at fault.
absl::Status verify_schedule(const Graph& g, const Schedule& s, bool complete);

// The graph's IR text with "# group N (kind)" after each grouped node (prologue views say
// "gemm prologue"), then a per-group listing in comments. It parses as the plain IR does.
std::string print_scheduled(const Graph& g, const Schedule& s);

}  // namespace kiln
