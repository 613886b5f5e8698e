#include "codegen/module.h"

#include <set>

namespace kiln {

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
