// The contract between compile() (compiler/) and a device backend (runtime/cpu,
// runtime/cuda): a backend builds one Executable per specialization of a compiled graph
// from the optimized graph and its lowered kernels; an Executable runs calls.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/module.h"
#include "runtime/tensor.h"

namespace kiln {

// default: kernels launched one by one; reduce-overhead: a specialization's whole launch
// sequence replayed as one CUDA graph; max-autotune: GEMM algorithms and kernel launch
// shapes timed on the real sizes, the fastest kept (and remembered on disk).
enum class Mode : uint8_t { Default, ReduceOverhead, MaxAutotune };
std::string_view mode_name(Mode m);  // "default", "reduce-overhead", "max-autotune"
std::optional<Mode> parse_mode(std::string_view name);

struct BuildOptions {
  Mode mode = Mode::Default;
  Bindings baked;        // symbols that are constants in this specialization (0/1 or static)
  Bindings example;      // the bindings of the call that asked for it (autotuning sizes)
  std::string dump_dir;  // when set: the backend writes its sources there (.cu, .ptx, .ll)
};

// What building one specialization cost and produced.
struct BuildStats {
  int kernels = 0;  // generated kernels (elementwise, reduction, GEMM epilogues)
  int gemms = 0;    // GEMM calls (library or generated)
  int launches = 0;  // kernel launches, library calls and copies per call
  int64_t cache_memory_hits = 0, cache_disk_hits = 0, cache_misses = 0;  // the kernel cache's
  double codegen_ms = 0;  // emitting CUDA C or LLVM IR
  double compile_ms = 0;  // NVRTC, or LLVM O2 + JIT, on cache misses
  double tune_ms = 0;     // max-autotune's timing runs
  struct KernelTime {
    std::string name;
    double codegen_ms = 0, compile_ms = 0;  // 0 when the kernel came from a cache
    bool cached = false;
  };
  std::vector<KernelTime> kernel_times;  // per generated kernel, where the backend records them (CPU)
};

struct StaticSlots {
  std::vector<Tensor> inputs;   // per argument, in CompiledModule::args order; empty for parameters
  std::vector<Tensor> outputs;  // per graph output
};

struct CallOptions {
  void* stream = nullptr;  // CUDA: the caller's CUstream (null: the executable's own stream)
};

class Executable {
 public:
  virtual ~Executable() = default;
  // Pre: `args` are the runtime arguments in CompiledModule::args order, contiguous, on
  // this backend's device, with the dtypes and shapes the graph gives them under `syms`.
  // `outputs` has one slot per graph output: an empty Tensor (null data) is allocated by
  // the executable; a given one (right dtype, shape and device, contiguous) is written.
  // Post: outputs hold the graph's results; for CUDA, ordered on the call's stream.
  virtual absl::Status run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                           const CallOptions& opts) = 0;
  virtual const BuildStats& build_stats() const = 0;
  // What the executable made from parameter values (weight-prep results, packed GEMM
  // operands) is kept while the parameters' pointers stay the same; after new values were
  // written into a parameter's memory in place, this makes the next run remake it.
  virtual void parameters_changed() = 0;
  // reduce-overhead (CUDA): the CUDA graph's static input slots (one per argument; empty
  // for parameters, which are read in place) and output slots for calls with `syms`. Inputs
  // written there and outputs passed as those slots replay the graph with no copies.
  virtual absl::StatusOr<StaticSlots> static_slots(SymbolValues syms) {
    return absl::FailedPreconditionError("static slots exist only for CUDA graphs (compile in reduce-overhead mode on CUDA)");
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceId device() const = 0;
  // One specialization of `module`. Errors name the kernel or group that failed.
  virtual absl::StatusOr<std::unique_ptr<Executable>> build(std::shared_ptr<const CompiledModule> module,
                                                            const BuildOptions& opts) = 0;
};

}  // namespace kiln
