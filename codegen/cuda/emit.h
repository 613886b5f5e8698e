// CUDA C emission: one kir::Kernel as CUDA C (no #include anywhere, so NVRTC compiles it
// fast) with a scalar entry point and, where the data allow, a vector
// entry point that moves 16 bytes per access. The host picks the entry point and the launch
// shape from the symbol values (runtime/cuda). Emission is kernel-IR steps, each callable on
// its own (to dump the scheduled kernel): kir::with_accumulator_buffer (a library GEMM's
// epilogue), kir::rewrite_intrinsics, schedule_kernel (schedule.h), then
// print_scheduled_kernel.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"

namespace kiln::cuda {

// How the host launches a kernel (kir::Schedule::Launch says what each form is).
using LaunchKind = kir::Schedule::Launch;
std::string_view launch_kind_name(LaunchKind k);

// What to emit for a kernel with a GEMM (Kernel::gemm).
enum class GemmForm : uint8_t {
  // The accumulator is read from an extra f32 buffer (dense over the domain) appended after
  // the kernel's buffers: the epilogue of a GEMM that a library computed.
  AccBuffer,
  // The kernel computes the accumulator itself: one thread per output element (the
  // fallback for GEMMs no library runs, integer dtypes), or one warp per output element
  // where warp_gemm_form holds.
  Naive,
};

// Whether GEMM kernel `k` (computing its own accumulator) is printed with one warp per
// output element: float, with at most warp_gemm_max_rows() rows (batch x m; codegen/gemm.h,
// off by default) once `baked` is substituted. Its
// lanes split the sum over k (consecutive lanes read consecutive k: coalesced reads of B's
// rows where k is contiguous), a butterfly adds their parts, lane 0 runs the epilogue. This
// is the matrix-vector product of a decode step (codegen/gemm.h, warp_gemm_max_rows).
bool warp_gemm_form(const kir::Kernel& k, const Bindings& baked);

struct CudaKernel {
  std::string name;         // scalar entry point (extern "C")
  std::string vector_name;  // vector entry point; empty when there is none
  std::string source;       // both definitions; compile after cuda_prelude() (program_source)
  LaunchKind launch = LaunchKind::Elementwise;
  Dim work;                 // see LaunchKind
  Dim row_length;           // Rows only
  int buffers = 0;          // pointer parameters first (kernel buffer order, then the acc buffer)
  std::vector<std::string> symbols;  // then one long long per dynamic symbol, in this order,
                                     // then int stream_l2 (below)
  // The bytes of all the kernel's buffers. The host passes stream_l2 = 1 when they exceed
  // the device's L2 cache: a Rows kernel's vector entry then gives its loads of elements read
  // once and its stores evict-first priority in L2 (kiln_policy), else normal priority.
  // Other kernels take the parameter and ignore it.
  Dim bytes;
  bool streams_l2 = false;  // the vector entry reads stream_l2 (a Rows kernel's)
  // The vector entry point is valid when every `divisible` dim is a multiple of `width` and
  // every buffer in `aligned` starts at a 16-byte aligned address.
  int width = 1;
  std::vector<Dim> divisible;
  std::vector<int> aligned;
  // Rows, vector entry: each thread keeps up to this many chunks of `width` elements of its
  // row in registers (0: no row cache), so blockDim.x must be >= row_length / width /
  // row_cache_chunks.
  int row_cache_chunks = 0;
  // Rows, vector entry: when > 0, blockDim.x must be exactly this (row_threads *
  // row_cache_chunks chunks make the row; the kernel has no guard at the row's end).
  int row_threads = 0;
  bool warp_gemm = false;  // warp_gemm_form: `work` counts 32 threads per output element
};

// What every kernel's source needs before it: storage conversions, the reference's scalar
// semantics, vector load/store helpers. No #include. The text of prelude.cuh, embedded at
// build time.
const std::string& cuda_prelude();
// One NVRTC translation unit: the prelude, then each kernel's definitions.
std::string program_source(std::span<const CudaKernel* const> kernels);

// Pre: `k` is well formed (kernel_ir.h) and has no schedule. Symbols bound in `baked` become
// constants; the others are kernel parameters. Deterministic: the same kernel gives the same
// text. Errors name the kernel and the construct that cannot be emitted. The steps:
// [kir::with_accumulator_buffer where `gemm` is AccBuffer and k has a GEMM], then
// kir::rewrite_intrinsics, schedule_kernel, print_scheduled_kernel.
absl::StatusOr<CudaKernel> emit_kernel(const kir::Kernel& k, const Bindings& baked, GemmForm gemm = GemmForm::AccBuffer);

// Pre: `k` is scheduled (schedule_kernel). The CUDA C of its entry points and the fields of
// CudaKernel, following its schedule; `baked` only turns symbols into literals.
absl::StatusOr<CudaKernel> print_scheduled_kernel(const kir::Kernel& k, const Bindings& baked);

}  // namespace kiln::cuda
