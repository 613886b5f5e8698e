#include "runtime/cpu/device.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <llvm/Config/llvm-config.h>

#include "codegen/gemm.h"
#include "codegen/intrinsics.h"
#include "codegen/module.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cpu/attention.h"
#include "runtime/cpu/depthwise.h"
#include "runtime/cpu/gemm.h"
#include "runtime/cpu/im2col.h"
#include "runtime/cpu/jit.h"
#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {
namespace {

// Below this much work (outer points times inner iterations) a kernel runs on the calling
// thread: waking the pool costs a few microseconds.
constexpr int64_t kMinParallelWork = 1 << 15;

struct Launch final : StepPlan {
  std::vector<int64_t> syms;  // the kernel's dynamic symbol values
  int64_t points = 0, chunks = 1;
};

struct WindowCall final : StepPlan {
  Im2col geometry;
};

struct AttentionPlan final : StepPlan {
  AttentionCall call;
};

struct DepthwiseCall final : StepPlan {
  Depthwise geometry;
};

struct GemmCall final : StepPlan {
  GemmRunner::Bound bound;
};

// 64-byte aligned, growable, uninitialized memory.
class AlignedBuffer {
 public:
  void* reserve(int64_t bytes) {
    if (bytes > size_) {
      size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
      p_.reset(std::aligned_alloc(64, rounded));
      size_ = p_ ? bytes : 0;
    }
    return p_.get();
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> p_;
  int64_t size_ = 0;
};

class CpuProgram final : public DeviceProgram {
 public:
  explicit CpuProgram(std::shared_ptr<const Program> p) : p_(std::move(p)), kernels_(p_->kernels.size()) {}

  absl::Status load(const std::optional<DumpWriter>& dump) {
    const Program& pr = *p_;
    // Each kernel runs in one step; its storage (which buffers share memory) is the step's.
    std::vector<const KernelStep*> step_of(pr.kernels.size(), nullptr);
    for (const KernelStep& s : pr.kernel_steps) step_of[s.kernel] = &s;
    for (const GemmStep& g : pr.gemms)
      for (const std::optional<KernelStep>* s : {&g.gather_a, &g.gather_b, &g.epilogue, &g.fallback})
        if (*s) step_of[(*s)->kernel] = &**s;
    for (size_t i = 0; i < pr.kernels.size(); ++i) {
      const ProgramKernel& pk = pr.kernels[i];
      const kir::Kernel& k = pk.kernel;
      Kernel& info = kernels_[i];
      if (pk.window_copy || pk.depthwise) continue;  // runtime/cpu/im2col.h, depthwise.h: never compiled
      EmitOptions eo;
      eo.baked = pr.baked;
      eo.gemm_acc_buffer = pk.accumulator_input;
      if (step_of[i]) eo.storage.assign(step_of[i]->storage.begin(), step_of[i]->storage.begin() + k.buffers.size());
      // Without its names (codegen/module.h): identical layers' kernels hit the JIT's cache.
      KILN_ASSIGN_OR_RETURN(info.jit, CpuJit::instance().compile(anonymous_kernel(k), eo));
      for (const std::string& sym : info.jit.symbols) {
        auto it = std::find(pr.symbols.begin(), pr.symbols.end(), sym);
        if (it == pr.symbols.end())
          return absl::InternalError(str_cat("CPU backend: kernel ", k.name, " uses symbol ", sym,
                                             ", which is not a symbol of the graph"));
        info.sym_index.push_back(static_cast<int>(it - pr.symbols.begin()));
      }
      stats_.kernels += 1;
      (info.jit.cache_hit ? stats_.cache_memory_hits
                          : info.jit.disk_hit ? stats_.cache_disk_hits : stats_.cache_misses) += 1;
      stats_.codegen_ms += info.jit.codegen_ms;
      stats_.compile_ms += info.jit.compile_ms;
      stats_.kernel_times.push_back({k.name, info.jit.codegen_ms, info.jit.compile_ms,
                                     info.jit.cache_hit || info.jit.disk_hit});
      if (dump) KILN_RETURN_IF_ERROR(dump->write(k.name + ".ll", *info.jit.optimized_ir));
    }
    for (const GemmStep& g : pr.gemms) {
      kir::Kernel view = g.lowered;  // as BLAS reads it: a gathered operand from its gather's output
      for (bool is_b : {false, true}) {
        const std::optional<KernelStep>& gather = is_b ? g.gather_b : g.gather_a;
        if (!gather) continue;
        view.buffers.push_back(pr.kernels[gather->kernel].kernel.buffers[1]);
        int dense = static_cast<int>(view.buffers.size()) - 1;
        (is_b ? view.gemm->b : view.gemm->a) = gathered_operand(g.lowered, is_b, dense);
      }
      std::optional<GemmRunner> r = GemmRunner::make(view);
      if (!r) return absl::InternalError(str_cat("group ", g.group, ": BLAS cannot run this GEMM"));
      Gemm gemm{*std::move(r)};
      for (int o = 0; o < 2; ++o) {
        const ProgramBuffer& b = pr.buffers[o == 0 ? g.a : g.b];
        gemm.stable[o] = (b.placement == Placement::Argument && pr.args[b.index].param) ||
                         b.placement == Placement::Constant || b.placement == Placement::WeightPrep;
      }
      gemms_.push_back(std::move(gemm));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int kernel, const Bindings& b, SymbolValues syms) override {
    if (const std::optional<WindowCopy>& w = p_->kernels[kernel].window_copy) return plan_window(kernel, *w, b);
    if (const std::optional<DepthwiseConv>& d = p_->kernels[kernel].depthwise) return plan_depthwise(kernel, *d, b);
    const Kernel& info = kernels_[kernel];
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    auto l = std::make_unique<Launch>();
    for (int si : info.sym_index) l->syms.push_back(syms[si]);
    absl::StatusOr<std::vector<int64_t>> domain = evaluate_shape(k.domain, b);
    if (!domain.ok()) return invalid_argument("kernel ", k.name, ": ", domain.status().message());
    l->points = 1;
    for (int64_t d : *domain) l->points *= std::max<int64_t>(d, 0);
    // Inner iterations per outer point: the work estimate that decides the split.
    int64_t per_point = 1;
    for (const kir::Stage& st : k.stages) {
      absl::StatusOr<std::vector<int64_t>> e = evaluate_shape(st.extents, b);
      if (!e.ok()) return invalid_argument("kernel ", k.name, ": ", e.status().message());
      int64_t n = 1;
      for (int64_t x : *e) n *= x;
      per_point += n;
    }
    if (k.gemm && !p_->kernels[kernel].accumulator_input) {
      absl::StatusOr<int64_t> kk = k.gemm->k.evaluate(b);
      if (!kk.ok()) return invalid_argument("kernel ", k.name, ": ", kk.status().message());
      per_point += *kk;
    }
    int threads = ThreadPool::shared().threads();
    if (threads > 1 && l->points * per_point >= kMinParallelWork) l->chunks = std::min<int64_t>(l->points, 4 * threads);
    return l;
  }

  absl::Status launch(int kernel, StepPlan& plan, std::span<const DevicePtr> buffers, const CallContext&) override {
    if (p_->kernels[kernel].window_copy) {
      im2col(static_cast<const WindowCall&>(plan).geometry, reinterpret_cast<const void*>(buffers[0]),
             reinterpret_cast<void*>(buffers[1]), ThreadPool::shared());
      return absl::OkStatus();
    }
    if (const std::optional<DepthwiseConv>& d = p_->kernels[kernel].depthwise) {
      auto ptr = [&](int i) { return reinterpret_cast<float*>(buffers[i]); };
      depthwise_conv(static_cast<const DepthwiseCall&>(plan).geometry, ptr(d->x), ptr(d->weight),
                     d->bias >= 0 ? ptr(d->bias) : nullptr, ptr(d->out), ThreadPool::shared());
      return absl::OkStatus();
    }
    const Launch& l = static_cast<const Launch&>(plan);
    if (l.points == 0) return absl::OkStatus();
    KernelEntry entry = kernels_[kernel].jit.entry;
    const int64_t* syms = l.syms.data();
    // DevicePtr and void* have one size and representation here (host addresses).
    void* const* bufs = reinterpret_cast<void* const*>(buffers.data());
    if (l.chunks <= 1) {
      entry(bufs, syms, 0, l.points);
      return absl::OkStatus();
    }
    ThreadPool::shared().parallel_for(l.chunks, [&](int64_t c) {
      entry(bufs, syms, l.points * c / l.chunks, l.points * (c + 1) / l.chunks);
    });
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int gemm, const Bindings& b) override {
    auto call = std::make_unique<GemmCall>();
    KILN_ASSIGN_OR_RETURN(call->bound, gemms_[gemm].runner.bind(b, gemms_[gemm].stable[1]));
    return call;
  }

  // The accumulator into `c`; packed copies of stable operands are kept while their address,
  // layout and the weights generation stay the same.
  absl::StatusOr<bool> run_gemm(int gemm, StepPlan& plan, DevicePtr a, DevicePtr b, DevicePtr c, DevicePtr,
                                const CallContext& ctx) override {
    Gemm& info = gemms_[gemm];
    const GemmRunner::Bound& g = static_cast<const GemmCall&>(plan).bound;
    std::array<const void*, 2> use{reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b)};
    for (int o = 0; o < 2; ++o) {
      const GemmRunner::Operand& op = o == 0 ? g.a : g.b;
      const void* src = use[o];
      if (!op.pack) continue;
      if (!info.stable[o]) {
        float* dst = static_cast<float*>(pack_[o].reserve(op.pack_elems * 4));
        GemmRunner::pack(op, g.k, src, dst);
        use[o] = dst;
        continue;
      }
      Packed& cached = info.packed[o];
      if (cached.src != src || cached.generation != ctx.weights_generation || !(cached.layout == op) || cached.k != g.k) {
        cached.data.resize(static_cast<size_t>(op.pack_elems));
        GemmRunner::pack(op, g.k, src, cached.data.data());
        cached.src = src;
        cached.generation = ctx.weights_generation;
        cached.layout = op;
        cached.k = g.k;
      }
      use[o] = cached.data.data();
    }
    GemmRunner::run(g, use[0], use[1], reinterpret_cast<float*>(c), ThreadPool::shared());
    return true;
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_attention(int attention, const Bindings& b) override {
    auto plan = std::make_unique<AttentionPlan>();
    absl::StatusOr<AttentionCall> c = bind_attention(p_->attentions[attention], b);
    if (!c.ok()) return invalid_argument("attention step ", attention, ": ", c.status().message());
    plan->call = *std::move(c);
    return plan;
  }

  absl::Status run_attention(int, StepPlan& plan, std::span<const DevicePtr> buf, const CallContext&) override {
    auto ptr = [&](int i) { return reinterpret_cast<void*>(buf[i]); };
    AttentionArgs a{ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5), ptr(6)};
    return cpu::run_attention(static_cast<const AttentionPlan&>(plan).call, a, ThreadPool::shared());
  }

  std::string describe_kernel(int kernel) const override {
    const ProgramKernel& k = p_->kernels[kernel];
    return str_cat(k.kernel.name, k.window_copy ? " (native window copy)" : k.depthwise ? " (native depthwise conv)" : "");
  }
  const BuildStats& stats() const override { return stats_; }

 private:
  // A native window copy's geometry under the call's sizes: in [N, C, s...], out [.., o...].
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_window(int kernel, const WindowCopy& w, const Bindings& b) {
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    absl::StatusOr<std::vector<int64_t>> in = evaluate_shape(w.in, b);
    absl::StatusOr<std::vector<int64_t>> out = evaluate_shape(k.buffers[1].shape, b);
    if (!in.ok() || !out.ok())
      return invalid_argument("kernel ", k.name, ": ", (in.ok() ? out.status() : in.status()).message());
    size_t r = w.kernel.size();
    if (in->size() != r + 2 || out->size() != 2 * r + 2)
      return absl::InternalError(str_cat("kernel ", k.name, ": a window copy of rank ", r, " from ", in->size(),
                                         " to ", out->size(), " dims"));
    auto call = std::make_unique<WindowCall>();
    absl::StatusOr<Im2col> g =
        make_im2col((*in)[0] * (*in)[1], static_cast<int>(dtype_size(k.buffers[0].dtype)),
                    std::vector<int64_t>(in->begin() + 2, in->end()), std::vector<int64_t>(out->end() - r, out->end()),
                    w.kernel, w.strides, w.dilations, w.pads_begin);
    if (!g.ok()) return invalid_argument("kernel ", k.name, ": ", g.status().message());
    call->geometry = *std::move(g);
    return call;
  }

  // A native depthwise conv's geometry under the call's sizes: in [N, C, s...], out [N, C, o...].
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_depthwise(int kernel, const DepthwiseConv& d, const Bindings& b) {
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    absl::StatusOr<std::vector<int64_t>> in = evaluate_shape(d.in, b);
    absl::StatusOr<std::vector<int64_t>> out = evaluate_shape(k.buffers[d.out].shape, b);
    if (!in.ok() || !out.ok())
      return invalid_argument("kernel ", k.name, ": ", (in.ok() ? out.status() : in.status()).message());
    size_t r = d.kernel.size();
    if (in->size() != r + 2 || out->size() != r + 2 || (*in)[0] != (*out)[0] || (*in)[1] != (*out)[1])
      return absl::InternalError(str_cat("kernel ", k.name, ": a depthwise conv from ", in->size(), " to ", out->size(),
                                         " dims"));
    auto call = std::make_unique<DepthwiseCall>();
    Depthwise& g = call->geometry;
    g.planes = (*in)[0] * (*in)[1];
    g.channels = std::max<int64_t>((*in)[1], 1);
    // 1-D: the one spatial dim is the row (h = oh = kh = 1).
    size_t c = r - 1;
    g.w = (*in)[2 + c], g.ow = (*out)[2 + c], g.kw = d.kernel[c], g.sw = d.strides[c], g.dw = d.dilations[c];
    g.pw = d.pads_begin[c];
    if (r == 2) {
      g.h = (*in)[2], g.oh = (*out)[2], g.kh = d.kernel[0], g.sh = d.strides[0], g.dh = d.dilations[0];
      g.ph = d.pads_begin[0];
    }
    if (d.lo) g.lo = static_cast<float>(*d.lo);
    if (d.hi) g.hi = static_cast<float>(*d.hi);
    return call;
  }

  struct Kernel {
    JitKernel jit;
    std::vector<int> sym_index;  // per dynamic symbol of `jit`: its place in Program::symbols
  };
  struct Packed {
    const void* src = nullptr;
    uint64_t generation = 0;
    GemmRunner::Operand layout;
    int64_t k = 0;
    std::vector<float> data;
  };
  struct Gemm {
    GemmRunner runner;
    std::array<bool, 2> stable{};  // operand a/b reads parameters or weight prep: a packed copy is kept
    std::array<Packed, 2> packed{};
  };

  std::shared_ptr<const Program> p_;
  std::vector<Kernel> kernels_;
  std::vector<Gemm> gemms_;
  std::array<AlignedBuffer, 2> pack_;  // packed copies of operands computed per call
  BuildStats stats_;
};

class CpuAdapter final : public DeviceAdapter {
 public:
  CpuAdapter() { use_single_threaded_blas(); }
  DeviceId device() const override { return DeviceId::cpu(); }
  const Target& target() const override { return cpu::target(); }

  absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program> p, const LoadOptions& o) override {
    auto loaded = std::make_unique<CpuProgram>(std::move(p));
    KILN_RETURN_IF_ERROR(loaded->load(o.dump));
    return loaded;
  }

  absl::StatusOr<DeviceMemory> allocate(int64_t bytes) override {
    size_t rounded = static_cast<size_t>((std::max<int64_t>(bytes, 1) + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, rounded);
    if (!p) return absl::ResourceExhaustedError(str_cat("CPU: cannot allocate ", bytes, " bytes"));
    return DeviceMemory(reinterpret_cast<DevicePtr>(p), bytes, std::shared_ptr<void>(p, std::free));
  }

  // Host data is used where the graph keeps it: kernels never write inputs.
  absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& data) override {
    return reinterpret_cast<DevicePtr>(data->data());
  }

  absl::StatusOr<Tensor> empty(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::empty_host(dtype, std::move(shape));
  }

  absl::Status copy(DevicePtr dst, DevicePtr src, int64_t bytes, const CallContext&) override {
    std::memcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), static_cast<size_t>(bytes));
    return absl::OkStatus();
  }
};

}  // namespace

const Target& target() {
  // The intrinsics the LLVM emitter knows, rewritten before it sees the kernels, so that the
  // program's kernels are what it compiles.
  static const Target t{"cpu", GemmLibrary::Blas,
                        [](kir::Kernel& k) {
                          kir::rewrite_intrinsics(k);
                          return absl::OkStatus();
                        },
                        /*accumulator_in_ir=*/false, /*native_window_copy=*/true, /*native_depthwise=*/true,
                        supports_attention};
  return t;
}

std::unique_ptr<DeviceAdapter> make_adapter() { return std::make_unique<CpuAdapter>(); }

std::string llvm_version() { return LLVM_VERSION_STRING; }

}  // namespace kiln::cpu
