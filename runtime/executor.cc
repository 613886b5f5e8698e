#include "runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>

#include "ir/checked.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/tune_store.h"

namespace kiln {

// Everything about a call that depends only on its symbol values.
struct Executor::CallPlan {
  std::vector<int64_t> syms;
  Bindings bindings;
  std::vector<int64_t> arena_offsets;
  int64_t arena_bytes = 0;
  int64_t scratch_offsets[3] = {0, 0, 0};  // of the scratch slots
  int64_t scratch_bytes = 0;
  std::vector<std::vector<int64_t>> arg_shapes, out_shapes;
  std::vector<std::vector<int64_t>> prep_shapes;  // per weight-prep slot
  std::vector<int64_t> prep_bytes;                // per weight-prep slot (at least 256)
  std::vector<int64_t> copy_bytes;                // per copy step
  std::vector<std::unique_ptr<StepPlan>> kernels;  // per program kernel (on-demand ones when first run)
  std::vector<std::unique_ptr<StepPlan>> gemms;    // per GEMM step
  std::vector<std::unique_ptr<StepPlan>> attentions;  // per attention step
  // Per extern step: its operands and results at the call's sizes (addresses set per run).
  std::vector<std::pair<std::vector<ExternTensor>, std::vector<ExternTensor>>> externs;
  // reduce-overhead: the captured steps over static slots for arguments and outputs;
  // parameters and state are read where the caller keeps them (replay_params), and a call
  // with other addresses for them captures again.
  std::unique_ptr<Replay> replay;
  std::vector<DeviceMemory> static_args, static_outputs;
  std::vector<DevicePtr> replay_params;
  uint64_t replay_store = 0;  // the weight store the replay reads (0: none)
};

namespace {

// Distinct symbol values whose call plans are kept; past it the cache starts over.
constexpr size_t kMaxPlans = 256;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

DevicePtr address(const Tensor& t) { return reinterpret_cast<DevicePtr>(t.data()); }

}  // namespace

std::string_view mode_name(Mode m) {
  switch (m) {
    case Mode::Default: return "default";
    case Mode::ReduceOverhead: return "reduce-overhead";
    case Mode::MaxAutotune: return "max-autotune";
  }
  return "?";
}

std::optional<Mode> parse_mode(std::string_view name) {
  for (Mode m : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune})
    if (mode_name(m) == name) return m;
  return std::nullopt;
}

absl::Status MemoryPool::reserve(DeviceAdapter& device, int64_t arena_bytes, int64_t scratch_bytes) {
  if (arena_.size() < arena_bytes) {
    ++generation_;
    arena_ = DeviceMemory();
    KILN_ASSIGN_OR_RETURN(arena_, device.allocate(arena_bytes));
  }
  if (scratch_.size() < scratch_bytes) {
    ++generation_;
    scratch_ = DeviceMemory();
    KILN_ASSIGN_OR_RETURN(scratch_, device.allocate(scratch_bytes));
  }
  return absl::OkStatus();
}

Executor::Executor(std::shared_ptr<const Program> p, DeviceAdapter& device, Mode mode)
    : program_(std::move(p)), device_(device), mode_(mode) {}

Executor::~Executor() { drop_replays(); }

absl::StatusOr<std::unique_ptr<Executor>> Executor::create(std::shared_ptr<const Program> p, DeviceAdapter& device,
                                                           const ExecutorOptions& opts) {
  std::unique_ptr<Executor> e(new Executor(p, device, opts.mode));
  e->group_names_ = opts.group_names;
  e->pool_ = opts.pool ? opts.pool : std::make_shared<MemoryPool>();
  KILN_RETURN_IF_ERROR(device.activate());
  KILN_ASSIGN_OR_RETURN(e->loaded_, device.load(p, LoadOptions{opts.dump}));
  for (size_t i = 0; i < p->args.size(); ++i) {
    if (p->args[i].param) e->param_args_.push_back(static_cast<int>(i));
    if (p->args[i].param || p->args[i].state) e->in_place_args_.push_back(static_cast<int>(i));
  }
  for (const ProgramBuffer& b : p->buffers)
    if (b.placement == Placement::WeightPrep) {
      if (e->prep_names_.size() <= static_cast<size_t>(b.index)) e->prep_names_.resize(b.index + 1);
      e->prep_names_[b.index] = b.name;
    }
  for (const Step& s : p->prep) {
    std::vector<int> slots;
    for (int b : p->buffers_of(s))
      if (b >= 0 && p->buffers[b].placement == Placement::WeightPrep) slots.push_back(p->buffers[b].index);
    e->prep_step_slots_.push_back(std::move(slots));
  }
  e->held_prep_.assign(e->prep_names_.size(), 0);
  for (const ExternStep& x : p->externs) {  // registered ops live as long as the process
    KILN_ASSIGN_OR_RETURN(const ExternOp* op, extern_op_for(x.name, device.target().extern_device));
    e->extern_ops_.push_back(op);
  }
  if (opts.communicator && !p->collectives.empty())
    KILN_RETURN_IF_ERROR(check_communicator(*opts.communicator, p->collectives.front().ranks,
                                            device.target().extern_device, device.target().name));
  e->communicator_ = opts.communicator;
  if (std::any_of(p->collectives.begin(), p->collectives.end(), [](const CollectiveStep& x) { return x.join >= 0; })) {
    KILN_ASSIGN_OR_RETURN(e->side_, device.side_stream(static_cast<int>(p->collectives.size()) + 1));
  }
  return e;
}

const char* Executor::strategy() const {
  if (mode_ == Mode::ReduceOverhead && device_.can_capture()) return "capture and replay";
  if (mode_ == Mode::MaxAutotune && device_.can_time()) return "tune, then launch directly";
  return "launch directly";
}

BuildStats Executor::build_stats() const {
  BuildStats s = loaded_->stats();
  const Program& p = *program_;
  s.gemms = static_cast<int>(p.gemms.size());
  for (const KernelStep& k : p.kernel_steps) s.gemms += p.kernels[k.kernel].kernel.gemm.has_value();
  s.launches = p.launches();
  s.tune_ms = tune_ms_;
  return s;
}

ExecutorMemory Executor::memory() const {
  ExecutorMemory m{pool_->arena_bytes(), pool_->scratch_bytes()};
  for (const auto& [_, p] : plans_) {
    for (const DeviceMemory& d : p->static_args) m.slots += d.size();
    for (const DeviceMemory& d : p->static_outputs) m.slots += d.size();
  }
  for (const DeviceMemory& d : prep_) m.weight_prep += d.size();
  for (const ProgramBuffer& b : program_->buffers)
    if (b.placement == Placement::Constant && b.data) m.constants += b.data->nbytes();
  return m;
}

void Executor::parameters_changed() {
  std::lock_guard<std::mutex> lock(mu_);
  prep_valid_ = false;
  ++weights_generation_;
}

absl::StatusOr<std::unique_ptr<Executor::CallPlan>> Executor::make_plan(SymbolValues syms) {
  const Program& pr = *program_;
  if (syms.size() != pr.symbols.size())
    return invalid_argument("program of ", pr.graph, ": ", syms.size(), " symbol values given, the graph has ",
                            pr.symbols.size());
  auto p = std::make_unique<CallPlan>();
  p->syms.assign(syms.begin(), syms.end());
  p->bindings = pr.bindings(syms);
  const Bindings& b = p->bindings;
  for (const auto& [sym, value] : pr.baked)
    if (auto it = b.find(sym); it != b.end() && it->second != value)
      return invalid_argument("this specialization has ", sym, " = ", value, ", the call has ", sym, " = ", it->second);
  const int64_t limit = device_.allocation_limit();
  auto shapes = [&](const std::vector<Program::Value>& values, auto& out) -> absl::Status {
    for (const Program::Value& v : values) {
      absl::StatusOr<std::vector<int64_t>> s = evaluate_shape(v.shape, b);
      if (!s.ok()) return invalid_argument("%", v.name, ": ", s.status().message());
      KILN_ASSIGN_OR_RETURN(int64_t bytes, checked_nbytes(v.dtype, *s, str_cat("%", v.name)));
      KILN_RETURN_IF_ERROR(check_allocation(bytes, limit, str_cat("%", v.name)));
      out.push_back(*std::move(s));
    }
    return absl::OkStatus();
  };
  KILN_RETURN_IF_ERROR(shapes(pr.args, p->arg_shapes));
  KILN_RETURN_IF_ERROR(shapes(pr.outputs, p->out_shapes));
  KILN_ASSIGN_OR_RETURN(Program::ArenaLayout layout, pr.arena_layout(b));
  p->arena_offsets = std::move(layout.offsets);
  p->arena_bytes = layout.bytes;
  KILN_RETURN_IF_ERROR(check_allocation(p->arena_bytes, limit, str_cat("the intermediates of ", pr.graph)));
  int64_t slot_bytes[3] = {0, 0, 0};
  for (const ProgramBuffer& buf : pr.buffers) {
    if (buf.placement != Placement::Scratch && buf.placement != Placement::WeightPrep) continue;
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(buf.shape, b));
    KILN_ASSIGN_OR_RETURN(int64_t bytes, checked_nbytes(buf.dtype, shape, "a scratch buffer"));
    KILN_RETURN_IF_ERROR(check_allocation(bytes, limit, "a scratch buffer"));
    if (buf.placement == Placement::Scratch) {
      slot_bytes[buf.index] = std::max(slot_bytes[buf.index], bytes);
    } else {
      if (p->prep_shapes.size() <= static_cast<size_t>(buf.index)) {
        p->prep_shapes.resize(buf.index + 1);
        p->prep_bytes.resize(buf.index + 1, 256);
      }
      p->prep_shapes[buf.index] = std::move(shape);
      p->prep_bytes[buf.index] = std::max<int64_t>(bytes, 256);
    }
  }
  for (int s = 0; s < 3; ++s) {
    p->scratch_offsets[s] = p->scratch_bytes;
    p->scratch_bytes += (slot_bytes[s] + 255) / 256 * 256;
  }
  for (const CopyStep& c : pr.copies) {
    KILN_ASSIGN_OR_RETURN(int64_t n, c.bytes.evaluate(b));
    p->copy_bytes.push_back(n);
  }
  p->kernels.resize(pr.kernels.size());
  for (size_t k = 0; k < pr.kernels.size(); ++k)
    if (!pr.kernels[k].on_demand) {
      KILN_ASSIGN_OR_RETURN(p->kernels[k], loaded_->plan_kernel(static_cast<int>(k), b, p->syms));
    }
  p->gemms.resize(pr.gemms.size());
  for (size_t g = 0; g < pr.gemms.size(); ++g) {
    KILN_ASSIGN_OR_RETURN(p->gemms[g], loaded_->plan_gemm(static_cast<int>(g), b));
  }
  p->attentions.resize(pr.attentions.size());
  for (size_t a = 0; a < pr.attentions.size(); ++a) {
    KILN_ASSIGN_OR_RETURN(p->attentions[a], loaded_->plan_attention(static_cast<int>(a), b));
  }
  for (const ExternStep& x : pr.externs) {
    auto& [in, out] = p->externs.emplace_back();
    for (auto [bufs, tensors] : {std::pair{&x.inputs, &in}, std::pair{&x.outputs, &out}})
      for (int i : *bufs) {
        KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(pr.buffers[i].shape, b));
        tensors->push_back({nullptr, pr.buffers[i].dtype, std::move(shape)});
      }
  }
  return p;
}

absl::StatusOr<Executor::CallPlan*> Executor::plan_for(SymbolValues syms) {
  if (last_plan_ && std::equal(syms.begin(), syms.end(), last_plan_->syms.begin(), last_plan_->syms.end()))
    return last_plan_;
  std::vector<int64_t> key(syms.begin(), syms.end());
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    KILN_ASSIGN_OR_RETURN(std::unique_ptr<CallPlan> p, make_plan(syms));
    if (plans_.size() >= kMaxPlans) {
      drop_replays();
      plans_.clear();
    }
    it = plans_.emplace(std::move(key), std::move(p)).first;
  }
  last_plan_ = it->second.get();
  return last_plan_;
}

void Executor::drop_replays() {
  for (auto& [_, p] : plans_) p->replay.reset();
}

absl::Status Executor::ensure_memory(const CallPlan& p) {
  // Growing the pool (here or by another executor sharing it) frees the old memory and with
  // it every captured replay, which holds its addresses.
  absl::Status s = pool_->reserve(device_, p.arena_bytes, p.scratch_bytes);
  if (pool_->generation() != pool_generation_) {
    drop_replays();
    pool_generation_ = pool_->generation();
  }
  return s;
}

void Executor::resolve(const CallPlan& p, std::span<const DevicePtr> args, std::span<const DevicePtr> outputs) {
  const std::vector<ProgramBuffer>& bufs = program_->buffers;
  ptr_.resize(bufs.size());
  for (size_t i = 0; i < bufs.size(); ++i) {
    const ProgramBuffer& b = bufs[i];
    switch (b.placement) {
      case Placement::Argument: ptr_[i] = args[b.index]; break;
      case Placement::Constant: ptr_[i] = constants_[i]; break;
      // Before the first weight prep (which resolves again) its memory does not exist yet.
      case Placement::WeightPrep:
        ptr_[i] = held_prep_[b.index] ? held_prep_[b.index]
                  : static_cast<size_t>(b.index) < prep_.size() ? prep_[b.index].ptr() : 0;
        break;
      case Placement::Arena: ptr_[i] = pool_->arena() + p.arena_offsets[b.index]; break;
      case Placement::Scratch: ptr_[i] = pool_->scratch() + p.scratch_offsets[b.index]; break;
      case Placement::Output: ptr_[i] = outputs[b.index]; break;
      case Placement::Check: ptr_[i] = checks_.ptr() + 16 * b.index; break;
    }
  }
}

std::vector<DevicePtr> Executor::ptrs(const std::vector<int>& which) const {
  std::vector<DevicePtr> out;
  for (int i : which) out.push_back(arg_ptrs_[i]);
  return out;
}

bool Executor::same_ptrs(const std::vector<DevicePtr>& kept, const std::vector<int>& which) const {
  if (kept.size() != which.size()) return false;
  for (size_t k = 0; k < kept.size(); ++k)
    if (kept[k] != arg_ptrs_[which[k]]) return false;
  return true;
}

absl::Status Executor::run_kernel(const KernelStep& s, CallPlan& p, const CallContext& c) {
  std::unique_ptr<StepPlan>& plan = p.kernels[s.kernel];
  if (!plan) {  // an on-demand kernel, first needed by this plan
    KILN_ASSIGN_OR_RETURN(plan, loaded_->plan_kernel(s.kernel, p.bindings, p.syms));
  }
  step_ptrs_.clear();
  for (int b : s.buffers) step_ptrs_.push_back(ptr_[b]);
  if (profiling_) KILN_RETURN_IF_ERROR(begin_launch({.kind = ProfiledLaunch::Kind::Kernel, .kernel = &s}, c));
  return loaded_->launch(s.kernel, *plan, step_ptrs_, c);
}

absl::Status Executor::run_gemm(int index, CallPlan& p, const CallContext& c) {
  const GemmStep& g = program_->gemms[index];
  if (g.gather_a) KILN_RETURN_IF_ERROR(run_kernel(*g.gather_a, p, c));
  if (g.gather_b) KILN_RETURN_IF_ERROR(run_kernel(*g.gather_b, p, c));
  // A library call that declines (its fallback kernel runs next) profiles as a launch of ~0 ms.
  if (profiling_) KILN_RETURN_IF_ERROR(begin_launch({.kind = ProfiledLaunch::Kind::Library, .gemm = &g}, c));
  KILN_ASSIGN_OR_RETURN(bool ran,
                        loaded_->run_gemm(index, *p.gemms[index], ptr_[g.a], ptr_[g.b], ptr_[g.c],
                                          ptr_or_null(g.bias), ptr_or_null(g.residual), c));
  if (!ran) {
    if (!g.fallback)
      return absl::InternalError(str_cat("GEMM of group ", g.group, ": the library cannot run it and it has no fallback"));
    return run_kernel(*g.fallback, p, c);
  }
  if (g.epilogue) return run_kernel(*g.epilogue, p, c);
  return absl::OkStatus();
}

absl::Status Executor::run_attention(int index, CallPlan& p, const CallContext& c) {
  const AttentionStep& a = program_->attentions[index];
  step_ptrs_.clear();
  for (int b : {a.q, a.k, a.v, a.out, a.mask, a.kv_lens, a.block_table}) step_ptrs_.push_back(ptr_or_null(b));
  if (profiling_)
    KILN_RETURN_IF_ERROR(begin_launch(
        {.kind = ProfiledLaunch::Kind::Attention, .attention = &a, .library = p.attentions[index]->library()}, c));
  return loaded_->run_attention(index, *p.attentions[index], step_ptrs_, c);
}

// The registered function on the call's buffers: cuda on the call's stream (inside the
// capture under reduce-overhead), cpu between the CPU's kernels.
absl::Status Executor::run_extern(int index, CallPlan& p, const CallContext& c) {
  const ExternStep& x = program_->externs[index];
  auto& [in, out] = p.externs[index];
  for (size_t i = 0; i < in.size(); ++i) in[i].data = reinterpret_cast<void*>(ptr_[x.inputs[i]]);
  for (size_t i = 0; i < out.size(); ++i) out[i].data = reinterpret_cast<void*>(ptr_[x.outputs[i]]);
  if (profiling_) KILN_RETURN_IF_ERROR(begin_launch({.kind = ProfiledLaunch::Kind::Extern, .extern_step = &x}, c));
  const ExternOp& op = *extern_ops_[index];
  absl::Status s = device_.target().extern_device == ExternDevice::Cuda ? op.cuda(in, out, c.stream) : op.cpu(in, out);
  return s.ok() ? s : prefix_error(s, "extern op \"", x.name, "\": ");
}

// The communicator's call on the call's buffers (on its stream, inside the capture under
// reduce-overhead). Every rank reaches it at the same point of the same call.
absl::Status Executor::run_collective(int index, CallPlan& p, const CallContext& c) {
  const CollectiveStep& x = program_->collectives[index];
  if (!communicator_) return invalid_argument(op_name(x.op), ": no communicator (CompileOptions::communicator)");
  KILN_ASSIGN_OR_RETURN(int64_t count, x.count.evaluate(p.bindings));
  if (profiling_) KILN_RETURN_IF_ERROR(begin_launch({.kind = ProfiledLaunch::Kind::Collective, .collective = &x}, c));
  return call_collective(*communicator_, x.op, reinterpret_cast<const void*>(ptr_[x.input]),
                         reinterpret_cast<void*>(ptr_[x.output]), count, x.dtype, c.stream);
}

absl::Status Executor::run_step(const Step& s, CallPlan& p, const CallContext& c) {
  switch (s.kind) {
    case Step::Kind::Kernel: return run_kernel(program_->kernel_steps[s.index], p, c);
    case Step::Kind::Gemm: return run_gemm(s.index, p, c);
    case Step::Kind::Attention: return run_attention(s.index, p, c);
    case Step::Kind::Extern: return run_extern(s.index, p, c);
    case Step::Kind::Collective: return run_collective(s.index, p, c);
    case Step::Kind::Copy: {
      const CopyStep& cp = program_->copies[s.index];
      int64_t bytes = p.copy_bytes[s.index];
      if (bytes == 0) return absl::OkStatus();
      if (profiling_)
        KILN_RETURN_IF_ERROR(begin_launch({.kind = ProfiledLaunch::Kind::Copy, .copy = &cp, .copy_bytes = bytes}, c));
      return device_.copy(ptr_[cp.dst], ptr_[cp.src], bytes, c);
    }
  }
  return absl::OkStatus();
}

absl::Status Executor::begin_launch(ProfiledLaunch launch, const CallContext& c) {
  launch.group = step_group_;
  KILN_RETURN_IF_ERROR(profiling_->timeline->mark(c));
  profiling_->out->launches.push_back(launch);
  return absl::OkStatus();
}

// Launches directly, with a mark before each launch and one after the last: launch i took
// the time between marks i and i + 1.
absl::Status Executor::run_profiled(CallPlan& p, const CallContext& c, CallProfile& out) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Timeline> timeline, device_.timeline());
  out = CallProfile{program_, p.bindings, {}, 0};
  Profiling prof{timeline.get(), &out};
  profiling_ = &prof;
  absl::Status s = run_steps(program_->steps, p, c);
  if (s.ok()) s = timeline->mark(c);
  profiling_ = nullptr;
  KILN_RETURN_IF_ERROR(s);
  KILN_ASSIGN_OR_RETURN(std::vector<double> ms, timeline->read());
  if (ms.size() != out.launches.size() + 1)
    return absl::InternalError(str_cat("profile: ", ms.size(), " marks for ", out.launches.size(), " launches"));
  for (size_t i = 0; i < out.launches.size(); ++i) out.launches[i].ms = ms[i + 1] - ms[i];
  out.ms = ms.back();
  return absl::OkStatus();
}

void Executor::hold(const HeldWeights* held) {
  if (!held) {
    if (held_store_ != 0) std::fill(held_prep_.begin(), held_prep_.end(), 0);
    held_store_ = 0;
    held_map_ = nullptr;
    return;
  }
  if (held->store == held_store_ && held->prepared == held_map_) return;
  for (size_t i = 0; i < held_prep_.size(); ++i) {
    auto it = held->prepared->find(prep_names_[i]);
    held_prep_[i] = it == held->prepared->end() ? 0 : it->second;
  }
  held_store_ = held->store;
  held_map_ = held->prepared;
}

// Weight-prep results are remade when the parameters they read move, their shapes change, or
// (from a store) the store's values change. Results the store holds are not made at all.
absl::Status Executor::prepare_weights(CallPlan& p, const CallContext& c, const HeldWeights* held) {
  uint64_t store = held ? held->store : 0, generation = held ? held->generation : 0;
  if (store != prep_store_ || generation != prep_store_generation_) {
    // Other weights, or new values in the store at the same addresses: what was made from them
    // (weight prep, the device's packed operands) is stale.
    prep_valid_ = false;
    ++weights_generation_;
    prep_store_ = store;
    prep_store_generation_ = generation;
  }
  if (program_->prep.empty()) return absl::OkStatus();
  if (prep_valid_ && (held || same_ptrs(prep_params_, param_args_)) && p.prep_shapes == prep_shapes_)
    return absl::OkStatus();
  prep_.resize(p.prep_bytes.size());
  bool moved = false;
  for (size_t i = 0; i < prep_.size(); ++i) {
    if (held_prep_[i]) {  // the store holds it: no copy of the executor's
      if (prep_[i].size() > 0) {
        drop_replays();
        prep_[i] = DeviceMemory();
      }
      continue;
    }
    if (prep_[i].size() < p.prep_bytes[i]) {
      drop_replays();
      prep_[i] = DeviceMemory();
      KILN_ASSIGN_OR_RETURN(prep_[i], device_.allocate(p.prep_bytes[i]));
      moved = true;
    }
  }
  if (moved) resolve(p, arg_ptrs_, out_ptrs_);
  for (size_t k = 0; k < program_->prep.size(); ++k) {
    const std::vector<int>& slots = prep_step_slots_[k];
    bool held_all = !slots.empty() && std::all_of(slots.begin(), slots.end(), [&](int s) { return held_prep_[s] != 0; });
    if (held_all) continue;
    KILN_RETURN_IF_ERROR(run_steps(std::span<const Step>(&program_->prep[k], 1), p, c));
  }
  prep_params_ = ptrs(param_args_);
  prep_shapes_ = p.prep_shapes;
  prep_valid_ = true;
  ++weights_generation_;
  return absl::OkStatus();
}

absl::Status Executor::run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                           const CallOptions& opts, Checked checked, const HeldWeights* held) {
  std::lock_guard<std::mutex> lock(mu_);
  const Program& pr = *program_;
  if (args.size() != pr.args.size())
    return invalid_argument("program of ", pr.graph, ": ", args.size(), " arguments given, the graph takes ", pr.args.size());
  if (outputs.size() != pr.outputs.size())
    return invalid_argument("program of ", pr.graph, ": ", outputs.size(), " output slots given, the graph has ",
                            pr.outputs.size());
  KILN_RETURN_IF_ERROR(device_.activate());
  if (!constants_ready_) {
    constants_.assign(pr.buffers.size(), 0);
    for (size_t b = 0; b < pr.buffers.size(); ++b)
      if (pr.buffers[b].placement == Placement::Constant) {
        KILN_ASSIGN_OR_RETURN(constants_[b], device_.resident(pr.buffers[b].data));
      }
    constants_ready_ = true;
  }
  if (!pr.checks.empty() && checks_.size() == 0) {
    int64_t bytes = 16 * static_cast<int64_t>(pr.checks.size());
    KILN_ASSIGN_OR_RETURN(checks_, device_.allocate(bytes));
    KILN_ASSIGN_OR_RETURN(checks_host_, device_.allocate_host(bytes));
    KILN_RETURN_IF_ERROR(reset_checks(CallContext{opts.stream}));
  }
  KILN_ASSIGN_OR_RETURN(CallPlan * p, plan_for(syms));
  if (held && (!held->params || held->params->size() != pr.args.size() || !held->prepared))
    return absl::InternalError(str_cat("program of ", pr.graph, ": the weight store's parameter list does not match its ",
                                       pr.args.size(), " arguments"));
  if (checked == Checked::No) {
    for (size_t i = 0; i < args.size(); ++i)
      if (!held || !pr.args[i].param) KILN_RETURN_IF_ERROR(check_tensor(args[i], pr.args[i], p->arg_shapes[i], "argument"));
    for (size_t j = 0; j < outputs.size(); ++j)
      if (outputs[j].data() != nullptr)
        KILN_RETURN_IF_ERROR(check_tensor(outputs[j], pr.outputs[j], p->out_shapes[j], "output"));
  }
  KILN_RETURN_IF_ERROR(ensure_memory(*p));
  for (size_t j = 0; j < outputs.size(); ++j) {
    int s = pr.outputs[j].state_arg;
    if (s < 0) continue;
    if (outputs[j].data() != nullptr && outputs[j].data() != args[s].data())
      return invalid_argument("output %", pr.outputs[j].name, " is state argument %", pr.args[s].name,
                              " after the call: pass it empty or as that argument's tensor");
    outputs[j] = args[s];
  }
  for (size_t j = 0; j < outputs.size(); ++j)
    if (outputs[j].data() == nullptr) {
      KILN_ASSIGN_OR_RETURN(outputs[j], device_.empty(pr.outputs[j].dtype, p->out_shapes[j]));
    }
  arg_ptrs_.clear();
  for (size_t i = 0; i < args.size(); ++i) arg_ptrs_.push_back(held && pr.args[i].param ? (*held->params)[i] : address(args[i]));
  out_ptrs_.clear();
  for (const Tensor& t : outputs) out_ptrs_.push_back(address(t));
  CallContext c{opts.stream, weights_generation_};
  hold(held);
  resolve(*p, arg_ptrs_, out_ptrs_);
  KILN_RETURN_IF_ERROR(prepare_weights(*p, c, held));
  c.weights_generation = weights_generation_;
  ranges_ = opts.ranges;
  if (opts.profile) *opts.profile = CallProfile{program_, p->bindings, {}, 0};
  if (mode_ == Mode::MaxAutotune && device_.can_time() && !tuned_) {
    KILN_RETURN_IF_ERROR(tune(*p, c));
    tuned_ = true;
  } else if (opts.profile) {
    KILN_RETURN_IF_ERROR(run_profiled(*p, c, *opts.profile));
  } else if (mode_ == Mode::ReduceOverhead && device_.can_capture()) {
    return run_captured(*p, args, outputs, c);  // its replay copies the check words, and checks them
  } else {
    KILN_RETURN_IF_ERROR(run_steps(pr.steps, *p, c, true));
  }
  if (pr.checks.empty()) return absl::OkStatus();
  KILN_RETURN_IF_ERROR(copy_checks(c));
  return check_locked(c.stream, false);
}

// ---- index checks ---------------------------------------------------------------------
// The check words stay on the device across calls and are cleared only after a report, so a
// copy read before it lands shows an earlier call's state, never a false report: reading the
// host copy needs no wait, and an error seen there is confirmed after one.

absl::StatusOr<DeviceMemory> DeviceAdapter::allocate_host(int64_t bytes) {
  auto owned = std::shared_ptr<uint8_t[]>(new uint8_t[std::max<int64_t>(bytes, 1)]());
  return DeviceMemory(reinterpret_cast<DevicePtr>(owned.get()), bytes, owned);
}

absl::Status DeviceAdapter::copy_to_host(void* dst, DevicePtr src, int64_t bytes, const CallContext&) {
  std::memcpy(dst, reinterpret_cast<const void*>(src), bytes);
  return absl::OkStatus();
}

absl::Status Executor::reset_checks(const CallContext& c) {
  int64_t bytes = checks_.size();
  if (!checks_zero_) {
    checks_zero_data_ = std::make_shared<HostTensor>(DType::i64, std::vector<int64_t>{bytes / 8});
    KILN_ASSIGN_OR_RETURN(checks_zero_, device_.resident(checks_zero_data_));
  }
  KILN_RETURN_IF_ERROR(device_.copy(checks_.ptr(), checks_zero_, bytes, c));
  std::memset(reinterpret_cast<void*>(checks_host_.ptr()), 0, bytes);
  return absl::OkStatus();
}

absl::Status Executor::copy_checks(const CallContext& c) {
  return device_.copy_to_host(reinterpret_cast<void*>(checks_host_.ptr()), checks_.ptr(), checks_.size(), c);
}

absl::Status Executor::check_indices(void* stream, bool wait) {
  std::lock_guard<std::mutex> lock(mu_);
  if (checks_.size() == 0) return absl::OkStatus();
  if (wait) KILN_RETURN_IF_ERROR(device_.synchronize(stream));
  return check_locked(stream, wait);
}

absl::Status Executor::check_locked(void* stream, bool waited) {
  if (checks_.size() == 0) return absl::OkStatus();
  const volatile int64_t* words = reinterpret_cast<const volatile int64_t*>(checks_host_.ptr());
  size_t fired = program_->checks.size();
  for (size_t i = 0; i < program_->checks.size() && fired == program_->checks.size(); ++i)
    if (words[2 * i] != 0) fired = i;
  if (fired == program_->checks.size()) return absl::OkStatus();
  if (!waited) KILN_RETURN_IF_ERROR(device_.synchronize(stream));  // the whole copy has landed
  const int64_t report[2] = {words[2 * fired], words[2 * fired + 1]};
  KILN_RETURN_IF_ERROR(reset_checks(CallContext{stream}));
  KILN_RETURN_IF_ERROR(device_.synchronize(stream));
  return kir::index_check_error(program_->checks[fired], report);
}

absl::Status Executor::check_tensor(const Tensor& t, const Program::Value& v, const std::vector<int64_t>& shape,
                                    const char* what) const {
  if (t.device() != device_.device())
    return invalid_argument(what, " %", v.name, " is on ", device_name(t.device()), "; the graph was compiled for ",
                            device_name(device_.device()));
  if (t.dtype() != v.dtype || t.shape() != shape)
    return invalid_argument(what, " %", v.name, " expects ", dtype_name(v.dtype), fmt::format("{}", shape), ", got ",
                            t.type_string());
  if (!t.is_contiguous()) return invalid_argument(what, " %", v.name, " must be contiguous");
  if (t.numel() > 0 && !t.data()) return invalid_argument(what, " %", v.name, " has no memory");
  return absl::OkStatus();
}

absl::Status Executor::allocate_static_slots(CallPlan& p) {
  if (!p.static_args.empty() || !p.static_outputs.empty()) return absl::OkStatus();
  for (size_t i = 0; i < program_->args.size(); ++i) {
    const Program::Value& a = program_->args[i];
    int64_t bytes = a.param || a.state ? 0 : numel(p.arg_shapes[i]) * dtype_size(a.dtype);
    KILN_ASSIGN_OR_RETURN(DeviceMemory slot, device_.allocate(std::max<int64_t>(256, bytes)));
    p.static_args.push_back(std::move(slot));
  }
  for (size_t j = 0; j < program_->outputs.size(); ++j) {
    const Program::Value& o = program_->outputs[j];
    int64_t bytes = o.state_arg >= 0 ? 0 : numel(p.out_shapes[j]) * dtype_size(o.dtype);
    KILN_ASSIGN_OR_RETURN(DeviceMemory slot, device_.allocate(std::max<int64_t>(256, bytes)));
    p.static_outputs.push_back(std::move(slot));
  }
  return absl::OkStatus();
}

// reduce-overhead: arguments copied into static slots, the captured steps replayed, results
// copied out; a caller that uses the slots themselves (static_slots) copies nothing.
absl::Status Executor::run_captured(CallPlan& p, std::span<const Tensor> args, std::span<Tensor> outputs,
                                    const CallContext& c) {
  if (p.replay && (p.replay_store != held_store_ || !same_ptrs(p.replay_params, in_place_args_))) p.replay.reset();
  if (!p.replay) KILN_RETURN_IF_ERROR(allocate_static_slots(p));
  // The slots are filled before a capture: capturing runs the steps once for real first, and
  // with state that run writes the caller's cache, so it must see this call's inputs.
  for (size_t i = 0; i < args.size(); ++i) {
    if (program_->args[i].param || program_->args[i].state) continue;
    int64_t bytes = args[i].numel() * dtype_size(args[i].dtype());
    if (arg_ptrs_[i] != p.static_args[i].ptr() && bytes > 0)
      KILN_RETURN_IF_ERROR(device_.copy(p.static_args[i].ptr(), arg_ptrs_[i], bytes, c));
  }
  if (!p.replay) {
    std::vector<DevicePtr> in, out;
    for (size_t i = 0; i < args.size(); ++i) {
      const Program::Value& a = program_->args[i];
      in.push_back(a.param || a.state ? arg_ptrs_[i] : p.static_args[i].ptr());
    }
    for (const DeviceMemory& m : p.static_outputs) out.push_back(m.ptr());
    resolve(p, in, out);
    KILN_ASSIGN_OR_RETURN(p.replay, device_.capture([&](const CallContext& cc) {
      CallContext inner = cc;
      inner.weights_generation = c.weights_generation;
      KILN_RETURN_IF_ERROR(run_steps(program_->steps, p, inner, true));
      return program_->checks.empty() ? absl::OkStatus() : copy_checks(inner);  // replayed with the steps
    }));
    p.replay_params = ptrs(in_place_args_);
    p.replay_store = held_store_;
    ++replay_counts_.captures;
  } else {
    ++replay_counts_.replays;
  }
  KILN_RETURN_IF_ERROR(p.replay->launch(c.stream));
  for (size_t j = 0; j < outputs.size(); ++j) {
    int64_t bytes = outputs[j].numel() * dtype_size(outputs[j].dtype());
    if (bytes > 0 && program_->outputs[j].state_arg < 0 && out_ptrs_[j] != p.static_outputs[j].ptr())
      KILN_RETURN_IF_ERROR(device_.copy(out_ptrs_[j], p.static_outputs[j].ptr(), bytes, c));
  }
  return check_locked(c.stream, false);
}

absl::StatusOr<StaticSlots> Executor::static_slots(SymbolValues syms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (mode_ != Mode::ReduceOverhead || !device_.can_capture())
    return absl::FailedPreconditionError(str_cat("static slots exist only for CUDA graphs (reduce-overhead on a device "
                                                 "that captures its launches); this graph was compiled in ",
                                                 mode_name(mode_), " mode for ", device_name(device_.device())));
  KILN_RETURN_IF_ERROR(device_.activate());
  KILN_ASSIGN_OR_RETURN(CallPlan * p, plan_for(syms));
  KILN_RETURN_IF_ERROR(allocate_static_slots(*p));
  StaticSlots s;
  DeviceId dev = device_.device();
  for (size_t i = 0; i < program_->args.size(); ++i) {
    const Program::Value& a = program_->args[i];
    if (a.param || a.state) {
      s.inputs.emplace_back();
      continue;
    }
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::wrap(reinterpret_cast<void*>(p->static_args[i].ptr()), a.dtype,
                                                 p->arg_shapes[i], {}, dev));
    s.inputs.push_back(std::move(t));
  }
  for (size_t j = 0; j < program_->outputs.size(); ++j) {
    if (program_->outputs[j].state_arg >= 0) {
      s.outputs.emplace_back();
      continue;
    }
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::wrap(reinterpret_cast<void*>(p->static_outputs[j].ptr()),
                                                 program_->outputs[j].dtype, p->out_shapes[j], {}, dev));
    s.outputs.push_back(std::move(t));
  }
  return s;
}

namespace {

// Tries every candidate of `t` (or restores the tune store's choice) and keeps the fastest.
absl::Status tune_step(Tunable& t, DeviceAdapter& device, const std::function<absl::Status()>& run,
                       const CallContext& c) {
  std::string key = t.key();
  if (std::optional<std::string> known = TuneStore::instance().get(key); known && t.restore(*known))
    return absl::OkStatus();
  std::vector<double> ms(t.candidates(), -1);
  int best = -1;
  for (int i = 0; i < t.candidates(); ++i) {
    KILN_RETURN_IF_ERROR(t.select(i));
    absl::StatusOr<double> time = device.time_ms(run, c);
    if (!time.ok()) continue;  // a candidate that fails at these sizes is not one
    ms[i] = *time;
    if (best < 0 || ms[i] < ms[best]) best = i;
  }
  if (best < 0) return absl::InternalError(str_cat("max-autotune: no candidate of ", key, " ran"));
  KILN_RETURN_IF_ERROR(t.select(best));
  TuneStore::instance().put(key, t.choice(), t.note(ms, best));
  return absl::OkStatus();
}

}  // namespace

// Runs the steps in order (later steps need earlier results), and before each one that can
// safely run twice, tries the device's choices for it and keeps the fastest.
absl::Status Executor::tune(CallPlan& p, const CallContext& c) {
  auto t0 = std::chrono::steady_clock::now();
  for (const Step& step : program_->steps) {
    std::unique_ptr<Tunable> t;
    std::function<absl::Status()> run;
    if (step.kind == Step::Kind::Kernel) {
      const KernelStep& k = program_->kernel_steps[step.index];
      if (!k.in_place()) {
        KILN_ASSIGN_OR_RETURN(t, loaded_->tunable_kernel(k.kernel, *p.kernels[k.kernel], p.bindings, p.syms));
        run = [&] { return run_kernel(k, p, c); };
      }
    } else if (step.kind == Step::Kind::Gemm) {
      KILN_ASSIGN_OR_RETURN(t, loaded_->tunable_gemm(step.index, *p.gemms[step.index]));
      run = [&] { return run_gemm(step.index, p, c); };
    } else if (step.kind == Step::Kind::Attention) {  // reads q, k, v (and the cache), writes out
      KILN_ASSIGN_OR_RETURN(t, loaded_->tunable_attention(step.index, *p.attentions[step.index]));
      run = [&] { return run_attention(step.index, p, c); };
    }
    if (t) KILN_RETURN_IF_ERROR(tune_step(*t, device_, run, c));
    KILN_RETURN_IF_ERROR(run_steps(std::span<const Step>(&step, 1), p, c));
  }
  tune_ms_ += ms_since(t0);
  return absl::OkStatus();
}

}  // namespace kiln
