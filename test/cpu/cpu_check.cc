#include "test/cpu/cpu_check.h"

#include <algorithm>

#include "codegen/lower.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "codegen/program.h"
#include "ir/status.h"
#include "runtime/cpu/device.h"

namespace kiln::testing {

absl::StatusOr<std::shared_ptr<const CompiledModule>> make_module(const Graph& g, const ScheduleFn& schedule) {
  auto m = std::make_shared<CompiledModule>();
  m->state.graph = g.clone();
  if (schedule) {
    m->state.schedule = schedule(m->state.graph);
    absl::StatusOr<bool> planned = plan_memory(m->state.graph, m->state.schedule, m->state.memory);
    if (!planned.ok()) return planned.status();
  } else if (absl::Status s = graph_pipeline().run(m->state); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<kir::Kernel>> kernels = lower_schedule(m->state.graph, m->state.schedule);
  if (!kernels.ok()) return kernels.status();
  m->kernels = *std::move(kernels);
  for (const Value* a : m->state.graph.args())
    if (a->is_input() || !a->data()) m->args.push_back(a);
  m->symbols = m->state.graph.symbols();
  return std::shared_ptr<const CompiledModule>(std::move(m));
}

absl::StatusOr<std::unique_ptr<Executor>> build_cpu(std::shared_ptr<const CompiledModule> m, const BuildOptions& opts) {
  static std::unique_ptr<DeviceAdapter> device = cpu::make_adapter();
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<const Program> p, build_program(std::move(m), device->target(), opts.baked));
  std::optional<DumpWriter> dump;
  if (!opts.dump_dir.empty()) dump.emplace(opts.dump_dir);
  return Executor::create(std::move(p), *device, ExecutorOptions{Mode::Default, dump});
}

absl::StatusOr<std::vector<Tensor>> to_tensors(const CompiledModule& m, const TensorMap& args) {
  std::vector<Tensor> in;
  for (const Value* a : m.args) {
    auto it = args.find(a->name());
    if (it == args.end()) return invalid_argument("no argument %", a->name());
    absl::StatusOr<Tensor> t = Tensor::from_host(it->second);
    if (!t.ok()) return t.status();
    in.push_back(*std::move(t));
  }
  return in;
}

absl::StatusOr<std::vector<HostTensor>> run_cpu(Executor& exe, const CompiledModule& m, const std::vector<Tensor>& in,
                                                const Bindings& b) {
  std::vector<int64_t> syms;
  for (const std::string& s : m.symbols) {
    auto it = b.find(s);
    if (it == b.end()) return invalid_argument("symbol ", s, " is not bound");
    syms.push_back(it->second);
  }
  std::vector<Tensor> out(m.state.graph.outputs().size());
  if (absl::Status s = exe.run(in, syms, out, {}); !s.ok()) return s;
  std::vector<HostTensor> host;
  for (const Tensor& t : out) {
    absl::StatusOr<HostTensor> h = t.to_host();
    if (!h.ok()) return h.status();
    host.push_back(*std::move(h));
  }
  return host;
}

absl::StatusOr<std::vector<HostTensor>> run_cpu(Executor& exe, const CompiledModule& m, const TensorMap& args,
                                                const Bindings& b) {
  absl::StatusOr<std::vector<Tensor>> in = to_tensors(m, args);
  if (!in.ok()) return in.status();
  return run_cpu(exe, m, *in, b);
}

absl::Status check_cpu_on_args(const Graph& g, std::shared_ptr<const CompiledModule> m, const TensorMap& args,
                               const Bindings& b, Executor* dynamic, std::vector<std::vector<Tensor>>* keep_alive) {
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) return invalid_argument("reference failed under ", bindings_to_string(b), ": ", want.status().message());
  Bindings baked;
  for (const auto& [sym, v] : b)
    if (v == 0 || v == 1) baked[sym] = v;
  absl::StatusOr<std::vector<Tensor>> in = to_tensors(*m, args);
  if (!in.ok()) return in.status();
  if (keep_alive) keep_alive->push_back(*in);
  std::unique_ptr<Executor> own;
  for (const Bindings& bake : {Bindings{}, baked}) {
    Executor* exe = bake.empty() ? dynamic : nullptr;
    if (!exe) {
      absl::StatusOr<std::unique_ptr<Executor>> built = build_cpu(m, BuildOptions{.baked = bake});
      if (!built.ok()) return built.status();
      own = *std::move(built);
      exe = own.get();
    }
    absl::StatusOr<std::vector<HostTensor>> got = run_cpu(*exe, *m, *in, b);
    if (!got.ok()) return invalid_argument("CPU run failed under ", bindings_to_string(b), ": ", got.status().message());
    for (size_t i = 0; i < want->size(); ++i) {
      Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
      if (!c.ok)
        return invalid_argument("output ", i, " (%", g.outputs()[i]->name(), ") differs under ", bindings_to_string(b),
                                " with baked ", bindings_to_string(bake), ": ", c.message, "\n--- graph\n", print_graph(g));
    }
    if (baked.empty()) break;
  }
  return absl::OkStatus();
}

absl::Status check_cpu_matches_reference(const Graph& g, std::shared_ptr<const CompiledModule> m,
                                         const std::vector<Bindings>& bindings, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<Executor>> dynamic = build_cpu(m);
  if (!dynamic.ok()) return dynamic.status();
  std::vector<std::vector<Tensor>> alive;
  for (size_t bi = 0; bi < bindings.size(); ++bi) {
    TensorMap args = random_args(g, bindings[bi], seed * 7919 + bi);
    if (absl::Status s = check_cpu_on_args(g, m, args, bindings[bi], dynamic->get(), &alive); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kiln::testing
