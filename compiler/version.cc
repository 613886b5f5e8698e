#include "compiler/version.h"

#include <fmt/format.h>

#include "ir/status.h"
#include "ir/str.h"
#include "kiln_git.h"
#if KILN_WITH_LLVM
#include "runtime/cpu/device.h"
#endif
#if KILN_WITH_CUDA_BACKEND
#include <cuda.h>

#include "runtime/cuda/cudnn_attention.h"
#include "runtime/cuda/nccl.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"
#endif

namespace kiln {

VersionInfo version_info() {
  VersionInfo v;
  v.version = KILN_VERSION;
  v.git = KILN_GIT_HASH;
#if defined(__clang__)
  v.compiler = str_cat("clang ", __clang_major__, ".", __clang_minor__, ".", __clang_patchlevel__);
#elif defined(__GNUC__)
  v.compiler = str_cat("g++ ", __GNUC__, ".", __GNUC_MINOR__, ".", __GNUC_PATCHLEVEL__);
#else
  v.compiler = "unknown";
#endif
#if KILN_WITH_LLVM
  v.llvm = cpu::llvm_version();
  v.devices.push_back(str_cat("cpu (", cpu::host_description(), ")"));
#else
  v.llvm = "none (built with KILN_WITH_LLVM=OFF: no CPU backend)";
#endif
#if KILN_WITH_CUDA_BACKEND
  v.cuda = fmt::format("{}.{}", CUDA_VERSION / 1000, CUDA_VERSION % 1000 / 10);
  v.nvrtc = cuda::nvrtc_version();
  absl::StatusOr<std::string> cudnn = cuda::cudnn_version(), nccl = cuda::nccl_version();
  v.cudnn = cudnn.ok() ? str_cat(*cudnn, " (fused attention)") : str_cat("none (", status_message(cudnn.status()), ")");
  v.nccl = nccl.ok() ? str_cat(*nccl, " (collectives)") : str_cat("none (", status_message(nccl.status()), ")");
  absl::StatusOr<const cuda::DriverApi*> api = cuda::driver();
  int driver = 0;
  if (!api.ok()) {
    v.driver = status_message(api.status());
  } else if ((*api)->cuDriverGetVersion(&driver) != CUDA_SUCCESS) {
    v.driver = "cuDriverGetVersion failed";
  } else {
    v.driver = fmt::format("{}.{} (CUDA API)", driver / 1000, driver % 1000 / 10);
  }
  if (absl::StatusOr<int> n = cuda::Device::count(); n.ok()) {
    for (int i = 0; i < *n; ++i) {
      absl::StatusOr<cuda::Device> d = cuda::Device::get(i);
      if (!d.ok()) {
        v.devices.push_back(str_cat("cuda:", i, " (", status_message(d.status()), ")"));
        continue;
      }
      const cuda::DeviceProperties& p = d->properties();
      v.devices.push_back(fmt::format("cuda:{} {}, {}, {} SMs, {:.1f} GiB", i, p.name, d->arch_name(), p.sm_count,
                                      static_cast<double>(p.total_memory) / (1 << 30)));
    }
  } else {
    v.devices.push_back(status_message(n.status()));
  }
#else
  v.cuda = v.nvrtc = v.driver = v.cudnn = v.nccl = "none (configured without the CUDA toolkit: no CUDA backend)";
#endif
  return v;
}

std::string version_text(const VersionInfo& v) {
  std::string s = str_cat("kiln ", v.version, " (git ", v.git, ")\n");
  s += str_cat("built with: ", v.compiler, "\n");
  s += str_cat("CUDA toolkit: ", v.cuda, "\n");
  s += str_cat("NVRTC: ", v.nvrtc, "\n");
  s += str_cat("CUDA driver: ", v.driver, "\n");
  s += str_cat("cuDNN: ", v.cudnn, "\n");
  s += str_cat("NCCL: ", v.nccl, "\n");
  s += str_cat("LLVM: ", v.llvm, "\n");
  for (const std::string& d : v.devices) s += str_cat("device: ", d, "\n");
  return s;
}

}  // namespace kiln
