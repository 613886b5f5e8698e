// cuBLASLt GEMMs on row-major tensors: C[M,N] = A[M,K] x B (B stored as [N,K] linear
// weights or as [K,N]), f32 accumulation, optional batch, cuBLASLt's fused epilogues, and
// the heuristic's top algorithms for autotuning. Transposes are expressed through layouts
// (row-major C = A B is column-major C^T = B^T A^T), never by copying.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/gemm.h"
#include "ir/dtype.h"
#include "runtime/cuda_driver.h"

namespace kiln::cuda {

// The epilogues cuBLASLt fuses (codegen/gemm.h; its GELU is the tanh approximation).
using ::kiln::GemmEpilogue;
using ::kiln::gemm_epilogue_name;
using ::kiln::has_bias;

struct GemmSpec {
  DType dtype = DType::bf16;  // of A, B, C and the bias; f32, f16 or bf16
  int64_t m = 0, n = 0, k = 0;
  bool b_is_nk = true;  // B as [N,K] (nn.Linear weights); false: B as [K,N]
  int64_t batch = 1;
  // Elements between consecutive matrices of a batch; -1: the matrix size (dense batch);
  // 0: the same matrix for every batch entry (shared weights).
  int64_t batch_stride_a = -1, batch_stride_b = -1, batch_stride_c = -1;
  GemmEpilogue epilogue = GemmEpilogue::none;  // bias: one value per output column n
  // C = epilogue(A x B) + R, R a matrix of C's layout and dtype (cuBLASLt's C with beta = 1;
  // it may be C itself); epilogue none or bias only (an activation would apply after R).
  bool residual = false;
  // Strided operands: A is [M,K] with row stride `lda` (-1: K), or with `a_is_km`, stored
  // [K,M] with row stride `lda` (-1: M); B's row stride is `ldb` (-1: dense). C is dense.
  bool a_is_km = false;
  int64_t lda = -1, ldb = -1;
  // C's (and the bias's) dtype, when it differs from A and B (f32 accumulators for a
  // separate epilogue kernel).
  std::optional<DType> out_dtype;
  // Bytes every operand pointer (A, B, C, bias) is a multiple of: the heuristic only offers
  // algorithms that are safe at this alignment.
  int alignment = 256;
};

// Why `spec` cannot run, or OK. Needs no GPU.
absl::Status check_gemm_spec(const GemmSpec& spec);

struct GemmAlgorithm {
  cublasLtMatmulAlgo_t algo;
  size_t workspace_bytes = 0;
  float waves = 0;  // cuBLASLt's estimate of waves per SM; informative only
};

class CublasLt;

// One GEMM's cuBLASLt descriptors and algorithm, made once and run many times: building
// descriptors and asking the heuristic costs far more than the launch itself.
class GemmPlan {
 public:
  // The heuristic's best algorithm for `spec` (or NotFound).
  static absl::StatusOr<std::unique_ptr<GemmPlan>> create(const CublasLt& lt, const GemmSpec& spec);
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;

  const GemmSpec& spec() const { return spec_; }
  // Up to `top_k` algorithms that fit the workspace, best first by the heuristic.
  absl::StatusOr<std::vector<GemmAlgorithm>> algorithms(int top_k) const;
  const GemmAlgorithm& algorithm() const { return algo_; }
  void set_algorithm(const GemmAlgorithm& a) { algo_ = a; }
  // C = epilogue(A x B [+ bias]) [+ residual] on `stream` (`residual` non-null exactly when
  // the spec has one). Not thread-safe (the bias pointer lives in the descriptor).
  absl::Status run(CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, CUdeviceptr bias, CUstream stream,
                   CUdeviceptr residual = 0) const;

  struct Descriptors;

 private:
  GemmPlan(const CublasLt& lt, const GemmSpec& spec);
  const CublasLt& lt_;
  GemmSpec spec_;
  std::unique_ptr<Descriptors> d_;
  GemmAlgorithm algo_{};
  mutable CUdeviceptr bias_ = 0;
};

class CublasLt {
 public:
  static constexpr int64_t kDefaultWorkspace = 32 << 20;
  // A handle on `ctx`'s device with a workspace of `workspace_bytes`.
  static absl::StatusOr<std::unique_ptr<CublasLt>> create(const Context& ctx,
                                                          int64_t workspace_bytes = kDefaultWorkspace);
  ~CublasLt();

  // Up to `top_k` algorithms for `spec` that fit the workspace, best first by the heuristic.
  absl::StatusOr<std::vector<GemmAlgorithm>> algorithms(const GemmSpec& spec, int top_k) const;

  // Runs C = epilogue(A x B [+ bias]) [+ residual] on `stream`; `algorithm` null: the heuristic's.
  absl::Status gemm(const GemmSpec& spec, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, CUdeviceptr bias,
                    CUstream stream, const GemmAlgorithm* algorithm = nullptr, CUdeviceptr residual = 0) const;

  int64_t workspace_bytes() const { return workspace_.size(); }

 private:
  friend class GemmPlan;
  CublasLt(cublasLtHandle_t h, DeviceBuffer ws) : handle_(h), workspace_(std::move(ws)) {}
  cublasLtHandle_t handle_;
  DeviceBuffer workspace_;
  // The heuristic's best algorithm per spec (every field of it), asked once: the GEMMs of
  // identical layers have one spec, and the query costs far more than making descriptors.
  mutable std::mutex mu_;
  mutable std::map<std::string, GemmAlgorithm> best_;
};

}  // namespace kiln::cuda
