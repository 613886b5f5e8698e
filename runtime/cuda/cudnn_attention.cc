#include "runtime/cuda/cudnn_attention.h"

#include <array>
#include <limits>

#include <cudnn_graph.h>

#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cuda/attention.h"
#include "runtime/dylib.h"

namespace kiln::cuda {

#define KILN_CUDNN_FUNCTIONS(X)                                                                              \
  X(cudnnGetVersion)                                                                                         \
  X(cudnnGetErrorString)                                                                                     \
  X(cudnnGetLastErrorString)                                                                                 \
  X(cudnnCreate)                                                                                             \
  X(cudnnDestroy)                                                                                            \
  X(cudnnSetStream) X(cudnnBackendCreateDescriptor) X(cudnnBackendDestroyDescriptor) X(cudnnBackendFinalize) \
      X(cudnnBackendSetAttribute) X(cudnnBackendGetAttribute) X(cudnnBackendExecute)

KILN_LIBRARY_TABLE(CudnnAttention::Api, KILN_CUDNN_FUNCTIONS, cudnn_api, "libcudnn.so.9", "KILN_CUDNN_LIBRARY",
                   "cuDNN, whose fused attention runs CUDA attention steps where it takes them")

namespace {

using Api = CudnnAttention::Api;

std::string version_text(size_t v) {  // 91900 -> "9.19.0" (cuDNN 9 numbers versions major*10000 + minor*100 + patch)
  return str_cat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}

absl::Status check(const Api& api, cudnnStatus_t s, std::string_view what) {
  if (s == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  char last[512] = {0};
  api.cudnnGetLastErrorString(last, sizeof(last));
  return absl::InternalError(
      str_cat("cuDNN ", what, ": ", api.cudnnGetErrorString(s), *last ? str_cat(" (", last, ")") : ""));
}

// Builds the descriptors of one graph; every descriptor it makes goes to `owned`.
class Builder {
 public:
  Builder(const Api& api, std::vector<void*>& owned) : api_(api), owned_(owned) {}

  absl::StatusOr<cudnnBackendDescriptor_t> make(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = nullptr;
    KILN_RETURN_IF_ERROR(check(api_, api_.cudnnBackendCreateDescriptor(type, &d), "create descriptor"));
    owned_.push_back(d);
    return d;
  }
  absl::Status set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                   int64_t count, const void* value) {
    return check(api_, api_.cudnnBackendSetAttribute(d, name, type, count, value), str_cat("set attribute ", name));
  }
  absl::Status set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t v) {
    return set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  }
  absl::Status finalize(cudnnBackendDescriptor_t d, std::string_view what) {
    return check(api_, api_.cudnnBackendFinalize(d), str_cat("finalize ", what));
  }

  // A 4-D tensor. Virtual tensors live only inside the fused kernel; by-value ones are host
  // scalars passed in the variant pack.
  absl::StatusOr<cudnnBackendDescriptor_t> tensor(int64_t uid, cudnnDataType_t type, std::array<int64_t, 4> dims,
                                                  std::array<int64_t, 4> strides, bool is_virtual = false,
                                                  bool by_value = false) {
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t t, make(CUDNN_BACKEND_TENSOR_DESCRIPTOR));
    const int64_t alignment = 16;
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data()));
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data()));
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    if (by_value) KILN_RETURN_IF_ERROR(set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value));
    KILN_RETURN_IF_ERROR(finalize(t, str_cat("tensor ", uid)));
    return t;
  }

  // y = mode(x[, b[, t]]) computed in `math`.
  absl::StatusOr<cudnnBackendDescriptor_t> pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t math,
                                                     cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                                                     cudnnBackendDescriptor_t b = nullptr,
                                                     cudnnBackendDescriptor_t t = nullptr, int64_t axis = -1) {
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t pw, make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR));
    KILN_RETURN_IF_ERROR(set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    KILN_RETURN_IF_ERROR(set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math));
    if (mode == CUDNN_POINTWISE_GEN_INDEX)
      KILN_RETURN_IF_ERROR(set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
    KILN_RETURN_IF_ERROR(finalize(pw, str_cat("pointwise ", mode)));
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t op, make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y));
    if (b) KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b));
    if (t) KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t));
    const float one = 1;
    KILN_RETURN_IF_ERROR(set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one));
    KILN_RETURN_IF_ERROR(set(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one));
    KILN_RETURN_IF_ERROR(finalize(op, str_cat("pointwise operation ", mode)));
    ops_.push_back(op);
    return op;
  }

  absl::Status matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t mm, make(CUDNN_BACKEND_MATMUL_DESCRIPTOR));
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    KILN_RETURN_IF_ERROR(set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    KILN_RETURN_IF_ERROR(finalize(mm, "matmul"));
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t op, make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm));
    KILN_RETURN_IF_ERROR(finalize(op, "matmul operation"));
    ops_.push_back(op);
    return absl::OkStatus();
  }

  absl::Status reduction(cudnnReduceTensorOp_t what, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t r, make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR));
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    KILN_RETURN_IF_ERROR(set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    KILN_RETURN_IF_ERROR(set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &what));
    KILN_RETURN_IF_ERROR(finalize(r, "reduction"));
    KILN_ASSIGN_OR_RETURN(cudnnBackendDescriptor_t op, make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y));
    KILN_RETURN_IF_ERROR(set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, r));
    KILN_RETURN_IF_ERROR(finalize(op, "reduction operation"));
    ops_.push_back(op);
    return absl::OkStatus();
  }

  std::vector<cudnnBackendDescriptor_t>& ops() { return ops_; }

 private:
  const Api& api_;
  std::vector<void*>& owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
};

// Unique ids of the graph's tensors: the operands the variant pack binds, then the
// virtual intermediates.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kScale, kNegInf, kVirtual = 100 };

}  // namespace

absl::Status cudnn_attention_supported(const AttentionForm& f, const AttentionSizes& s) {
  if (f.dtype != DType::bf16 && f.dtype != DType::f16)
    return invalid_argument("cuDNN attention takes bf16 or f16, not ", dtype_name(f.dtype));
  if (f.mask != AttentionForm::Mask::None || f.window > 0 || f.softcap > 0 || f.kv_lens || f.paged())
    return invalid_argument("cuDNN attention here has no mask, window, softcap, kv_lens or paged cache (form ",
                            f.to_string(), ")");
  if (f.causal && s.tq != s.tk && s.tq != 1)
    return invalid_argument("causal attention with ", s.tq, " queries over ", s.tk,
                            " keys: kiln's diagonal is bottom-right aligned, cuDNN's here top-left");
  for (auto [name, st] : {std::pair{"q", s.qs}, {"k", s.ks}, {"v", s.vs}, {"out", s.os}})
    if (st[3] != 1) return invalid_argument("cuDNN attention: ", name, "'s last dim must be contiguous");
  return absl::OkStatus();
}

absl::StatusOr<std::string> cudnn_version() {
  KILN_ASSIGN_OR_RETURN(const Api* api, cudnn_api());
  return version_text(api->cudnnGetVersion());
}

absl::StatusOr<std::shared_ptr<const CudnnAttention>> CudnnAttention::build(const Context& ctx, const AttentionForm& f,
                                                                            const AttentionSizes& s) {
  KILN_RETURN_IF_ERROR(cudnn_attention_supported(f, s));
  KILN_ASSIGN_OR_RETURN(const Api* api, cudnn_api());
  KILN_RETURN_IF_ERROR(ctx.make_current());
  std::shared_ptr<CudnnAttention> a(new CudnnAttention());
  a->api_ = api;
  cudnnHandle_t handle = nullptr;
  KILN_RETURN_IF_ERROR(check(*api, api->cudnnCreate(&handle), "create handle"));
  a->handle_ = handle;
  a->scale_ = static_cast<float>(f.scale);
  a->neg_inf_ = -std::numeric_limits<float>::infinity();
  a->operands_ = f.causal && s.tq > 1 ? 6 : 5;

  const int64_t b = s.batch, h = f.heads, kvh = f.kv_heads, d = f.head_dim, tq = s.tq, tk = s.tk;
  const cudnnDataType_t io = f.dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32, boolean = CUDNN_DATA_BOOLEAN;
  Builder g(*api, a->descriptors_);
  int64_t uid = kVirtual;
  const std::array<int64_t, 4> scores{b, h, tq, tk}, scores_strides{h * tq * tk, tq * tk, tk, 1};
  const std::array<int64_t, 4> rows{b, h, tq, 1}, rows_strides{h * tq, tq, 1, 1};
  auto score = [&](cudnnDataType_t t) { return g.tensor(uid++, t, scores, scores_strides, true); };
  auto row = [&]() { return g.tensor(uid++, f32, rows, rows_strides, true); };

  KILN_ASSIGN_OR_RETURN(auto q, g.tensor(kQ, io, {b, h, tq, d}, s.qs));
  // K enters the first matmul transposed: [B, KVH, D, Tk] over the same memory.
  KILN_ASSIGN_OR_RETURN(auto kt, g.tensor(kK, io, {b, kvh, d, tk}, {s.ks[0], s.ks[1], s.ks[3], s.ks[2]}));
  KILN_ASSIGN_OR_RETURN(auto v, g.tensor(kV, io, {b, kvh, tk, d}, s.vs));
  KILN_ASSIGN_OR_RETURN(auto o, g.tensor(kO, io, {b, h, tq, d}, s.os));
  KILN_ASSIGN_OR_RETURN(auto scale, g.tensor(kScale, f32, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true));

  KILN_ASSIGN_OR_RETURN(auto s0, score(f32));
  KILN_RETURN_IF_ERROR(g.matmul(q, kt, s0));
  KILN_ASSIGN_OR_RETURN(auto s1, score(f32));
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_MUL, f32, s0, s1, scale).status());
  if (f.causal && tq > 1) {  // Tq == Tk here: keep key j for query i where i >= j
    KILN_ASSIGN_OR_RETURN(auto neg_inf, g.tensor(kNegInf, f32, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true));
    KILN_ASSIGN_OR_RETURN(auto r, score(i32));
    KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, s1, r, nullptr, nullptr, 2).status());
    KILN_ASSIGN_OR_RETURN(auto c, score(i32));
    KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, s1, c, nullptr, nullptr, 3).status());
    KILN_ASSIGN_OR_RETURN(auto keep, score(boolean));
    KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_CMP_GE, boolean, r, keep, c).status());
    KILN_ASSIGN_OR_RETURN(auto masked, score(f32));
    KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, s1, masked, neg_inf, keep).status());
    s1 = masked;
  }
  KILN_ASSIGN_OR_RETURN(auto mx, row());
  KILN_RETURN_IF_ERROR(g.reduction(CUDNN_REDUCE_TENSOR_MAX, s1, mx));
  KILN_ASSIGN_OR_RETURN(auto shifted, score(f32));
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_SUB, f32, s1, shifted, mx).status());
  KILN_ASSIGN_OR_RETURN(auto e, score(f32));
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_EXP, f32, shifted, e).status());
  KILN_ASSIGN_OR_RETURN(auto sum, row());
  KILN_RETURN_IF_ERROR(g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum));
  KILN_ASSIGN_OR_RETURN(auto log_sum, row());
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_LOG, f32, sum, log_sum).status());
  KILN_ASSIGN_OR_RETURN(auto stats, row());
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_ADD, f32, mx, stats, log_sum).status());
  KILN_ASSIGN_OR_RETURN(auto p, score(io));
  KILN_RETURN_IF_ERROR(g.pointwise(CUDNN_POINTWISE_DIV, f32, e, p, sum).status());
  KILN_RETURN_IF_ERROR(g.matmul(p, v, o));

  KILN_ASSIGN_OR_RETURN(auto graph, g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR));
  KILN_RETURN_IF_ERROR(g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                             static_cast<int64_t>(g.ops().size()), g.ops().data()));
  KILN_RETURN_IF_ERROR(g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
  KILN_RETURN_IF_ERROR(g.finalize(graph, "operation graph"));

  KILN_ASSIGN_OR_RETURN(auto heur, g.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR));
  KILN_RETURN_IF_ERROR(g.set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph));
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  KILN_RETURN_IF_ERROR(g.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
  KILN_RETURN_IF_ERROR(g.finalize(heur, "engine heuristics"));
  int64_t count = 0;
  KILN_RETURN_IF_ERROR(check(*api,
                             api->cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
                             "engine count"));
  if (count == 0) return absl::UnimplementedError(str_cat("cuDNN has no engine for attention ", f.to_string()));
  std::vector<cudnnBackendDescriptor_t> configs(count);
  for (auto& c : configs) {
    KILN_ASSIGN_OR_RETURN(c, g.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
  }
  KILN_RETURN_IF_ERROR(
      check(*api,
            api->cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                          &count, configs.data()),
            "engine configurations"));
  absl::Status last = absl::UnimplementedError("no engine configuration");
  for (int64_t i = 0; i < count && !a->plan_; ++i) {
    KILN_ASSIGN_OR_RETURN(auto plan, g.make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR));
    KILN_RETURN_IF_ERROR(g.set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    KILN_RETURN_IF_ERROR(g.set_desc(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[i]));
    last = g.finalize(plan, "execution plan");
    if (!last.ok()) continue;
    a->plan_ = plan;
    int64_t n = 0, index = -1;
    KILN_RETURN_IF_ERROR(check(*api,
                               api->cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                             CUDNN_TYPE_INT64, 1, &n, &a->workspace_),
                               "workspace size"));
    KILN_ASSIGN_OR_RETURN(auto engine, g.make(CUDNN_BACKEND_ENGINE_DESCRIPTOR));  // the config's engine, for its name
    if (api->cudnnBackendGetAttribute(configs[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                      &engine) == CUDNN_STATUS_SUCCESS)
      api->cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index);
    a->engine_ = str_cat("cuDNN ", version_text(api->cudnnGetVersion()), " engine ", index);
  }
  if (!a->plan_) return prefix_error(last, "cuDNN attention ", f.to_string(), ": ");
  return std::shared_ptr<const CudnnAttention>(std::move(a));
}

CudnnAttention::~CudnnAttention() {
  if (!api_) return;
  for (auto it = descriptors_.rbegin(); it != descriptors_.rend(); ++it) api_->cudnnBackendDestroyDescriptor(*it);
  if (handle_) api_->cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

absl::Status CudnnAttention::run(const AttentionCall& c, CUdeviceptr workspace, CUstream stream) const {
  const Api& api = *api_;
  std::vector<void*> owned;
  Builder g(api, owned);
  struct Release {
    const Api& api;
    std::vector<void*>& d;
    ~Release() {
      for (void* x : d) api.cudnnBackendDestroyDescriptor(x);
    }
  } release{api, owned};
  const std::array<int64_t, 6> uids{kQ, kK, kV, kO, kScale, kNegInf};
  std::array<void*, 6> ptrs{reinterpret_cast<void*>(c.q), reinterpret_cast<void*>(c.k),
                            reinterpret_cast<void*>(c.v), reinterpret_cast<void*>(c.out),
                            const_cast<float*>(&scale_),  const_cast<float*>(&neg_inf_)};
  void* ws = reinterpret_cast<void*>(workspace);
  KILN_ASSIGN_OR_RETURN(auto pack, g.make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR));
  KILN_RETURN_IF_ERROR(g.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, operands_, uids.data()));
  KILN_RETURN_IF_ERROR(g.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, operands_, ptrs.data()));
  KILN_RETURN_IF_ERROR(g.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws));
  KILN_RETURN_IF_ERROR(g.finalize(pack, "variant pack"));
  std::lock_guard<std::mutex> lock(mu_);
  auto handle = static_cast<cudnnHandle_t>(handle_);
  KILN_RETURN_IF_ERROR(check(api, api.cudnnSetStream(handle, reinterpret_cast<cudaStream_t>(stream)), "set stream"));
  return check(api, api.cudnnBackendExecute(handle, plan_, pack), "attention");
}

}  // namespace kiln::cuda
