// What the CUDA backend runs for one specialization, decided without a device: which
// groups become NVRTC kernels (and in which form), which GEMMs go to cuBLASLt with which
// layouts and epilogue, and the NVRTC programs to compile. The executable (backend.cc) adds
// memory and launches; `kiln compile --device cuda` stops here, on any machine.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/cuda/emit.h"
#include "runtime/cublaslt.h"
#include "runtime/executable.h"
#include "runtime/nvrtc.h"

namespace kiln::cuda {

// One GEMM as cuBLASLt sees it, with sizes, leading dimensions, batch strides and operand
// offsets (elements) as symbolic dims.
struct GemmLayout {
  DType dtype = DType::bf16;
  std::optional<DType> out_dtype;  // f32: the accumulator goes to scratch for an epilogue kernel
  GemmEpilogue epilogue = GemmEpilogue::none;
  bool bias = false;
  bool b_is_nk = true, a_is_km = false;
  Dim m, n, k, batch, lda, ldb, batch_a, batch_b, offset_a, offset_b;
};

struct PlannedStep {
  enum class Kind : uint8_t {
    Kernel,  // `kernel` computes the group
    Gemm,    // cuBLASLt; with `epilogue_kernel`, then `kernel` reads its f32 accumulator
  };
  Kind kind = Kind::Kernel;
  int group = 0;
  bool weight_prep = false;  // runs when the parameters change, not on every call
  CudaKernel kernel;
  bool epilogue_kernel = false;
  GemmLayout gemm;
  // Gemm: kernels gathering an operand that is no strided matrix into scratch, run first.
  std::optional<CudaKernel> copy_a, copy_b;
};

struct SpecializationPlan {
  std::vector<PlannedStep> steps;  // schedule order
  double codegen_ms = 0;
  // Every kernel to compile, in step order.
  std::vector<const CudaKernel*> kernels() const;
  int gemms() const;
};

// Pre: `m` is complete (state through the pipeline, kernels lowered). Symbols in `baked`
// are constants. Errors name the group that cannot be emitted.
absl::StatusOr<SpecializationPlan> plan_specialization(const CompiledModule& m, const Bindings& baked);

// One NVRTC program per kernel (the prelude and the kernel), named after the kernel.
std::vector<NvrtcProgram> nvrtc_programs(std::span<const CudaKernel* const> kernels, const std::string& arch);

}  // namespace kiln::cuda
