// The CPU device adapter (runtime/device_adapter.h): every kernel of a Program JIT-compiled by
// LLVM (runtime/cpu/jit.h), its outer loop split across a thread pool (KILN_CPU_THREADS);
// GEMMs whose accumulator BLAS computes (codegen/gemm.h decides which) through OpenBLAS, with
// the kernel as their epilogue; host memory. Parameters are taken to be immutable while their
// address stays the same: packed f32 copies of GEMM operands read from parameters or weight
// prep are kept and remade only when the executor's weights generation changes.
#pragma once

#include <memory>
#include <string>

#include "runtime/device_adapter.h"

namespace kiln::cpu {

// What programs for the CPU are built for: BLAS GEMMs, no kernel schedule, fused attention
// for f32/f16/bf16 forms (runtime/cpu/attention.h).
const Target& target();

std::unique_ptr<DeviceAdapter> make_adapter();

std::string llvm_version();  // of the LLVM that JIT-compiles the kernels: "16.0.6"

// The CPU as kiln's backend sees it: "16 hardware threads, LLVM host CPU sapphirerapids,
// OpenBLAS core SkylakeX" (the CPU the JIT compiles for and the kernels OpenBLAS picked; a
// virtual machine that hides its CPU's features shows here as a generic name or an old core).
std::string host_description();

}  // namespace kiln::cpu
