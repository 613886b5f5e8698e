// Host evaluator of kernel IR: runs lowered kernels on HostTensors one scalar at a time,
// with the numerics kernel_ir.h specifies for the backends (f32 arithmetic rounded to each
// node's dtype, f32 or i64 accumulators). Straightforward, not fast: it is how CI checks
// fusion and lowering against the reference evaluator.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"
#include "ir/graph.h"
#include "ir/host_tensor.h"
#include "ir/reference.h"
#include "passes/memory_plan.h"
#include "passes/schedule.h"

namespace kiln {

// Runs `k` once: `inputs` and `outputs` are its Input and Output buffers in buffer order,
// already shaped as the buffers' shapes evaluate under `b`. An error names the kernel and
// the buffer (wrong shape, an index out of bounds, an unbound symbol).
absl::Status run_kernel(const kir::Kernel& k, const std::vector<const HostTensor*>& inputs,
                        const std::vector<HostTensor*>& outputs, const Bindings& b);

// Runs a lowered schedule: kernels[i] is s.groups[i] lowered from `g`. `args` are g's
// inputs and parameters without data, by name, as reference.h's evaluate takes them;
// intermediates live in host buffers keyed by value. With `plan`, a buffer the plan puts
// in place over a dead input is that input's host buffer, so a kernel that reads the input
// after writing over it gives a wrong answer here too. A state write's output starts as the
// state's contents. Returns g's outputs in order.
absl::StatusOr<std::vector<HostTensor>> evaluate_kernels(const Graph& g, const Schedule& s,
                                                         const std::vector<kir::Kernel>& kernels,
                                                         const TensorMap& args, const MemoryPlan* plan = nullptr);

}  // namespace kiln
