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
#include "runtime/kernel_cache.h"

namespace kiln::cpu {

struct JitKernel {
  KernelEntry entry = nullptr;
  std::vector<std::string> symbols;                // the entry's `symbols` argument order
  std::shared_ptr<const std::string> optimized_ir;  // the module after O2, as text
  double codegen_ms = 0;  // emitting LLVM IR; 0 on a memory cache hit
  double compile_ms = 0;  // O2 + codegen + JIT link (only the link on a disk hit); 0 on a memory hit
  bool cache_hit = false;  // served from memory: this JIT's, or the kernel cache's (a loaded package's object code)
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
  // What object code is compiled for: LLVM's version, the host CPU and a digest of its
  // features ("LLVM 16.0.6, znver4, features 1a2b3c4d"); object code of another target is not
  // used (the kernel cache keys include it).
  std::string target() const;
  // The kernel cache holding the object code (its disk directory is $KILN_CACHE_DIR's).
  KernelCache& kernel_cache();

  struct Impl;

 private:
  CpuJit();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cpu
