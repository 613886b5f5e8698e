#include "runtime/cuda/backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "codegen/cuda/emit.h"
#include "ir/str.h"
#include "passes/builder.h"
#include "runtime/cublaslt.h"
#include "runtime/cuda/allocator.h"
#include "runtime/cuda/autotune.h"
#include "runtime/cuda/plan.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"
#include "ir/status.h"

namespace kiln::cuda {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Where a buffer lives during a call.
struct Loc {
  enum class Kind : uint8_t {
    Arg,      // runtime argument `index`
    Const,    // parameter data (or a constant) uploaded once: consts_[index]
    Prep,     // result of a weight-prep group: prep_[index]
    Arena,    // planned buffer `index` of the memory plan
    Output,   // graph output `index`
    Scratch,  // GEMM scratch region `index`: 0 the f32 accumulator, 1 and 2 gathered A and B
  };
  Kind kind = Kind::Arena;
  int index = 0;
};

// Concrete values of the symbolic quantities of one step, for the symbol values of a call.
struct KernelCall {
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  bool skip = false;        // no work at these sizes
  bool vector_dims = false;  // the vector entry's divisibility conditions hold
  std::vector<CUdeviceptr> ptrs;
  std::vector<long long> syms;
  int stream_l2 = 0;          // the kernel's data exceed the L2 cache (CudaKernel::bytes)
  std::vector<void*> params;  // into ptrs, syms and stream_l2
};

struct KernelStep {
  CudaKernel meta;
  CUfunction scalar = nullptr, vector = nullptr;
  std::vector<Loc> buffers;
  std::vector<int> sym_slots;  // module symbol slot of each dynamic symbol parameter
  bool in_place = false;       // an output shares storage with an input: not re-runnable
  // Launch shape: threads per block (elementwise, stages) or per row (rows); 0: heuristic.
  int threads = 0;
  std::string tune_key;
};

// C = A x B through cuBLASLt, with the operands' layouts as symbolic strides.
struct GemmStep {
  int group = 0;
  GemmLayout layout;
  Loc a, b, c, bias;
  std::optional<KernelStep> epilogue_kernel;  // reads the f32 accumulator from Scratch
  std::optional<KernelStep> copy_a, copy_b;   // gather an operand into Scratch first
  std::optional<KernelStep> naive;            // compiled on demand
  std::map<std::vector<int64_t>, std::unique_ptr<GemmPlan>> plans;  // by concrete spec
};

struct GemmCall {
  GemmPlan* plan = nullptr;  // null: the naive kernel runs instead
  bool skip = false;
  int64_t a_off = 0, b_off = 0;  // bytes
  int alignment = 256;           // the pointer alignment the plan assumes
  KernelCall epilogue, naive, copy_a, copy_b;
};

struct CopyStep {
  Loc src, dst;
  Dim bytes;
};

struct Step {
  enum class Kind : uint8_t { Kernel, Gemm, Copy };
  Kind kind;
  int index;  // into kernels_, gemms_ or copies_
};

// Everything about a call that depends only on its symbol values.
struct CallPlan {
  std::vector<int64_t> syms;
  ArenaLayout layout;
  int64_t scratch_bytes = 0;
  int64_t scratch_offsets[3] = {0, 0, 0};  // of the Scratch regions
  std::vector<std::vector<int64_t>> out_shapes;
  std::vector<int64_t> prep_bytes;
  std::vector<KernelCall> kernels;  // parallel to kernels_
  std::vector<GemmCall> gemms;      // parallel to gemms_
  std::vector<int64_t> copy_bytes;  // parallel to copies_
  // reduce-overhead: the captured launch sequence over static slots for inputs and outputs;
  // parameters are read where the caller keeps them (graph_params), and a call with other
  // parameter pointers captures again.
  CUgraphExec graph = nullptr;
  std::vector<DeviceBuffer> static_args, static_outputs;
  std::vector<CUdeviceptr> graph_params;
};

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Whether the call runs a row-cached vector kernel written for one blockDim.x (row_threads).
bool fixed_launch(const CudaKernel& k, const KernelCall& call) { return call.vector_dims && k.row_threads > 0; }

class CudaBackend;

class CudaExecutable : public Executable {
 public:
  CudaExecutable(CudaBackend& backend, std::shared_ptr<const CompiledModule> m, BuildOptions opts)
      : backend_(backend), m_(std::move(m)), opts_(std::move(opts)) {}
  ~CudaExecutable() override;

  absl::Status build();
  absl::Status run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                   const CallOptions& opts) override;
  const BuildStats& build_stats() const override { return stats_; }
  void parameters_changed() override { prep_params_.clear(); }
  absl::StatusOr<StaticSlots> static_slots(SymbolValues syms) override;

 private:
  template <typename... A>
  absl::Status err(const A&... parts) const {
    return absl::InternalError(str_cat(parts...));
  }

  absl::StatusOr<Loc> loc_of(const Value* v, bool written) const;
  absl::StatusOr<KernelStep> kernel_step(CudaKernel meta, const kir::Kernel& k, const std::vector<Loc>& extra);
  absl::Status make_naive(GemmStep& g);  // the fallback when cuBLASLt cannot run a shape
  absl::Status compile(std::vector<KernelStep*> steps);
  absl::StatusOr<CallPlan*> plan_for(SymbolValues syms);
  absl::Status plan_kernel(const KernelStep& s, const Bindings& b, SymbolValues syms, KernelCall& call,
                           bool allow_vector = true) const;
  absl::Status plan_gemm(GemmStep& g, const Bindings& b, SymbolValues syms, GemmCall& call);
  absl::Status ensure_capacity(const CallPlan& p);
  absl::Status allocate_static_slots(CallPlan& p);
  void drop_graphs();

  // Base pointers of the current call.
  struct Bases {
    std::span<const Tensor> args;
    std::span<Tensor> outputs;
    std::vector<CUdeviceptr> static_args, static_outputs;  // reduce-overhead slots
  };
  CUdeviceptr ptr(const Loc& l, const CallPlan& p, const Bases& b) const;
  absl::Status launch_kernel(const KernelStep& s, KernelCall& c, const CallPlan& p, const Bases& b, CUstream st);
  absl::Status run_gemm(GemmStep& g, GemmCall& c, const CallPlan& p, const Bases& b, CUstream st);
  absl::Status run_steps(CallPlan& p, const Bases& b, CUstream st, std::span<const Step> steps);
  absl::Status tune(CallPlan& p, const Bases& b, CUstream st);

  CudaBackend& backend_;
  std::shared_ptr<const CompiledModule> m_;
  BuildOptions opts_;
  BuildStats stats_;
  Context* ctx_ = nullptr;

  absl::flat_hash_map<const Value*, int> planned_;   // value -> memory plan buffer
  absl::flat_hash_map<const Value*, int> prep_of_;   // weight-prep value -> prep slot
  std::vector<const Value*> prep_values_;
  std::vector<KernelStep> kernels_;  // stable addresses: reserved before filling
  std::vector<GemmStep> gemms_;
  std::vector<CopyStep> copies_;
  std::vector<Step> steps_, prep_steps_;
  std::vector<Module> modules_;

  std::map<std::vector<int64_t>, std::unique_ptr<CallPlan>> plans_;
  CallPlan* last_plan_ = nullptr;
  DeviceBuffer arena_, scratch_;
  std::vector<DeviceBuffer> prep_;
  std::vector<CUdeviceptr> prep_params_;  // parameter pointers the prep results were made from
  std::vector<int64_t> prep_syms_;
  bool tuned_ = false;
  std::optional<Stream> capture_stream_;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(int device, Context* ctx, std::unique_ptr<CublasLt> lt)
      : device_(device), ctx_(ctx), lt_(std::move(lt)) {}
  DeviceId device() const override { return DeviceId::cuda(device_); }

  absl::StatusOr<std::unique_ptr<Executable>> build(std::shared_ptr<const CompiledModule> module,
                                                    const BuildOptions& opts) override {
    KILN_RETURN_IF_ERROR(ctx_->make_current());
    auto exe = std::make_unique<CudaExecutable>(*this, std::move(module), opts);
    KILN_RETURN_IF_ERROR(exe->build());
    return exe;
  }

  // Device copies of parameter data and constants, uploaded once per compiled graph.
  absl::StatusOr<int> const_slot(const Value* v) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = const_index_.find(v); it != const_index_.end()) return it->second;
    HostTensor host;
    if (v->is_param() && v->data()) {
      host = *v->data();
    } else if (std::optional<double> c = constant_value(v)) {
      host = HostTensor(v->dtype(), {});
      host.set(0, *c);
    } else {
      return absl::InternalError(str_cat("%", v->name(), " has no host data to upload"));
    }
    KILN_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*ctx_, std::max<int64_t>(host.nbytes(), 1)));
    KILN_RETURN_IF_ERROR(buf.copy_from_host(host.data(), host.nbytes()));
    consts_.push_back(std::move(buf));
    const_index_[v] = static_cast<int>(consts_.size()) - 1;
    return const_index_[v];
  }
  CUdeviceptr const_ptr(int slot) const { return consts_[slot].ptr(); }

  int device_ = 0;
  Context* ctx_;
  std::unique_ptr<CublasLt> lt_;
  std::mutex mu_;
  absl::flat_hash_map<const Value*, int> const_index_;
  std::deque<DeviceBuffer> consts_;
};

CudaExecutable::~CudaExecutable() { drop_graphs(); }

absl::StatusOr<Loc> CudaExecutable::loc_of(const Value* v, bool written) const {
  const std::vector<Value*>& outs = m_->state.graph.outputs();
  if (auto it = prep_of_.find(v); it != prep_of_.end()) return Loc{Loc::Kind::Prep, it->second};
  if (v->producer() && v->producer()->op() == Op::Constant) {
    KILN_ASSIGN_OR_RETURN(int slot, backend_.const_slot(v));
    return Loc{Loc::Kind::Const, slot};
  }
  if (auto it = std::find(outs.begin(), outs.end(), v); it != outs.end() && v->producer())
    return Loc{Loc::Kind::Output, static_cast<int>(it - outs.begin())};
  if (auto it = planned_.find(v); it != planned_.end()) return Loc{Loc::Kind::Arena, it->second};
  if (written) return err("%", v->name(), " is written by a kernel but has no storage");
  for (size_t i = 0; i < m_->args.size(); ++i)
    if (m_->args[i] == v) return Loc{Loc::Kind::Arg, static_cast<int>(i)};
  KILN_ASSIGN_OR_RETURN(int slot, backend_.const_slot(v));
  return Loc{Loc::Kind::Const, slot};
}

absl::StatusOr<KernelStep> CudaExecutable::kernel_step(CudaKernel meta, const kir::Kernel& k,
                                                      const std::vector<Loc>& extra) {
  KernelStep s;
  s.meta = std::move(meta);
  for (const kir::Buffer& buf : k.buffers) {
    const Value* v = m_->state.graph.find(buf.name);
    if (!v) return err("kernel ", k.name, ": buffer ", buf.name, " names no value of the graph");
    KILN_ASSIGN_OR_RETURN(Loc l, loc_of(v, buf.role == kir::Buffer::Role::Output));
    s.buffers.push_back(l);
  }
  s.buffers.insert(s.buffers.end(), extra.begin(), extra.end());
  for (const std::string& sym : s.meta.symbols) {
    auto it = std::lower_bound(m_->symbols.begin(), m_->symbols.end(), sym);
    if (it == m_->symbols.end() || *it != sym)
      return err("kernel ", k.name, ": symbol ", sym, " is not bound by the graph's arguments");
    s.sym_slots.push_back(static_cast<int>(it - m_->symbols.begin()));
  }
  for (size_t i = 0; i < k.buffers.size(); ++i)
    for (size_t j = 0; j < k.buffers.size(); ++j)
      if (i != j && k.buffers[i].role == kir::Buffer::Role::Input && k.buffers[j].role == kir::Buffer::Role::Output &&
          s.buffers[i].kind == Loc::Kind::Arena && s.buffers[j].kind == Loc::Kind::Arena) {
        const PlannedBuffer& out = m_->state.memory.buffers[s.buffers[j].index];
        if (out.reuses && planned_.at(out.reuses) == s.buffers[i].index) s.in_place = true;
      }
  return s;
}

absl::Status CudaExecutable::make_naive(GemmStep& g) {
  if (g.naive) return absl::OkStatus();
  const kir::Kernel& k = m_->kernels[g.group];
  KILN_ASSIGN_OR_RETURN(CudaKernel meta, emit_kernel(k, opts_.baked, GemmForm::Naive));
  KILN_ASSIGN_OR_RETURN(KernelStep naive, kernel_step(std::move(meta), k, {}));
  g.naive = std::move(naive);
  return compile({&*g.naive});
}

absl::Status CudaExecutable::compile(std::vector<KernelStep*> steps) {
  std::vector<const CudaKernel*> metas;
  for (KernelStep* s : steps) metas.push_back(&s->meta);
  std::vector<NvrtcProgram> programs =
      nvrtc_programs(metas, str_cat("sm_", backend_.ctx_->device().properties().sm_arch));
  KernelCacheStats before = kernel_cache().stats();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<absl::StatusOr<std::shared_ptr<const CompiledKernel>>> out = nvrtc_compile_cached(kernel_cache(), programs);
  KernelCacheStats after = kernel_cache().stats();
  stats_.cache_memory_hits += after.memory_hits - before.memory_hits;
  stats_.cache_disk_hits += after.disk_hits - before.disk_hits;
  stats_.cache_misses += after.misses - before.misses;
  stats_.compile_ms += ms_since(t0);
  for (size_t i = 0; i < steps.size(); ++i) {
    if (!out[i].ok()) return out[i].status();
    if (!opts_.dump_dir.empty()) {
      std::filesystem::path dir(opts_.dump_dir);
      KILN_RETURN_IF_ERROR(write_dump_file(dir / (programs[i].name + ".cu"), programs[i].source));
      KILN_RETURN_IF_ERROR(write_dump_file(dir / (programs[i].name + ".ptx"), (*out[i])->ptx));
    }
    KILN_ASSIGN_OR_RETURN(Module mod, Module::load(*backend_.ctx_, (*out[i])->cubin));
    KILN_ASSIGN_OR_RETURN(steps[i]->scalar, mod.function(steps[i]->meta.name));
    if (!steps[i]->meta.vector_name.empty()) {
      KILN_ASSIGN_OR_RETURN(steps[i]->vector, mod.function(steps[i]->meta.vector_name));
    }
    modules_.push_back(std::move(mod));
  }
  return absl::OkStatus();
}

absl::Status CudaExecutable::build() {
  ctx_ = backend_.ctx_;
  const Schedule& s = m_->state.schedule;
  for (size_t i = 0; i < m_->state.memory.buffers.size(); ++i)
    planned_[m_->state.memory.buffers[i].value] = static_cast<int>(i);
  for (const KernelGroup& g : s.groups)
    if (g.weight_prep)
      for (const Value* v : g.outputs) {
        prep_of_[v] = static_cast<int>(prep_values_.size());
        prep_values_.push_back(v);
      }
  KILN_ASSIGN_OR_RETURN(SpecializationPlan plan, plan_specialization(*m_, opts_.baked));
  stats_.codegen_ms += plan.codegen_ms;
  kernels_.reserve(plan.steps.size());
  gemms_.reserve(plan.steps.size());
  for (PlannedStep& ps : plan.steps) {
    const kir::Kernel& k = m_->kernels[ps.group];
    if (ps.kind == PlannedStep::Kind::Kernel) {
      KILN_ASSIGN_OR_RETURN(KernelStep step, kernel_step(std::move(ps.kernel), k, {}));
      kernels_.push_back(std::move(step));
      (ps.weight_prep ? prep_steps_ : steps_).push_back({Step::Kind::Kernel, static_cast<int>(kernels_.size()) - 1});
      continue;
    }
    const KernelGroup& g = s.groups[ps.group];
    const kir::GemmSpec& spec = *k.gemm;
    GemmStep gs;
    gs.group = ps.group;
    gs.layout = ps.gemm;
    KILN_ASSIGN_OR_RETURN(gs.a, loc_of(m_->state.graph.find(k.buffers[spec.a.buffer].name), false));
    KILN_ASSIGN_OR_RETURN(gs.b, loc_of(m_->state.graph.find(k.buffers[spec.b.buffer].name), false));
    for (int which : {1, 2}) {
      std::optional<CudaKernel>& copy = which == 1 ? ps.copy_a : ps.copy_b;
      if (!copy) continue;
      Loc src = which == 1 ? gs.a : gs.b, dst{Loc::Kind::Scratch, which};
      KernelStep c;
      c.meta = std::move(*copy);
      c.buffers = {src, dst};
      for (const std::string& sym : c.meta.symbols)
        c.sym_slots.push_back(static_cast<int>(std::lower_bound(m_->symbols.begin(), m_->symbols.end(), sym) -
                                               m_->symbols.begin()));
      (which == 1 ? gs.copy_a : gs.copy_b) = std::move(c);
      (which == 1 ? gs.a : gs.b) = dst;
    }
    if (ps.gemm.bias) {
      KILN_ASSIGN_OR_RETURN(gs.bias, loc_of(g.nodes.front()->operand(2), false));
    }
    if (ps.epilogue_kernel) {
      gs.c = Loc{Loc::Kind::Scratch, 0};
      KILN_ASSIGN_OR_RETURN(KernelStep epi, kernel_step(std::move(ps.kernel), k, {Loc{Loc::Kind::Scratch, 0}}));
      gs.epilogue_kernel = std::move(epi);
    } else {
      KILN_ASSIGN_OR_RETURN(gs.c, loc_of(g.outputs[0], true));
    }
    gemms_.push_back(std::move(gs));
    steps_.push_back({Step::Kind::Gemm, static_cast<int>(gemms_.size()) - 1});
  }
  // Outputs not written by any kernel: arguments, parameters, weight-prep results,
  // constants, or a value returned twice.
  const std::vector<Value*>& outs = m_->state.graph.outputs();
  for (size_t j = 0; j < outs.size(); ++j) {
    const Value* v = outs[j];
    size_t first = std::find(outs.begin(), outs.end(), v) - outs.begin();
    bool computed = v->producer() && !prep_of_.contains(v) && v->producer()->op() != Op::Constant;
    if (computed && first == j) continue;
    Loc src;
    if (first != j && computed) {
      src = Loc{Loc::Kind::Output, static_cast<int>(first)};
    } else {
      KILN_ASSIGN_OR_RETURN(src, loc_of(v, false));
      if (src.kind == Loc::Kind::Output) src = Loc{Loc::Kind::Output, static_cast<int>(first)};
    }
    copies_.push_back({src, Loc{Loc::Kind::Output, static_cast<int>(j)}, shape_numel(v->shape()) * dtype_size(v->dtype())});
    steps_.push_back({Step::Kind::Copy, static_cast<int>(copies_.size()) - 1});
  }
  std::vector<KernelStep*> to_compile;
  for (KernelStep& k : kernels_) to_compile.push_back(&k);
  for (GemmStep& g : gemms_)
    for (std::optional<KernelStep>* k : {&g.copy_a, &g.copy_b, &g.epilogue_kernel})
      if (*k) to_compile.push_back(&**k);
  KILN_RETURN_IF_ERROR(compile(to_compile));
  stats_.kernels = static_cast<int>(to_compile.size());
  stats_.gemms = static_cast<int>(gemms_.size());
  stats_.launches = static_cast<int>(steps_.size());
  for (const GemmStep& g : gemms_) stats_.launches += !!g.epilogue_kernel + !!g.copy_a + !!g.copy_b;
  if (opts_.mode == Mode::ReduceOverhead) {
    KILN_ASSIGN_OR_RETURN(Stream st, Stream::create(*ctx_));
    capture_stream_ = std::move(st);
  }
  return absl::OkStatus();
}

CUdeviceptr CudaExecutable::ptr(const Loc& l, const CallPlan& p, const Bases& b) const {
  switch (l.kind) {
    case Loc::Kind::Arg:
      return b.static_args.empty() ? reinterpret_cast<CUdeviceptr>(b.args[l.index].data()) : b.static_args[l.index];
    case Loc::Kind::Const: return backend_.const_ptr(l.index);
    case Loc::Kind::Prep: return prep_[l.index].ptr();
    case Loc::Kind::Arena: return arena_.ptr() + p.layout.offsets[l.index];
    case Loc::Kind::Output:
      return b.static_outputs.empty() ? reinterpret_cast<CUdeviceptr>(b.outputs[l.index].data())
                                      : b.static_outputs[l.index];
    case Loc::Kind::Scratch: return scratch_.ptr() + p.scratch_offsets[l.index];
  }
  return 0;
}

absl::Status CudaExecutable::plan_kernel(const KernelStep& s, const Bindings& b, SymbolValues syms,
                                         KernelCall& call, bool allow_vector) const {
  const CudaKernel& k = s.meta;
  KILN_ASSIGN_OR_RETURN(int64_t work, k.work.evaluate(b));
  call.skip = work <= 0;
  call.vector_dims = allow_vector && s.vector && k.width > 1;
  for (const Dim& d : k.divisible) {
    KILN_ASSIGN_OR_RETURN(int64_t v, d.evaluate(b));
    call.vector_dims = call.vector_dims && v % k.width == 0;
  }
  int sms = ctx_->device().properties().sm_count;
  if (k.launch == LaunchKind::Rows) {
    KILN_ASSIGN_OR_RETURN(int64_t row, k.row_length.evaluate(b));
    int64_t chunks = std::max<int64_t>(1, row / (call.vector_dims ? k.width : 1));
    // About four chunks per thread: several independent loads in flight, short reductions;
    // a row cache sets the count (its registers hold the whole row), and its rows go one to
    // a block of 64 threads or more, so that a row never waits for another's barriers.
    int64_t tpr = s.threads > 0 ? s.threads : std::clamp<int64_t>(next_pow2((chunks + 3) / 4), 32, 1024);
    bool cached = call.vector_dims && k.row_cache_chunks > 0;
    if (fixed_launch(k, call)) {
      tpr = k.row_threads;  // the kernel is written for it
    } else if (cached) {
      int64_t need = (chunks + k.row_cache_chunks - 1) / k.row_cache_chunks;
      need = (need + 31) / 32 * 32;
      tpr = s.threads > 0 ? std::max(tpr, need) : need;
    }
    int64_t rpb = std::max<int64_t>(1, (cached ? 64 : 256) / tpr);
    call.block[0] = unsigned(tpr), call.block[1] = unsigned(rpb);
    call.grid[0] = unsigned(std::clamp<int64_t>((work + rpb - 1) / rpb, 1, int64_t(sms) * 256));
  } else {
    int64_t items = k.launch == LaunchKind::Elementwise && call.vector_dims ? work / k.width : work;
    int64_t threads = s.threads > 0 ? s.threads : 256;
    call.block[0] = unsigned(threads);
    // At most 64 blocks per SM, each thread then taking several items in its grid-stride
    // loop: on an H200, bf16 gelu*sigmoid over 2^26 elements ran 1.5-3% faster than with 32
    // blocks per SM and 9% faster than with one item per thread (probes, 16:26-16:35 UTC,
    // 2026-12-02, bench/RESULTS.md).
    call.grid[0] = unsigned(std::clamp<int64_t>((items + threads - 1) / threads, 1, int64_t(sms) * 64));
  }
  call.ptrs.assign(s.buffers.size(), 0);
  call.syms.clear();
  for (int slot : s.sym_slots) call.syms.push_back(syms[slot]);
  call.params.clear();
  for (CUdeviceptr& p : call.ptrs) call.params.push_back(&p);
  for (long long& v : call.syms) call.params.push_back(&v);
  call.stream_l2 = 0;
  if (k.streams_l2) {
    KILN_ASSIGN_OR_RETURN(int64_t bytes, k.bytes.evaluate(b));
    call.stream_l2 = bytes > ctx_->device().properties().l2_cache_bytes;
  }
  call.params.push_back(&call.stream_l2);
  return absl::OkStatus();
}

absl::Status CudaExecutable::plan_gemm(GemmStep& g, const Bindings& b, SymbolValues syms, GemmCall& call) {
  auto eval = [&](const Dim& d) { return d.evaluate(b); };
  const GemmLayout& l = g.layout;
  GemmSpec spec;
  spec.dtype = l.dtype;
  spec.out_dtype = l.out_dtype;
  spec.epilogue = l.epilogue;
  spec.b_is_nk = l.b_is_nk;
  spec.a_is_km = l.a_is_km;
  KILN_ASSIGN_OR_RETURN(spec.m, eval(l.m));
  KILN_ASSIGN_OR_RETURN(spec.n, eval(l.n));
  KILN_ASSIGN_OR_RETURN(spec.k, eval(l.k));
  KILN_ASSIGN_OR_RETURN(spec.batch, eval(l.batch));
  KILN_ASSIGN_OR_RETURN(spec.lda, eval(l.lda));
  KILN_ASSIGN_OR_RETURN(spec.ldb, eval(l.ldb));
  KILN_ASSIGN_OR_RETURN(spec.batch_stride_a, eval(l.batch_a));
  KILN_ASSIGN_OR_RETURN(spec.batch_stride_b, eval(l.batch_b));
  KILN_ASSIGN_OR_RETURN(int64_t oa, eval(l.offset_a));
  KILN_ASSIGN_OR_RETURN(int64_t ob, eval(l.offset_b));
  int64_t es = dtype_size(l.dtype);
  call.a_off = oa * es, call.b_off = ob * es;
  call.skip = spec.m <= 0 || spec.n <= 0 || spec.batch <= 0;
  if (g.epilogue_kernel) KILN_RETURN_IF_ERROR(plan_kernel(*g.epilogue_kernel, b, syms, call.epilogue));
  if (g.copy_a) KILN_RETURN_IF_ERROR(plan_kernel(*g.copy_a, b, syms, call.copy_a));
  if (g.copy_b) KILN_RETURN_IF_ERROR(plan_kernel(*g.copy_b, b, syms, call.copy_b));
  if (call.skip) return absl::OkStatus();
  // A GEMM over K = 0 is all zeros (plus the epilogue): the naive kernel handles it.
  // The plan assumes the alignment the operands' offsets keep (bases are 256-aligned).
  int64_t align = 256;
  for (int64_t off : {call.a_off, call.b_off, spec.lda * es, spec.ldb * es})
    while (align > es && off % align != 0) align /= 2;
  call.alignment = static_cast<int>(align);
  if (spec.k > 0) {
    std::vector<int64_t> key = {spec.m, spec.n, spec.k, spec.batch, spec.lda, spec.ldb, spec.batch_stride_a,
                                spec.batch_stride_b, align};
    std::unique_ptr<GemmPlan>& plan = g.plans[key];
    if (!plan) {
      spec.alignment = static_cast<int>(align);
      absl::StatusOr<std::unique_ptr<GemmPlan>> p = GemmPlan::create(*backend_.lt_, spec);
      if (p.ok()) plan = *std::move(p);
    }
    call.plan = plan.get();
  }
  if (!call.plan) {
    KILN_RETURN_IF_ERROR(make_naive(g));
    KILN_RETURN_IF_ERROR(plan_kernel(*g.naive, b, syms, call.naive));
  }
  return absl::OkStatus();
}

absl::StatusOr<CallPlan*> CudaExecutable::plan_for(SymbolValues syms) {
  if (last_plan_ && std::equal(syms.begin(), syms.end(), last_plan_->syms.begin(), last_plan_->syms.end()))
    return last_plan_;
  std::vector<int64_t> key(syms.begin(), syms.end());
  std::unique_ptr<CallPlan>& p = plans_[key];
  if (!p) {
    auto plan = std::make_unique<CallPlan>();
    plan->syms = key;
    Bindings b = m_->bindings(syms);
    KILN_ASSIGN_OR_RETURN(plan->layout, m_->state.memory.layout(b));
    for (const Value* v : m_->state.graph.outputs()) {
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(v->shape(), b));
      plan->out_shapes.push_back(std::move(shape));
    }
    for (const Value* v : prep_values_) {
      KILN_ASSIGN_OR_RETURN(int64_t n, shape_numel(v->shape()).evaluate(b));
      plan->prep_bytes.push_back(std::max<int64_t>(256, n * dtype_size(v->dtype())));
    }
    plan->kernels.resize(kernels_.size());
    for (size_t i = 0; i < kernels_.size(); ++i) KILN_RETURN_IF_ERROR(plan_kernel(kernels_[i], b, syms, plan->kernels[i]));
    plan->gemms.resize(gemms_.size());
    int64_t region[3] = {0, 0, 0};
    for (size_t i = 0; i < gemms_.size(); ++i) {
      KILN_RETURN_IF_ERROR(plan_gemm(gemms_[i], b, syms, plan->gemms[i]));
      const GemmLayout& l = gemms_[i].layout;
      int64_t es = dtype_size(l.dtype);
      KILN_ASSIGN_OR_RETURN(int64_t mn, (l.m * l.n * l.batch).evaluate(b));
      KILN_ASSIGN_OR_RETURN(int64_t mk, (l.m * l.k * l.batch).evaluate(b));
      KILN_ASSIGN_OR_RETURN(int64_t nk, (l.n * l.k * l.batch).evaluate(b));
      if (l.out_dtype) region[0] = std::max(region[0], mn * 4);
      if (gemms_[i].copy_a) region[1] = std::max(region[1], mk * es);
      if (gemms_[i].copy_b) region[2] = std::max(region[2], nk * es);
    }
    for (int r = 0; r < 3; ++r) {
      plan->scratch_offsets[r] = plan->scratch_bytes;
      plan->scratch_bytes += (region[r] + 255) / 256 * 256;
    }
    for (const CopyStep& c : copies_) {
      KILN_ASSIGN_OR_RETURN(int64_t n, c.bytes.evaluate(b));
      plan->copy_bytes.push_back(n);
    }
    p = std::move(plan);
  }
  last_plan_ = p.get();
  return last_plan_;
}

void CudaExecutable::drop_graphs() {
  absl::StatusOr<const DriverApi*> api = driver();
  for (auto& [_, p] : plans_)
    if (p->graph) {
      if (api.ok()) (*api)->cuGraphExecDestroy(p->graph);
      p->graph = nullptr;
    }
}

absl::Status CudaExecutable::ensure_capacity(const CallPlan& p) {
  // Growing frees the old buffer (cuMemFree waits for the work still using it) and with it
  // every captured graph, which holds the old addresses.
  if (arena_.size() < p.layout.arena_bytes) {
    drop_graphs();
    arena_ = DeviceBuffer();
    KILN_ASSIGN_OR_RETURN(arena_, DeviceBuffer::allocate(*ctx_, p.layout.arena_bytes));
  }
  if (scratch_.size() < p.scratch_bytes) {
    drop_graphs();
    scratch_ = DeviceBuffer();
    KILN_ASSIGN_OR_RETURN(scratch_, DeviceBuffer::allocate(*ctx_, p.scratch_bytes));
  }
  return absl::OkStatus();
}

absl::Status CudaExecutable::launch_kernel(const KernelStep& s, KernelCall& c, const CallPlan& p, const Bases& b,
                                           CUstream st) {
  if (c.skip) return absl::OkStatus();
  bool vec = s.vector && c.vector_dims;
  for (size_t i = 0; i < s.buffers.size(); ++i) {
    c.ptrs[i] = ptr(s.buffers[i], p, b);
    if (vec && std::binary_search(s.meta.aligned.begin(), s.meta.aligned.end(), static_cast<int>(i)) && c.ptrs[i] % 16 != 0)
      vec = false;
  }
  KernelCall* call = &c;
  KernelCall scalar_call;
  if (s.vector && c.vector_dims && !vec) {
    // A caller pointer that is not 16-byte aligned: the scalar entry, with its own shape.
    KILN_RETURN_IF_ERROR(plan_kernel(s, m_->bindings(p.syms), p.syms, scalar_call, false));
    scalar_call.ptrs = c.ptrs;
    call = &scalar_call;
  }
  LaunchDims d;
  std::copy(call->grid, call->grid + 3, d.grid);
  std::copy(call->block, call->block + 3, d.block);
  return launch(vec ? s.vector : s.scalar, d, call->params.data(), st);
}

absl::Status CudaExecutable::run_gemm(GemmStep& g, GemmCall& c, const CallPlan& p, const Bases& b, CUstream st) {
  if (g.copy_a) KILN_RETURN_IF_ERROR(launch_kernel(*g.copy_a, c.copy_a, p, b, st));
  if (g.copy_b) KILN_RETURN_IF_ERROR(launch_kernel(*g.copy_b, c.copy_b, p, b, st));
  if (!c.skip) {
    CUdeviceptr a = ptr(g.a, p, b) + c.a_off, bb = ptr(g.b, p, b) + c.b_off, out = ptr(g.c, p, b);
    CUdeviceptr bias = g.layout.bias ? ptr(g.bias, p, b) : 0;
    bool aligned = c.plan;
    for (CUdeviceptr q : {a, bb, out, bias})
      aligned = aligned && q % uint64_t(c.alignment) == 0;
    if (aligned) {
      KILN_RETURN_IF_ERROR(c.plan->run(a, bb, out, bias, st));
    } else {
      KILN_RETURN_IF_ERROR(make_naive(g));
      if (c.naive.params.empty()) KILN_RETURN_IF_ERROR(plan_kernel(*g.naive, m_->bindings(p.syms), p.syms, c.naive));
      return launch_kernel(*g.naive, c.naive, p, b, st);
    }
  }
  if (g.epilogue_kernel) return launch_kernel(*g.epilogue_kernel, c.epilogue, p, b, st);
  return absl::OkStatus();
}

absl::Status CudaExecutable::run_steps(CallPlan& p, const Bases& b, CUstream st, std::span<const Step> steps) {
  KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
  for (const Step& s : steps) {
    switch (s.kind) {
      case Step::Kind::Kernel:
        KILN_RETURN_IF_ERROR(launch_kernel(kernels_[s.index], p.kernels[s.index], p, b, st));
        break;
      case Step::Kind::Gemm: KILN_RETURN_IF_ERROR(run_gemm(gemms_[s.index], p.gemms[s.index], p, b, st)); break;
      case Step::Kind::Copy: {
        const CopyStep& c = copies_[s.index];
        if (p.copy_bytes[s.index] > 0)
          KILN_RETURN_IF_ERROR(check(api->cuMemcpyDtoDAsync(ptr(c.dst, p, b), ptr(c.src, p, b), p.copy_bytes[s.index], st),
                                     "cuMemcpyDtoDAsync"));
        break;
      }
    }
  }
  return absl::OkStatus();
}

// Times `run` (after two warm-up runs) as the median of five, in milliseconds.
absl::StatusOr<double> time_ms(const Context& ctx, CUstream st, const std::function<absl::Status()>& run) {
  KILN_ASSIGN_OR_RETURN(Event start, Event::create(ctx));
  KILN_ASSIGN_OR_RETURN(Event end, Event::create(ctx));
  for (int i = 0; i < 2; ++i) KILN_RETURN_IF_ERROR(run());
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    KILN_RETURN_IF_ERROR(start.record(st));
    KILN_RETURN_IF_ERROR(run());
    KILN_RETURN_IF_ERROR(end.record(st));
    KILN_RETURN_IF_ERROR(end.synchronize());
    KILN_ASSIGN_OR_RETURN(float ms, Event::elapsed_ms(start, end));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t[2];
}

std::string hex_bytes(const void* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", static_cast<const uint8_t*>(p)[i]);
  return s;
}

bool from_hex(const std::string& s, void* p, size_t n) {
  if (s.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    if (std::sscanf(s.c_str() + 2 * i, "%2x", &v) != 1) return false;
    static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

// Runs the steps in order (later steps need earlier results), and before each one that
// can safely run twice, tries its launch shapes or cuBLASLt algorithms and keeps the fastest.
absl::Status CudaExecutable::tune(CallPlan& p, const Bases& b, CUstream st) {
  auto t0 = std::chrono::steady_clock::now();
  const DeviceProperties& dev = ctx_->device().properties();
  Bindings bind = m_->bindings(p.syms);
  for (const Step& step : steps_) {
    // A row kernel written for one launch shape has nothing to try.
    if (step.kind == Step::Kind::Kernel && !kernels_[step.index].in_place && !p.kernels[step.index].skip &&
        !fixed_launch(kernels_[step.index].meta, p.kernels[step.index])) {
      KernelStep& k = kernels_[step.index];
      KernelCall& call = p.kernels[step.index];
      KILN_ASSIGN_OR_RETURN(int64_t work, k.meta.work.evaluate(bind));
      KILN_ASSIGN_OR_RETURN(int64_t row, k.meta.row_length.evaluate(bind));
      std::string what = str_cat(k.meta.source, "|", launch_kind_name(k.meta.launch), " work=", work, " row=", row,
                                 "|", dev.name);
      std::vector<int> candidates = k.meta.launch == LaunchKind::Rows ? std::vector<int>{32, 64, 128, 256, 512, 1024}
                                                                       : std::vector<int>{128, 256, 512, 1024};
      int best = 0;
      if (std::optional<std::string> known = TuneStore::instance().get(what)) {
        best = std::atoi(known->c_str());
      } else {
        double best_ms = 1e30, default_ms = 0;
        for (int threads : candidates) {
          k.threads = threads;
          KILN_RETURN_IF_ERROR(plan_kernel(k, bind, p.syms, call));
          KILN_ASSIGN_OR_RETURN(double ms, time_ms(*ctx_, st, [&] { return launch_kernel(k, call, p, b, st); }));
          if (threads == 256) default_ms = ms;
          if (ms < best_ms) best_ms = ms, best = threads;
        }
        TuneStore::instance().put(what, std::to_string(best),
                                  fmt::format("kernel {} {} work={} row={} on {}: {} threads {:.4f} ms (256: {:.4f} ms)",
                                              k.meta.name, launch_kind_name(k.meta.launch), work, row, dev.name, best,
                                              best_ms, default_ms));
      }
      k.threads = best;
      KILN_RETURN_IF_ERROR(plan_kernel(k, bind, p.syms, call));
    }
    if (step.kind == Step::Kind::Gemm && p.gemms[step.index].plan) {
      GemmStep& g = gemms_[step.index];
      GemmCall& call = p.gemms[step.index];
      GemmPlan& plan = *call.plan;
      const GemmSpec& s = plan.spec();
      std::string what = fmt::format("gemm {} out {} m={} n={} k={} batch={} lda={} ldb={} sa={} sb={} nk={} km={} epi={} align={}|{}",
                                     dtype_name(s.dtype), dtype_name(s.out_dtype.value_or(s.dtype)), s.m, s.n, s.k, s.batch,
                                     s.lda, s.ldb, s.batch_stride_a, s.batch_stride_b, s.b_is_nk, s.a_is_km,
                                     gemm_epilogue_name(s.epilogue), s.alignment, dev.name);
      GemmAlgorithm chosen = plan.algorithm();
      std::optional<std::string> known = TuneStore::instance().get(what);
      if (!known || !from_hex(*known, &chosen.algo, sizeof(chosen.algo))) {
        KILN_ASSIGN_OR_RETURN(std::vector<GemmAlgorithm> algos, plan.algorithms(8));
        double best_ms = 1e30, first_ms = 0;
        for (size_t i = 0; i < algos.size(); ++i) {
          plan.set_algorithm(algos[i]);
          absl::StatusOr<double> ms = time_ms(*ctx_, st, [&] { return run_gemm(g, call, p, b, st); });
          if (!ms.ok()) continue;  // an algorithm that fails at these sizes is not a candidate
          if (i == 0) first_ms = *ms;
          if (*ms < best_ms) best_ms = *ms, chosen = algos[i];
        }
        TuneStore::instance().put(what, hex_bytes(&chosen.algo, sizeof(chosen.algo)),
                                  fmt::format("{} {}x{}x{} batch {} on {}: best of {} algorithms {:.4f} ms (heuristic's first {:.4f} ms)",
                                              m_->kernels[g.group].name, s.m, s.n, s.k, s.batch, dev.name, algos.size(), best_ms, first_ms));
      }
      plan.set_algorithm(chosen);
    }
    KILN_RETURN_IF_ERROR(run_steps(p, b, st, std::span<const Step>(&step, 1)));
  }
  stats_.tune_ms += ms_since(t0);
  return absl::OkStatus();
}

absl::Status CudaExecutable::run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                                 const CallOptions& opts) {
  KILN_RETURN_IF_ERROR(ctx_->make_current());
  KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
  CUstream st = static_cast<CUstream>(opts.stream);
  KILN_ASSIGN_OR_RETURN(CallPlan * p, plan_for(syms));
  KILN_RETURN_IF_ERROR(ensure_capacity(*p));
  const std::vector<Value*>& outs = m_->state.graph.outputs();
  for (size_t j = 0; j < outputs.size(); ++j)
    if (outputs[j].data() == nullptr) {
      KILN_ASSIGN_OR_RETURN(outputs[j], pooled_tensor(outs[j]->dtype(), p->out_shapes[j], backend_.device_));
    }
  Bases b{args, outputs, {}, {}};

  // Weight-prep results: remade when the parameters they read, or their sizes, change.
  if (!prep_steps_.empty()) {
    std::vector<CUdeviceptr> params;
    for (size_t i = 0; i < m_->args.size(); ++i)
      if (m_->args[i]->is_param()) params.push_back(reinterpret_cast<CUdeviceptr>(args[i].data()));
    if (params != prep_params_ || p->syms != prep_syms_ || prep_.empty()) {
      prep_.resize(prep_values_.size());
      for (size_t i = 0; i < prep_values_.size(); ++i)
        if (prep_[i].size() < p->prep_bytes[i]) {
          drop_graphs();
          prep_[i] = DeviceBuffer();
          KILN_ASSIGN_OR_RETURN(prep_[i], DeviceBuffer::allocate(*ctx_, p->prep_bytes[i]));
        }
      KILN_RETURN_IF_ERROR(run_steps(*p, b, st, prep_steps_));
      prep_params_ = std::move(params);
      prep_syms_ = p->syms;
    }
  }
  if (opts_.mode == Mode::MaxAutotune && !tuned_) {
    KILN_RETURN_IF_ERROR(tune(*p, b, st));
    tuned_ = true;
  }
  if (opts_.mode != Mode::ReduceOverhead) return run_steps(*p, b, st, steps_);

  // reduce-overhead: copy inputs into static slots, replay, copy results out.
  std::vector<CUdeviceptr> params;
  for (size_t i = 0; i < args.size(); ++i)
    if (m_->args[i]->is_param()) params.push_back(reinterpret_cast<CUdeviceptr>(args[i].data()));
  if (p->graph && params != p->graph_params) {
    KILN_RETURN_IF_ERROR(check(api->cuGraphExecDestroy(p->graph), "cuGraphExecDestroy"));
    p->graph = nullptr;
  }
  if (!p->graph) {
    KILN_RETURN_IF_ERROR(allocate_static_slots(*p));
    Bases sb{args, outputs, {}, {}};
    for (size_t i = 0; i < args.size(); ++i)
      sb.static_args.push_back(m_->args[i]->is_param() ? reinterpret_cast<CUdeviceptr>(args[i].data())
                                                        : p->static_args[i].ptr());
    for (const DeviceBuffer& d : p->static_outputs) sb.static_outputs.push_back(d.ptr());
    CUstream cs = capture_stream_->handle();
    // Anything made lazily on first use (GEMM plans, naive kernels) exists before capture.
    KILN_RETURN_IF_ERROR(run_steps(*p, sb, cs, steps_));
    KILN_RETURN_IF_ERROR(capture_stream_->synchronize());
    KILN_RETURN_IF_ERROR(check(api->cuStreamBeginCapture(cs, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture"));
    absl::Status launched = run_steps(*p, sb, cs, steps_);
    CUgraph graph = nullptr;
    absl::Status ended = check(api->cuStreamEndCapture(cs, &graph), "cuStreamEndCapture");
    KILN_RETURN_IF_ERROR(launched);
    KILN_RETURN_IF_ERROR(ended);
    absl::Status inst = check(api->cuGraphInstantiate(&p->graph, graph, 0), "cuGraphInstantiate");
    api->cuGraphDestroy(graph);
    KILN_RETURN_IF_ERROR(inst);
    p->graph_params = std::move(params);
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (m_->args[i]->is_param()) continue;
    CUdeviceptr src = reinterpret_cast<CUdeviceptr>(args[i].data());
    int64_t bytes = args[i].numel() * dtype_size(args[i].dtype());
    if (src != p->static_args[i].ptr() && bytes > 0)
      KILN_RETURN_IF_ERROR(check(api->cuMemcpyDtoDAsync(p->static_args[i].ptr(), src, bytes, st), "cuMemcpyDtoDAsync"));
  }
  KILN_RETURN_IF_ERROR(check(api->cuGraphLaunch(p->graph, st), "cuGraphLaunch"));
  for (size_t j = 0; j < outputs.size(); ++j) {
    int64_t bytes = outputs[j].numel() * dtype_size(outputs[j].dtype());
    if (bytes > 0 && reinterpret_cast<CUdeviceptr>(outputs[j].data()) != p->static_outputs[j].ptr())
      KILN_RETURN_IF_ERROR(check(api->cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(outputs[j].data()),
                                                        p->static_outputs[j].ptr(), bytes, st),
                                 "cuMemcpyDtoDAsync"));
  }
  return absl::OkStatus();
}

absl::Status CudaExecutable::allocate_static_slots(CallPlan& p) {
  if (!p.static_args.empty()) return absl::OkStatus();
  Bindings b = m_->bindings(p.syms);
  for (const Value* a : m_->args) {
    int64_t bytes = 0;
    if (!a->is_param()) {
      KILN_ASSIGN_OR_RETURN(int64_t n, shape_numel(a->shape()).evaluate(b));
      bytes = n * dtype_size(a->dtype());
    }
    KILN_ASSIGN_OR_RETURN(DeviceBuffer slot, DeviceBuffer::allocate(*ctx_, std::max<int64_t>(256, bytes)));
    p.static_args.push_back(std::move(slot));
  }
  const std::vector<Value*>& outs = m_->state.graph.outputs();
  for (size_t j = 0; j < outs.size(); ++j) {
    int64_t n = 1;
    for (int64_t d : p.out_shapes[j]) n *= d;
    KILN_ASSIGN_OR_RETURN(DeviceBuffer slot,
                          DeviceBuffer::allocate(*ctx_, std::max<int64_t>(256, n * dtype_size(outs[j]->dtype()))));
    p.static_outputs.push_back(std::move(slot));
  }
  return absl::OkStatus();
}

absl::StatusOr<StaticSlots> CudaExecutable::static_slots(SymbolValues syms) {
  if (opts_.mode != Mode::ReduceOverhead)
    return absl::FailedPreconditionError(
        str_cat("static slots exist only for CUDA graphs; this graph was compiled in ", mode_name(opts_.mode), " mode"));
  KILN_ASSIGN_OR_RETURN(CallPlan * p, plan_for(syms));
  KILN_RETURN_IF_ERROR(allocate_static_slots(*p));
  Bindings b = m_->bindings(syms);
  StaticSlots s;
  DeviceId dev = backend_.device();
  for (size_t i = 0; i < m_->args.size(); ++i) {
    const Value* a = m_->args[i];
    if (a->is_param()) {
      s.inputs.emplace_back();
      continue;
    }
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(a->shape(), b));
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::wrap(reinterpret_cast<void*>(p->static_args[i].ptr()), a->dtype(),
                                                 std::move(shape), {}, dev));
    s.inputs.push_back(std::move(t));
  }
  const std::vector<Value*>& outs = m_->state.graph.outputs();
  for (size_t j = 0; j < outs.size(); ++j) {
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::wrap(reinterpret_cast<void*>(p->static_outputs[j].ptr()), outs[j]->dtype(),
                                                 p->out_shapes[j], {}, dev));
    s.outputs.push_back(std::move(t));
  }
  return s;
}

}  // namespace

KernelCache& kernel_cache() {
  static KernelCache* cache = new KernelCache(KernelCache::directory_from_env());
  return *cache;
}

absl::StatusOr<std::unique_ptr<Backend>> make_backend(int device) {
  KILN_ASSIGN_OR_RETURN(Context * ctx, Context::primary(device));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<CublasLt> lt, CublasLt::create(*ctx));
  return std::unique_ptr<Backend>(new CudaBackend(device, ctx, std::move(lt)));
}

}  // namespace kiln::cuda
