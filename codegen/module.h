// A graph through the pass pipeline with its lowered kernels: what compile() builds once and
// every specialization (and every device) starts from.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codegen/kernel_ir.h"
#include "passes/pass_manager.h"

namespace kiln {

// Immutable once compile() built it; shared by all specializations of one compiled graph.
struct CompiledModule {
  CompileState state;                // optimized graph, schedule, memory plan
  std::vector<kir::Kernel> kernels;  // kernels[i] is the lowering of state.schedule.groups[i]
  std::vector<const Value*> args;    // runtime arguments in call order: inputs, params without data
  std::vector<std::string> symbols;  // every symbol of the graph, sorted: the order of SymbolValues

  // `values` (in `symbols` order) as Bindings, for the slow paths (layout, errors).
  Bindings bindings(std::span<const int64_t> values) const;

  // A graph through the pipeline and its lowered kernels; args and symbols are derived.
  static std::shared_ptr<CompiledModule> make(CompileState state, std::vector<kir::Kernel> kernels);
};

// `k` with its names abstracted: named by its op alone ("k_mul" for "k12_mul"), its buffers
// b0, b1, ... Everything else (dtypes, shapes, symbols, loops, schedule) stays, so the
// kernels of identical layers become equal and a backend that emits this form gets one
// source for all of them: one compile, one module, one tuning (the structural key of a group).
kir::Kernel anonymous_kernel(const kir::Kernel& k);

}  // namespace kiln
