// The CUDA backend: builds one executable per specialization of a compiled graph. Every
// elementwise/reduction group becomes an NVRTC-compiled kernel (through the kernel cache);
// every GEMM group a cuBLASLt call, with cuBLASLt's own epilogue where the group's epilogue
// is one (bias, relu, gelu-tanh) and otherwise an f32 accumulator and one fused epilogue
// kernel. Intermediates live in one device arena laid out by the memory plan.
//
// Modes: default launches the sequence on the caller's stream; reduce-overhead captures
// it once per shape into a CUDA graph over static input and output slots and replays it;
// max-autotune times the heuristic's top cuBLASLt algorithms and a few launch shapes per
// kernel on the real sizes and keeps the fastest, remembered on disk beside the kernel cache.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/executable.h"
#include "runtime/kernel_cache.h"

namespace kiln::cuda {

// Fails cleanly ("no CUDA device: ...") where no driver or device is present.
absl::StatusOr<std::unique_ptr<Backend>> make_backend(int device);

// The process-wide kernel cache of the CUDA backend (KILN_CACHE_DIR; see kernel_cache.h).
KernelCache& kernel_cache();

}  // namespace kiln::cuda
