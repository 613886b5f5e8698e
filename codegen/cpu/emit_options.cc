// The parts of the emitter's ABI the runtime shares without emitting: the dynamic symbols an
// entry takes, and the options' part of a compiled kernel's cache key (llvm_emit.h).
#include <string>
#include <vector>

#include "codegen/cpu/llvm_emit.h"
#include "ir/str.h"

namespace kiln::cpu {

std::vector<std::string> dynamic_symbols(const kir::Kernel& k, const Bindings& baked) {
  std::vector<std::string> out;
  for (const std::string& s : k.symbols)
    if (!baked.contains(s)) out.push_back(s);
  return out;
}

std::string EmitOptions::key(const kir::Kernel& k) const {
  std::string s;
  for (const std::string& sym : k.symbols)
    if (auto it = baked.find(sym); it != baked.end()) s += str_cat("bake ", sym, "=", it->second, "\n");
  if (gemm_acc_buffer) s += "gemm_acc_buffer\n";
  for (size_t i = 0; i < storage.size(); ++i)
    if (storage[i] != static_cast<int>(i)) s += str_cat("storage ", i, "=", storage[i], "\n");
  return s;
}

}  // namespace kiln::cpu
