// Checking compiled graphs against the reference evaluator: hand-made schedules for tests,
// and check_compiled_matches_reference, which lowers a schedule, runs it on the kernel-IR
// evaluator and compares every output with kiln::evaluate on fresh random inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

// A group of `nodes` (in graph order): inputs are the values they read from outside
// (constants excepted), outputs the values read outside the group or returned.
KernelGroup make_group(const Graph& g, std::vector<Node*> nodes, KernelGroup::Kind kind, int id);

// One group per computing node (constants are inlined where read).
Schedule schedule_per_node(const Graph& g);

// Every computing node in one group of `kind`.
Schedule schedule_single_group(const Graph& g, KernelGroup::Kind kind);

// Lowers `s` (a schedule of `g`), then for each binding runs it on random arguments (seeded
// from `seed` and the binding's position) and compares every output with the reference
// evaluator within the output dtype's default tolerance. The error holds the graph's IR,
// the kernels, the binding and the worst mismatch.
absl::Status check_schedule_matches_reference(const Graph& g, const Schedule& s,
                                              const std::vector<Bindings>& bindings, uint64_t seed);

// The same through the default compile pipeline: today a per-node schedule, since the
// fusion passes (passes/) have not landed in this tree.
absl::Status check_compiled_matches_reference(const Graph& g, const std::vector<Bindings>& bindings,
                                              uint64_t seed);

}  // namespace kiln
