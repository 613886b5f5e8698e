// Extern ops: C++/CUDA functions a user registers by name, which a graph calls through the
// extern_call op (ops.def). kiln plans memory and streams around them; every pass keeps them
// whole, and every device (the reference evaluator, CPU, CUDA) calls them between its kernels.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// One operand or result as a registered function sees it: dense row-major memory (host memory
// for cpu and reference, device memory for cuda) of the declared dtype, at the call's sizes.
struct ExternTensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  int64_t numel() const;
};

using ExternInferFn = std::function<absl::StatusOr<std::vector<TensorType>>(std::span<const TensorType> in)>;
// Writes every result from the operands. Results never alias operands (the memory plan gives
// them arena buffers of their own); an error fails the call and is reported with the node.
using ExternHostFn = std::function<absl::Status(std::span<const ExternTensor> in, std::span<const ExternTensor> out)>;
// Enqueues the computation on `stream` (the CUstream kiln runs the call on) and returns; kiln
// orders it after the kernels writing its operands and before those reading its results.
// Under reduce-overhead it runs inside CUDA stream capture: it must not synchronize, allocate
// or free memory, or use another stream without joining it back (cudaStreamBeginCapture's
// rules). An op that cannot obey them says capturable = false.
using ExternCudaFn =
    std::function<absl::Status(std::span<const ExternTensor> in, std::span<const ExternTensor> out, void* stream)>;

struct ExternOp {
  std::string name;     // what extern_call's `name` attribute says; unique in the process
  ExternInferFn infer;  // result types from operand types (symbolic dims allowed); required
  ExternHostFn cpu;     // the CPU backend's implementation; empty: none
  ExternCudaFn cuda;    // the CUDA backend's; empty: none
  ExternHostFn reference;  // the reference evaluator's; empty: cpu's
  bool capturable = true;  // cuda may be captured into a CUDA graph (reduce-overhead)
};

// Adds `op` to the process-wide registry (thread-safe). Errors: an empty name or infer, no
// implementation at all, or a name already registered.
absl::Status register_extern_op(ExternOp op);
// The registered op of this name, or null. Registered ops live until the process ends.
const ExternOp* find_extern_op(std::string_view name);

// The devices that call extern ops (a Target says which one it is).
enum class ExternDevice : uint8_t { Cpu, Cuda };

// The registered op `name` with an implementation for `device`; errors: no op of that name
// in this process, or none for the device. The rule both compile() (check_extern_calls) and
// the executors, which may run a loaded package without compiling, apply.
absl::StatusOr<const ExternOp*> extern_op_for(std::string_view name, ExternDevice device);

// Checks every extern_call of `g` against the registry before compiling it: the name is
// registered, .infer of the operand types gives the result types the node declares, the op
// has an implementation for `device`, and it is capturable when `captured`. Errors name the
// node and where it came from.
absl::Status check_extern_calls(const Graph& g, ExternDevice device, bool captured);

// extern_call's `results` attribute: the declared result types as IR text, "f32[B, 64], i32[B]".
std::string extern_results_text(std::span<const TensorType> types);

}  // namespace kiln
