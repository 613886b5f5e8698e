// The CUDA device adapter (runtime/device_adapter.h): every kernel of a Program emitted as
// CUDA C (codegen/cuda), NVRTC-compiled through the kernel cache and loaded; launch shapes
// from the symbol values; GEMMs through cuBLASLt (codegen/gemm.h decides their form);
// device memory, resident constants, CUDA-graph capture and event timing for the executor.
// Launch shapes and cuBLASLt algorithms are what max-autotune tries.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/device_adapter.h"
#include "runtime/kernel_cache.h"

namespace kiln::cuda {

// What programs for CUDA are built for: cuBLASLt GEMMs.
const Target& target();

// Fails cleanly ("no CUDA device: ...") where no driver or device is present.
absl::StatusOr<std::unique_ptr<DeviceAdapter>> make_adapter(int device);

// An adapter that emits and NVRTC-compiles every kernel for `arch` (through the kernel
// cache) but runs nothing: `kiln compile --device cuda` on machines without a GPU. Loading
// works; planning a call, memory and copies fail with "compile only".
std::unique_ptr<DeviceAdapter> make_compile_only_adapter(std::string arch);

// The process-wide kernel cache of the CUDA adapter (KILN_CACHE_DIR; see kernel_cache.h).
KernelCache& kernel_cache();

}  // namespace kiln::cuda
