#include "runtime/cublaslt.h"

#include "ir/str.h"
#include "ir/status.h"
#include "runtime/dylib.h"

namespace kiln::cuda {
namespace {

// cuBLASLt is loaded when the first handle is made (dlopen), never linked: programs that
// run no GEMM on a GPU run where it is not installed.
#define KILN_CUBLASLT_FUNCTIONS(X)                                                               \
  X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetStatusName) X(cublasLtGetStatusString)      \
  X(cublasLtMatmul) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulDescCreate)               \
  X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute) X(cublasLtMatmulPreferenceCreate) \
  X(cublasLtMatmulPreferenceDestroy) X(cublasLtMatmulPreferenceSetAttribute)                    \
  X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy) X(cublasLtMatrixLayoutSetAttribute)

KILN_LIBRARY_TABLE(CublasLtApi, KILN_CUBLASLT_FUNCTIONS, cublaslt_api, "libcublasLt.so.13", "KILN_CUBLASLT_LIBRARY",
                   "cuBLASLt (CUDA 13), which runs kiln's GEMMs on the GPU")

// The loaded table, for code that runs only once a CublasLt exists (CublasLt::create
// loads it first, and every other entry point needs a CublasLt).
const CublasLtApi& lt() { return **cublaslt_api(); }

absl::Status lt_check(cublasStatus_t s, std::string_view what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(str_cat("cuBLASLt ", what, ": ", lt().cublasLtGetStatusName(s), " (",
                                     lt().cublasLtGetStatusString(s), ")"));
}

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

cublasLtEpilogue_t lt_epilogue(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none: return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::relu: return CUBLASLT_EPILOGUE_RELU;
    case GemmEpilogue::gelu: return CUBLASLT_EPILOGUE_GELU;
    case GemmEpilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::relu_bias: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case GemmEpilogue::gelu_bias: return CUBLASLT_EPILOGUE_GELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

absl::Status set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  int32_t count = int32_t(batch);
  KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                                 &count, sizeof(count)),
                                "set batch count"));
  return lt_check(lt().cublasLtMatrixLayoutSetAttribute(
                      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
                  "set batch stride");
}

// Every field of `s`: the heuristic's answer depends on nothing else (the workspace is the
// handle's).
std::string spec_key(const GemmSpec& s) {
  return str_cat(dtype_name(s.dtype), " ", s.m, " ", s.n, " ", s.k, " ", s.b_is_nk, " ", s.batch, " ", s.batch_stride_a,
                 " ", s.batch_stride_b, " ", s.batch_stride_c, " ", gemm_epilogue_name(s.epilogue), " ", s.residual,
                 " ", s.a_is_km, " ", s.lda, " ", s.ldb, " ", s.out_dtype ? dtype_name(*s.out_dtype) : "-", " ",
                 s.alignment);
}

}  // namespace

// The descriptors of one GEMM, in cuBLASLt's column-major terms: cuBLASLt's "A" is our B,
// its "B" is our A, and its output is C^T (N x M, leading dimension N).
struct GemmPlan::Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~Descriptors() {
    if (c) lt().cublasLtMatrixLayoutDestroy(c);
    if (b) lt().cublasLtMatrixLayoutDestroy(b);
    if (a) lt().cublasLtMatrixLayoutDestroy(a);
    if (op) lt().cublasLtMatmulDescDestroy(op);
  }

  absl::Status make(const GemmSpec& s) {
    KILN_RETURN_IF_ERROR(check_gemm_spec(s));
    cudaDataType_t t = data_type(s.dtype), ct = data_type(s.out_dtype.value_or(s.dtype));
    KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                                  "create matmul descriptor"));
    cublasOperation_t trans_a = s.b_is_nk ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t trans_b = s.a_is_km ? CUBLAS_OP_T : CUBLAS_OP_N;
    KILN_RETURN_IF_ERROR(lt_check(
        lt().cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "set transa"));
    KILN_RETURN_IF_ERROR(lt_check(
        lt().cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)), "set transb"));
    cublasLtEpilogue_t epi = lt_epilogue(s.epilogue);
    KILN_RETURN_IF_ERROR(lt_check(
        lt().cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), "set epilogue"));
    // B as [N,K] row-major is column-major K x N (ld K), transposed by the op; as [K,N] it is
    // column-major N x K (ld N) and used as is. A [M,K] is column-major K x M (ld K); A
    // stored [K,M] is column-major M x K (ld M), transposed by the op.
    uint64_t m = uint64_t(s.m), n = uint64_t(s.n), k = uint64_t(s.k);
    int64_t ldb = s.ldb >= 0 ? s.ldb : (s.b_is_nk ? s.k : s.n);
    int64_t lda = s.lda >= 0 ? s.lda : (s.a_is_km ? s.m : s.k);
    KILN_RETURN_IF_ERROR(lt_check(s.b_is_nk ? lt().cublasLtMatrixLayoutCreate(&a, t, k, n, ldb)
                                            : lt().cublasLtMatrixLayoutCreate(&a, t, n, k, ldb),
                                  "create layout of B"));
    KILN_RETURN_IF_ERROR(lt_check(s.a_is_km ? lt().cublasLtMatrixLayoutCreate(&b, t, m, k, lda)
                                            : lt().cublasLtMatrixLayoutCreate(&b, t, k, m, lda),
                                  "create layout of A"));
    KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatrixLayoutCreate(&c, ct, n, m, int64_t(n)), "create layout of C"));
    if (s.batch > 1) {
      auto stride = [](int64_t given, int64_t dense) { return given < 0 ? dense : given; };
      KILN_RETURN_IF_ERROR(set_batch(a, s.batch, stride(s.batch_stride_b, s.n * s.k)));
      KILN_RETURN_IF_ERROR(set_batch(b, s.batch, stride(s.batch_stride_a, s.m * s.k)));
      KILN_RETURN_IF_ERROR(set_batch(c, s.batch, stride(s.batch_stride_c, s.m * s.n)));
    }
    return absl::OkStatus();
  }
};

absl::Status check_gemm_spec(const GemmSpec& s) {
  if (!is_float(s.dtype))
    return invalid_argument("cuBLASLt GEMM supports f32, f16 and bf16, not ", dtype_name(s.dtype));
  if (s.m < 1 || s.n < 1 || s.k < 1)
    return invalid_argument("cuBLASLt GEMM needs positive sizes, got M=", s.m, " N=", s.n, " K=", s.k);
  if (s.batch < 1 || s.batch > INT32_MAX) return invalid_argument("GEMM batch ", s.batch, " out of range");
  if (s.batch_stride_a < -1 || s.batch_stride_b < -1 || s.batch_stride_c < -1)
    return invalid_argument("GEMM batch strides must be >= 0, or -1 for dense");
  if (s.batch > 1 && s.batch_stride_c == 0)
    return invalid_argument("GEMM batch entries cannot share one output matrix (batch_stride_c 0)");
  if (s.residual && (s.out_dtype || !(s.epilogue == GemmEpilogue::none || s.epilogue == GemmEpilogue::bias)))
    return invalid_argument("a GEMM residual needs epilogue none or bias and C in A's dtype: ", spec_key(s));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CublasLt>> CublasLt::create(const Context& ctx, int64_t workspace_bytes) {
  KILN_RETURN_IF_ERROR(cublaslt_api().status());
  KILN_RETURN_IF_ERROR(ctx.make_current());
  KILN_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::allocate(ctx, workspace_bytes));
  cublasLtHandle_t h = nullptr;
  KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtCreate(&h), "create handle"));
  return std::unique_ptr<CublasLt>(new CublasLt(h, std::move(ws)));
}

CublasLt::~CublasLt() { lt().cublasLtDestroy(handle_); }

GemmPlan::GemmPlan(const CublasLt& lt, const GemmSpec& spec)
    : lt_(lt), spec_(spec), d_(std::make_unique<Descriptors>()) {}
GemmPlan::~GemmPlan() = default;

absl::StatusOr<std::unique_ptr<GemmPlan>> GemmPlan::create(const CublasLt& lt, const GemmSpec& spec) {
  std::unique_ptr<GemmPlan> p(new GemmPlan(lt, spec));
  KILN_RETURN_IF_ERROR(p->d_->make(spec));
  const std::string key = spec_key(spec);
  {
    std::lock_guard<std::mutex> lock(lt.mu_);
    if (auto it = lt.best_.find(key); it != lt.best_.end()) {
      p->algo_ = it->second;
      return p;
    }
  }
  KILN_ASSIGN_OR_RETURN(std::vector<GemmAlgorithm> best, p->algorithms(1));
  p->algo_ = best[0];
  std::lock_guard<std::mutex> lock(lt.mu_);
  lt.best_.emplace(key, best[0]);
  return p;
}

absl::StatusOr<std::vector<GemmAlgorithm>> GemmPlan::algorithms(int top_k) const {
  if (top_k < 1) return invalid_argument("top_k must be >= 1, got ", top_k);
  if (has_bias(spec_.epilogue) && bias_ == 0) {
    // The heuristic only reads whether a bias pointer is set, not its value.
    void* ptr = reinterpret_cast<void*>(uintptr_t(256));
    KILN_RETURN_IF_ERROR(lt_check(
        lt().cublasLtMatmulDescSetAttribute(d_->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, sizeof(ptr)),
        "set bias pointer"));
  }
  cublasLtMatmulPreference_t pref = nullptr;
  KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatmulPreferenceCreate(&pref), "create preference"));
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, decltype(&cublasLtMatmulPreferenceDestroy)>
      pref_guard(pref, lt().cublasLtMatmulPreferenceDestroy);
  uint64_t ws = uint64_t(lt_.workspace_.size());
  KILN_RETURN_IF_ERROR(lt_check(
      lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
      "set workspace limit"));
  uint32_t align = uint32_t(spec_.alignment);
  for (cublasLtMatmulPreferenceAttributes_t attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)),
                                  "set minimum alignment"));
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(top_k));
  int found = 0;
  KILN_RETURN_IF_ERROR(lt_check(lt().cublasLtMatmulAlgoGetHeuristic(lt_.handle_, d_->op, d_->a, d_->b, d_->c, d_->c, pref,
                                                               top_k, results.data(), &found),
                                "heuristic query"));
  std::vector<GemmAlgorithm> algos;
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS)
      algos.push_back({results[i].algo, results[i].workspaceSize, results[i].wavesCount});
  if (algos.empty())
    return absl::NotFoundError(str_cat("cuBLASLt has no algorithm for ", dtype_name(spec_.dtype), " GEMM M=",
                                       spec_.m, " N=", spec_.n, " K=", spec_.k, " epilogue ",
                                       gemm_epilogue_name(spec_.epilogue)));
  return algos;
}

absl::Status GemmPlan::run(CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, CUdeviceptr bias, CUstream stream,
                           CUdeviceptr residual) const {
  if (a == 0 || b == 0 || c == 0) return invalid_argument("GEMM operand pointer is null");
  if (spec_.residual != (residual != 0))
    return invalid_argument(spec_.residual ? "GEMM residual pointer is null" : "GEMM spec has no residual to add");
  if (has_bias(spec_.epilogue)) {
    if (bias == 0) return invalid_argument("GEMM epilogue ", gemm_epilogue_name(spec_.epilogue), " needs a bias pointer");
    if (bias != bias_) {
      void* ptr = reinterpret_cast<void*>(bias);
      KILN_RETURN_IF_ERROR(lt_check(
          lt().cublasLtMatmulDescSetAttribute(d_->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, sizeof(ptr)),
          "set bias pointer"));
      bias_ = bias;
    }
  }
  // The residual is cuBLASLt's C (beta = 1), of D's layout; without one C is D (beta = 0).
  const float alpha = 1.0f, beta = residual != 0 ? 1.0f : 0.0f;
  void* c_in = reinterpret_cast<void*>(residual != 0 ? residual : c);
  return lt_check(
      lt().cublasLtMatmul(lt_.handle_, d_->op, &alpha, reinterpret_cast<void*>(b), d_->a, reinterpret_cast<void*>(a),
                          d_->b, &beta, c_in, d_->c, reinterpret_cast<void*>(c), d_->c, &algo_.algo,
                          reinterpret_cast<void*>(lt_.workspace_.ptr()), lt_.workspace_.size(), stream),
      str_cat("matmul M=", spec_.m, " N=", spec_.n, " K=", spec_.k));
}

absl::StatusOr<std::vector<GemmAlgorithm>> CublasLt::algorithms(const GemmSpec& spec, int top_k) const {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<GemmPlan> p, GemmPlan::create(*this, spec));
  return p->algorithms(top_k);
}

absl::Status CublasLt::gemm(const GemmSpec& spec, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, CUdeviceptr bias,
                            CUstream stream, const GemmAlgorithm* algorithm, CUdeviceptr residual) const {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<GemmPlan> p, GemmPlan::create(*this, spec));
  if (algorithm) p->set_algorithm(*algorithm);
  return p->run(a, b, c, bias, stream, residual);
}

}  // namespace kiln::cuda
