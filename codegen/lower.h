// Lowering: one kernel group of a Graph to a kir::Kernel (loop nest, loads through index
// arithmetic, scalar code, reductions, stores), or a GEMM kernel carrying its epilogue.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

using LowerLog = std::function<void(const std::string&)>;

// Pre: `group` belongs to a Schedule of `g`; its nodes are in topological order and hold
// no composite op (decompose ran). A Gemm group starts with its matmul/linear and every
// output has that node's shape; a group with reductions has them all over the same
// iteration space (same input shape and axes), and its outputs are either of that shape or
// of the reductions' result shape. Views are free: they become index arithmetic. An
// Attention group is not lowered: its kernel lists its buffers and has no stage (the
// program builder makes it a fused attention step).
// Post: a kernel whose buffers are the group's inputs (then any other value it reads from
// outside) followed by its outputs, in order. An error names the group and the node that
// cannot be lowered. `log`, when set, receives one line after each step.
absl::StatusOr<kir::Kernel> lower_group(const Graph& g, const KernelGroup& group, const LowerLog& log = {});

// Every group of `s`, in order.
absl::StatusOr<std::vector<kir::Kernel>> lower_schedule(const Graph& g, const Schedule& s,
                                                        const LowerLog& log = {});

}  // namespace kiln
