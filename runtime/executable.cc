#include "runtime/executable.h"

#include <set>

#include "ir/str.h"

namespace kiln {

std::string kernel_times_json(const std::vector<BuildStats::KernelTime>& times) {
  return str_cat("[", str_join(times, ", ", [](const BuildStats::KernelTime& t) {
                   return fmt::format("{{\"name\": \"{}\", \"codegen_ms\": {:.3f}, \"compile_ms\": {:.3f}, \"cached\": {}}}",
                                      t.name, t.codegen_ms, t.compile_ms, t.cached);
                 }), "]");
}

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

Bindings CompiledModule::bindings(std::span<const int64_t> values) const {
  Bindings b;
  for (size_t i = 0; i < symbols.size() && i < values.size(); ++i) b[symbols[i]] = values[i];
  return b;
}

std::shared_ptr<CompiledModule> CompiledModule::make(CompileState state, std::vector<kir::Kernel> kernels) {
  auto m = std::make_shared<CompiledModule>();
  m->state = std::move(state);
  m->kernels = std::move(kernels);
  std::set<std::string> syms;
  for (const Value* a : m->state.graph.args()) {
    if (a->is_input() || !a->data()) m->args.push_back(a);
    for (const Dim& d : a->shape()) d.collect_symbols(syms);
  }
  m->symbols.assign(syms.begin(), syms.end());
  return m;
}

}  // namespace kiln
