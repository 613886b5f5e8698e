// The CUDA side of one Program (runtime/device_adapter.h's DeviceProgram): its kernels as
// NVRTC-compiled modules with their launch rules, its GEMMs as cached cuBLASLt plans, and
// what max-autotune may try for each. Internal to runtime/cuda.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/cublaslt.h"
#include "runtime/cuda_driver.h"
#include "runtime/device_adapter.h"

namespace kiln::cuda {

struct CudaDevice {
  const Context* ctx = nullptr;  // null: compile only (no device)
  const CublasLt* lt = nullptr;
  std::string arch;  // "sm_90"
};

// Emits and compiles every kernel of `p` that is not on demand; `dump` (when set) receives
// each kernel's .cu and .ptx. Errors name the kernel.
absl::StatusOr<std::unique_ptr<DeviceProgram>> load_program(const CudaDevice& dev, std::shared_ptr<const Program> p,
                                                            const std::optional<DumpWriter>& dump);

}  // namespace kiln::cuda
