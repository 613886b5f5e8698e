// cuBLASLt GEMMs on row-major tensors: C[M,N] = A[M,K] x B (B stored as [N,K] linear
// weights or as [K,N]), f32 accumulation, optional batch, cuBLASLt's fused epilogues, and
// the heuristic's top algorithms for autotuning. Transposes are expressed through layouts
// (row-major C = A B is column-major C^T = B^T A^T), never by copying.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "runtime/cuda_driver.h"

namespace kiln::cuda {

// cuBLASLt's GELU epilogues use the tanh approximation.
enum class GemmEpilogue { none, relu, gelu, bias, relu_bias, gelu_bias };
std::string_view gemm_epilogue_name(GemmEpilogue e);
inline bool has_bias(GemmEpilogue e) {
  return e == GemmEpilogue::bias || e == GemmEpilogue::relu_bias || e == GemmEpilogue::gelu_bias;
}

struct GemmSpec {
  DType dtype = DType::bf16;  // of A, B, C and the bias; f32, f16 or bf16
  int64_t m = 0, n = 0, k = 0;
  bool b_is_nk = true;  // B as [N,K] (nn.Linear weights); false: B as [K,N]
  int64_t batch = 1;
  // Elements between consecutive matrices of a batch; -1: the matrix size (dense batch);
  // 0: the same matrix for every batch entry (shared weights).
  int64_t batch_stride_a = -1, batch_stride_b = -1, batch_stride_c = -1;
  GemmEpilogue epilogue = GemmEpilogue::none;  // bias: one value per output column n
};

// Why `spec` cannot run, or OK. Needs no GPU.
absl::Status check_gemm_spec(const GemmSpec& spec);

struct GemmAlgorithm {
  cublasLtMatmulAlgo_t algo;
  size_t workspace_bytes = 0;
  float waves = 0;  // cuBLASLt's estimate of waves per SM; informative only
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

  // Runs C = epilogue(A x B [+ bias]) on `stream`. `algorithm` null: the heuristic's first.
  absl::Status gemm(const GemmSpec& spec, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c,
                    CUdeviceptr bias, CUstream stream, const GemmAlgorithm* algorithm = nullptr) const;

  int64_t workspace_bytes() const { return workspace_.size(); }

 private:
  CublasLt(cublasLtHandle_t h, DeviceBuffer ws) : handle_(h), workspace_(std::move(ws)) {}
  cublasLtHandle_t handle_;
  DeviceBuffer workspace_;
};

}  // namespace kiln::cuda
