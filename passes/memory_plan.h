// The plan_memory pass and its result: one arena for the intermediates of a schedule.
// Sizes and lifetimes are computed once, symbolically; offsets are a function of the
// symbol values: MemoryPlan::layout(bindings) runs the best-fit placement for concrete
// sizes, which is cheap (buffers squared) and runs again at bind time for a new shape.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

struct PlannedBuffer {
  Value* value;        // a group output that no later step returns to the caller
  SymExpr bytes;       // symbolic size
  int first = 0;       // group that writes it
  int last = 0;        // last group that reads it
  Value* reuses = nullptr;  // in-place: takes over this dead input's storage (same size)
};

// A collective whose result the next group does not need (issue 22): the groups between it
// and its join are independent work, which a device with a communication stream runs while
// the communicator works (runtime/executor.h). Its operand and result are kept live (their
// arena memory unused by the groups between) through the group before the join.
struct CollectiveOverlap {
  int group = 0;  // the collective's group
  int join = 0;   // the first group that waits for it; Schedule::groups.size(): the call's end
};

struct ArenaLayout {
  Bindings bindings;
  std::vector<int64_t> offsets;  // per buffer; an in-place buffer has its donor's offset
  std::vector<int64_t> sizes;
  int64_t arena_bytes = 0;       // end of the highest placed buffer
  int64_t no_reuse_bytes = 0;    // sum of all buffers, as if none shared memory
  int64_t lower_bound_bytes = 0; // largest total of buffers live at one step
};

struct MemoryPlan {
  static constexpr int64_t kAlignment = 256;
  std::vector<PlannedBuffer> buffers;  // in the order their groups run
  std::vector<CollectiveOverlap> overlaps;  // in the order of the collectives
  // Offsets by best fit in decreasing size order (XLA's heap simulator); sizes rounded up
  // to kAlignment. An error names an unbound symbol.
  absl::StatusOr<ArenaLayout> layout(const Bindings& b) const;
  // Checks a layout of this plan: every buffer inside the arena at an aligned offset, and
  // two buffers live at one step overlap only when one takes over the other in place. The
  // error names both buffers.
  absl::Status check_layout(const ArenaLayout& l) const;
  std::string to_string(const ArenaLayout* layout) const;  // one line per buffer
};

// Pre: `s` is a complete schedule of `g`. Post: `plan` holds a buffer for every value a group
// stores (KernelGroup::stored) that is not a graph output, argument or weight_prep result (a state write's result
// is a graph output: it lives in the caller's state buffer, never here), with its lifetime in
// group steps; an Elementwise group whose output has the size of an input buffer that
// dies at that group, and reads it only through elementwise ops at the same index, reuses
// that input's storage. A collective group (not weight prep) whose join is not the next
// group is in `overlaps`, its operand's and result's lifetimes extended to the group before the
// join. The join is the first later group that reads its result, writes its operand's or result's
// memory (in place, or as the same state argument: other arena buffers cannot be there while
// they are live), or is a collective itself (the communicator's calls stay in program order,
// one at a time: none is issued while another may run). Returns true (the plan is always rebuilt).
absl::StatusOr<bool> plan_memory(const Graph& g, const Schedule& s, MemoryPlan& plan);

}  // namespace kiln
