#include "runtime/cpu/backend.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "ir/str.h"
#include "runtime/cpu/gemm.h"
#include "runtime/cpu/jit.h"
#include "runtime/cpu/thread_pool.h"
#include "ir/status.h"

namespace kiln::cpu {
namespace {

// Below this much work (outer points times inner iterations) a kernel runs on the calling
// thread: waking the pool costs a few microseconds.
constexpr int64_t kMinParallelWork = 1 << 15;
// Distinct symbol values whose call plans are kept; past it the cache starts over.
constexpr size_t kMaxPlans = 256;

// Where a kernel buffer's memory is on a call.
struct Slot {
  enum class Kind : uint8_t { Arg, Data, Arena, Output, Prep };
  Kind kind = Kind::Arg;
  int index = 0;  // into the call's args, data_, the memory plan, the graph outputs, prep values
};

struct KernelInfo {
  const kir::Kernel* kernel = nullptr;
  JitKernel jit;
  std::optional<GemmRunner> gemm;  // set: OpenBLAS computes the accumulator
  std::vector<Slot> slots;         // per kernel buffer
  std::vector<int> sym_index;      // per dynamic symbol of `jit`: its place in CompiledModule::symbols
  bool weight_prep = false;
  std::array<bool, 2> stable{};    // GEMM operand a/b reads parameters: a packed copy is kept
};

// What one set of symbol values fixes, computed once per distinct values.
struct CallPlan {
  uint64_t id = 0;
  std::vector<std::vector<int64_t>> arg_shapes, output_shapes, prep_shapes;
  std::vector<int64_t> arena_offsets;
  int64_t arena_bytes = 0;
  struct Launch {
    std::vector<int64_t> syms;  // the kernel's dynamic symbol values
    int64_t points = 0, chunks = 1;
    std::optional<GemmRunner::Bound> gemm;
  };
  std::vector<Launch> launches;  // per kernel
  int64_t acc_floats = 0;
  std::array<int64_t, 2> pack_floats{};  // scratch for packing unstable GEMM operands
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

std::string shape_text(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

class CpuExecutable final : public Executable {
 public:
  static absl::StatusOr<std::unique_ptr<CpuExecutable>> build(std::shared_ptr<const CompiledModule> m,
                                                              const BuildOptions& opts) {
    std::unique_ptr<CpuExecutable> e(new CpuExecutable());
    e->module_ = std::move(m);
    e->baked_ = opts.baked;
    KILN_RETURN_IF_ERROR(e->resolve_slots());
    KILN_RETURN_IF_ERROR(e->compile_kernels());
    if (!opts.dump_dir.empty()) KILN_RETURN_IF_ERROR(e->dump(opts.dump_dir));
    return e;
  }

  absl::Status run(std::span<const Tensor> args, SymbolValues syms, std::span<Tensor> outputs,
                   const CallOptions&) override {
    std::lock_guard<std::mutex> lock(mu_);
    const CompiledModule& m = *module_;
    if (args.size() != m.args.size())
      return invalid_argument("CPU executable: ", args.size(), " arguments given, the graph takes ", m.args.size());
    if (outputs.size() != m.state.graph.outputs().size())
      return invalid_argument("CPU executable: ", outputs.size(), " output slots given, the graph has ",
                              m.state.graph.outputs().size());
    KILN_ASSIGN_OR_RETURN(const CallPlan* plan, plan_for(syms));
    const CallPlan& p = *plan;
    for (size_t i = 0; i < args.size(); ++i)
      KILN_RETURN_IF_ERROR(check_tensor(args[i], m.args[i], p.arg_shapes[i], "argument"));
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Value* v = m.state.graph.outputs()[i];
      if (!outputs[i].data())
        outputs[i] = Tensor::empty_host(v->dtype(), p.output_shapes[i]);
      else
        KILN_RETURN_IF_ERROR(check_tensor(outputs[i], v, p.output_shapes[i], "output"));
    }
    uint8_t* arena = static_cast<uint8_t*>(arena_.reserve(p.arena_bytes));
    if (p.arena_bytes > 0 && !arena)
      return absl::ResourceExhaustedError(str_cat("CPU executable: cannot allocate an arena of ", p.arena_bytes, " bytes"));
    float* acc = static_cast<float*>(acc_.reserve(p.acc_floats * 4));
    KILN_RETURN_IF_ERROR(prepare_weights(p, args, acc));

    auto pointer = [&](const Slot& s) -> void* {
      switch (s.kind) {
        case Slot::Kind::Arg: return args[s.index].data();
        case Slot::Kind::Data: return const_cast<void*>(data_ptrs_[s.index]);  // kernels never write inputs
        case Slot::Kind::Arena: return arena + p.arena_offsets[s.index];
        case Slot::Kind::Output: return outputs[s.index].data();
        case Slot::Kind::Prep: return prep_.storage[s.index].data();
      }
      return nullptr;
    };
    std::vector<void*> ptrs;
    for (size_t i = 0; i < kernels_.size(); ++i) {
      if (kernels_[i].weight_prep) continue;
      ptrs.clear();
      for (const Slot& s : kernels_[i].slots) ptrs.push_back(pointer(s));
      run_kernel(i, p, ptrs, acc);
    }
    // Outputs no kernel wrote: arguments, parameters, weight-prep results and repeats of
    // another output.
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Slot& s = output_sources_[i];
      if (s.kind == Slot::Kind::Output && s.index == static_cast<int>(i)) continue;
      int64_t bytes = outputs[i].numel() * dtype_size(outputs[i].dtype());
      if (bytes > 0) std::memcpy(outputs[i].data(), pointer(s), static_cast<size_t>(bytes));
    }
    return absl::OkStatus();
  }

  const BuildStats& build_stats() const override { return stats_; }
  void parameters_changed() override {
    prep_.valid = false;
    ++prep_.generation;  // packed parameter operands are keyed on it too
  }

 private:
  CpuExecutable() = default;

  // Every value a kernel reads or writes, and every graph output, gets its Slot.
  absl::Status resolve_slots() {
    const CompiledModule& m = *module_;
    const Graph& g = m.state.graph;
    const Schedule& s = m.state.schedule;
    if (m.kernels.size() != s.groups.size())
      return absl::InternalError(str_cat("CPU backend: ", m.kernels.size(), " kernels for ", s.groups.size(), " groups"));
    absl::flat_hash_map<const Value*, Slot> where;
    for (size_t i = 0; i < m.args.size(); ++i) where[m.args[i]] = {Slot::Kind::Arg, static_cast<int>(i)};
    auto add_data = [&](const Value* v, const void* p) {
      where[v] = {Slot::Kind::Data, static_cast<int>(data_ptrs_.size())};
      data_ptrs_.push_back(p);
    };
    for (const Value* a : g.args())
      if (a->is_param() && a->data()) add_data(a, a->data()->data());
    for (const KernelGroup& grp : s.groups)
      if (grp.weight_prep)
        for (const Value* v : grp.outputs) {
          where[v] = {Slot::Kind::Prep, static_cast<int>(prep_values_.size())};
          prep_values_.push_back(v);
        }
    for (size_t i = 0; i < m.state.memory.buffers.size(); ++i)
      where.try_emplace(m.state.memory.buffers[i].value, Slot{Slot::Kind::Arena, static_cast<int>(i)});
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      const Value* v = g.outputs()[i];
      auto [it, fresh] = where.try_emplace(v, Slot{Slot::Kind::Output, static_cast<int>(i)});
      output_sources_.push_back(it->second);
    }
    for (size_t ki = 0; ki < m.kernels.size(); ++ki) {
      const kir::Kernel& k = m.kernels[ki];
      KernelInfo info;
      info.kernel = &k;
      info.weight_prep = s.groups[ki].weight_prep;
      for (const kir::Buffer& buf : k.buffers) {
        const Value* v = g.find(buf.name);
        auto it = v ? where.find(v) : where.end();
        if (it == where.end())
          return absl::InternalError(str_cat("CPU backend: kernel ", k.name, ": buffer %", buf.name,
                                             " has no memory (not an argument, parameter, output or planned buffer)"));
        info.slots.push_back(it->second);
      }
      kernels_.push_back(std::move(info));
    }
    return absl::OkStatus();
  }

  // Buffers of kernel `ki` sharing memory: an output the memory plan writes over one of the
  // kernel's own inputs.
  std::vector<int> storage_of(size_t ki) const {
    const kir::Kernel& k = module_->kernels[ki];
    const MemoryPlan& plan = module_->state.memory;
    std::vector<int> storage(k.buffers.size());
    for (size_t i = 0; i < k.buffers.size(); ++i) storage[i] = static_cast<int>(i);
    for (size_t i = 0; i < k.buffers.size(); ++i) {
      const Slot& s = kernels_[ki].slots[i];
      if (k.buffers[i].role != kir::Buffer::Role::Output || s.kind != Slot::Kind::Arena) continue;
      const Value* donor = plan.buffers[s.index].reuses;
      for (size_t j = 0; j < k.buffers.size(); ++j)
        if (donor && k.buffers[j].role == kir::Buffer::Role::Input && k.buffers[j].name == donor->name())
          storage[i] = static_cast<int>(j);
    }
    return storage;
  }

  absl::Status compile_kernels() {
    const CompiledModule& m = *module_;
    for (size_t ki = 0; ki < kernels_.size(); ++ki) {
      KernelInfo& info = kernels_[ki];
      const kir::Kernel& k = *info.kernel;
      EmitOptions eo;
      eo.baked = baked_;
      eo.storage = storage_of(ki);
      info.gemm = GemmRunner::make(k);
      eo.gemm_acc_buffer = info.gemm.has_value();
      KILN_ASSIGN_OR_RETURN(info.jit, CpuJit::instance().compile(k, eo));
      for (const std::string& sym : info.jit.symbols) {
        auto it = std::find(m.symbols.begin(), m.symbols.end(), sym);
        if (it == m.symbols.end())
          return absl::InternalError(str_cat("CPU backend: kernel ", k.name, " uses symbol ", sym,
                                             ", which is not a symbol of the graph"));
        info.sym_index.push_back(static_cast<int>(it - m.symbols.begin()));
      }
      if (info.gemm) {
        for (int o = 0; o < 2; ++o) {
          const Slot& s = info.slots[o == 0 ? k.gemm->a.buffer : k.gemm->b.buffer];
          bool param = s.kind == Slot::Kind::Arg && m.args[s.index]->is_param();
          info.stable[o] = param || s.kind == Slot::Kind::Data || s.kind == Slot::Kind::Prep;
        }
      }
      stats_.kernels += 1;
      stats_.gemms += k.gemm ? 1 : 0;
      stats_.launches += info.weight_prep ? 0 : 1;
      (info.jit.cache_hit ? stats_.cache_memory_hits : stats_.cache_misses) += 1;
      stats_.codegen_ms += info.jit.codegen_ms;
      stats_.compile_ms += info.jit.compile_ms;
      stats_.kernel_times.push_back({k.name, info.jit.codegen_ms, info.jit.compile_ms, info.jit.cache_hit});
    }
    packed_.resize(kernels_.size());
    return absl::OkStatus();
  }

  absl::Status dump(const std::string& dir) const {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(str_cat("dump directory ", dir, ": ", ec.message()));
    for (const KernelInfo& ki : kernels_) {
      std::string path = str_cat(dir, "/", ki.kernel->name, ".ll");
      std::ofstream f(path, std::ios::binary);
      f << *ki.jit.optimized_ir;
      if (!f) return absl::InternalError(str_cat("cannot write ", path));
    }
    return absl::OkStatus();
  }

  absl::Status check_tensor(const Tensor& t, const Value* v, const std::vector<int64_t>& shape,
                            const char* what) const {
    if (t.device() != DeviceId::cpu())
      return invalid_argument(what, " %", v->name(), " is on ", device_name(t.device()), "; the CPU executable needs host memory");
    if (t.dtype() != v->dtype() || t.shape() != shape)
      return invalid_argument(what, " %", v->name(), " expects ", dtype_name(v->dtype()), shape_text(shape), ", got ",
                              t.type_string());
    if (!t.is_contiguous()) return invalid_argument(what, " %", v->name(), " must be contiguous");
    if (t.numel() > 0 && !t.data()) return invalid_argument(what, " %", v->name(), " has no memory");
    return absl::OkStatus();
  }

  absl::StatusOr<const CallPlan*> plan_for(SymbolValues syms) {
    if (last_plan_ && std::equal(syms.begin(), syms.end(), last_key_.begin(), last_key_.end())) return last_plan_;
    std::vector<int64_t> key(syms.begin(), syms.end());
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      KILN_ASSIGN_OR_RETURN(std::unique_ptr<CallPlan> p, make_plan(syms));
      if (plans_.size() >= kMaxPlans) plans_.clear();
      it = plans_.emplace(key, std::move(p)).first;
    }
    last_key_ = std::move(key);
    last_plan_ = it->second.get();
    return last_plan_;
  }

  absl::StatusOr<std::unique_ptr<CallPlan>> make_plan(SymbolValues syms) {
    const CompiledModule& m = *module_;
    if (syms.size() != m.symbols.size())
      return invalid_argument("CPU executable: ", syms.size(), " symbol values given, the graph has ", m.symbols.size());
    Bindings b = m.bindings(syms);
    for (const auto& [sym, value] : baked_)
      if (auto it = b.find(sym); it != b.end() && it->second != value)
        return invalid_argument("CPU executable: this specialization has ", sym, " = ", value, ", the call has ", sym,
                                " = ", it->second);
    auto p = std::make_unique<CallPlan>();
    p->id = ++next_plan_id_;
    auto shapes = [&](auto values, auto& out) -> absl::Status {
      for (const Value* v : values) {
        absl::StatusOr<std::vector<int64_t>> s = evaluate_shape(v->shape(), b);
        if (!s.ok()) return invalid_argument("%", v->name(), ": ", s.status().message());
        out.push_back(*std::move(s));
      }
      return absl::OkStatus();
    };
    KILN_RETURN_IF_ERROR(shapes(m.args, p->arg_shapes));
    KILN_RETURN_IF_ERROR(shapes(m.state.graph.outputs(), p->output_shapes));
    KILN_RETURN_IF_ERROR(shapes(prep_values_, p->prep_shapes));
    KILN_ASSIGN_OR_RETURN(ArenaLayout layout, m.state.memory.layout(b));
    p->arena_offsets = std::move(layout.offsets);
    p->arena_bytes = layout.arena_bytes;
    int threads = ThreadPool::shared().threads();
    for (size_t ki = 0; ki < kernels_.size(); ++ki) {
      const KernelInfo& info = kernels_[ki];
      const kir::Kernel& k = *info.kernel;
      CallPlan::Launch l;
      for (int si : info.sym_index) l.syms.push_back(syms[si]);
      absl::StatusOr<std::vector<int64_t>> domain = evaluate_shape(k.domain, b);
      if (!domain.ok()) return invalid_argument("kernel ", k.name, ": ", domain.status().message());
      l.points = 1;
      for (int64_t d : *domain) l.points *= std::max<int64_t>(d, 0);
      // Inner iterations per outer point: the work estimate that decides the split.
      int64_t per_point = 1;
      for (const kir::Stage& st : k.stages) {
        absl::StatusOr<std::vector<int64_t>> e = evaluate_shape(st.extents, b);
        if (!e.ok()) return invalid_argument("kernel ", k.name, ": ", e.status().message());
        int64_t n = 1;
        for (int64_t x : *e) n *= x;
        per_point += n;
      }
      if (info.gemm) {
        KILN_ASSIGN_OR_RETURN(l.gemm, info.gemm->bind(b));
        p->acc_floats = std::max(p->acc_floats, l.gemm->acc_elems());
        for (int o = 0; o < 2; ++o) {
          const GemmRunner::Operand& op = o == 0 ? l.gemm->a : l.gemm->b;
          if (op.pack && !info.stable[o]) p->pack_floats[o] = std::max(p->pack_floats[o], op.pack_elems);
        }
      } else if (k.gemm) {
        absl::StatusOr<int64_t> kk = k.gemm->k.evaluate(b);
        if (!kk.ok()) return invalid_argument("kernel ", k.name, ": ", kk.status().message());
        per_point += *kk;
      }
      if (threads > 1 && l.points * per_point >= kMinParallelWork) l.chunks = std::min<int64_t>(l.points, 4 * threads);
      p->launches.push_back(std::move(l));
    }
    return p;
  }

  // Kernel `ki` over `ptrs` (its buffers), after its GEMM's accumulator when it has one.
  void run_kernel(size_t ki, const CallPlan& p, std::vector<void*>& ptrs, float* acc) {
    const KernelInfo& info = kernels_[ki];
    if (info.gemm) {
      run_gemm(ki, p, ptrs, acc);
      ptrs.push_back(acc);
    }
    const CallPlan::Launch& l = p.launches[ki];
    if (l.points == 0) return;
    KernelEntry entry = info.jit.entry;
    const int64_t* syms = l.syms.data();
    void* const* bufs = ptrs.data();
    if (l.chunks <= 1) {
      entry(bufs, syms, 0, l.points);
      return;
    }
    ThreadPool::shared().parallel_for(l.chunks, [&](int64_t c) {
      entry(bufs, syms, l.points * c / l.chunks, l.points * (c + 1) / l.chunks);
    });
  }

  // The accumulator of GEMM kernel `ki` into `acc`; packed copies of parameter operands are
  // kept while their source pointer, layout and the weight-prep results stay the same.
  void run_gemm(size_t ki, const CallPlan& p, const std::vector<void*>& ptrs, float* acc) {
    const KernelInfo& info = kernels_[ki];
    const GemmRunner::Bound& g = *p.launches[ki].gemm;
    std::array<const void*, 2> use{};
    for (int o = 0; o < 2; ++o) {
      const GemmRunner::Operand& op = o == 0 ? g.a : g.b;
      const void* src = ptrs[op.buffer];
      use[o] = src;
      if (!op.pack) continue;
      if (!info.stable[o]) {
        float* dst = static_cast<float*>(pack_[o].reserve(op.pack_elems * 4));
        GemmRunner::pack(op, g.k, src, dst);
        use[o] = dst;
        continue;
      }
      Packed& c = packed_[ki][o];
      if (c.src != src || c.prep_generation != prep_.generation || !(c.layout == op) || c.k != g.k) {
        c.data.resize(static_cast<size_t>(op.pack_elems));
        GemmRunner::pack(op, g.k, src, c.data.data());
        c.src = src;
        c.prep_generation = prep_.generation;
        c.layout = op;
        c.k = g.k;
      }
      use[o] = c.data.data();
    }
    GemmRunner::run(g, use[0], use[1], acc, ThreadPool::shared());
  }

  // Runs the weight-prep kernels when the parameters they read moved or their shapes changed.
  absl::Status prepare_weights(const CallPlan& p, std::span<const Tensor> args, float* acc) {
    if (prep_values_.empty()) return absl::OkStatus();
    std::vector<const void*> params;
    for (size_t i = 0; i < args.size(); ++i)
      if (module_->args[i]->is_param()) params.push_back(args[i].data());
    if (prep_.valid && params == prep_.params && p.prep_shapes == prep_.shapes) return absl::OkStatus();
    prep_.storage.resize(prep_values_.size());
    for (size_t i = 0; i < prep_values_.size(); ++i) {
      int64_t n = 1;
      for (int64_t d : p.prep_shapes[i]) n *= d;
      prep_.storage[i].assign(static_cast<size_t>(n * dtype_size(prep_values_[i]->dtype())), 0);
    }
    std::vector<void*> ptrs;
    for (size_t ki = 0; ki < kernels_.size(); ++ki) {
      const KernelInfo& info = kernels_[ki];
      if (!info.weight_prep) continue;
      ptrs.clear();
      for (const Slot& s : info.slots) {
        switch (s.kind) {
          case Slot::Kind::Arg: ptrs.push_back(args[s.index].data()); break;
          case Slot::Kind::Data: ptrs.push_back(const_cast<void*>(data_ptrs_[s.index])); break;
          case Slot::Kind::Prep: ptrs.push_back(prep_.storage[s.index].data()); break;
          default:
            return absl::InternalError(str_cat("weight-prep kernel ", info.kernel->name,
                                               " reads a value computed per call"));
        }
      }
      run_kernel(ki, p, ptrs, acc);
    }
    prep_.params = std::move(params);
    prep_.shapes = p.prep_shapes;
    prep_.valid = true;
    ++prep_.generation;
    return absl::OkStatus();
  }

  std::shared_ptr<const CompiledModule> module_;
  Bindings baked_;
  BuildStats stats_;
  std::vector<KernelInfo> kernels_;
  std::vector<const void*> data_ptrs_;  // host data of parameters
  std::vector<const Value*> prep_values_;
  std::vector<Slot> output_sources_;  // per graph output: where its value is

  std::mutex mu_;  // one call at a time: the arena and scratch are shared
  absl::flat_hash_map<std::vector<int64_t>, std::unique_ptr<CallPlan>> plans_;
  std::vector<int64_t> last_key_;
  const CallPlan* last_plan_ = nullptr;
  uint64_t next_plan_id_ = 0;
  AlignedBuffer arena_, acc_;
  std::array<AlignedBuffer, 2> pack_;
  struct PrepState {
    bool valid = false;
    std::vector<const void*> params;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<std::vector<uint8_t>> storage;  // per prep value
    uint64_t generation = 0;
  } prep_;
  struct Packed {
    const void* src = nullptr;
    uint64_t prep_generation = 0;
    GemmRunner::Operand layout;
    int64_t k = 0;
    std::vector<float> data;
  };
  std::vector<std::array<Packed, 2>> packed_;  // per kernel, operands a and b
};

class CpuBackend final : public Backend {
 public:
  CpuBackend() { use_single_threaded_blas(); }
  DeviceId device() const override { return DeviceId::cpu(); }
  absl::StatusOr<std::unique_ptr<Executable>> build(std::shared_ptr<const CompiledModule> module,
                                                    const BuildOptions& opts) override {
    KILN_ASSIGN_OR_RETURN(std::unique_ptr<CpuExecutable> e, CpuExecutable::build(std::move(module), opts));
    return std::unique_ptr<Executable>(std::move(e));
  }
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace kiln::cpu
