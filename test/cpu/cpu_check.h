// Helpers of the CPU backend tests: a CompiledModule built from a graph (hand-made schedule
// or the default pass pipeline) the way compile() builds one, and the check that the CPU
// executable's outputs equal the reference evaluator's on fresh random inputs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/reference.h"
#include "codegen/module.h"
#include "runtime/executor.h"

namespace kiln::testing {

using ScheduleFn = std::function<Schedule(const Graph&)>;

// Runs the default pipeline on a copy of `g` (or, with `schedule`, that schedule plus the
// memory plan), lowers every group, and fills the argument and symbol orders.
absl::StatusOr<std::shared_ptr<const CompiledModule>> make_module(const Graph& g, const ScheduleFn& schedule = {});

struct BuildOptions {
  Bindings baked;        // symbols that are constants of the specialization
  std::string dump_dir;  // when set: program.txt and each kernel's optimized LLVM IR go there
};

// The specialization of `m` that bakes `opts.baked`, on the CPU device, as compile() builds it.
absl::StatusOr<std::unique_ptr<Executor>> build_cpu(std::shared_ptr<const CompiledModule> m,
                                                    const BuildOptions& opts = {});

// `args` (by name, as reference.h's evaluate takes them) as tensors in CompiledModule::args order.
absl::StatusOr<std::vector<Tensor>> to_tensors(const CompiledModule& m, const TensorMap& args);

// Runs `exe` (built from `m`) on `in` under `b`; returns the outputs as host tensors.
absl::StatusOr<std::vector<HostTensor>> run_cpu(Executor& exe, const CompiledModule& m, const std::vector<Tensor>& in,
                                                const Bindings& b);
absl::StatusOr<std::vector<HostTensor>> run_cpu(Executor& exe, const CompiledModule& m, const TensorMap& args,
                                                const Bindings& b);

// For each binding: random arguments (seeded from `seed` and the binding's position, all kept
// alive to the end: executables cache parameter-derived data by pointer), run on one
// dynamic executable shared by all bindings and, when the binding has symbols equal
// to 0 or 1, on a specialization that bakes them; every output compared with the reference
// evaluator on `g` within its dtype's default tolerance. The error holds the binding, the
// output and the worst element.
absl::Status check_cpu_matches_reference(const Graph& g, std::shared_ptr<const CompiledModule> m,
                                         const std::vector<Bindings>& bindings, uint64_t seed);

// One binding with given arguments (e.g. NaNs and infinities), on `dynamic` (an executor of
// `m` without baked symbols; null: one is built) and on the 0/1 specialization as above.
// The argument tensors are appended to `keep_alive` when given.
absl::Status check_cpu_on_args(const Graph& g, std::shared_ptr<const CompiledModule> m, const TensorMap& args,
                               const Bindings& b, Executor* dynamic,
                               std::vector<std::vector<Tensor>>* keep_alive = nullptr);

}  // namespace kiln::testing
