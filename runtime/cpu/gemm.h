// GEMM kernels on the CPU: the accumulator C[batch.., m, n] = sum_k A * B of a kir::GemmSpec
// computed by OpenBLAS's sgemm in f32, after which the kernel's JIT'ed epilogue reads C
// (EmitOptions::gemm_acc_buffer). An operand is used in place when it is f32 and its
// strides are a BLAS layout; otherwise it is packed first (converted to f32, made dense).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"
#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

// OpenBLAS's kernels in use, as the device line gives them: "SkylakeX", "SkylakeX (chosen by
// kiln: OpenBLAS picked Prescott)" or "Haswell (set by OPENBLAS_CORETYPE)". The first call
// sets OpenBLAS up (init_blas).
std::string blas_core();

// Once per process, before kiln's first BLAS call (the CPU adapter's constructor, blas_core):
// OpenBLAS runs every call on its calling thread (see GemmRunner::run), with the kernels
// choose_blas_core leaves. Thread-safe.
void init_blas();

// The core this CPU's instruction set calls for: "SkylakeX" (AVX-512 F/BW/VL/DQ), "Haswell"
// (AVX2 and FMA), "Sandybridge" (AVX), else "".
std::string blas_core_for_cpu();

// Unless OPENBLAS_CORETYPE is set (always respected), makes OpenBLAS switch to
// blas_core_for_cpu() where the core it picked uses an older instruction set: OpenBLAS
// 0.3.21 does not know every CPU (a Sapphire Rapids under KVM got Prescott's SSE3 kernels,
// 2-2.7x slower). Returns blas_core()'s text. Not thread-safe, and no BLAS call may run
// meanwhile: init_blas calls it once; tests call it again.
std::string choose_blas_core();

class GemmRunner {
 public:
  // nullopt unless BLAS reads both operands of `k` in place (codegen/gemm.h
  // blas_reads_in_place); a gathered operand is given as gathered_operand's.
  static std::optional<GemmRunner> make(const kir::Kernel& k);

  // The GEMM under concrete symbol values.
  struct Operand {
    int buffer = 0;
    DType dtype = DType::f32;
    int64_t offset = 0;
    std::vector<std::pair<int64_t, int64_t>> batch, outer;  // (extent, stride) per dim
    int64_t k_stride = 0;
    bool pack = false;       // converted to a dense f32 copy before the call
    bool k_contiguous = false;  // rows are outer elements, k the fast index (else rows are k)
    int64_t ld = 0;          // leading dimension of the (packed or in-place) matrix
    int64_t pack_elems = 0;  // floats of the packed copy
    friend bool operator==(const Operand&, const Operand&) = default;
  };
  struct Bound {
    int64_t batches = 1, m = 0, n = 0, k = 0;
    Operand a, b;
    int64_t acc_elems() const { return batches * m * n; }
  };
  // An error names the kernel: an unbound symbol or sizes beyond BLAS's 32-bit integers.
  // `stable_b`: B is a weight (a parameter, constant or weight-prep result) whose packed
  // copy the caller keeps across calls; it is then packed as [K, N] (see gemm.cc).
  absl::StatusOr<Bound> bind(const Bindings& b, bool stable_b = false) const;

  // Packs operand `op` of `bound` from `src` (its buffer) into `dst` (pack_elems floats).
  static void pack(const Operand& op, int64_t k, const void* src, float* dst);
  // A hash of a few elements of operand `op` at `src`: what a kept packed copy is checked
  // against besides the address, so that new values in a buffer at a freed one's address
  // (or written in place without parameters_changed()) are very likely seen.
  static uint64_t fingerprint(const Operand& op, int64_t k, const void* src);

  // C = A * B for every batch; `a` and `b` point at the operands as used (the buffer, or
  // its packed copy). `acc` holds bound.acc_elems() floats, dense over the outer domain.
  // Large GEMMs are split into blocks of C (batches, rows or columns) over `pool`, each a
  // single-threaded BLAS call: one scheduler for the whole backend, which degrades far
  // better than BLAS's spinning threads when the machine is busy.
  static void run(const Bound& bound, const void* a, const void* b, float* acc, ThreadPool& pool);

 private:
  std::string kernel_;
  kir::GemmSpec spec_;
  std::vector<Dim> domain_;
  size_t m_dims_ = 0;  // domain dims after the batch dims that flatten to m; the rest make n
  DType a_dtype_ = DType::f32, b_dtype_ = DType::f32;
};

}  // namespace kiln::cpu
