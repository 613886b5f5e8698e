// CPU code generation: one kir::Kernel as an LLVM IR function (loop nest, loads/stores
// through flat index arithmetic, scalar ops, reductions, the GEMM accumulator loop or a
// precomputed accumulator), with the numerics kernel_eval.h specifies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"
#include "ir/sym.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace kiln::cpu {

// The ABI of every emitted kernel: buffers in kernel buffer order (then the accumulator
// buffer when EmitOptions::gemm_acc_buffer), the values of the kernel's dynamic symbols
// (dynamic_symbols order), and a half-open range of the flattened outer domain (row-major
// over Kernel::domain; a rank-0 domain has the single point 0). Disjoint ranges may run on
// different threads at once.
using KernelEntry = void (*)(void* const* buffers, const int64_t* symbols, int64_t begin, int64_t end);

struct EmitOptions {
  Bindings baked;  // symbols that are constants in this specialization
  // GEMM kernels: read the accumulator from an extra f32 buffer holding it densely over the
  // outer domain (computed by a GEMM library), instead of emitting the k loop.
  bool gemm_acc_buffer = false;
  // Per buffer, the buffer whose memory it is (itself unless the memory plan writes an
  // output over a dead input of the same kernel); empty: all distinct. Shared buffers use
  // one pointer, so the noalias facts the vectorizer needs stay true.
  std::vector<int> storage;

  // Canonical text of the options, part of a compiled kernel's cache key.
  std::string key(const kir::Kernel& k) const;
};

// The dynamic symbols of `k` under `baked`: the order of the `symbols` argument.
std::vector<std::string> dynamic_symbols(const kir::Kernel& k, const Bindings& baked);

// Pre: `k` is well formed (kernel_ir.h) and every load index is in bounds for the buffer
// shapes under the bindings it will run with. Post: a verified module holding `entry_name`
// with the KernelEntry ABI, emitted from `k` reshaped by row_form (collapse.h: merged or
// split rows, the same points) and after kir::rewrite_intrinsics (the fused forms the CUDA
// backend emits too). The numerics are kernel_eval.h's: f16/bf16 values computed in
// f32 and rounded (RNE) to their dtype at every node, integers wrap, integer division
// truncates with x / 0 = 0, max/min propagate NaN, argmax keeps the first maximum (a NaN
// wins). Float sums and products may be reassociated (vectorized), as any f32 order is
// within the reference's tolerance of its f64 sum. Errors name the kernel and the construct.
absl::StatusOr<std::unique_ptr<llvm::Module>> emit_kernel(const kir::Kernel& k, const std::string& entry_name,
                                                          const EmitOptions& opts, llvm::LLVMContext& ctx);

}  // namespace kiln::cpu
