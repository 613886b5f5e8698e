#include "runtime/cpu/device.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include <llvm/Config/llvm-config.h>

#include "codegen/gemm.h"
#include "codegen/intrinsics.h"
#include "codegen/module.h"
#include "ir/log.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cpu/attention.h"
#include "runtime/cpu/conv_direct.h"
#include "runtime/cpu/depthwise.h"
#include "runtime/cpu/epilogue.h"
#include "runtime/cpu/gemm.h"
#include "runtime/cpu/im2col.h"
#include "runtime/cpu/jit.h"
#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {
namespace {

// One thread's time per unit of a kernel's work (outer points times inner iterations), for
// ThreadPool::threads_for (measured: the zoo's generated kernels on the build machine).
constexpr double kNsPerIteration = 0.4;

struct Launch final : StepPlan {
  std::vector<int64_t> syms;  // the kernel's dynamic symbol values
  int64_t points = 0;
  double ns = 0;  // one thread's time for the whole domain (estimated)
};

struct WindowCall final : StepPlan {
  Im2col geometry;
};

// A claimed window copy (see CpuProgram::claim_conv_windows) as its GEMM runs it.
struct ConvCall {
  ConvStrategy strategy = ConvStrategy::Im2colBlas;
  DirectConv direct;
  Im2col copy;  // Im2colBlas: the window copy the GEMM makes first
};

struct AttentionPlan final : StepPlan {
  AttentionCall call;
};

struct DepthwiseCall final : StepPlan {
  Depthwise geometry;
};

struct BiasClampCall final : StepPlan {
  BiasClampShape shape;
};

struct RowReduceCall final : StepPlan {
  int64_t rows = 0, n = 0;
};

struct GemmCall final : StepPlan {
  GemmRunner::Bound bound;
  std::optional<ConvCall> conv;  // the GEMM of a claimed window copy
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
      if (pk.window_copy || pk.depthwise || pk.bias_clamp || pk.row_reduce)
        continue;  // im2col.h, depthwise.h, epilogue.h: never compiled
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
    claim_conv_windows();
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int kernel, const Bindings& b, SymbolValues syms) override {
    if (const std::optional<WindowCopy>& w = p_->kernels[kernel].window_copy) return plan_window(kernel, *w, b);
    if (const std::optional<DepthwiseConv>& d = p_->kernels[kernel].depthwise) return plan_depthwise(kernel, *d, b);
    if (const std::optional<BiasClamp>& e = p_->kernels[kernel].bias_clamp) return plan_bias_clamp(kernel, *e, b);
    if (const std::optional<RowReduce>& r = p_->kernels[kernel].row_reduce) return plan_row_reduce(kernel, *r, b);
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
    l->ns = static_cast<double>(l->points) * static_cast<double>(per_point) * kNsPerIteration;
    return l;
  }

  absl::Status launch(int kernel, StepPlan& plan, std::span<const DevicePtr> buffers, const CallContext&) override {
    if (p_->kernels[kernel].window_copy) {
      if (int g = claimed_by_[kernel]; g >= 0) {  // the GEMM copies or convolves directly
        gemms_[g].conv_input = reinterpret_cast<const void*>(buffers[0]);
        return absl::OkStatus();
      }
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
    if (const std::optional<BiasClamp>& e = p_->kernels[kernel].bias_clamp) {
      auto ptr = [&](int i) { return reinterpret_cast<float*>(buffers[i]); };
      bias_clamp(static_cast<const BiasClampCall&>(plan).shape, ptr(p_->kernels[kernel].kernel.buffers.size()),
                 e->bias >= 0 ? ptr(e->bias) : nullptr, ptr(e->out), ThreadPool::shared());
      return absl::OkStatus();
    }
    if (const std::optional<RowReduce>& r = p_->kernels[kernel].row_reduce) {
      const RowReduceCall& call = static_cast<const RowReduceCall&>(plan);
      row_reduce(call.rows, call.n, r->mean, reinterpret_cast<const float*>(buffers[r->in]),
                 reinterpret_cast<float*>(buffers[r->out]), ThreadPool::shared());
      return absl::OkStatus();
    }
    const Launch& l = static_cast<const Launch&>(plan);
    if (l.points == 0) return absl::OkStatus();
    KernelEntry entry = kernels_[kernel].jit.entry;
    const int64_t* syms = l.syms.data();
    // DevicePtr and void* have one size and representation here (host addresses).
    void* const* bufs = reinterpret_cast<void* const*>(buffers.data());
    ThreadPool::shared().parallel_ranges(l.points, l.ns, [&](int64_t lo, int64_t hi) { entry(bufs, syms, lo, hi); });
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int gemm, const Bindings& b) override {
    auto call = std::make_unique<GemmCall>();
    KILN_ASSIGN_OR_RETURN(call->bound, gemms_[gemm].runner.bind(b, gemms_[gemm].stable[1]));
    if (gemms_[gemm].window_kernel >= 0) {
      KILN_ASSIGN_OR_RETURN(call->conv, plan_conv(gemm, call->bound, b));
    }
    return call;
  }

  // The accumulator into `c`; packed copies of stable operands are kept while their address,
  // fingerprint (a few sampled elements), layout and the weights generation stay the same.
  absl::StatusOr<bool> run_gemm(int gemm, StepPlan& plan, DevicePtr a, DevicePtr b, DevicePtr c, DevicePtr, DevicePtr,
                                const CallContext& ctx) override {
    Gemm& info = gemms_[gemm];
    const GemmCall& call = static_cast<const GemmCall&>(plan);
    const GemmRunner::Bound& g = call.bound;
    if (call.conv) {
      const void* in = std::exchange(info.conv_input, nullptr);
      if (!in)
        return absl::InternalError(str_cat("GEMM ", gemm, ": its window copy did not run before it"));
      const DirectConv& d = call.conv->direct;
      auto at = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
      uintptr_t in0 = at(in), in1 = in0 + static_cast<uintptr_t>(d.batch * d.channels * d.h * d.w) * 4;
      uintptr_t c0 = static_cast<uintptr_t>(c), c1 = c0 + static_cast<uintptr_t>(g.acc_elems()) * 4;
      if (call.conv->strategy == ConvStrategy::Direct && (in1 <= c0 || c1 <= in0)) {
        run_direct_conv(info, *call.conv, g, reinterpret_cast<const float*>(a), static_cast<const float*>(in),
                        reinterpret_cast<float*>(c), ctx);
        return true;
      }
      im2col(call.conv->copy, in, reinterpret_cast<void*>(b), ThreadPool::shared());
    }
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
      const uint64_t fp = GemmRunner::fingerprint(op, g.k, src);
      if (cached.src != src || cached.fingerprint != fp || cached.generation != ctx.weights_generation ||
          !(cached.layout == op) || cached.k != g.k) {
        cached.data.resize(static_cast<size_t>(op.pack_elems));
        GemmRunner::pack(op, g.k, src, cached.data.data());
        cached.src = src;
        cached.fingerprint = fp;
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
    const AttentionCall& c = static_cast<const AttentionPlan&>(plan).call;
    const int64_t e = dtype_size(c.form.dtype);  // offsets are in elements
    auto ptr = [&](int i, int64_t offset = 0) { return reinterpret_cast<void*>(buf[i] + offset * e); };
    AttentionArgs a{ptr(0, c.q_offset), ptr(1, c.k_offset), ptr(2, c.v_offset), ptr(3, c.out_offset), ptr(4), ptr(5), ptr(6)};
    return cpu::run_attention(c, a, ThreadPool::shared());
  }

  std::string describe_kernel(int kernel) const override {
    const ProgramKernel& k = p_->kernels[kernel];
    if (k.window_copy && claimed_by_[kernel] >= 0)
      return str_cat(k.kernel.name, " (native window copy, made by its GEMM BLAS[g", p_->gemms[claimed_by_[kernel]].group,
                     "], which convolves directly instead where runtime/cpu/conv_direct.h chooses so)");
    return str_cat(k.kernel.name, native_note(k));
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

  // A native row reduction's rows and row length under the call's sizes: the input's
  // leading and trailing (reduced) dims.
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_row_reduce(int kernel, const RowReduce& r, const Bindings& b) {
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    absl::StatusOr<std::vector<int64_t>> in = evaluate_shape(r.in_shape, b);
    if (!in.ok()) return invalid_argument("kernel ", k.name, ": ", in.status().message());
    auto call = std::make_unique<RowReduceCall>();
    call->rows = call->n = 1;
    for (size_t i = 0; i < in->size(); ++i) (i + r.axes < in->size() ? call->rows : call->n) *= (*in)[i];
    return call;
  }

  // A native bias-and-clamp epilogue's rows under the call's sizes: the domain [..., m, n].
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_bias_clamp(int kernel, const BiasClamp& e, const Bindings& b) {
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    absl::StatusOr<std::vector<int64_t>> d = evaluate_shape(k.domain, b);
    if (!d.ok()) return invalid_argument("kernel ", k.name, ": ", d.status().message());
    auto call = std::make_unique<BiasClampCall>();
    BiasClampShape& s = call->shape;
    s.n = d->back(), s.m = (*d)[d->size() - 2], s.per_row = e.per_row;
    s.rows = 1;
    for (size_t i = 0; i + 1 < d->size(); ++i) s.rows *= (*d)[i];
    if (e.lo) s.lo = static_cast<float>(*e.lo);
    if (e.hi) s.hi = static_cast<float>(*e.hi);
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

  struct Gemm;

  // Conv GEMMs make their window copy themselves: a window copy step whose output is read
  // by nothing but the next step, a BLAS GEMM without gathers, as its B operand (its epilogue
  // lists the buffer but reads the accumulator). The copy's launch then records its input,
  // and the GEMM makes the copy and calls BLAS, or convolves directly from the input
  // (conv_direct.h decides per call shape), the copy's input being alive since nothing runs
  // between the two steps.
  void claim_conv_windows() {
    const Program& pr = *p_;
    claimed_by_.assign(pr.kernels.size(), -1);
    std::vector<int> refs(pr.buffers.size(), 0);  // steps' references per program buffer
    auto count = [&](const KernelStep& s) {
      for (int b : s.buffers) ++refs[b];
    };
    for (const KernelStep& s : pr.kernel_steps) count(s);
    for (const GemmStep& g : pr.gemms) {
      for (int b : {g.a, g.b, g.c, g.bias})
        if (b >= 0) ++refs[b];
      for (const std::optional<KernelStep>* s : {&g.gather_a, &g.gather_b, &g.epilogue, &g.fallback})
        if (*s) count(**s);
    }
    for (const CopyStep& c : pr.copies) ++refs[c.src], ++refs[c.dst];
    for (const AttentionStep& a : pr.attentions)
      for (int b : {a.q, a.k, a.v, a.out, a.mask, a.kv_lens, a.block_table})
        if (b >= 0) ++refs[b];
    for (const ExternStep& x : pr.externs) {
      for (int b : x.inputs) ++refs[b];
      for (int b : x.outputs) ++refs[b];
    }
    for (const CollectiveStep& c : pr.collectives) ++refs[c.input], ++refs[c.output];
    for (size_t i = 1; i < pr.steps.size(); ++i) {
      const Step &prev = pr.steps[i - 1], &cur = pr.steps[i];
      if (prev.kind != Step::Kind::Kernel || cur.kind != Step::Kind::Gemm) continue;
      const KernelStep& w = pr.kernel_steps[prev.index];
      const GemmStep& g = pr.gemms[cur.index];
      if (!pr.kernels[w.kernel].window_copy || g.library != GemmLibrary::Blas || g.gather_a || g.gather_b ||
          g.fallback || w.buffers.size() != 2 || w.buffers[1] != g.b || g.a == g.b || g.c == g.b)
        continue;
      int own = 2;  // the copy's output and the GEMM's B
      if (g.epilogue) own += static_cast<int>(std::count(g.epilogue->buffers.begin(), g.epilogue->buffers.end(), g.b));
      if (refs[g.b] != own) continue;
      claimed_by_[w.kernel] = cur.index;
      gemms_[cur.index].window_kernel = w.kernel;
    }
  }

  // A claimed window's conv under the call's sizes: its copy's geometry, and the direct form
  // where the GEMM reads the window as dense [batch][k][oh * ow] and the weight in place.
  absl::StatusOr<ConvCall> plan_conv(int gemm, const GemmRunner::Bound& g, const Bindings& b) {
    int wk = gemms_[gemm].window_kernel;
    const WindowCopy& w = *p_->kernels[wk].window_copy;
    const kir::Kernel& k = p_->kernels[wk].kernel;
    absl::StatusOr<std::unique_ptr<StepPlan>> copy = plan_window(wk, w, b);
    if (!copy.ok()) return copy.status();
    ConvCall cc;
    cc.copy = static_cast<WindowCall&>(**copy).geometry;
    std::vector<int64_t> in = *evaluate_shape(w.in, b), out = *evaluate_shape(k.buffers[1].shape, b);
    size_t r = w.kernel.size();
    DirectConv& d = cc.direct;
    d.batch = in[0], d.channels = in[1], d.m = g.m;
    d.w = in[r + 1], d.ow = out[2 * r + 1], d.kw = w.kernel[r - 1], d.dw = w.dilations[r - 1], d.pw = w.pads_begin[r - 1];
    d.sw = w.strides[r - 1];
    if (r == 2) d.h = in[2], d.oh = out[4], d.kh = w.kernel[0], d.dh = w.dilations[0], d.ph = w.pads_begin[0];
    if (r == 2) d.sh = w.strides[0];
    int64_t n = d.oh * d.ow, kk = d.k();
    auto dense_run = [](const std::vector<std::pair<int64_t, int64_t>>& dims, int64_t extent, int64_t stride) {
      int64_t total = 1;
      for (auto [e, s] : dims) {
        if (e == 1) continue;
        total *= e;
      }
      if (total != extent) return false;
      int64_t want = stride;  // innermost first
      for (size_t i = dims.size(); i-- > 0;) {
        if (dims[i].first == 1) continue;
        if (dims[i].second != want) return false;
        want *= dims[i].first;
      }
      return true;
    };
    bool shared_a = std::all_of(g.a.batch.begin(), g.a.batch.end(), [](auto e) { return e.first == 1 || e.second == 0; });
    bool layout = k.buffers[0].dtype == DType::f32 && g.a.dtype == DType::f32 && g.b.dtype == DType::f32 &&
                  !g.a.pack && g.a.k_contiguous && shared_a && !g.b.pack && !g.b.k_contiguous && g.b.offset == 0 &&
                  g.b.ld == n && g.n == n && g.k == kk && g.m >= 1 && g.batches == d.batch &&
                  dense_run(g.b.outer, n, 1) && dense_run(g.b.batch, d.batch, kk * n);
    int64_t stride = w.strides.empty() ? 1 : *std::max_element(w.strides.begin(), w.strides.end());
    cc.strategy = choose_conv_strategy(stride, static_cast<int>(r), layout, n);
    if (log_enabled(LogTopic::lower))
      log_line(LogTopic::lower, 1,
               str_cat("CPU conv BLAS[g", p_->gemms[gemm].group, "] (window ", k.name, "): ",
                       conv_strategy_name(cc.strategy), " for batch ", d.batch, ", ", d.channels, " -> ", d.m,
                       " channels, ", d.h, "x", d.w, " -> ", d.oh, "x", d.ow, ", kernel ", d.kh, "x", d.kw, ", stride ",
                       d.sh, "x", d.sw));
    return cc;
  }

  // The conv GEMM computed directly from the window's input, the weight packed for it (kept
  // while a stable weight's address, fingerprint, layout and generation stay); as the copy and BLAS where
  // the accumulator overlaps the input.
  void run_direct_conv(Gemm& info, const ConvCall& conv, const GemmRunner::Bound& g, const float* a,
                       const float* in, float* c, const CallContext& ctx) {
    const DirectConv& d = conv.direct;
    const float* weight = a + g.a.offset;
    Packed& pk = info.conv_weight;
    const uint64_t fp = GemmRunner::fingerprint(g.a, g.k, a);
    if (!info.stable[0] || pk.src != weight || pk.fingerprint != fp || pk.generation != ctx.weights_generation ||
        !(pk.layout == g.a) || pk.k != g.k) {
      pk.data.resize(static_cast<size_t>(packed_conv_weight_floats(d)));
      pack_conv_weight(d, weight, g.a.ld, pk.data.data());
      pk.src = weight;
      pk.fingerprint = fp;
      pk.generation = ctx.weights_generation;
      pk.layout = g.a;
      pk.k = g.k;
    }
    direct_conv(d, in, pk.data.data(), c, conv_scratch_, ThreadPool::shared());
  }

  struct Kernel {
    JitKernel jit;
    std::vector<int> sym_index;  // per dynamic symbol of `jit`: its place in Program::symbols
  };
  struct Packed {
    const void* src = nullptr;
    uint64_t fingerprint = 0;  // GemmRunner::fingerprint of src when packed
    uint64_t generation = 0;
    GemmRunner::Operand layout;
    int64_t k = 0;
    std::vector<float> data;
  };
  struct Gemm {
    GemmRunner runner;
    std::array<bool, 2> stable{};  // operand a/b reads parameters or weight prep: a packed copy is kept
    std::array<Packed, 2> packed{};
    // A conv GEMM whose B is the window copy `window_kernel` (-1: none), which it makes or
    // convolves from; `conv_input` is the copy's input this call (set by its launch).
    int window_kernel = -1;
    const void* conv_input = nullptr;
    Packed conv_weight;  // the direct conv's packed A
  };

  std::shared_ptr<const Program> p_;
  std::vector<Kernel> kernels_;
  std::vector<Gemm> gemms_;
  std::array<AlignedBuffer, 2> pack_;  // packed copies of operands computed per call
  std::vector<int> claimed_by_;        // per kernel: the GEMM that makes its window copy, or -1
  std::vector<float> conv_scratch_;    // the direct conv's padded planes
  BuildStats stats_;
};

class CpuAdapter final : public DeviceAdapter {
 public:
  CpuAdapter() { init_blas(); }
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
  static const Target t{"cpu",
                        GemmLibrary::Blas,
                        [](kir::Kernel& k) {
                          kir::rewrite_intrinsics(k);
                          return absl::OkStatus();
                        },
                        /*accumulator_in_ir=*/false,
                        /*native_window_copy=*/true,
                        /*native_depthwise=*/true,
                        /*native_bias_clamp=*/true,
                        /*native_row_reduce=*/true,
                        supports_attention,
                        ExternDevice::Cpu};
  return t;
}

std::unique_ptr<DeviceAdapter> make_adapter() { return std::make_unique<CpuAdapter>(); }

std::string llvm_version() { return LLVM_VERSION_STRING; }

std::string host_description() {
  return str_cat(std::thread::hardware_concurrency(), " hardware threads, LLVM host CPU ", CpuJit::instance().host_cpu(),
                 ", OpenBLAS core ", blas_core());
}

}  // namespace kiln::cpu
