// The CUDA scheduling pass: decides how a kernel runs on the GPU (launch form, vector width
// and accesses, L2 streaming, row and value caches, bf16 pairs) and records it on the
// kernel as a kir::Schedule, which the CUDA printer (emit.h) follows.
#pragma once

#include "absl/status/status.h"
#include "codegen/kernel_ir.h"

namespace kiln::cuda {

// Pre: `k` is well formed (kernel_ir.h) and has no schedule; a GEMM kernel (Kernel::gemm)
// computes its accumulator itself, one thread per output element (a library GEMM's
// epilogue is kir::with_accumulator_buffer's kernel, which has no GEMM); the fused forms
// are rewritten (kir::rewrite_intrinsics) where the printer should use them.
// Post: k.schedule is set (kernel_ir.h says what each field means); nothing else changes.
// Deterministic. Errors name the kernel and the construct that has no CUDA form: a map
// stage with extents over a non-empty domain and no reduce stage before it, a GEMM with
// reduce stages.
absl::Status schedule_kernel(kir::Kernel& k);

// What every kernel of a CUDA program goes through (Target::prepare_kernel):
// kir::rewrite_intrinsics, then schedule_kernel.
absl::Status prepare_kernel(kir::Kernel& k);

// Whether the CUDA value of `e` (a node of `k`) is a bf16 value already: every constant,
// load, op, cast and intrinsic of dtype bf16 is rounded to it (or read as one), a let's value
// is its expression's, a select's its branches'; stage results and accumulators are not.
// The scheduler pairs bf16 ops on such operands; the printer stores such values as their bits.
bool rounded_to_bf16(const kir::Kernel& k, const kir::Expr& e);

}  // namespace kiln::cuda
