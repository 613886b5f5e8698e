// cuDNN's fused attention as a second implementation of the CUDA attention step, beside
// kiln's generated kernels (attention.h): a step's default plan where it takes the step
// (KILN_ATTENTION=kiln: never), and one more candidate that max-autotune times against
// kiln's tile configurations (the choice is recorded as "cudnn").
//
// cuDNN (libcudnn.so.9) is dlopen'ed on first use, like cuBLASLt and NCCL, so builds and
// machines without it work; KILN_CUDNN_LIBRARY names another path (PyTorch's wheels carry
// one: site-packages/nvidia/cudnn/lib/libcudnn.so.9). cuDNN 9 before 9.21 has no single
// causal attention operation, so the step is given to cuDNN's graph (backend) API as the
// operation graph its fused flash-attention engines recognize, as cudnn-frontend builds
// it: S = Q K^T, S * scale, the causal mask (row index >= column index, else -inf),
// softmax as max / subtract / exp / sum / divide (with the log-sum-exp statistic the
// pattern carries, virtual here), O = P V. cuDNN's heuristics (mode A) rank its engines;
// the first whose execution plan finalizes is kept, per call shape.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/attention.h"
#include "runtime/cuda_driver.h"

namespace kiln::cuda {

struct AttentionCall;  // attention.h

// OK when cuDNN's fused attention computes `f` at the sizes of `s` exactly as the
// reference does: bf16/f16; no mask, window, softcap, kv_lens or paged cache; causal only
// where kiln's bottom-right diagonal is cuDNN's top-left one (Tq == Tk) or masks nothing
// (Tq == 1); the last stride of every operand 1. Else the reason. Whether an engine runs
// the form (head dim, GPU) only building says.
absl::Status cudnn_attention_supported(const AttentionForm& f, const AttentionSizes& s);

class CudnnAttention {
 public:
  // The execution plan for `f` at the sizes and strides of `s` (its addresses unused), on
  // ctx's device. Pre: cudnn_attention_supported(f, s). Errors: cuDNN not loadable (naming
  // the library and KILN_CUDNN_LIBRARY), no engine for the graph (cuDNN's last error).
  static absl::StatusOr<std::shared_ptr<const CudnnAttention>> build(const Context& ctx, const AttentionForm& f,
                                                                     const AttentionSizes& s);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  int64_t workspace_bytes() const { return workspace_; }
  const std::string& engine() const { return engine_; }  // "cuDNN 9.19.0 engine 8"
  // Pre: c has the sizes and strides the plan was built for; `workspace` holds
  // workspace_bytes(). Enqueued on `stream` (capturable into a CUDA graph).
  absl::Status run(const AttentionCall& c, CUdeviceptr workspace, CUstream stream) const;

  struct Api;  // cuDNN's functions, loaded (cudnn_attention.cc)

 private:
  CudnnAttention() = default;
  const Api* api_ = nullptr;
  void* handle_ = nullptr;          // cudnnHandle_t
  std::vector<void*> descriptors_;  // every descriptor made, destroyed with the plan
  void* plan_ = nullptr;            // the execution plan (one of descriptors_)
  int64_t workspace_ = 0;
  float scale_ = 1, neg_inf_ = 0;  // by-value operands of the graph
  int operands_ = 0;               // q, k, v, out, scale[, -inf where masked]
  std::string engine_;
  mutable std::mutex mu_;  // the handle's stream is per call
};

// "9.19.0", or the error of loading cuDNN.
absl::StatusOr<std::string> cudnn_version();

}  // namespace kiln::cuda
