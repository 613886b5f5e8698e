// The executor: runs one specialization's Program on a device through its adapter
// (runtime/device_adapter.h), for any symbol values. It owns what every device needs alike:
// a bounded cache of per-call plans (sizes, arena offsets, the device's launch plans), the
// arena, scratch and weight-prep memory, weight prep rerun when parameters change, outputs
// allocated or copied, and the modes as strategies: direct launch, capture once and replay
// (reduce-overhead), and tuning on the first call (max-autotune).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/communicator.h"
#include "runtime/device_adapter.h"

namespace kiln {

// default: kernels launched one by one; reduce-overhead: a specialization's whole launch
// sequence replayed as one captured unit (a CUDA graph); max-autotune: launch shapes and
// GEMM algorithms timed on the real sizes, the fastest kept (and remembered on disk).
enum class Mode : uint8_t { Default, ReduceOverhead, MaxAutotune };
std::string_view mode_name(Mode m);  // "default", "reduce-overhead", "max-autotune"
std::optional<Mode> parse_mode(std::string_view name);

// One launch of a profiled call: a generated kernel, a library GEMM or a copy, timed by the
// device's clock (CUDA events; the host clock on the CPU).
struct ProfiledLaunch {
  enum class Kind : uint8_t { Kernel, Library, Copy, Attention, Extern, Collective };
  Kind kind = Kind::Kernel;
  int group = -1;                        // the kernel group it runs (-1: an output copy)
  const KernelStep* kernel = nullptr;    // Kernel: the step (its Program::kernels entry, buffers)
  const GemmStep* gemm = nullptr;        // Library: the GEMM it computes
  const CopyStep* copy = nullptr;        // Copy
  int64_t copy_bytes = 0;                // Copy
  const AttentionStep* attention = nullptr;  // Attention: the device's fused routine
  const ExternStep* extern_step = nullptr;   // Extern: the registered function
  const CollectiveStep* collective = nullptr;  // Collective: the communicator's call
  std::string library;                         // Attention: StepPlan::library() (empty: kiln's kernel)
  double ms = 0;
};

// What a profiled call ran and how long each launch took. The call launches directly (a
// reduce-overhead call is not replayed, and max-autotune's first call only tunes: its
// profile is empty).
struct CallProfile {
  std::shared_ptr<const Program> program;  // the specialization that ran (the launches point into it)
  Bindings bindings;                       // the call's symbol values
  std::vector<ProfiledLaunch> launches;    // in call order
  double ms = 0;                           // from the first launch's start to the last one's end
};

struct CallOptions {
  void* stream = nullptr;  // CUDA: the caller's CUstream (null: the legacy default stream)
  CallProfile* profile = nullptr;  // when set: the call is profiled into it
  // Named ranges around each kernel group's launches (ExecutorOptions::group_names) for a
  // profiler: NVTX on CUDA, which Nsight Systems shows. Costs nothing when no profiler listens.
  bool ranges = false;
};

// The memory a specialization holds for its calls (the largest call so far), in bytes.
struct ExecutorMemory {
  int64_t arena = 0, scratch = 0;  // its pool's (shared with the executors that share the pool)
  int64_t slots = 0;  // reduce-overhead: the static input and output slots, summed over its call plans
  int64_t weight_prep = 0;  // weight-prep results the executor made (none that a weight store holds)
  int64_t constants = 0;  // parameters carried by the graph, made resident
};

// The parameters and weight-prep results a weight store (compiler/weights.h) holds for one
// call: the executor reads the parameters there instead of from the arguments, and does not
// make the results the store holds (their prep steps are skipped), only the others, from the
// store's parameters, again whenever the store's values change.
struct HeldWeights {
  uint64_t store = 0;       // which store (unique in the process)
  uint64_t generation = 0;  // changes whenever the store's values do (a refit)
  // Per Program::args entry: a parameter's address in the store; 0 for other arguments, and
  // for a parameter the store holds only inside results it laid out (nothing else reads it).
  const std::vector<DevicePtr>* params = nullptr;
  // Weight-prep results the store holds, by value name (ProgramBuffer::name).
  const std::map<std::string, DevicePtr, std::less<>>* prepared = nullptr;
};

struct StaticSlots {
  std::vector<Tensor> inputs;   // per argument, in Program::args order; empty for parameters
  std::vector<Tensor> outputs;  // per graph output
};

// The arena and scratch memory of executors that never run at the same time (the
// specializations of one CompiledGraph, whose calls are serialized): one allocation each,
// grown to the largest call of any of them, so that memory for many batch sizes is that of
// the largest. Not thread-safe: the executors sharing a pool must be called one at a time.
class MemoryPool {
 public:
  // Makes the arena and scratch at least these sizes. Growing frees the old memory before
  // allocating, and changes generation(): replays that captured the old addresses are stale.
  absl::Status reserve(DeviceAdapter& device, int64_t arena_bytes, int64_t scratch_bytes);
  DevicePtr arena() const { return arena_.ptr(); }
  DevicePtr scratch() const { return scratch_.ptr(); }
  int64_t arena_bytes() const { return arena_.size(); }
  int64_t scratch_bytes() const { return scratch_.size(); }
  uint64_t generation() const { return generation_; }

 private:
  DeviceMemory arena_, scratch_;
  uint64_t generation_ = 0;
};

struct ExecutorOptions {
  Mode mode = Mode::Default;
  std::optional<DumpWriter> dump;  // when set: the device's sources go there
  std::vector<std::string> group_names;  // per kernel group: its name in profiler ranges
  std::shared_ptr<MemoryPool> pool;  // the arena and scratch shared with other executors; null: its own
  // This rank's communicator of its tensor-parallel group, for a program with collectives (of
  // as many ranks, on the device's memory): without one, a call that reaches a collective
  // fails. An overlapped collective (CollectiveStep::join) of a direct or captured call runs on
  // the executor's side stream (DeviceAdapter::side_stream): forked from the call's stream
  // after the steps before it, joined back before its join step, and on an error before the
  // call returns (a capture ends with both streams joined). Where the device has no side stream
  // (the CPU, whose host group call is synchronous), and in profiled and tuning calls (which
  // time one launch after another on the call's stream), every collective runs in line.
  std::shared_ptr<Communicator> communicator;
};

class Executor {
 public:
  // Loads `p` on `device` (compiling its kernels). The device outlives the executor.
  static absl::StatusOr<std::unique_ptr<Executor>> create(std::shared_ptr<const Program> p, DeviceAdapter& device,
                                                          const ExecutorOptions& opts);
  ~Executor();

  // `args` are the runtime arguments in Program::args order, contiguous, on the device,
  // with the dtypes and shapes the graph gives them under `syms` (the symbol values in
  // Program::symbols order). `outputs` has one slot per graph output: an empty Tensor is
  // allocated here; a given one (right dtype, shape and device, contiguous) is written.
  // Post: outputs hold the graph's results, ordered on the call's stream. A tensor that is
  // not as said is an error naming it, unless `checked` says the caller checked them all
  // (CompiledGraph's guards do, on its hot path). With `held`, the parameters' entries of
  // `args` are ignored (pass empty tensors): they are read from the store.
  enum class Checked : uint8_t { No, ByCaller };
  absl::Status run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                   const CallOptions& opts = {}, Checked checked = Checked::No, const HeldWeights* held = nullptr);

  const Program& program() const { return *program_; }
  std::shared_ptr<const Program> shared_program() const { return program_; }
  std::string describe_kernel(int kernel) const { return loaded_->describe_kernel(kernel); }
  BuildStats build_stats() const;  // the device's, with launches and tuning time
  const char* strategy() const;    // "direct", "capture and replay", "tune then direct"
  ExecutorMemory memory() const;
  // reduce-overhead: launch sequences captured, and replays of a capture made by an earlier call.
  struct ReplayCounts {
    int64_t captures = 0, replays = 0;
  };
  ReplayCounts replay_counts() const { return replay_counts_; }
  // What the executor made from parameter values (weight prep, the device's packed
  // operands) is kept while the parameters' pointers stay the same; after new values were
  // written into a parameter in place, this makes the next run remake it.
  void parameters_changed();
  // reduce-overhead on a device that captures: the replay's static input slots (one per
  // argument; empty for parameters and state, which are read in place: a call with other
  // addresses for them captures again) and output slots (empty for an output that is a state
  // argument) for calls with `syms`. Inputs written there and outputs passed as those slots
  // replay with no copies.
  absl::StatusOr<StaticSlots> static_slots(SymbolValues syms);
  // Index checks (kir::IndexCheck): the error of a gather index outside [-dim, dim) that an
  // earlier call met, read from the host copy of the check words, which every call of a
  // program with checks enqueues after its last step. With `wait`, after waiting for the
  // calls queued on `stream` (so that every call so far is seen); without, what has landed.
  // Reporting clears the words. A call reports its own error on return on a device whose
  // calls return done (the CPU); on CUDA at the next call or CompiledGraph::synchronize().
  absl::Status check_indices(void* stream, bool wait);

  struct CallPlan;

 private:
  Executor(std::shared_ptr<const Program> p, DeviceAdapter& device, Mode mode);

  // The current call's profiling: a mark before each launch (and one after the last).
  struct Profiling {
    Timeline* timeline = nullptr;
    CallProfile* out = nullptr;
  };
  absl::Status begin_launch(ProfiledLaunch launch, const CallContext& c);
  absl::Status run_profiled(CallPlan& p, const CallContext& c, CallProfile& out);

  absl::StatusOr<CallPlan*> plan_for(SymbolValues syms);
  absl::StatusOr<std::unique_ptr<CallPlan>> make_plan(SymbolValues syms);
  absl::Status check_tensor(const Tensor& t, const Program::Value& v, const std::vector<int64_t>& shape,
                            const char* what) const;
  absl::Status ensure_memory(const CallPlan& p);
  absl::Status prepare_weights(CallPlan& p, const CallContext& c, const HeldWeights* held);
  void hold(const HeldWeights* held);  // the call's held_prep_ and store
  // Every buffer's address for a call whose arguments and outputs are at `args`/`outputs`.
  void resolve(const CallPlan& p, std::span<const DevicePtr> args, std::span<const DevicePtr> outputs);
  // The current call's addresses of the arguments `which` (param_args_, in_place_args_), and
  // whether they are `kept`'s.
  std::vector<DevicePtr> ptrs(const std::vector<int>& which) const;
  bool same_ptrs(const std::vector<DevicePtr>& kept, const std::vector<int>& which) const;
  absl::Status run_kernel(const KernelStep& s, CallPlan& p, const CallContext& c);
  absl::Status run_gemm(int index, CallPlan& p, const CallContext& c);
  absl::Status run_attention(int index, CallPlan& p, const CallContext& c);
  absl::Status run_extern(int index, CallPlan& p, const CallContext& c);
  absl::Status run_collective(int index, CallPlan& p, const CallContext& c);
  absl::Status run_overlapped(int index, CallPlan& p, const CallContext& c);  // on side_, forked from c
  absl::Status join_overlapped(size_t step, absl::Status st, const CallContext& c);
  absl::Status run_step(const Step& s, CallPlan& p, const CallContext& c);
  // `overlap`: the call's steps, whose overlapped collectives run on side_ (where there is one).
  absl::Status run_steps(std::span<const Step> steps, CallPlan& p, const CallContext& c, bool overlap = false);
  absl::Status run_captured(CallPlan& p, std::span<const Tensor> args, std::span<Tensor> outputs, const CallContext& c);
  absl::Status tune(CallPlan& p, const CallContext& c);
  absl::Status allocate_static_slots(CallPlan& p);
  void drop_replays();
  absl::Status reset_checks(const CallContext& c);  // zeroes the check words (device and host copy)
  absl::Status copy_checks(const CallContext& c);   // enqueues their copy to the host after a call
  // The error of the first check whose words are set in the host copy, the words cleared; `waited`: no
  // work is queued (else it waits before reading the words it reports).
  absl::Status check_locked(void* stream, bool waited);

  std::shared_ptr<const Program> program_;
  DeviceAdapter& device_;
  Mode mode_;
  std::unique_ptr<DeviceProgram> loaded_;
  std::vector<const ExternOp*> extern_ops_;  // per Program::externs entry
  std::shared_ptr<Communicator> communicator_;
  // Overlapped collectives: the side stream (one event per collective, then one for all), and
  // those the current call forked and has not joined yet.
  std::unique_ptr<SideStream> side_;
  std::vector<int> forked_;
  std::vector<int> param_args_;     // Program::args indices of parameters
  std::vector<int> in_place_args_;  // and of parameters and state: a replay reads them in place
  bool tuned_ = false;
  double tune_ms_ = 0;
  std::vector<std::string> group_names_;
  bool ranges_ = false;  // the current call's CallOptions::ranges
  Profiling* profiling_ = nullptr;  // set during a profiled call
  int step_group_ = -1;             // the group of the step being run

  std::mutex mu_;  // one call at a time: the arena and scratch are shared
  std::map<std::vector<int64_t>, std::unique_ptr<CallPlan>> plans_;
  CallPlan* last_plan_ = nullptr;
  std::shared_ptr<MemoryPool> pool_;
  uint64_t pool_generation_ = 0;  // the pool's generation the replays were captured in
  ReplayCounts replay_counts_;
  std::vector<DeviceMemory> prep_;          // per weight-prep slot (empty for one a store holds)
  std::vector<std::string> prep_names_;     // per weight-prep slot: its value's name
  std::vector<std::vector<int>> prep_step_slots_;  // per Program::prep step: the slots it names
  std::vector<DevicePtr> held_prep_;        // per slot: the current call's store holds it there (0: not)
  uint64_t held_store_ = 0;                 // the store of the current call (0: none)
  const void* held_map_ = nullptr;          // the HeldWeights::prepared held_prep_ was read from
  uint64_t prep_store_ = 0, prep_store_generation_ = 0;  // the weights prep was made from last
  std::vector<DevicePtr> constants_;        // per buffer: resident data of Constant buffers
  bool constants_ready_ = false;            // made resident on the first call
  std::vector<DevicePtr> prep_params_;      // parameter addresses the weight prep was made from
  std::vector<std::vector<int64_t>> prep_shapes_;  // and the shapes it made
  bool prep_valid_ = false;
  uint64_t weights_generation_ = 1;
  // Program::checks: the check words on the device (sticky: zeroed only after a report), their
  // host copy (pinned on CUDA), and zeros to clear them with; null while the program has none.
  DeviceMemory checks_, checks_host_;
  DevicePtr checks_zero_ = 0;
  std::shared_ptr<const HostTensor> checks_zero_data_;
  // Scratch of the hot path, kept to allocate nothing per call.
  std::vector<DevicePtr> ptr_, step_ptrs_, arg_ptrs_, out_ptrs_;
  // The address of program buffer `b`, or 0 for an absent one (b < 0: no bias, mask, ...).
  DevicePtr ptr_or_null(int b) const { return b >= 0 ? ptr_[b] : 0; }
};

}  // namespace kiln
