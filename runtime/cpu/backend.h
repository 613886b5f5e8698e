// The CPU backend (runtime/executable.h's Backend for the host): every kernel of a compiled
// module JIT-compiled by LLVM (GEMMs through OpenBLAS with their epilogues JIT'ed), run in
// schedule order over host tensors, outer loops split across a thread pool
// (KILN_CPU_THREADS), intermediates in one arena laid out by the memory plan.
//
// Parameters passed at run time are taken to be immutable while their data pointer stays
// the same: weight-prep results and the f32 copies of GEMM weights are kept by pointer
// and recomputed only when a parameter's pointer changes.
#pragma once

#include <memory>

#include "runtime/executable.h"

namespace kiln::cpu {

std::unique_ptr<Backend> make_backend();

}  // namespace kiln::cpu
