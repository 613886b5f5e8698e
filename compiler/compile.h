// kiln's front door: compile(graph, options) runs the pass pipeline and lowering once, and
// returns a CompiledGraph. Each call binds the graph's symbols from its arguments' shapes,
// picks the specialization whose guards hold (building one on a miss, and recording which
// guard failed), and runs it on the chosen device.
//
//   kiln::CompiledGraph cg = *kiln::compile(graph, {.mode = kiln::Mode::Default, .device = kiln::Device::Cuda});
//   absl::StatusOr<std::vector<kiln::Tensor>> out = cg(inputs);
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "codegen/module.h"
#include "runtime/executor.h"
#include "runtime/tensor.h"

namespace kiln {

enum class Device : uint8_t { Auto, Cpu, Cuda };  // Auto: CUDA when a device is present, else the CPU
std::string_view device_kind_name(Device d);      // "auto", "cpu", "cuda"
class Weights;                                    // compiler/weights.h
std::optional<Device> parse_device(std::string_view name);
// Whether this build and machine can run `d` (CUDA: built with CUDA and a device present;
// CPU: built with LLVM); the error says why not.
absl::Status device_available(Device d);

// Batch buckets (the serving engines' captured batch sizes): a call whose `symbol` (a batch
// dim) is b runs at the smallest size >= b, its bucketed arguments padded. The symbol must be
// the leading dim of every argument and output it appears in, and appear in no other dim of
// them; the graph must treat it as a batch: row i of every output depends only on row i of
// the bucketed arguments (pad rows cannot change real rows). Non-state arguments: the b rows
// given are copied into the bucket's staging (on reduce-overhead, the CUDA graph's own static
// slots: none when the caller writes there, see static_slots), rows past b hold `pad` (per
// argument name, default 0). State arguments are never copied: they must have at least the
// bucket's rows (a KV cache allocated for the largest bucket); the call reads and writes their
// first bucket rows, so the pad values must make pad rows write nothing that matters (a
// decode step's start = -1: a cache write outside the cache is skipped). Outputs are the
// first b rows. A batch above the largest size is an error naming the sizes (no slow path).
// All buckets share one arena (MemoryPool) and their staging: calls are serialized, and a
// caller that calls on several streams must order them (two replays in flight at once on
// different streams would share the arena). With dynamic symbols the buckets >= 2 share one
// specialization (and a CUDA graph each); dynamic = false builds one per bucket.
struct BucketOptions {
  std::string symbol;               // e.g. "B"
  std::vector<int64_t> sizes;       // ascending, e.g. {1, 2, 4, 8, 16, 32, 64, 128, 160}
  std::map<std::string, double> pad;  // argument name -> the value of its pad rows
};

struct CompileOptions {
  Mode mode = Mode::Default;
  Device device = Device::Auto;
  // Symbols stay kernel parameters, with 0 and 1 specialized (as torch.compile does); false
  // specializes every symbol on its value (one specialization per shape).
  bool dynamic = true;
  // Dumps go to <dump_dir>/<graph name>/ (<graph name>-2/ ... for another graph of that name
  // in the process): the IR after each pass, the memory plan, kernels/*.kir, and per
  // specialization spec<N>/ with its guards, program.txt, each program kernel's IR and
  // sources. Empty: $KILN_DUMP_DIR.
  std::string dump_dir;
  int cuda_device = 0;
  // Specializations are built but never run: on CUDA every kernel is generated and
  // NVRTC-compiled for the present device's arch (sm_90 without one) with no device needed.
  // Calls fail; warm_up() builds.
  bool compile_only = false;
  // Attention forms the device runs fused (Target::supports_attention) stay one step;
  // false: every attention is decomposed into GEMM -> softmax -> GEMM (to compare them).
  bool fused_attention = true;
  std::optional<BucketOptions> buckets;
  // Specializations kept at most (torch's cache_size_limit, also 8): a guard miss once they
  // exist builds nothing and is an error naming the limit and the guards that failed (also
  // logged, whatever KILN_LOG says), never a silent fall back. With buckets and dynamic =
  // false every bucket is a specialization: compile() checks the sizes fit.
  int cache_size_limit = 8;
  // A graph with collectives (a rank's graph from passes/shard.h): this rank's communicator of
  // its group (runtime/communicator.h; compiler/parallel.h makes the group and compiles every
  // rank). Required then, and of as many ranks as the collectives and of the device's memory.
  std::shared_ptr<Communicator> communicator;
};

// Counters in the spirit of torch._dynamo's: what compiling and dispatch did so far.
struct CompileStats {
  int64_t calls = 0;
  int64_t guard_hits = 0;  // calls served by an existing specialization
  int compiles = 0;        // specializations built
  int recompiles = 0;      // of those, built because every existing one's guards failed
  std::vector<std::string> recompile_reasons;  // "B = 1 fails guard B >= 2 (specialization 0)"
  int kernels = 0, gemms = 0;                  // summed over specializations
  int kernels_shared = 0;  // of the kernels, ones built once with an identical one (BuildStats)
  int launches_per_call = 0;                   // of the specialization built last
  // How calls of the specialization built last run: "capture and replay", "tune, then launch
  // directly" or "launch directly" (also what a mode the device cannot honour comes to).
  std::string strategy;
  int64_t cache_memory_hits = 0, cache_disk_hits = 0, cache_misses = 0;
  double pass_ms = 0, lower_ms = 0, codegen_ms = 0, compile_ms = 0, tune_ms = 0;
  // Wall time of compile()'s device adapter (the process's first CUDA compile loads the driver
  // and creates the context here) and of building the specializations (the program, its
  // kernels: codegen_ms and compile_ms are part of it, module loads, library plans, the
  // executor); with pass_ms and lower_ms they cover a compile and its warm-up.
  double device_ms = 0, build_ms = 0;
  std::vector<BuildStats::KernelTime> kernel_times;  // per kernel of every specialization (CPU backend)
  // CompileOptions::buckets: per size, what its calls did (captures and replays: reduce-overhead
  // on a device that captures), and what warm_up_buckets() spent on it.
  struct Bucket {
    int64_t size = 0, calls = 0, captures = 0, replays = 0;
    double compile_ms = 0, capture_ms = 0;
  };
  std::vector<Bucket> buckets;
  std::string to_text() const;
  std::string to_json() const;
};

class CompiledGraph {
 public:
  // `args`: the graph's runtime arguments (inputs, then parameters without host data, in
  // signature order), contiguous, on the compiled device. Returns the outputs, allocated on
  // that device. A state input (DESIGN.md, State) is updated in place: the output that is the
  // state after its write is that argument's tensor itself (its slot in `outputs` of run()
  // is left empty or holds that tensor); it is never copied. Errors name the argument (count, dtype, shape, device) or the failing build.
  absl::StatusOr<std::vector<Tensor>> operator()(const std::vector<Tensor>& args, const CallOptions& opts = {});
  // The same, writing into `outputs`: one per graph output, either empty (allocated here)
  // or of the right dtype, shape and device (written in place).
  absl::Status run(const std::vector<Tensor>& args, std::vector<Tensor>& outputs, const CallOptions& opts = {});
  // The same with the parameters from a weight store (compiler/weights.h): `inputs` are the
  // runtime arguments that are not parameters, in signature order. Weight prep the store
  // holds is not run; a refit of the store is seen by the next call.
  absl::StatusOr<std::vector<Tensor>> operator()(const std::vector<Tensor>& inputs, const Weights& weights,
                                                 const CallOptions& opts = {});
  absl::Status run(const std::vector<Tensor>& inputs, const Weights& weights, std::vector<Tensor>& outputs,
                   const CallOptions& opts = {});

  // Waits until the calls queued on `opts.stream` are done (CUDA; on the CPU calls return done).
  // Returns the error of a gather index out of range that one of them met (a CPU call returns
  // its own; a CUDA call may return an earlier call's): RELIABILITY.md, "Index checks".
  absl::Status synchronize(const CallOptions& opts = {});
  // The memory held for calls: every specialization's arena, scratch and weight prep, the
  // parameters the graph carries; the weights; and the device's memory as its driver counts
  // it (CUDA). Every specialization's arena and scratch come from one pool (MemoryPool),
  // grown to the largest call: with buckets, that of the largest bucket.
  struct Memory {
    ExecutorMemory held;
    // The runtime parameters' own bytes (dtype x shape; parameters of symbolic shapes
    // excluded), and the bytes of the weight store the last call used, while it lives (0:
    // none; the parameters came as arguments).
    int64_t parameters = 0, weight_store = 0;
    // What holds weights for calls: the store (else the parameters themselves, as passed) and
    // every specialization's weight-prep copies.
    int64_t weights_held() const { return (weight_store > 0 ? weight_store : parameters) + held.weight_prep; }
    std::optional<DeviceMemoryInfo> device;
  };
  Memory memory() const;

  DeviceId device() const;
  DeviceAdapter& device_adapter() const;  // what calls run on (weight stores allocate there)
  Mode mode() const;
  const CompileOptions& options() const;  // as compile() was given them
  const Graph& graph() const;  // after the pass pipeline
  const CompiledModule& module() const;
  CompileStats stats() const;
  // Every specialization built so far, in build order: its guards, its Program and how the
  // device runs it (what `kiln compile` prints).
  struct SpecializationInfo {
    std::string guards;
    std::shared_ptr<const Program> program;
    BuildStats stats;
    std::vector<std::string> kernel_notes;  // per program kernel: "k1_mean rows, 8 lanes"
    const char* strategy;                   // how calls run: "capture and replay", ...
    Bindings bindings;                      // the symbol values it was built for (warm_up builds it again)
  };
  std::vector<SpecializationInfo> specialization_info() const;
  // The guard set of every specialization built so far, in build order: "B >= 2, T == 1".
  std::vector<std::string> specializations() const;
  // Builds (without running) the specialization that calls with these symbol values use,
  // so that a server pays for compiles before its first request.
  absl::Status warm_up(const Bindings& b);
  // CompileOptions::buckets: builds every bucket's specialization and, on reduce-overhead on a
  // device that captures, captures its CUDA graph, largest first (so the shared pool is sized
  // once), before the first request. `args` are a call's arguments (any batch within the
  // buckets; parameters empty with `weights`): their other dims, the state and parameters
  // (whose addresses the graphs keep) are used, their rows are not: every row is a pad row, so
  // state is not changed. Each bucket's line (size, compile ms, capture ms) goes to `progress`
  // when given, and to the compile log.
  absl::StatusOr<std::vector<CompileStats::Bucket>> warm_up_buckets(
      const std::vector<Tensor>& args, const Weights* weights = nullptr,
      const std::function<void(const CompileStats::Bucket&)>& progress = nullptr, const CallOptions& opts = {});
  // Parameters passed as arguments are taken as unchanged while their pointers stay the
  // same: weight prep (merged projection weights, casts) and packed copies are made once
  // per pointer set. After writing new values into a parameter's memory in place, call this
  // so that the next call remakes them.
  void parameters_changed();
  // reduce-overhead on CUDA: the CUDA graph's static slots for calls with these symbol
  // values (building the specialization if needed). A server that writes its inputs into
  // `inputs` (parameters' and state's entries are empty: they are read in place, and new
  // addresses for them capture the graph again, so keep a KV cache where it is) and calls run() with
  // them and with `outputs` replays the graph with no copies in or out; the slots are
  // overwritten by every such call and live as long as this CompiledGraph. Other modes
  // and the CPU: an error. With buckets, `b` may give any batch within them: the slots are
  // views of the first b rows of the bucket's (rows past b are padded by the call).
  absl::StatusOr<StaticSlots> static_slots(const Bindings& b);

  struct Impl;

 private:
  absl::Status call(const std::vector<Tensor>& args, std::vector<Tensor>& outputs, const CallOptions& opts,
                    const HeldWeights* held);
  absl::StatusOr<std::vector<Tensor>> with_params(const std::vector<Tensor>& inputs) const;
  friend absl::StatusOr<CompiledGraph> compile(const Graph& g, std::unique_ptr<DeviceAdapter> device,
                                               const CompileOptions& opts);
  friend absl::StatusOr<CompiledGraph> compile(const Graph& g, const CompileOptions& opts);
  std::shared_ptr<Impl> impl_;
};

// For tools and tests: `args` by name (inputs and parameters without data, as the reference
// evaluator takes them) copied to the compiled device, one call, the outputs copied back.
absl::StatusOr<std::vector<HostTensor>> run_host(CompiledGraph& cg, const std::map<std::string, HostTensor>& args,
                                                 const CallOptions& opts = {});
// The same with the parameters from `weights` (`args` then names the other arguments).
absl::StatusOr<std::vector<HostTensor>> run_host(CompiledGraph& cg, const std::map<std::string, HostTensor>& args,
                                                 const Weights& weights, const CallOptions& opts = {});

// Verifies `g`, runs the default pass pipeline and lowers every group; no kernel is built
// until the first call (or warm_up). Errors name the pass, group or node at fault, or say
// why the device cannot be used.
absl::StatusOr<CompiledGraph> compile(const Graph& g, const CompileOptions& opts = {});
// The same on a device adapter of the caller's (another device, a test double);
// `opts.device` and `opts.compile_only` are ignored.
absl::StatusOr<CompiledGraph> compile(const Graph& g, std::unique_ptr<DeviceAdapter> device,
                                      const CompileOptions& opts = {});

// The adapter compile() uses for `d` (Auto: CUDA when a device is present, else the CPU);
// with `compile_only`, CUDA's compiles kernels without a device.
absl::StatusOr<std::unique_ptr<DeviceAdapter>> make_device_adapter(Device d, int cuda_device = 0,
                                                                   bool compile_only = false);

// One specialization of `m` on `device`, as compile() builds it on a guard miss: the program
// for the device's target baking `baked`, loaded (its kernels compiled) into an executor.
// `dump`, when set, receives program.txt, each program kernel's IR (<kernel>.kir) and the
// device's sources. `pool`: the arena shared with other specializations (null: its own).
// `communicator`: the rank's, for the program's collectives (ExecutorOptions::communicator).
absl::StatusOr<std::unique_ptr<Executor>> specialize(std::shared_ptr<const CompiledModule> m, DeviceAdapter& device,
                                                     const Bindings& baked, Mode mode,
                                                     const std::optional<DumpWriter>& dump = std::nullopt,
                                                     std::shared_ptr<MemoryPool> pool = nullptr,
                                                     std::shared_ptr<Communicator> communicator = nullptr);

}  // namespace kiln
