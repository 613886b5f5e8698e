#include "codegen/module.h"

#include <cctype>
#include <set>

#include "ir/str.h"

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

kir::Kernel anonymous_kernel(const kir::Kernel& k) {
  kir::Kernel a = k;
  // lower names kernels "k<group id>" or "k<group id>_<op>": keep the op.
  size_t digits = 1;
  while (digits < k.name.size() && std::isdigit(static_cast<unsigned char>(k.name[digits]))) ++digits;
  a.name = k.name.size() > 1 && k.name[0] == 'k' && digits > 1 ? str_cat("k", k.name.substr(digits)) : k.name;
  for (size_t i = 0; i < a.buffers.size(); ++i) a.buffers[i].name = str_cat("b", i);
  return a;
}

}  // namespace kiln
