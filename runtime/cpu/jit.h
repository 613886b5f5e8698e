// The CPU JIT: kernel IR -> LLVM IR (codegen/cpu) -> O2 for the host CPU -> object code ->
// ORC LLJIT, with a process-wide in-memory cache keyed by the printed kernel and its emit
// options, and the object code in the on-disk kernel cache (runtime/kernel_cache.h), so
// that a second process skips O2 and code generation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/cpu/llvm_emit.h"
#include "codegen/kernel_ir.h"

namespace kiln::cpu {

struct JitKernel {
  KernelEntry entry = nullptr;
  std::vector<std::string> symbols;                // the entry's `symbols` argument order
  std::shared_ptr<const std::string> optimized_ir;  // the module after O2, as text
  double codegen_ms = 0;  // emitting LLVM IR; 0 on a memory cache hit
  double compile_ms = 0;  // O2 + codegen + JIT link (only the link on a disk hit); 0 on a memory hit
  bool cache_hit = false;  // served from the in-memory cache
  bool disk_hit = false;   // object code read from the disk cache (emitted, not optimized)
};

class CpuJit {
 public:
  // The process-wide JIT (kernels stay loaded for the process's lifetime). Thread-safe.
  static CpuJit& instance();

  // Compiles `k` as `opts` says, or returns the cached result of an identical request. An
  // error names the kernel (emission or LLVM failure).
  absl::StatusOr<JitKernel> compile(const kir::Kernel& k, const EmitOptions& opts);

  // The host CPU LLVM compiles for ("znver4", ...), for benchmark reports.
  std::string host_cpu() const;

  struct Impl;

 private:
  CpuJit();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cpu
