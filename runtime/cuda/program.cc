#include "runtime/cuda/program.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>

#include "codegen/cuda/emit.h"
#include "codegen/module.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/device.h"
#include "runtime/nvrtc.h"

namespace kiln::cuda {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Concrete launch values of one kernel for the symbol values of a call.
struct KernelCall final : StepPlan {
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  bool skip = false;         // no work at these sizes
  bool vector_dims = false;  // the vector entry's divisibility conditions hold
  std::vector<CUdeviceptr> ptrs;
  std::vector<long long> syms;
  int stream_l2 = 0;          // the kernel's data exceed the L2 cache (CudaKernel::bytes)
  std::vector<void*> params;  // into ptrs, syms and stream_l2
};

// One GEMM's cuBLASLt call at the sizes of a call.
struct GemmCall final : StepPlan {
  GemmPlan* plan = nullptr;  // null: the library cannot run it (the fallback kernel does)
  bool skip = false;
  int64_t a_off = 0, b_off = 0;  // bytes
  int alignment = 256;           // the pointer alignment the plan assumes
};

// One fused attention step at the sizes of a call: the launch plan and its split-KV
// workspace (allocated here, before any capture, and kept with the plan).
struct AttentionCallPlan final : StepPlan {
  AttentionCall call;
  AttentionPlan plan;
  DeviceBuffer workspace;
  std::string library() const override { return plan.cudnn ? plan.cudnn->engine() : std::string(); }
};

struct LoadedKernel {
  CudaKernel meta;
  CUfunction scalar = nullptr, vector = nullptr;
  bool compiled = false;
  std::vector<int> sym_slots;  // Program::symbols slot of each dynamic symbol parameter
  // Launch shape: threads per block (elementwise, stages) or per row (rows); 0: heuristic.
  // max-autotune sets it, and later plans keep it.
  int threads = 0;
};

// Whether the call runs a row-cached vector kernel written for one blockDim.x (row_threads).
bool fixed_launch(const CudaKernel& k, const KernelCall& call) { return call.vector_dims && k.row_threads > 0; }

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

class CudaProgram final : public DeviceProgram {
 public:
  CudaProgram(const CudaDevice& dev, std::shared_ptr<const Program> p, std::optional<DumpWriter> dump)
      : dev_(dev), p_(std::move(p)), dump_(std::move(dump)), kernels_(p_->kernels.size()), gemm_plans_(p_->gemms.size()) {}

  absl::Status load() {
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < p_->kernels.size(); ++i) KILN_RETURN_IF_ERROR(emit(static_cast<int>(i)));
    stats_.codegen_ms += ms_since(t0);
    std::vector<int> now;
    for (size_t i = 0; i < p_->kernels.size(); ++i)
      if (!p_->kernels[i].on_demand) now.push_back(static_cast<int>(i));
    KILN_RETURN_IF_ERROR(compile(now));
    stats_.kernels = static_cast<int>(now.size());
    // The fused attention steps: one set of kernels per form, shared by the steps that have
    // it; each configuration compiled when a plan first picks it.
    KILN_RETURN_IF_ERROR(count_compiles([&]() -> absl::Status {
      for (const AttentionStep& a : p_->attentions) {
        auto same = std::find_if(attention_.begin(), attention_.end(), [&](const auto& k) { return k->form() == a.form; });
        if (same != attention_.end()) {
          attention_.push_back(*same);
          continue;
        }
        KILN_ASSIGN_OR_RETURN(std::unique_ptr<AttentionKernels> k,
                              AttentionKernels::build(dev_.ctx, dev_.arch, a.form, dump_, /*lazily=*/true));
        stats_.kernels += k->compiled();
        attention_.push_back(std::move(k));
      }
      return absl::OkStatus();
    }));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_attention(int attention, const Bindings& b) override {
    KILN_RETURN_IF_ERROR(require_device());
    const AttentionStep& a = p_->attentions[attention];
    auto plan = std::make_unique<AttentionCallPlan>();
    AttentionCall& c = plan->call;
    KILN_ASSIGN_OR_RETURN(static_cast<AttentionSizes&>(c), evaluate_sizes(a, b));
    if (c.batch == 0 || c.tq == 0) return plan;  // nothing to compute: run_attention skips it
    const AttentionKernels& k = *attention_[attention];
    const int before = k.compiled();
    // cuDNN's fused attention where it takes the step (on the H100 1.7-2.7x kiln's kernel
    // for prefill, 1.0-1.2x for decode over a contiguous cache: bench/RESULTS.md, 2026-12-07),
    // else kiln's kernel.
    absl::StatusOr<AttentionPlan> ap = k.cudnn_plan(c);
    if (!ap.ok()) {
      KILN_RETURN_IF_ERROR(count_compiles([&] {
        ap = k.plan(c);
        return absl::OkStatus();
      }));
    }
    stats_.kernels += k.compiled() - before;
    if (!ap.ok()) return prefix_error(ap.status(), "attention step ", attention, ": ");
    plan->plan = *ap;
    if (ap->workspace_bytes > 0) {
      KILN_ASSIGN_OR_RETURN(plan->workspace, DeviceBuffer::allocate(*dev_.ctx, ap->workspace_bytes));
    }
    return plan;
  }

  // buffers: q, k, v, out, mask, kv_lens, block_table (0 when absent). A block id outside
  // the cache reads as zeros (the key is skipped); kv_lens are clamped to [0, Tk].
  absl::Status run_attention(int attention, StepPlan& plan, std::span<const DevicePtr> buffers,
                             const CallContext& ctx) override {
    AttentionCallPlan& p = static_cast<AttentionCallPlan&>(plan);
    if (p.call.batch == 0 || p.call.tq == 0) return absl::OkStatus();
    AttentionCall& c = p.call;
    const int64_t e = dtype_size(attention_[attention]->form().dtype);  // offsets are in elements
    c.q = buffers[0] + c.q_offset * e, c.k = buffers[1] + c.k_offset * e, c.v = buffers[2] + c.v_offset * e;
    c.out = buffers[3] + c.out_offset * e;
    c.mask = buffers[4], c.kv_lens = buffers[5], c.block_table = buffers[6];
    return attention_[attention]->launch(p.plan, c, p.workspace.ptr(), static_cast<CUstream>(ctx.stream));
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int kernel, const Bindings& b, SymbolValues syms) override {
    KILN_RETURN_IF_ERROR(require_device());
    if (!kernels_[kernel].compiled) KILN_RETURN_IF_ERROR(compile({kernel}));
    auto call = std::make_unique<KernelCall>();
    KILN_RETURN_IF_ERROR(plan_call(kernels_[kernel], b, syms, *call));
    return call;
  }

  absl::Status launch(int kernel, StepPlan& plan, std::span<const DevicePtr> buffers, const CallContext& c) override {
    KernelCall& call = static_cast<KernelCall&>(plan);
    if (call.skip) return absl::OkStatus();
    const LoadedKernel& k = kernels_[kernel];
    bool vec = k.vector && call.vector_dims;
    for (size_t i = 0; i < buffers.size(); ++i) {
      call.ptrs[i] = buffers[i];
      if (vec && std::binary_search(k.meta.aligned.begin(), k.meta.aligned.end(), static_cast<int>(i)) &&
          buffers[i] % 16 != 0)
        vec = false;
    }
    const KernelCall* run = &call;
    KernelCall scalar_call;
    if (k.vector && call.vector_dims && !vec) {
      // A caller pointer that is not 16-byte aligned: the scalar entry, with its own shape.
      KILN_RETURN_IF_ERROR(plan_call(k, bindings_of(k, call), {}, scalar_call, false, &call.syms));
      scalar_call.ptrs = call.ptrs;
      run = &scalar_call;
    }
    LaunchDims d;
    std::copy(run->grid, run->grid + 3, d.grid);
    std::copy(run->block, run->block + 3, d.block);
    return cuda::launch(vec ? k.vector : k.scalar, d, const_cast<void**>(run->params.data()),
                        static_cast<CUstream>(c.stream));
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int gemm, const Bindings& b) override {
    KILN_RETURN_IF_ERROR(require_device());
    const GemmLayout& l = *p_->gemms[gemm].layout;
    auto eval = [&](const Dim& d) { return d.evaluate(b); };
    GemmSpec spec;
    spec.dtype = l.dtype;
    spec.out_dtype = l.out_dtype;
    spec.epilogue = l.epilogue;
    spec.residual = l.residual;
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
    auto call = std::make_unique<GemmCall>();
    int64_t es = dtype_size(l.dtype);
    call->a_off = oa * es, call->b_off = ob * es;
    call->skip = spec.m <= 0 || spec.n <= 0 || spec.batch <= 0;
    if (call->skip) return call;
    // A GEMM over K = 0 is all zeros (plus the epilogue): the fallback kernel computes it.
    // The plan assumes the alignment the operands' offsets keep (bases are 256-aligned).
    int64_t align = 256;
    for (int64_t off : {call->a_off, call->b_off, spec.lda * es, spec.ldb * es})
      while (align > es && off % align != 0) align /= 2;
    call->alignment = static_cast<int>(align);
    if (spec.k > 0) {
      std::vector<int64_t> key = {spec.m, spec.n, spec.k, spec.batch, spec.lda, spec.ldb, spec.batch_stride_a,
                                  spec.batch_stride_b, align};
      std::unique_ptr<GemmPlan>& plan = gemm_plans_[gemm][key];
      if (!plan) {
        spec.alignment = static_cast<int>(align);
        absl::StatusOr<std::unique_ptr<GemmPlan>> made = GemmPlan::create(*dev_.lt, spec);
        if (made.ok()) plan = *std::move(made);
      }
      call->plan = plan.get();
    }
    return call;
  }

  absl::StatusOr<bool> run_gemm(int gemm, StepPlan& plan, DevicePtr a, DevicePtr b, DevicePtr c, DevicePtr bias,
                                DevicePtr residual, const CallContext& ctx) override {
    const GemmCall& call = static_cast<const GemmCall&>(plan);
    if (call.skip) return true;
    if (!call.plan) return false;
    a += call.a_off, b += call.b_off;
    for (DevicePtr q : {a, b, c, bias, residual})
      if (q % uint64_t(call.alignment) != 0) return false;
    KILN_RETURN_IF_ERROR(call.plan->run(a, b, c, bias, static_cast<CUstream>(ctx.stream), residual));
    return true;
  }

  absl::StatusOr<std::unique_ptr<Tunable>> tunable_kernel(int kernel, StepPlan& plan, const Bindings& b,
                                                          SymbolValues syms) override;
  absl::StatusOr<std::unique_ptr<Tunable>> tunable_gemm(int gemm, StepPlan& plan) override;
  absl::StatusOr<std::unique_ptr<Tunable>> tunable_attention(int attention, StepPlan& plan) override;

  std::string describe_kernel(int kernel) const override {
    const CudaKernel& k = kernels_[kernel].meta;
    std::string cache;  // how a row-cached kernel holds its row
    if (k.row_cache_chunks > 0)
      cache = k.row_threads > 0 ? str_cat(", row cached (", k.row_threads, " threads x ", k.row_cache_chunks, " chunks)")
                                : str_cat(", row cached (at most ", k.row_cache_chunks,
                                          k.row_cache_chunks == 1 ? " chunk" : " chunks", " per thread)");
    // The program's name of the kernel: its device function is named by its op alone.
    return str_cat(p_->kernels[kernel].kernel.name, " ", launch_kind_name(k.launch),
                   k.width > 1 ? str_cat(", ", k.width, " lanes") : std::string(),
                   cache, k.streams_l2 ? ", evict-first in L2 when its data exceed it" : "",
                   k.warp_gemm ? ", GEMM: one warp per output element" : "");
  }

  const BuildStats& stats() const override { return stats_; }

  // Fills `call` for kernel `k` at these symbol values (given as `syms` in Program::symbols
  // order, or directly as the kernel's own `kernel_syms`).
  absl::Status plan_call(const LoadedKernel& s, const Bindings& b, SymbolValues syms, KernelCall& call,
                    bool allow_vector = true, const std::vector<long long>* kernel_syms = nullptr) const {
    const CudaKernel& k = s.meta;
    const DeviceProperties& dev = dev_.ctx->device().properties();
    KILN_ASSIGN_OR_RETURN(int64_t work, k.work.evaluate(b));
    call.skip = work <= 0;
    call.vector_dims = allow_vector && s.vector && k.width > 1;
    for (const Dim& d : k.divisible) {
      KILN_ASSIGN_OR_RETURN(int64_t v, d.evaluate(b));
      call.vector_dims = call.vector_dims && v % k.width == 0;
    }
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
      call.grid[0] = unsigned(std::clamp<int64_t>((work + rpb - 1) / rpb, 1, int64_t(dev.sm_count) * 256));
    } else {
      int64_t items = k.launch == LaunchKind::Elementwise && call.vector_dims ? work / k.width : work;
      int64_t threads = s.threads > 0 ? s.threads : 256;
      call.block[0] = unsigned(threads);
      // At most 64 blocks per SM, each thread then taking several items in its grid-stride
      // loop: on an H200, bf16 gelu*sigmoid over 2^26 elements ran 1.5-3% faster than with 32
      // blocks per SM and 9% faster than with one item per thread (probes, 16:26-16:35 UTC,
      // 2026-12-02, bench/RESULTS.md).
      call.grid[0] = unsigned(std::clamp<int64_t>((items + threads - 1) / threads, 1, int64_t(dev.sm_count) * 64));
    }
    call.ptrs.assign(k.buffers, 0);
    if (kernel_syms) {
      call.syms = *kernel_syms;
    } else {
      call.syms.clear();
      for (int slot : s.sym_slots) call.syms.push_back(syms[slot]);
    }
    call.params.clear();
    for (CUdeviceptr& p : call.ptrs) call.params.push_back(&p);
    for (long long& v : call.syms) call.params.push_back(&v);
    call.stream_l2 = 0;
    if (k.streams_l2) {
      KILN_ASSIGN_OR_RETURN(int64_t bytes, k.bytes.evaluate(b));
      call.stream_l2 = bytes > dev.l2_cache_bytes;
    }
    call.params.push_back(&call.stream_l2);
    return absl::OkStatus();
  }

  LoadedKernel& kernel(int k) { return kernels_[k]; }
  const Program& program() const { return *p_; }
  const CudaDevice& device() const { return dev_; }

 private:
  absl::Status require_device() const {
    if (!dev_.ctx) return absl::FailedPreconditionError("this CUDA program was compiled only (no device): it cannot run");
    return absl::OkStatus();
  }

  // The bindings a kernel's plan reads, rebuilt from its own symbol values (the scalar
  // re-plan of a misaligned call).
  Bindings bindings_of(const LoadedKernel& k, const KernelCall& call) const {
    Bindings b = p_->baked;
    for (size_t i = 0; i < k.meta.symbols.size(); ++i) b[k.meta.symbols[i]] = call.syms[i];
    return b;
  }

  absl::Status emit(int i) {
    const ProgramKernel& pk = p_->kernels[i];
    LoadedKernel& k = kernels_[i];
    if (!pk.kernel.schedule || pk.accumulator_input)
      return absl::InternalError(str_cat("kernel ", pk.kernel.name, " has no CUDA schedule: its program was not built for "
                                         "cuda::target()"));
    // Emitted without its names (codegen/module.h), so the kernels of identical layers have
    // one source: compile() builds and loads it once for all of them.
    KILN_ASSIGN_OR_RETURN(k.meta, print_scheduled_kernel(anonymous_kernel(pk.kernel), p_->baked));
    for (const std::string& sym : k.meta.symbols) {
      auto it = std::lower_bound(p_->symbols.begin(), p_->symbols.end(), sym);
      if (it == p_->symbols.end() || *it != sym)
        return absl::InternalError(str_cat("kernel ", pk.kernel.name, ": symbol ", sym, " is not bound by the graph's arguments"));
      k.sym_slots.push_back(static_cast<int>(it - p_->symbols.begin()));
    }
    return absl::OkStatus();
  }

  // Runs `f`, adding what the kernel cache did meanwhile (hits, misses) and its time to
  // the build's statistics.
  template <class F>
  absl::Status count_compiles(F&& f) {
    KernelCacheStats before = kernel_cache().stats();
    auto t0 = std::chrono::steady_clock::now();
    absl::Status st = f();
    KernelCacheStats after = kernel_cache().stats();
    stats_.cache_memory_hits += after.memory_hits - before.memory_hits;
    stats_.cache_disk_hits += after.disk_hits - before.disk_hits;
    stats_.cache_misses += after.misses - before.misses;
    stats_.compile_ms += ms_since(t0);
    return st;
  }

  // Compiles and loads the kernels `which`, each distinct source once (identical layers'
  // kernels share their module and functions).
  absl::Status compile(const std::vector<int>& which) {
    std::vector<NvrtcProgram> programs;
    std::vector<size_t> program_of;  // per `which` entry
    std::map<std::string_view, size_t> by_source;
    for (int i : which) {
      const CudaKernel* k = &kernels_[i].meta;
      auto [it, fresh] = by_source.try_emplace(k->source, programs.size());
      if (fresh)
        programs.push_back({p_->kernels[i].kernel.name, program_source(std::span<const CudaKernel* const>(&k, 1)),
                            dev_.arch, {}});
      else
        ++stats_.kernels_shared;
      program_of.push_back(it->second);
    }
    std::vector<absl::StatusOr<std::shared_ptr<const CompiledKernel>>> out;
    KILN_RETURN_IF_ERROR(count_compiles([&] {
      out = nvrtc_compile_cached(kernel_cache(), programs);
      return absl::OkStatus();
    }));
    std::vector<std::optional<std::pair<CUfunction, CUfunction>>> loaded(programs.size());
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t prog = program_of[i];
      if (!out[prog].ok()) return out[prog].status();
      LoadedKernel& k = kernels_[which[i]];
      if (dump_) {
        KILN_RETURN_IF_ERROR(dump_->write(p_->kernels[which[i]].kernel.name + ".cu", programs[prog].source));
        KILN_RETURN_IF_ERROR(dump_->write(p_->kernels[which[i]].kernel.name + ".ptx", (*out[prog])->ptx));
      }
      k.compiled = true;
      if (!dev_.ctx) continue;
      if (!loaded[prog]) {
        KILN_ASSIGN_OR_RETURN(Module mod, Module::load(*dev_.ctx, (*out[prog])->cubin));
        CUfunction scalar = nullptr, vector = nullptr;
        KILN_ASSIGN_OR_RETURN(scalar, mod.function(k.meta.name));
        if (!k.meta.vector_name.empty()) {
          KILN_ASSIGN_OR_RETURN(vector, mod.function(k.meta.vector_name));
        }
        modules_.push_back(std::move(mod));
        loaded[prog] = {scalar, vector};
      }
      k.scalar = loaded[prog]->first;
      k.vector = loaded[prog]->second;
    }
    return absl::OkStatus();
  }

  CudaDevice dev_;
  std::shared_ptr<const Program> p_;
  std::optional<DumpWriter> dump_;
  BuildStats stats_;
  std::vector<LoadedKernel> kernels_;
  std::vector<Module> modules_;
  std::vector<std::shared_ptr<const AttentionKernels>> attention_;  // per Program::attentions step
  // Per GEMM, its cuBLASLt plans by concrete spec: descriptors and the algorithm (tuned or
  // the heuristic's) made once per shape.
  std::vector<std::map<std::vector<int64_t>, std::unique_ptr<GemmPlan>>> gemm_plans_;
};

// max-autotune's launch shapes for one kernel: threads per block (per row for row kernels).
class KernelTunable final : public Tunable {
 public:
  KernelTunable(CudaProgram& p, int kernel, KernelCall& call, Bindings b, std::vector<int64_t> syms, std::string key,
                int64_t work, int64_t row)
      : p_(p), kernel_(kernel), call_(call), b_(std::move(b)), syms_(std::move(syms)), key_(std::move(key)),
        work_(work), row_(row) {
    const CudaKernel& k = p.kernel(kernel).meta;
    candidates_ = k.launch == LaunchKind::Rows ? std::vector<int>{32, 64, 128, 256, 512, 1024}
                                               : std::vector<int>{128, 256, 512, 1024};
  }
  std::string key() const override { return key_; }
  int candidates() const override { return static_cast<int>(candidates_.size()); }
  absl::Status select(int i) override { return use(candidates_[i]); }
  std::string choice() const override { return std::to_string(p_.kernel(kernel_).threads); }
  bool restore(const std::string& choice) override { return use(std::atoi(choice.c_str())).ok(); }
  std::string note(std::span<const double> ms, int best) const override {
    const CudaKernel& k = p_.kernel(kernel_).meta;
    double at_256 = 0;
    for (size_t i = 0; i < candidates_.size(); ++i)
      if (candidates_[i] == 256) at_256 = ms[i];
    return fmt::format("kernel {} {} work={} row={} on {}: {} threads {:.4f} ms (256: {:.4f} ms)", k.name,
                       launch_kind_name(k.launch), work_, row_, p_.device().ctx->device().properties().name,
                       candidates_[best], ms[best], at_256);
  }

 private:
  absl::Status use(int threads) {
    p_.kernel(kernel_).threads = threads;
    return p_.plan_call(p_.kernel(kernel_), b_, syms_, call_);
  }
  CudaProgram& p_;
  int kernel_;
  KernelCall& call_;
  Bindings b_;
  std::vector<int64_t> syms_;
  std::string key_;
  int64_t work_, row_;
  std::vector<int> candidates_;
};

// max-autotune's cuBLASLt algorithms for one GEMM at one shape (the heuristic's best few).
class GemmTunable final : public Tunable {
 public:
  GemmTunable(CudaProgram& p, int gemm, GemmPlan& plan, std::vector<GemmAlgorithm> algos, std::string key)
      : p_(p), gemm_(gemm), plan_(plan), algos_(std::move(algos)), key_(std::move(key)) {}
  std::string key() const override { return key_; }
  int candidates() const override { return static_cast<int>(algos_.size()); }
  absl::Status select(int i) override {
    plan_.set_algorithm(algos_[i]);
    return absl::OkStatus();
  }
  std::string choice() const override { return hex_bytes(&plan_.algorithm().algo, sizeof(plan_.algorithm().algo)); }
  bool restore(const std::string& choice) override {
    GemmAlgorithm a = plan_.algorithm();
    if (!from_hex(choice, &a.algo, sizeof(a.algo))) return false;
    plan_.set_algorithm(a);
    return true;
  }
  std::string note(std::span<const double> ms, int best) const override {
    const GemmSpec& s = plan_.spec();
    const Program& pr = p_.program();
    return fmt::format("{} {}x{}x{} batch {} on {}: best of {} algorithms {:.4f} ms (heuristic's first {:.4f} ms)",
                       pr.gemms[gemm_].lowered.name, s.m, s.n, s.k, s.batch,
                       p_.device().ctx->device().properties().name, algos_.size(), ms[best], ms.empty() ? 0 : ms[0]);
  }

 private:
  CudaProgram& p_;
  int gemm_;
  GemmPlan& plan_;
  std::vector<GemmAlgorithm> algos_;
  std::string key_;
};

// max-autotune's launch plans for one fused attention step at one call's sizes: cuDNN's
// fused attention where it takes the step, and every tile configuration of kiln's kernel,
// each with the default split of the keys and with 1, 2, 4, 8 and 16 splits (those the
// keys allow). The workspace is sized for the largest once. The choice is kept as
// "<config>/<splits>" ("4x2x1x64/1") or "cudnn".
class AttentionTunable final : public Tunable {
 public:
  AttentionTunable(const AttentionKernels& k, AttentionCallPlan& plan, std::string key, const Context& ctx)
      : k_(k), plan_(plan), key_(std::move(key)), ctx_(ctx) {}
  absl::Status init() {
    // The default plan first (note() compares with it), then cuDNN's where it takes the
    // step (else the note says why not), then every configuration of kiln's kernel.
    int64_t workspace = 0;
    auto add = [&](const AttentionPlan& p) {
      auto same = [&](const AttentionPlan& q) {
        return q.cudnn == p.cudnn && (p.cudnn || (q.config == p.config && q.splits == p.splits));
      };
      if (std::find_if(candidates_.begin(), candidates_.end(), same) != candidates_.end()) return;
      candidates_.push_back(p);
      workspace = std::max(workspace, p.workspace_bytes);
    };
    add(plan_.plan);
    absl::StatusOr<AttentionPlan> library = k_.cudnn_plan(plan_.call);
    if (library.ok()) {
      add(*library);
    } else {
      cudnn_note_ = status_message(library.status());
    }
    for (int config = 0; config < static_cast<int>(k_.configs().size()); ++config) {
      for (std::optional<int> splits : {std::optional<int>(), std::optional(1), std::optional(2), std::optional(4),
                                        std::optional(8), std::optional(16)}) {
        absl::StatusOr<AttentionPlan> p = k_.plan(plan_.call, config, splits);
        if (p.ok()) add(*p);  // else not a launch these sizes allow
      }
    }
    if (workspace > plan_.workspace.size()) {
      KILN_ASSIGN_OR_RETURN(plan_.workspace, DeviceBuffer::allocate(ctx_, workspace));
    }
    return absl::OkStatus();
  }
  std::string key() const override { return key_; }
  int candidates() const override { return static_cast<int>(candidates_.size()); }
  absl::Status select(int i) override {
    plan_.plan = candidates_[i];
    return absl::OkStatus();
  }
  std::string choice() const override { return name(plan_.plan); }
  bool restore(const std::string& choice) override {
    for (const AttentionPlan& p : candidates_)
      if (name(p) == choice) {
        plan_.plan = p;
        return true;
      }
    return false;
  }
  std::string note(std::span<const double> ms, int best) const override {
    std::string library;
    for (size_t i = 1; i < candidates_.size(); ++i)
      if (candidates_[i].cudnn) library = fmt::format("; {}: {:.4f} ms", candidates_[i].to_string(), ms[i]);
    if (!cudnn_note_.empty()) library = "; cuDNN not tried: " + cudnn_note_;
    return fmt::format("{} on {}: {:.4f} ms (default plan {}: {:.4f} ms{})", key_.substr(0, key_.find('|')),
                       ctx_.device().properties().name, ms[best], candidates_.front().to_string(), ms.front(), library);
  }

 private:
  const AttentionKernels& k_;
  AttentionCallPlan& plan_;
  std::string key_;
  // "4x2x1x64/1" (tiles/splits) or "cudnn".
  std::string name(const AttentionPlan& p) const {
    return p.cudnn ? "cudnn" : str_cat(k_.configs()[p.config].name(), "/", p.splits);
  }
  const Context& ctx_;
  std::vector<AttentionPlan> candidates_;
  std::string cudnn_note_;  // why cuDNN is not a candidate
};

absl::StatusOr<std::unique_ptr<Tunable>> CudaProgram::tunable_kernel(int kernel, StepPlan& plan, const Bindings& b,
                                                                     SymbolValues syms) {
  KernelCall& call = static_cast<KernelCall&>(plan);
  const LoadedKernel& k = kernels_[kernel];
  // A row kernel written for one launch shape has nothing to try.
  if (call.skip || fixed_launch(k.meta, call)) return nullptr;
  KILN_ASSIGN_OR_RETURN(int64_t work, k.meta.work.evaluate(b));
  KILN_ASSIGN_OR_RETURN(int64_t row, k.meta.row_length.evaluate(b));
  std::string key = str_cat(k.meta.source, "|", launch_kind_name(k.meta.launch), " work=", work, " row=", row, "|",
                            dev_.ctx->device().properties().name);
  return std::make_unique<KernelTunable>(*this, kernel, call, b, std::vector<int64_t>(syms.begin(), syms.end()),
                                         std::move(key), work, row);
}

absl::StatusOr<std::unique_ptr<Tunable>> CudaProgram::tunable_gemm(int gemm, StepPlan& plan) {
  GemmCall& call = static_cast<GemmCall&>(plan);
  if (!call.plan) return nullptr;
  const GemmSpec& s = call.plan->spec();
  std::string key = fmt::format("gemm {} out {} m={} n={} k={} batch={} lda={} ldb={} sa={} sb={} nk={} km={} epi={} align={}|{}",
                                dtype_name(s.dtype), dtype_name(s.out_dtype.value_or(s.dtype)), s.m, s.n, s.k, s.batch,
                                s.lda, s.ldb, s.batch_stride_a, s.batch_stride_b, s.b_is_nk, s.a_is_km,
                                gemm_epilogue_name(s.epilogue), s.alignment, dev_.ctx->device().properties().name);
  KILN_ASSIGN_OR_RETURN(std::vector<GemmAlgorithm> algos, call.plan->algorithms(8));
  return std::make_unique<GemmTunable>(*this, gemm, *call.plan, std::move(algos), std::move(key));
}

absl::StatusOr<std::unique_ptr<Tunable>> CudaProgram::tunable_attention(int attention, StepPlan& plan) {
  AttentionCallPlan& p = static_cast<AttentionCallPlan&>(plan);
  if (p.call.batch == 0 || p.call.tq == 0) return nullptr;
  const AttentionCall& c = p.call;
  const auto strides = [](const std::array<int64_t, 4>& s) { return fmt::format("{}", fmt::join(s, ",")); };
  std::string key = fmt::format("attention {} batch={} tq={} tk={} blocks={}x{} q={} k={} v={} out={} mask={}|{}",
                                attention_[attention]->form().to_string(), c.batch, c.tq, c.tk, c.max_blocks,
                                c.num_blocks, strides(c.qs), strides(c.ks), strides(c.vs), strides(c.os),
                                strides(c.ms), dev_.ctx->device().properties().name);
  auto t = std::make_unique<AttentionTunable>(*attention_[attention], p, std::move(key), *dev_.ctx);
  const int before = attention_[attention]->compiled();
  KILN_RETURN_IF_ERROR(count_compiles([&] { return t->init(); }));  // compiles every configuration
  stats_.kernels += attention_[attention]->compiled() - before;
  return t;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceProgram>> load_program(const CudaDevice& dev, std::shared_ptr<const Program> p,
                                                            const std::optional<DumpWriter>& dump) {
  auto loaded = std::make_unique<CudaProgram>(dev, std::move(p), dump);
  KILN_RETURN_IF_ERROR(loaded->load());
  return loaded;
}

}  // namespace kiln::cuda
