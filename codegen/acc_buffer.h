// The epilogue of a GEMM that a library computes: the kernel reads the accumulator from a
// buffer instead of computing it.
#pragma once

#include "codegen/kernel_ir.h"

namespace kiln::kir {

// Pre: `gemm` is well formed and has a GEMM (Kernel::gemm). Post: the same kernel without
// its GEMM and with one more buffer, last: an f32 Input named "acc" of shape `domain`
// (dense row-major), the accumulator of every outer point; every GemmAcc read is a load of
// it at the outer point's dense offset (a fresh Load node per read, in lets, stores and
// reduce values).
Kernel with_accumulator_buffer(const Kernel& gemm);

}  // namespace kiln::kir
