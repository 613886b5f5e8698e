// Checking compiled graphs against the reference evaluator: lowered schedules (hand-made
// ones for lowering tests, or the whole pass pipeline's) run on the kernel-IR evaluator and
// every output is compared with kiln::evaluate on fresh random inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/compare.h"
#include "ir/graph.h"
#include "compiler/compile.h"
#include "passes/schedule.h"

namespace kiln {

// The tolerance for output `v` of a graph whose reference value is `expected`: a float value
// is as precise as the least precise float value it is computed from (f32 after a bf16 step
// carries bf16 rounding). When an accumulation (sum, mean, product, GEMM, composite) is
// among them, the kernels' f32 accumulators (the reference's are f64) leave errors that
// scale with the magnitudes summed, not with each result: the absolute tolerance grows by
// rtol times the output's largest magnitude (a norm-wise bound, as GEMM tests use), and
// both by `slack`. Integers and bools are exact.
Tolerance tolerance_for(const Value* v, const HostTensor& expected, double slack);

// A group of `nodes` (in graph order): inputs are the values they read from outside
// (constants excepted), outputs the values read outside the group or returned.
KernelGroup make_group(const Graph& g, std::vector<Node*> nodes, KernelGroup::Kind kind, int id);

// One group per computing node (constants are inlined where read, unless returned).
Schedule schedule_per_node(const Graph& g);

// Every computing node in one group of `kind`.
Schedule schedule_single_group(const Graph& g, KernelGroup::Kind kind);

// Lowers `s` (a schedule of `g`), then for each binding runs it on random arguments (seeded
// from `seed` and the binding's position) and compares every output with the reference
// evaluator within the default tolerance of the least precise float dtype the output is
// computed from. The error holds the graph's IR,
// the kernels, the binding and the worst mismatch.
absl::Status check_schedule_matches_reference(const Graph& g, const Schedule& s,
                                              const std::vector<Bindings>& bindings, uint64_t seed);

// The same through the whole default pipeline (compiler/pipeline.h's compile_to_kernels on
// a clone of `g`): besides the outputs, the memory plan's layout is checked under each
// binding, and the kernels run with its in-place buffers sharing their donors' storage.
// The tolerance is that of the least precise float dtype an output is computed from. The
// kernels accumulate in f32 where the reference uses f64, so for outputs computed from an
// accumulation (sum, mean, product, GEMM, composite) the absolute tolerance also grows by
// rtol times the output's largest magnitude (norm-wise), and both are multiplied by
// `accumulation_slack` (random graphs can be ill-conditioned: cancellation, normalizing
// near-constant rows).
absl::Status check_compiled_matches_reference(const Graph& g, const std::vector<Bindings>& bindings,
                                              uint64_t seed, double accumulation_slack = 1);

// Fusion changes no bit: the default pipeline's kernels give exactly what one kernel per
// node of the same (compiled) graph gives, on random inputs under each binding. Independent
// of conditioning, so it holds for any graph.
absl::Status check_fused_matches_unfused(const Graph& g, const std::vector<Bindings>& bindings, uint64_t seed);

// The same comparison for the graph compiled by compile() for `device` (the CPU's LLVM JIT
// or CUDA): one CompiledGraph called under each binding in turn, so guards, recompiles and
// the backend's own code generation are exercised; tolerances as above. `mode` is
// compile()'s (reduce-overhead replays CUDA graphs, max-autotune picks among variants).
absl::Status check_device_matches_reference(const Graph& g, Device device, const std::vector<Bindings>& bindings,
                                            uint64_t seed, double accumulation_slack = 1, Mode mode = Mode::Default);

}  // namespace kiln
