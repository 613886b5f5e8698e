// What a device gives the executor (runtime/executor.h): its compiled kernels and library
// GEMMs for one Program, memory, copies and, where it has them, stream capture and timing.
// A backend implements this and nothing else: the executor owns the order of steps, the
// per-call plans, every buffer, weight prep, output copies and the modes. A third backend (or
// a test double) implements these two classes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/program.h"
#include "ir/checked.h"
#include "ir/str.h"
#include "ir/dump.h"
#include "runtime/tensor.h"

namespace kiln {

using DevicePtr = uint64_t;  // a device address (a host address on the CPU)

// Memory from DeviceAdapter::allocate, freed when the last copy of it goes.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(DevicePtr ptr, int64_t bytes, std::shared_ptr<void> owner)
      : ptr_(ptr), bytes_(bytes), owner_(std::move(owner)) {}
  DevicePtr ptr() const { return ptr_; }
  int64_t size() const { return bytes_; }

 private:
  DevicePtr ptr_ = 0;
  int64_t bytes_ = 0;
  std::shared_ptr<void> owner_;
};

// What building a specialization cost and produced.
struct BuildStats {
  int kernels = 0;   // generated kernels compiled (elementwise, reduction, GEMM epilogues, gathers)
  int kernels_shared = 0;  // of those, ones whose source an earlier kernel had (identical layers): built once
  int gemms = 0;     // GEMM groups (run by a library or by their own kernel)
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
  std::vector<KernelTime> kernel_times;  // per generated kernel, where the device records them (CPU)
};

// The device's per-call state of one step, computed from the call's symbol values (launch
// shape, a library plan); the executor keeps it in its plan for those values.
class StepPlan {
 public:
  virtual ~StepPlan() = default;
  // The library that runs the step where it is not kiln's own code ("cuDNN 9.14.0 engine
  // 2"), for profiles; empty otherwise.
  virtual std::string library() const { return {}; }
};

// One step's choices that max-autotune times (launch shapes, library algorithms).
class Tunable {
 public:
  virtual ~Tunable() = default;
  virtual std::string key() const = 0;     // what is tuned, at which sizes, on which device
  virtual int candidates() const = 0;
  virtual absl::Status select(int i) = 0;  // re-plans the step for candidate i
  virtual std::string choice() const = 0;  // the selected candidate, as the tune store keeps it
  virtual bool restore(const std::string& choice) = 0;  // selects a kept choice; false: unusable
  // The tune store's comment on the result; ms[i] is candidate i's time (< 0: it failed).
  virtual std::string note(std::span<const double> ms, int best) const = 0;
};

struct CallContext {
  void* stream = nullptr;          // CUDA: the CUstream; null elsewhere
  uint64_t weights_generation = 0;  // changes whenever parameters or weight-prep results may have
};

// The device's side of one Program: its kernels compiled and loaded, its library GEMMs.
// Kernel and GEMM numbers index Program::kernels and Program::gemms.
class DeviceProgram {
 public:
  virtual ~DeviceProgram() = default;
  // The launch of `kernel` for a call with these symbol values (an on-demand kernel is
  // compiled here, on first use).
  virtual absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int kernel, const Bindings& b, SymbolValues syms) = 0;
  // Pre: `buffers` holds the address of each of the step's buffers (KernelStep::buffers).
  virtual absl::Status launch(int kernel, StepPlan& plan, std::span<const DevicePtr> buffers,
                              const CallContext& c) = 0;
  // The library call of `gemm` at these sizes.
  virtual absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int gemm, const Bindings& b) = 0;
  // C = A x B (with the fused epilogue and residual) on the library. Returns false, having
  // done nothing, where the library cannot run this call (no algorithm, operands less aligned
  // than planned): the executor then runs the GEMM's fallback kernel.
  virtual absl::StatusOr<bool> run_gemm(int gemm, StepPlan& plan, DevicePtr a, DevicePtr b, DevicePtr c, DevicePtr bias,
                                        DevicePtr residual, const CallContext& ctx) = 0;
  // The fused attention step `attention` (Program::attentions; codegen/attention.h) at these
  // sizes: its strides and dims evaluated, whatever the device decides per call. A device
  // whose Target::supports_attention is null never gets such a step; the defaults say so.
  virtual absl::StatusOr<std::unique_ptr<StepPlan>> plan_attention(int attention, const Bindings& b) {
    return absl::UnimplementedError(str_cat("this device has no fused attention (step ", attention, ")"));
  }
  // Pre: `buffers` holds the addresses of q, k, v, out, mask, kv_lens, block_table in that
  // order (0 for an absent operand). Writes out; a kv_lens or block-table entry out of range
  // is an error naming it, or where the device cannot check it, a skipped key (documented by
  // the device).
  virtual absl::Status run_attention(int attention, StepPlan& plan, std::span<const DevicePtr> buffers,
                                     const CallContext& c) {
    return absl::UnimplementedError(str_cat("this device has no fused attention (step ", attention, ")"));
  }
  // What max-autotune may try for a step; null: nothing.
  virtual absl::StatusOr<std::unique_ptr<Tunable>> tunable_kernel(int kernel, StepPlan& plan, const Bindings& b,
                                                                  SymbolValues syms) {
    return nullptr;
  }
  virtual absl::StatusOr<std::unique_ptr<Tunable>> tunable_gemm(int gemm, StepPlan& plan) { return nullptr; }
  virtual absl::StatusOr<std::unique_ptr<Tunable>> tunable_attention(int attention, StepPlan& plan) { return nullptr; }
  // How the device runs `kernel`, for `kiln compile`: "elementwise, 8 lanes".
  virtual std::string describe_kernel(int kernel) const = 0;
  virtual const BuildStats& stats() const = 0;  // kernels, cache hits, codegen and compile times
};

// A profiled call's clock (CallOptions::profile): marks recorded between its launches, in
// call order, read once the call has finished.
class Timeline {
 public:
  virtual ~Timeline() = default;
  virtual absl::Status mark(const CallContext& c) = 0;
  // Milliseconds from the first mark to each mark, after waiting for the call to finish.
  virtual absl::StatusOr<std::vector<double>> read() = 0;
};

// The host's clock: right for a device whose launches return when their work is done.
class HostTimeline final : public Timeline {
 public:
  absl::Status mark(const CallContext&) override {
    marks_.push_back(std::chrono::steady_clock::now());
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<double>> read() override {
    std::vector<double> ms;
    for (const auto& t : marks_) ms.push_back(std::chrono::duration<double, std::milli>(t - marks_.front()).count());
    return ms;
  }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;
};

// Device memory as the driver counts it (every process's), in bytes.
struct DeviceMemoryInfo {
  int64_t free = 0, total = 0;
};

// A captured launch sequence, replayed as one unit (a CUDA graph).
class Replay {
 public:
  virtual ~Replay() = default;
  virtual absl::Status launch(void* stream) = 0;
};

// A second stream of the device's, for collectives that overlap later steps
// (CollectiveStep::join): forked from a call's stream, its work runs alongside the call's
// until the call's stream joins it back. Forks and joins are stream operations, so they are
// legal under capture, where every fork must be joined before the capture ends.
class SideStream {
 public:
  virtual ~SideStream() = default;
  virtual void* stream() = 0;
  // The side stream waits for the work queued on `from` so far.
  virtual absl::Status fork(void* from) = 0;
  // Event `event` (of those side_stream made) marks the work queued on the side stream so far.
  virtual absl::Status record(int event) = 0;
  // `into` waits for the work event `event` marked when last recorded.
  virtual absl::Status join(int event, void* into) = 0;
};

struct LoadOptions {
  std::optional<DumpWriter> dump;  // when set: each kernel's sources (.cu and .ptx, or .ll) go there
};

class DeviceAdapter {
 public:
  virtual ~DeviceAdapter() = default;
  virtual DeviceId device() const = 0;
  virtual const Target& target() const = 0;  // what programs for this device are built for
  virtual std::string arch() const { return {}; }  // what kernels are compiled for ("sm_90"); empty: the host
  // Compiles (through the kernel cache) and loads every kernel of `p` not on demand. Errors
  // name the kernel.
  virtual absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program> p,
                                                              const LoadOptions& o) = 0;
  // Makes the device current for the calling thread (before a call's first operation).
  virtual absl::Status activate() { return absl::OkStatus(); }
  virtual absl::StatusOr<DeviceMemory> allocate(int64_t bytes) = 0;
  // The largest single allocation a call may ask for (ir/checked.h): the host's limit on the
  // CPU, the device's memory on a GPU. The executor checks every buffer against it first.
  virtual int64_t allocation_limit() const { return host_allocation_limit(); }
  // `data` resident on the device, made once per adapter and kept while the adapter lives.
  virtual absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& data) = 0;
  // A contiguous tensor for a graph output.
  virtual absl::StatusOr<Tensor> empty(DType dtype, std::vector<int64_t> shape) = 0;
  virtual absl::Status copy(DevicePtr dst, DevicePtr src, int64_t bytes, const CallContext& c) = 0;
  // Host memory that copy_to_host may target from queued work (CUDA: page-locked, so that the
  // copy is asynchronous and a captured graph can hold it). Its ptr() is a host address.
  virtual absl::StatusOr<DeviceMemory> allocate_host(int64_t bytes);
  // Enqueues a copy of device memory into host memory from allocate_host: done once the work
  // queued before it is (synchronize). The default: a device whose memory is the host's.
  virtual absl::Status copy_to_host(void* dst, DevicePtr src, int64_t bytes, const CallContext& c);
  // Waits until the work queued on `stream` is done (a device that runs calls synchronously
  // has nothing to wait for).
  virtual absl::Status synchronize(void* stream) { return absl::OkStatus(); }
  virtual std::optional<DeviceMemoryInfo> memory_info() { return std::nullopt; }  // none: host memory

  // Profiling: a clock for one call's launches, and named ranges around a kernel group's
  // launches that a profiler shows (NVTX on CUDA: Nsight Systems; nothing elsewhere).
  virtual absl::StatusOr<std::unique_ptr<Timeline>> timeline() { return std::make_unique<HostTimeline>(); }
  virtual void push_range(const char* name) {}
  virtual void pop_range() {}

  // Stream capture (reduce-overhead): `launches` runs once on a stream of the adapter's so
  // that everything made lazily exists, then again under capture.
  virtual bool can_capture() const { return false; }
  virtual absl::StatusOr<std::unique_ptr<Replay>> capture(const std::function<absl::Status(const CallContext&)>& launches) {
    return absl::UnimplementedError("this device has no stream capture");
  }
  // A side stream with `events` events for one executor; null: the device has none, and
  // collectives run in line (the CPU: the host group's call is synchronous).
  virtual absl::StatusOr<std::unique_ptr<SideStream>> side_stream(int events) { return nullptr; }
  // max-autotune: the median time of `run` in milliseconds, after warm-up runs.
  virtual bool can_time() const { return false; }
  virtual absl::StatusOr<double> time_ms(const std::function<absl::Status()>& run, const CallContext& c) {
    return absl::UnimplementedError("this device cannot time steps");
  }
};

}  // namespace kiln
