// NVRTC: compiles CUDA C source to a CUBIN for one GPU architecture (plus its PTX, kept for
// dumps), with located errors and a small thread pool for compiling many programs at once.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kernel_cache.h"

namespace kiln::cuda {

struct NvrtcProgram {
  std::string name;    // the kernel (or program) name; errors and the virtual file use it
  std::string source;  // CUDA C; kernels are extern "C" so their names survive
  std::string arch = "sm_90";
  std::vector<std::string> extra_options;  // appended after kiln's fixed options
};

struct NvrtcOutput {
  std::string cubin;
  std::string ptx;
  std::string log;  // warnings, if any
  double compile_ms = 0;
};

// "13.0": part of every kernel-cache key ("unknown" when NVRTC cannot be loaded).
std::string nvrtc_version();

// The exact option list used for `program`: -arch, the toolkit include directory (for
// cuda_bf16.h / cuda_fp16.h: $KILN_CUDA_INCLUDE_DIR, else the toolkit kiln was built
// with), C++17, and the extras, in that order. Deterministic, so it is part of cache keys.
std::vector<std::string> nvrtc_options(const NvrtcProgram& program);

// The device's arch ("sm_90") when a CUDA device is present, otherwise sm_90 (Hopper,
// kiln's main target) so that compile-only runs on GPU-less machines stay meaningful.
std::string default_arch();

// Compiles one program. Never aborts: an NVRTC failure is an InvalidArgument naming the
// kernel, quoting the compiler log, and quoting the source lines the log refers to. NVRTC
// itself (libnvrtc.so.13, or the path in $KILN_NVRTC_LIBRARY) is loaded on first use; where
// it cannot be, a FailedPrecondition names it.
absl::StatusOr<NvrtcOutput> nvrtc_compile(const NvrtcProgram& program);

// Compiles every program on min(max_threads, programs.size()) threads (max_threads <= 0:
// the hardware concurrency, at most 8). Results are in the order of `programs`.
std::vector<absl::StatusOr<NvrtcOutput>> nvrtc_compile_all(std::span<const NvrtcProgram> programs,
                                                           int max_threads = 0);

// The kernel-cache key of `program`: its source, nvrtc_options, nvrtc_version and arch.
std::string nvrtc_cache_key(const NvrtcProgram& program);

// nvrtc_compile_all through `cache`: hits skip NVRTC, misses compile in parallel and are
// stored (the cache's stats count hits, misses and NVRTC milliseconds).
std::vector<absl::StatusOr<std::shared_ptr<const CompiledKernel>>> nvrtc_compile_cached(
    KernelCache& cache, std::span<const NvrtcProgram> programs, int max_threads = 0);

}  // namespace kiln::cuda
