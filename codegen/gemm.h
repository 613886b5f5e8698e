// How a GEMM group runs, decided in one place for every target: whether a library computes
// it or its own kernel does, how the library addresses each operand (a strided matrix, or a
// dense copy that a gather kernel makes first), and how much of the group's epilogue the
// library fuses (cuBLASLt's bias, relu, gelu-tanh, a residual add) before a kernel reads its f32 accumulator
// for the rest. codegen/program.cc records the result in the Program; runtime/ carries it out.
#pragma once

#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "codegen/kernel_ir.h"

namespace kiln {

struct KernelGroup;
class Value;

// The epilogues a GEMM library fuses (gelu: the tanh approximation; bias: one value per
// output column n).
enum class GemmEpilogue : uint8_t { none, relu, gelu, bias, relu_bias, gelu_bias };
std::string_view gemm_epilogue_name(GemmEpilogue e);
bool has_bias(GemmEpilogue e);

// One GEMM as a BLAS library sees it: sizes, leading dimensions, batch strides and operand
// offsets (elements) as symbolic dims.
struct GemmLayout {
  DType dtype = DType::bf16;       // of A and B
  std::optional<DType> out_dtype;  // f32: the accumulator goes to scratch for an epilogue kernel
  GemmEpilogue epilogue = GemmEpilogue::none;
  // The library also adds a residual R of the output's shape and dtype (cuBLASLt's C with
  // beta = 1): the group is GEMM [+ bias] + R, rounded once (epilogue none or bias only).
  bool residual = false;
  bool b_is_nk = true, a_is_km = false;
  Dim m, n, k, batch, lda, ldb, batch_a, batch_b, offset_a, offset_b;
};

// The GEMM libraries kiln drives.
enum class GemmLibrary : uint8_t {
  // None: every GEMM group's own kernel computes it (a device without a GEMM library).
  None,
  // cuBLASLt: float GEMMs whose operands share one dtype, over strided operands (others are
  // gathered into dense scratch first), with its own bias, gelu-tanh and residual epilogues
  // (not relu: its RELU makes NaN 0; kiln's epilogue kernel computes relu).
  CublasLt,
  // BLAS sgemm (OpenBLAS): GEMMs accumulating in f32, in f32. Operands that are no affine
  // index are gathered into dense scratch first (as for cuBLASLt); the device converts and
  // packs operands that are not f32 in a BLAS layout. Epilogues are kernels, except where
  // the kernel only stores the accumulator (dense, f32): BLAS then writes that output
  // itself. Integer GEMMs run their own loop.
  Blas,
};
std::string_view gemm_library_name(GemmLibrary l);

struct GemmDecision {
  bool library = false;  // false: the group's kernel computes the GEMM itself
  // CublasLt: the call's layout (Blas: the device derives it from the kernel's strides).
  std::optional<GemmLayout> layout;
  // Kernels gathering operand A (or B) into a dense [batch.., rows.., K] buffer, their
  // second buffer, for operands that are no strided matrix (CublasLt: in the operand's
  // dtype) or no affine index (Blas: converted to f32).
  std::optional<kir::Kernel> gather_a, gather_b;
  // The library computes the whole group (CublasLt: with layout->epilogue; Blas: a group
  // that only stores its accumulator); else it writes an f32 accumulator that the group's
  // kernel reads as its epilogue.
  bool fused_epilogue = false;
};

// The residual R of a GEMM group [GEMM, add(GEMM, R)] (either order) that cuBLASLt adds as
// its C matrix (GemmLayout::residual): R has the output's shape (no broadcast, so the
// output's dense layout) and `dtype`, and is one of the group's stored inputs (not a view
// its prologue computes). Null: no such add.
const Value* residual_of(const KernelGroup& g, DType dtype);

// The rows of GEMM kernel `k` (its batch dims times m) when they are a constant once the
// symbols in `baked` take their values: a decode step's single token per sequence, with a
// batch of 1 baked into its specialization.
std::optional<int64_t> constant_gemm_rows(const kir::Kernel& k, const Bindings& baked);
// cuBLASLt: a float GEMM of at most this many constant rows is no library call; its own
// kernel computes it, which the CUDA printer writes with one warp per output element
// (codegen/cuda/emit.cc): a matrix-vector product reads B once, coalesced, with its
// epilogue in the same kernel. $KILN_WARP_GEMM_ROWS, read at each decision; default 0 (off:
// the library, and one thread per output in the generated fallback). Experimental: on the
// H100 it gained 0.6% on a Llama-3.2-1B decode step, and the CUDA fuzzer found a wrong
// result with it on (seeds 22200028..22200032 in one process, reduce-overhead and default).
int warp_gemm_max_rows();

// Whether BLAS reads operand A (B when `is_b`) of GEMM kernel `k` where it is: an affine
// index (GemmStrides) constant along the other operand's dims. Others are gathered first.
bool blas_reads_in_place(const kir::Kernel& k, bool is_b);

// Operand A (or B) of `k` as its gather kernel (GemmDecision::gather_a/_b) leaves it in
// buffer `buffer`: a dense [batch.., rows.., K] matrix, its strides over k's domain.
kir::GemmOperand gathered_operand(const kir::Kernel& k, bool is_b, int buffer);

// Pre: `k` is the lowering of `g`, a Gemm group. Symbols bound in `baked` are constants of
// the specialization. Errors name the group.
absl::StatusOr<GemmDecision> decide_gemm(const KernelGroup& g, const kir::Kernel& k, GemmLibrary lib,
                                         const Bindings& baked);

}  // namespace kiln
