#include "compiler/compile.h"

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>

#include <nlohmann/json.hpp>

#include "compiler/buckets.h"
#include "compiler/guards.h"
#include "compiler/json.h"
#include "compiler/pipeline.h"
#include "compiler/profile.h"
#include "compiler/weights.h"
#include "ir/checked.h"
#include "ir/dump.h"
#include "ir/log.h"
#include "ir/ops_collective.h"
#include "ir/status.h"
#include "ir/str.h"
#include "ir/verifier.h"

#include "codegen/program.h"
#if KILN_WITH_LLVM
#include "runtime/cpu/device.h"
#endif
#if KILN_WITH_CUDA_BACKEND
#include "runtime/cuda/device.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"
#endif

namespace kiln {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// How each dim of each runtime argument is checked and binds symbols, precomputed so that a
// call costs a few integer compares: a static dim must equal its value; the first plain
// (or scaled: c*S, which must divide by c) symbol dim binds its slot, later ones must agree; a compound dim (B*T) is checked once all
// slots are bound.
struct DimRule {
  enum class Kind : uint8_t { Static, Symbol, Expr };
  Kind kind;
  int64_t value = 0;  // Static; Symbol: the dim is value * the slot's symbol
  int slot = -1;      // Symbol
  SymExpr expr;       // Expr
};

struct SlotGuard {
  bool equals;  // == value; else >= value
  int64_t value;
};

struct Specialization {
  GuardSet guard_set;
  std::vector<SlotGuard> guards;  // guard_set's guards, one per symbol slot, for the hot path
  std::string text;
  Bindings bindings;  // what it was built for
  std::unique_ptr<Executor> exe;
};

}  // namespace

std::string_view device_kind_name(Device d) {
  switch (d) {
    case Device::Auto: return "auto";
    case Device::Cpu: return "cpu";
    case Device::Cuda: return "cuda";
  }
  return "?";
}

std::optional<Device> parse_device(std::string_view name) {
  for (Device d : {Device::Auto, Device::Cpu, Device::Cuda})
    if (device_kind_name(d) == name) return d;
  return std::nullopt;
}

absl::Status device_available(Device d) {
  switch (d) {
    case Device::Cuda:
#if KILN_WITH_CUDA_BACKEND
      KILN_RETURN_IF_ERROR(cuda::driver().status());
      if (!cuda::device_available()) return absl::FailedPreconditionError("no CUDA device: the driver reports none");
      return absl::OkStatus();
#else
      return absl::FailedPreconditionError("this build of kiln has no CUDA backend (configured without the CUDA toolkit)");
#endif
    case Device::Cpu:
#if KILN_WITH_LLVM
      return absl::OkStatus();
#else
      return absl::FailedPreconditionError("this build of kiln has no CPU backend (configured with KILN_WITH_LLVM=OFF)");
#endif
    case Device::Auto:
      if (device_available(Device::Cuda).ok() || device_available(Device::Cpu).ok()) return absl::OkStatus();
      return absl::FailedPreconditionError(
          str_cat("no device to run on: ", status_message(device_available(Device::Cuda)), "; ",
                  status_message(device_available(Device::Cpu))));
  }
  return absl::InvalidArgumentError("unknown device");
}

std::string CompileStats::to_text() const {
  std::string shared = kernels_shared > 0 ? str_cat(" (", kernels_shared, " shared)") : std::string();
  std::string s = str_cat("calls ", calls, " (", guard_hits, " guard hits); compiles ", compiles, " (", recompiles,
                          " recompiles); kernels ", kernels, shared, ", GEMMs ", gemms, ", ", launches_per_call,
                          " launches per call\n");
  s += str_cat("kernel cache: ", cache_memory_hits, " memory hits, ", cache_disk_hits, " disk hits, ", cache_misses,
               " misses\n");
  s += fmt::format(
      "time: device {:.1f} ms, passes {:.1f} ms, lowering {:.1f} ms, building {:.1f} ms (codegen {:.1f} ms, "
      "compile {:.1f} ms), tuning {:.1f} ms\n",
      device_ms, pass_ms, lower_ms, build_ms, codegen_ms, compile_ms, tune_ms);
  if (!strategy.empty()) s += str_cat("calls: ", strategy, "\n");
  for (const std::string& r : recompile_reasons) s += str_cat("recompile: ", r, "\n");
  for (const Bucket& b : buckets)
    s += fmt::format("bucket {}: {} calls, {} captures, {} replays; warm-up compile {:.1f} ms, capture {:.1f} ms\n", b.size,
                     b.calls, b.captures, b.replays, b.compile_ms, b.capture_ms);
  return s;
}

std::string CompileStats::to_json() const { return json_text(*this); }

struct CompiledGraph::Impl {
  std::shared_ptr<CompiledModule> module;
  std::unique_ptr<DeviceAdapter> device;
  CompileOptions opts;
  std::vector<std::vector<DimRule>> rules;  // per runtime argument, per dim
  std::vector<SymbolInfo> bounds;           // per slot
  std::vector<std::string> slot_source;     // per slot: "argument 0 (%x) dim 0", for errors

  std::mutex mu;  // calls are serialized: one arena per specialization
  std::vector<int64_t> syms;  // the current call's symbol values (reused: no allocation per call)
  std::optional<std::vector<int64_t>> out_shapes_syms;  // the symbol values out_shapes were evaluated for
  std::vector<std::vector<int64_t>> out_shapes;
  std::vector<Specialization> specs;
  size_t last_hit = 0;
  CompileStats stats;
  int64_t parameter_bytes = 0;         // the runtime parameters' own bytes
  std::weak_ptr<const void> store;     // the weight store the last call used
  int64_t store_bytes = 0;             // and its bytes (fixed at its creation)
  std::shared_ptr<MemoryPool> pool = std::make_shared<MemoryPool>();  // every specialization's arena
  std::optional<Bucketing> buckets;
  std::vector<Tensor> padded, slots;  // a bucketed call's executor arguments and outputs (reused)

  // A bucketed call: `rows` of the symbol bound as `size` (state at least `size` rows).
  struct BucketBind {
    int slot;
    int64_t rows, size;
  };

  std::string arg_name(size_t i) const { return str_cat("argument ", i, " (%", module->args[i]->name(), ")"); }

  // The symbol values of a call, or an error naming the argument at fault. With `held`, the
  // parameters' entries are not looked at (the store holds them, checked when it was bound).
  absl::Status bind(std::span<const Tensor> args, std::vector<int64_t>& syms, const HeldWeights* held,
                    const BucketBind* bucket = nullptr) const {
    const std::vector<const Value*>& want = module->args;
    if (args.size() != want.size())
      return invalid_argument("graph ", module->state.graph.name(), " takes ", want.size(), " arguments (",
                              str_join(want, ", ", [](const Value* v) { return str_cat("%", v->name(), ": ", v->type().to_string()); }),
                              "), got ", args.size());
    syms.assign(bounds.size(), -1);
    DeviceId dev = device->device();
    for (size_t i = 0; i < args.size(); ++i) {
      if (held && want[i]->is_param()) continue;
      const Tensor& t = args[i];
      const std::vector<DimRule>& r = rules[i];
      if (t.dtype() != want[i]->dtype() || t.rank() != static_cast<int64_t>(r.size()))
        return invalid_argument(arg_name(i), " expects ", want[i]->type().to_string(), ", got ", t.type_string());
      if (t.device() != dev)
        return invalid_argument(arg_name(i), " is on ", device_name(t.device()), "; the graph was compiled for ",
                                device_name(dev));
      if (t.data() == nullptr && t.numel() != 0) return invalid_argument(arg_name(i), " has no data");
      if (!t.is_contiguous()) return invalid_argument(arg_name(i), " is not contiguous (strides ",
                                                      fmt::format("{}", t.strides()), ")");
      for (size_t d = 0; d < r.size(); ++d) {
        int64_t got = t.shape()[d];
        switch (r[d].kind) {
          case DimRule::Kind::Static:
            if (got != r[d].value)
              return invalid_argument(arg_name(i), " dim ", d, ": expected ", r[d].value, ", got ", got, " (",
                                      t.type_string(), ")");
            break;
          case DimRule::Kind::Symbol: {
            int64_t& s = syms[r[d].slot];
            if (bucket && r[d].slot == bucket->slot) {  // a leading dim (Bucketing::make)
              bool state = want[i]->is_state();
              if (state ? got < bucket->size : got != bucket->rows)
                return invalid_argument(arg_name(i), " dim ", d, ": ", module->symbols[r[d].slot], " is ", bucket->rows,
                                        " (bucket ", bucket->size, ")",
                                        state ? ": state is never copied, so it needs the bucket's rows or more (allocate "
                                                "it for the largest bucket)" : "",
                                        ", got ", got);
              s = bucket->size;
              break;
            }
            int64_t c = r[d].value;
            if (got % c != 0)
              return invalid_argument(arg_name(i), " dim ", d, ": expected a multiple of ", c, " (", c, "*",
                                      module->symbols[r[d].slot], "), got ", got);
            if (s < 0) {
              s = got / c;
            } else if (s != got / c) {
              return invalid_argument(arg_name(i), " dim ", d, ": ", module->symbols[r[d].slot], " is ", s, " from ",
                                      slot_source[r[d].slot], ", got ", got / c);
            }
            break;
          }
          case DimRule::Kind::Expr: break;
        }
      }
    }
    for (size_t s = 0; s < syms.size(); ++s) {
      const SymbolInfo& b = bounds[s];
      if (syms[s] < b.min || (b.max && syms[s] > *b.max))
        return invalid_argument(slot_source[s], ": ", module->symbols[s], " = ", syms[s], " is outside its bounds [",
                                b.min, ", ", b.max ? std::to_string(*b.max) : std::string("inf"), "]");
    }
    for (size_t i = 0; i < args.size(); ++i)
      for (size_t d = 0; d < rules[i].size() && !(held && want[i]->is_param()); ++d)
        if (rules[i][d].kind == DimRule::Kind::Expr) {
          KILN_ASSIGN_OR_RETURN(int64_t want_d, rules[i][d].expr.evaluate(module->bindings(syms)));
          if (want_d != args[i].shape()[d])
            return invalid_argument(arg_name(i), " dim ", d, ": expected ", rules[i][d].expr.to_string(), " = ",
                                    want_d, ", got ", args[i].shape()[d]);
        }
    return absl::OkStatus();
  }

  static bool passes(const Specialization& sp, std::span<const int64_t> syms) {
    for (size_t s = 0; s < syms.size(); ++s) {
      const SlotGuard& g = sp.guards[s];
      if (g.equals ? syms[s] != g.value : syms[s] < g.value) return false;
    }
    return true;
  }

  // The specialization for `syms`, built on a miss. Called with `mu` held.
  absl::StatusOr<Specialization*> dispatch(std::span<const int64_t> syms) {
    if (last_hit < specs.size() && passes(specs[last_hit], syms)) {
      ++stats.guard_hits;
      return &specs[last_hit];
    }
    for (size_t i = 0; i < specs.size(); ++i)
      if (passes(specs[i], syms)) {
        last_hit = i;
        ++stats.guard_hits;
        return &specs[i];
      }
    return build(syms);
  }

  absl::StatusOr<Specialization*> build(std::span<const int64_t> syms) {
    Bindings b = module->bindings(syms);
    std::string reason;
    if (!specs.empty()) {
      std::vector<std::string> parts;
      for (size_t i = 0; i < specs.size(); ++i)
        parts.push_back(str_cat(specs[i].guard_set.check(b).value_or("all guards pass"), " (specialization ", i, ")"));
      reason = str_join(parts, "; ", [](const std::string& p) { return p; });
    }
    if (static_cast<int64_t>(specs.size()) >= opts.cache_size_limit) {
      // Keeps what exists and builds nothing: a limit that silently fell back to something
      // slower would hide the recompiles it is there to catch.
      std::string msg = str_cat("graph ", module->state.graph.name(), ": cache_size_limit ", opts.cache_size_limit,
                                " reached (", specs.size(), " specializations kept); the call ",
                                str_join(module->symbols, ", ", [&](const std::string& s) { return str_cat(s, " = ", b.at(s)); }),
                                " fails every guard: ", reason,
                                ". Raise CompileOptions::cache_size_limit, compile with dynamic symbols, or bucket the batch");
      log_line(LogTopic::guards, 0, msg);
      return absl::ResourceExhaustedError(msg);
    }
    GuardSet gs = GuardSet::for_bindings(b, opts.dynamic);
    Specialization sp;
    // GuardSet orders its guards by symbol, as module->symbols is ordered: one per slot.
    for (const SymbolGuard& g : gs.guards) sp.guards.push_back({g.kind == SymbolGuard::Kind::Equals, g.value});
    sp.text = gs.to_string();
    sp.guard_set = gs;
    sp.bindings = b;
    std::optional<DumpWriter> dump;
    if (!opts.dump_dir.empty()) dump = DumpWriter(opts.dump_dir).sub(fmt::format("spec{}", specs.size()));
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Executor>> exe =
        specialize(module, *device, gs.baked(), opts.mode, dump, pool, opts.communicator);
    if (!exe.ok()) return prefix_error(exe.status(), "building the specialization ", sp.text, ": ");
    sp.exe = *std::move(exe);
    BuildStats bs = sp.exe->build_stats();
    stats.build_ms += ms_since(t0);
    ++stats.compiles;
    if (!specs.empty()) {
      ++stats.recompiles;
      stats.recompile_reasons.push_back(reason);
      log_line(LogTopic::guards, 1, str_cat(module->state.graph.name(), ": recompiling: ", reason));
    }
    log_line(LogTopic::guards, 2, str_cat(module->state.graph.name(), ": specialization ", specs.size(), " guards: ", sp.text));
    log_line(LogTopic::compile, 1, fmt::format("built specialization {} [{}] for {} in {:.1f} ms: {} kernels, {} GEMMs; {} calls {}{}",
                            specs.size(), sp.text, module->state.graph.name(), ms_since(t0), bs.kernels, bs.gemms,
                            mode_name(opts.mode), sp.exe->strategy(),
                            reason.empty() ? "" : str_cat("; recompiled because ", reason)));
    if (dump) KILN_RETURN_IF_ERROR(dump->write("guards.txt", sp.text + "\n"));
    specs.push_back(std::move(sp));
    last_hit = specs.size() - 1;
    return &specs.back();
  }

  absl::Status compile_only_error() const {
    return absl::FailedPreconditionError(str_cat("graph ", module->state.graph.name(),
                                                 " was compiled only (CompileOptions::compile_only): it cannot run"));
  }

  // CompileOptions::buckets: the specialization for a batch of `rows` at bucket `k`, with
  // `syms` bound. Called with `mu` held, as is bucket_run.
  absl::StatusOr<Specialization*> bucket_dispatch(std::span<const Tensor> args, const HeldWeights* held, int64_t rows,
                                                  size_t k) {
    BucketBind bb{buckets->slot(), rows, buckets->sizes()[k]};
    KILN_RETURN_IF_ERROR(bind(args, syms, held, &bb));
    return dispatch(syms);
  }

  // Runs `sp` at bucket `k` on `args` padded; `outputs` null: a warm-up, every row a pad row.
  absl::Status bucket_run(Specialization& sp, std::span<const Tensor> args, std::vector<Tensor>* outputs,
                          const CallOptions& o, const HeldWeights* held, int64_t rows, size_t k) {
    if (opts.compile_only) return compile_only_error();
    const int64_t size = buckets->sizes()[k];
    KILN_ASSIGN_OR_RETURN(Bucketing::Staging * st, buckets->staging(syms, *sp.exe, *device));
    KILN_RETURN_IF_ERROR(buckets->pad(args, outputs ? rows : 0, size, *st, *device, o.stream, padded));
    std::vector<Tensor> none(outputs ? 0 : module->state.graph.outputs().size());
    KILN_RETURN_IF_ERROR(buckets->out_slots(outputs ? *outputs : none, rows, size, *st, device->device(), slots));
    Executor::ReplayCounts before = sp.exe->replay_counts();
    KILN_RETURN_IF_ERROR(sp.exe->run(padded, syms, slots, o, Executor::Checked::ByCaller, held));
    Executor::ReplayCounts after = sp.exe->replay_counts();
    CompileStats::Bucket& bs = stats.buckets[k];
    bs.calls += outputs != nullptr;
    bs.captures += after.captures - before.captures;
    bs.replays += after.replays - before.replays;
    if (outputs) KILN_RETURN_IF_ERROR(buckets->finish(args, rows, slots, *device, o.stream, *outputs));
    return absl::OkStatus();
  }
};

absl::StatusOr<std::vector<Tensor>> CompiledGraph::operator()(const std::vector<Tensor>& args, const CallOptions& opts) {
  std::vector<Tensor> outputs(impl_->module->state.graph.outputs().size());
  KILN_RETURN_IF_ERROR(run(args, outputs, opts));
  return outputs;
}

absl::Status CompiledGraph::run(const std::vector<Tensor>& args, std::vector<Tensor>& outputs, const CallOptions& opts) {
  return call(args, outputs, opts, nullptr);
}

absl::StatusOr<std::vector<Tensor>> CompiledGraph::operator()(const std::vector<Tensor>& inputs, const Weights& weights,
                                                              const CallOptions& opts) {
  std::vector<Tensor> outputs(impl_->module->state.graph.outputs().size());
  KILN_RETURN_IF_ERROR(run(inputs, weights, outputs, opts));
  return outputs;
}

absl::Status CompiledGraph::run(const std::vector<Tensor>& inputs, const Weights& weights, std::vector<Tensor>& outputs,
                                const CallOptions& opts) {
  Impl& im = *impl_;
  KILN_ASSIGN_OR_RETURN(std::vector<Tensor> args, with_params(inputs));
  KILN_ASSIGN_OR_RETURN(HeldWeights held, weights.held(im.module));
  KILN_RETURN_IF_ERROR(call(args, outputs, opts, &held));
  std::lock_guard<std::mutex> lock(im.mu);
  im.store = weights.lifetime();
  im.store_bytes = weights.bytes();
  return absl::OkStatus();
}

// `inputs` (the arguments that are not parameters) as the full argument list, parameters empty.
absl::StatusOr<std::vector<Tensor>> CompiledGraph::with_params(const std::vector<Tensor>& inputs) const {
  const Impl& im = *impl_;
  const std::vector<const Value*>& want = im.module->args;
  std::vector<Tensor> args(want.size());
  size_t next = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!want[i]->is_param()) {
      if (next < inputs.size()) args[i] = inputs[next];
      ++next;
    }
  if (next != inputs.size())
    return invalid_argument("graph ", im.module->state.graph.name(), " takes ", next, " inputs besides its parameters (",
                            str_join(want, ", ", [](const Value* v) { return v->is_param() ? std::string("-") : str_cat("%", v->name()); }),
                            "), got ", inputs.size());
  return args;
}

absl::Status CompiledGraph::call(const std::vector<Tensor>& args, std::vector<Tensor>& outputs, const CallOptions& opts,
                                 const HeldWeights* held) {
  Impl& im = *impl_;
  const std::vector<Value*>& outs = im.module->state.graph.outputs();
  if (outputs.size() != outs.size())
    return invalid_argument("graph ", im.module->state.graph.name(), " has ", outs.size(), " outputs, got ",
                            outputs.size(), " output slots");
  std::lock_guard<std::mutex> lock(im.mu);
  ++im.stats.calls;
  if (im.buckets) {
    KILN_ASSIGN_OR_RETURN(int64_t rows, im.buckets->rows(args));
    KILN_ASSIGN_OR_RETURN(size_t k, im.buckets->bucket_of(rows));
    KILN_ASSIGN_OR_RETURN(Specialization * sp, im.bucket_dispatch(args, held, rows, k));
    return im.bucket_run(*sp, args, &outputs, opts, held, rows, k);
  }
  std::vector<int64_t>& syms = im.syms;
  KILN_RETURN_IF_ERROR(im.bind(args, syms, held));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& o = outputs[i];
    if (o.data() == nullptr) continue;  // an empty slot: allocated by the executable
    if (!im.out_shapes_syms || *im.out_shapes_syms != syms) {
      im.out_shapes.clear();
      for (const Value* v : outs) {
        KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(v->shape(), im.module->bindings(syms)));
        im.out_shapes.push_back(std::move(shape));
      }
      im.out_shapes_syms = syms;
    }
    const std::vector<int64_t>& shape = im.out_shapes[i];
    if (o.dtype() != outs[i]->dtype() || o.shape() != shape || o.device() != im.device->device() || !o.is_contiguous())
      return invalid_argument("output ", i, " (%", outs[i]->name(), ") expects a contiguous ",
                              dtype_name(outs[i]->dtype()), fmt::format("{}", shape), " on ",
                              device_name(im.device->device()), ", got ", o.type_string());
  }
  KILN_ASSIGN_OR_RETURN(Specialization* sp, im.dispatch(syms));
  if (im.opts.compile_only) return im.compile_only_error();
  // bind() checked every argument and the loop above every given output.
  return sp->exe->run(args, syms, outputs, opts, Executor::Checked::ByCaller, held);
}

namespace {

// The symbol values `b` gives, in the module's order, or which one is missing.
absl::StatusOr<std::vector<int64_t>> symbol_values(const CompiledModule& m, const Bindings& b, const char* what) {
  std::vector<int64_t> syms;
  for (const std::string& s : m.symbols) {
    auto it = b.find(s);
    if (it == b.end()) return invalid_argument(what, ": symbol ", s, " is not bound");
    syms.push_back(it->second);
  }
  return syms;
}

}  // namespace

absl::Status CompiledGraph::warm_up(const Bindings& b) {
  Impl& im = *impl_;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> syms, symbol_values(*im.module, b, "warm_up"));
  std::lock_guard<std::mutex> lock(im.mu);
  return im.dispatch(syms).status();
}

absl::StatusOr<std::vector<CompileStats::Bucket>> CompiledGraph::warm_up_buckets(
    const std::vector<Tensor>& args_in, const Weights* weights,
    const std::function<void(const CompileStats::Bucket&)>& progress, const CallOptions& opts) {
  Impl& im = *impl_;
  if (!im.buckets)
    return absl::FailedPreconditionError(str_cat("warm_up_buckets: graph ", im.module->state.graph.name(),
                                                 " was compiled without buckets (CompileOptions::buckets)"));
  std::vector<Tensor> args = args_in;
  std::optional<HeldWeights> held;
  if (weights) {
    KILN_ASSIGN_OR_RETURN(args, with_params(args_in));
    KILN_ASSIGN_OR_RETURN(held, weights->held(im.module));
  }
  std::lock_guard<std::mutex> lock(im.mu);
  KILN_ASSIGN_OR_RETURN(int64_t rows, im.buckets->rows(args));
  const bool captures = im.opts.mode == Mode::ReduceOverhead && im.device->can_capture() && !im.opts.compile_only;
  std::vector<CompileStats::Bucket> out;
  // Largest first: the shared pool grows once, and no capture is dropped by a later growth.
  for (size_t k = im.buckets->sizes().size(); k-- > 0;) {
    CompileStats::Bucket line{.size = im.buckets->sizes()[k]};
    auto t0 = std::chrono::steady_clock::now();
    KILN_ASSIGN_OR_RETURN(Specialization * sp, im.bucket_dispatch(args, held ? &*held : nullptr, rows, k));
    line.compile_ms = ms_since(t0);
    if (captures) {
      t0 = std::chrono::steady_clock::now();
      KILN_RETURN_IF_ERROR(im.bucket_run(*sp, args, nullptr, opts, held ? &*held : nullptr, rows, k));
      KILN_RETURN_IF_ERROR(im.device->synchronize(opts.stream));
      line.capture_ms = ms_since(t0);
      line.captures = 1;
    }
    im.stats.buckets[k].compile_ms += line.compile_ms;
    im.stats.buckets[k].capture_ms += line.capture_ms;
    log_line(LogTopic::compile, 1, fmt::format("{}: bucket {} = {}: compile {:.1f} ms, capture {:.1f} ms",
                                               im.module->state.graph.name(), im.module->symbols[im.buckets->slot()],
                                               line.size, line.compile_ms, line.capture_ms));
    if (progress) progress(line);
    out.push_back(line);
  }
  return out;
}

absl::StatusOr<StaticSlots> CompiledGraph::static_slots(const Bindings& b) {
  Impl& im = *impl_;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> syms, symbol_values(*im.module, b, "static_slots"));
  std::lock_guard<std::mutex> lock(im.mu);
  if (im.buckets) {
    const int64_t rows = syms[im.buckets->slot()];
    KILN_ASSIGN_OR_RETURN(size_t k, im.buckets->bucket_of(rows));
    syms[im.buckets->slot()] = im.buckets->sizes()[k];
    KILN_ASSIGN_OR_RETURN(Specialization * sp, im.dispatch(syms));
    return im.buckets->slot_views(syms, rows, *sp->exe, *im.device);
  }
  KILN_ASSIGN_OR_RETURN(Specialization* sp, im.dispatch(syms));
  return sp->exe->static_slots(syms);
}

void CompiledGraph::parameters_changed() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (Specialization& sp : impl_->specs) sp.exe->parameters_changed();
}

absl::StatusOr<std::vector<HostTensor>> run_host(CompiledGraph& cg, const std::map<std::string, HostTensor>& args,
                                                 const CallOptions& opts) {
  std::vector<Tensor> device_args;
  for (const Value* v : cg.module().args) {
    auto it = args.find(v->name());
    if (it == args.end()) return invalid_argument("missing argument %", v->name(), ": ", v->type().to_string());
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::from_host(it->second, cg.device(), opts.stream));
    device_args.push_back(std::move(t));
  }
  KILN_ASSIGN_OR_RETURN(std::vector<Tensor> outs, cg(device_args, opts));
  KILN_RETURN_IF_ERROR(cg.synchronize(opts));  // reports this call's index errors (CUDA)
  std::vector<HostTensor> host;
  for (const Tensor& t : outs) {
    KILN_ASSIGN_OR_RETURN(HostTensor h, t.to_host(opts.stream));
    host.push_back(std::move(h));
  }
  return host;
}

absl::StatusOr<std::vector<HostTensor>> run_host(CompiledGraph& cg, const std::map<std::string, HostTensor>& args,
                                                 const Weights& weights, const CallOptions& opts) {
  std::vector<Tensor> inputs;
  for (const Value* v : cg.module().args) {
    if (v->is_param()) continue;
    auto it = args.find(v->name());
    if (it == args.end()) return invalid_argument("missing argument %", v->name(), ": ", v->type().to_string());
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::from_host(it->second, cg.device(), opts.stream));
    inputs.push_back(std::move(t));
  }
  KILN_ASSIGN_OR_RETURN(std::vector<Tensor> outs, cg(inputs, weights, opts));
  KILN_RETURN_IF_ERROR(cg.synchronize(opts));  // reports this call's index errors (CUDA)
  std::vector<HostTensor> host;
  for (const Tensor& t : outs) {
    KILN_ASSIGN_OR_RETURN(HostTensor h, t.to_host(opts.stream));
    host.push_back(std::move(h));
  }
  return host;
}

absl::Status CompiledGraph::synchronize(const CallOptions& opts) {
  KILN_RETURN_IF_ERROR(impl_->device->synchronize(opts.stream));
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (Specialization& sp : impl_->specs)
    if (sp.exe) KILN_RETURN_IF_ERROR(sp.exe->check_indices(opts.stream, true));
  return absl::OkStatus();
}

CompiledGraph::Memory CompiledGraph::memory() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Memory m;
  for (const Specialization& sp : impl_->specs) {
    ExecutorMemory e = sp.exe->memory();
    m.held.arena = std::max(m.held.arena, e.arena);  // one pool for all (MemoryPool)
    m.held.scratch = std::max(m.held.scratch, e.scratch);
    m.held.slots += e.slots;
    m.held.weight_prep += e.weight_prep;
    m.held.constants = std::max(m.held.constants, e.constants);  // made resident once per device
  }
  m.parameters = impl_->parameter_bytes;
  if (!impl_->store.expired()) m.weight_store = impl_->store_bytes;
  m.device = impl_->device->memory_info();
  return m;
}

DeviceId CompiledGraph::device() const { return impl_->device->device(); }
DeviceAdapter& CompiledGraph::device_adapter() const { return *impl_->device; }
Mode CompiledGraph::mode() const { return impl_->opts.mode; }
const CompileOptions& CompiledGraph::options() const { return impl_->opts; }
const Graph& CompiledGraph::graph() const { return impl_->module->state.graph; }
const CompiledModule& CompiledGraph::module() const { return *impl_->module; }

CompileStats CompiledGraph::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  CompileStats s = impl_->stats;
  // Executables keep counting after they are built (kernels compiled on first need, tuning
  // on the first call), so their part is summed when asked.
  for (const Specialization& sp : impl_->specs) {
    BuildStats bs = sp.exe->build_stats();
    s.kernels += bs.kernels;
    s.kernels_shared += bs.kernels_shared;
    s.gemms += bs.gemms;
    s.cache_memory_hits += bs.cache_memory_hits;
    s.cache_disk_hits += bs.cache_disk_hits;
    s.cache_misses += bs.cache_misses;
    s.codegen_ms += bs.codegen_ms;
    s.compile_ms += bs.compile_ms;
    s.tune_ms += bs.tune_ms;
    s.launches_per_call = bs.launches;
    s.strategy = sp.exe->strategy();
    s.kernel_times.insert(s.kernel_times.end(), bs.kernel_times.begin(), bs.kernel_times.end());
  }
  return s;
}

std::vector<CompiledGraph::SpecializationInfo> CompiledGraph::specialization_info() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<SpecializationInfo> out;
  for (const Specialization& s : impl_->specs) {
    SpecializationInfo info{s.text, s.exe->shared_program(), s.exe->build_stats(), {}, s.exe->strategy(), s.bindings};
    for (size_t k = 0; k < info.program->kernels.size(); ++k) info.kernel_notes.push_back(s.exe->describe_kernel(static_cast<int>(k)));
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<std::string> CompiledGraph::specializations() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<std::string> out;
  for (const Specialization& s : impl_->specs) out.push_back(s.text);
  return out;
}

absl::StatusOr<std::unique_ptr<DeviceAdapter>> make_device_adapter(Device d, int cuda_device, bool compile_only) {
#if KILN_WITH_CUDA_BACKEND
  if (d == Device::Cuda && compile_only) return cuda::make_compile_only_adapter(cuda::default_arch());
#endif
  KILN_RETURN_IF_ERROR(device_available(d));
  if (d == Device::Auto) d = device_available(Device::Cuda).ok() ? Device::Cuda : Device::Cpu;
#if KILN_WITH_CUDA_BACKEND
  if (d == Device::Cuda) return cuda::make_adapter(cuda_device);
#endif
#if KILN_WITH_LLVM
  if (d == Device::Cpu) return cpu::make_adapter();
#endif
  return absl::InternalError(str_cat("no device adapter for ", device_kind_name(d)));
}

absl::StatusOr<std::unique_ptr<Executor>> specialize(std::shared_ptr<const CompiledModule> m, DeviceAdapter& device,
                                                     const Bindings& baked, Mode mode,
                                                     const std::optional<DumpWriter>& dump,
                                                     std::shared_ptr<MemoryPool> pool,
                                                     std::shared_ptr<Communicator> communicator) {
  std::vector<std::string> names = group_labels(*m);
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<const Program> p, build_program(std::move(m), device.target(), baked));
  if (dump) {
    KILN_RETURN_IF_ERROR(dump->write("program.txt", p->to_string()));
    // The kernels as the target prepared them (the CUDA schedule), beside their sources.
    for (const ProgramKernel& k : p->kernels) KILN_RETURN_IF_ERROR(dump->write(k.kernel.name + ".kir", kir::print_kernel(k.kernel)));
  }
  return Executor::create(std::move(p), device,
                          ExecutorOptions{mode, dump, std::move(names), std::move(pool), std::move(communicator)});
}

absl::StatusOr<CompiledGraph> compile(const Graph& g, const CompileOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<DeviceAdapter> device,
                        make_device_adapter(opts.device, opts.cuda_device, opts.compile_only));
  const double device_ms = ms_since(t0);
  KILN_ASSIGN_OR_RETURN(CompiledGraph cg, compile(g, std::move(device), opts));
  cg.impl_->stats.device_ms = device_ms;
  return cg;
}

absl::StatusOr<CompiledGraph> compile(const Graph& g, std::unique_ptr<DeviceAdapter> device, const CompileOptions& opts_in) {
  CompileOptions opts = opts_in;
  if (opts.dump_dir.empty())
    if (const char* d = std::getenv("KILN_DUMP_DIR"); d && *d) opts.dump_dir = d;
  // The one verification of the graph: the pipeline takes it as given, and checks its passes'
  // results only in debug builds or when asked (KILN_VERIFY=1).
  KILN_RETURN_IF_ERROR(verify(g));
  if (!device) return absl::InvalidArgumentError("compile: no device adapter");
  // Extern calls against the registry and this device, before any work (ir/extern_op.h): a
  // non-capturable one under reduce-overhead is an error, not a silently split graph.
  KILN_RETURN_IF_ERROR(check_extern_calls(g, device->target().extern_device,
                                          opts.mode == Mode::ReduceOverhead && device->can_capture()));
  // Collectives (a rank's graph, passes/shard.h) run through the rank's communicator.
  for (const auto& n : g.nodes()) {
    if (!is_collective(n->op())) continue;
    const int64_t ranks = collective_ranks(*n);
    const Communicator* c = opts.communicator.get();
    if (!c)
      return invalid_argument(n->describe(), ": a collective over ", ranks,
                              " ranks needs this rank's communicator (CompileOptions::communicator; "
                              "RankGroup::compile in compiler/parallel.h compiles every rank of a group)");
    if (absl::Status st = check_communicator(*c, ranks, device->target().extern_device, device->target().name);
        !st.ok())
      return prefix_error(st, n->describe(), ": ");
  }
  // This graph's own folder of the dump (two graphs of one name in a process get two), which
  // each specialization's spec<N> folder goes inside.
  if (!opts.dump_dir.empty()) opts.dump_dir = DumpWriter(opts.dump_dir).claim(g.name()).dir().string();

  auto im = std::make_shared<CompiledGraph::Impl>();
  im->opts = opts;
  im->device = std::move(device);
  PipelineOptions po;
  po.dump_dir = opts.dump_dir;
  if (opts.fused_attention) po.fused_attention = im->device->target().supports_attention;
  if (log_enabled(LogTopic::passes)) {
    po.print_after = "all";
    po.print = [](const std::string& text) { log_line(LogTopic::passes, 1, text); };
  }
  if (log_enabled(LogTopic::lower)) po.lower_log = [](const std::string& line) { log_line(LogTopic::lower, 1, line); };
  KILN_ASSIGN_OR_RETURN(PipelineResult r, compile_to_kernels(g.clone(), po));
  for (const PassStat& p : r.summary.passes) (p.name == kLowerPass ? im->stats.lower_ms : im->stats.pass_ms) += p.ms;
  log_line(LogTopic::compile, 1, str_cat(g.name(), ": ", r.summary.to_text()));
  std::shared_ptr<CompiledModule> module = CompiledModule::make(std::move(r.state), std::move(r.kernels));
  im->module = module;
  const Graph& og = module->state.graph;

  // The dispatch rules: every symbol must be bound by some plain (or scaled, c*S) symbol dim.
  im->bounds.resize(module->symbols.size());
  im->slot_source.resize(module->symbols.size());
  auto slot_of = [&](const std::string& s) {
    return static_cast<int>(std::lower_bound(module->symbols.begin(), module->symbols.end(), s) - module->symbols.begin());
  };
  for (size_t s = 0; s < module->symbols.size(); ++s) im->bounds[s] = og.symbol_info(module->symbols[s]);
  for (const Value* a : module->args) {
    if (!a->is_param()) continue;
    std::vector<int64_t> dims;
    for (const SymExpr& d : a->shape())
      if (std::optional<int64_t> c = d.constant()) dims.push_back(*c);
    if (dims.size() != a->shape().size()) continue;
    if (absl::StatusOr<int64_t> n = checked_nbytes(a->dtype(), dims, a->name()); n.ok()) im->parameter_bytes += *n;
  }
  for (size_t i = 0; i < module->args.size(); ++i) {
    std::vector<DimRule> r;
    const Shape& shape = module->args[i]->shape();
    for (size_t d = 0; d < shape.size(); ++d) {
      if (std::optional<int64_t> c = shape[d].constant()) {
        r.push_back({DimRule::Kind::Static, *c, -1, SymExpr()});
      } else if (std::optional<std::pair<int64_t, std::string>> cs = shape[d].scaled_symbol()) {
        int slot = slot_of(cs->second);
        if (im->slot_source[slot].empty()) im->slot_source[slot] = str_cat(im->arg_name(i), " dim ", d);
        r.push_back({DimRule::Kind::Symbol, cs->first, slot, SymExpr()});
      } else {
        r.push_back({DimRule::Kind::Expr, 0, -1, shape[d]});
      }
    }
    im->rules.push_back(std::move(r));
  }
  for (size_t s = 0; s < module->symbols.size(); ++s)
    if (im->slot_source[s].empty())
      return invalid_argument("graph ", og.name(), ": symbol ", module->symbols[s],
                              " appears only inside compound dims of the arguments, so a call cannot bind it");
  if (opts.cache_size_limit < 1) return invalid_argument("cache_size_limit must be >= 1, got ", opts.cache_size_limit);
  if (opts.buckets) {
    KILN_ASSIGN_OR_RETURN(Bucketing bk, Bucketing::make(*opts.buckets, *module, im->bounds));
    if (!opts.dynamic && static_cast<int64_t>(bk.sizes().size()) > opts.cache_size_limit)
      return invalid_argument("buckets: ", bk.sizes().size(), " sizes of ", opts.buckets->symbol,
                              " with dynamic = false are as many specializations, above cache_size_limit ",
                              opts.cache_size_limit);
    for (int64_t size : bk.sizes()) im->stats.buckets.push_back({.size = size});
    im->buckets = std::move(bk);
  }
  log_line(LogTopic::compile, 1, fmt::format("compiled {} for {} ({}): {} groups, passes {:.1f} ms, lowering {:.1f} ms",
                          og.name(), device_name(im->device->device()), mode_name(opts.mode),
                          im->module->state.schedule.groups.size(), im->stats.pass_ms, im->stats.lower_ms));
  CompiledGraph cg;
  cg.impl_ = std::move(im);
  return cg;
}

}  // namespace kiln
