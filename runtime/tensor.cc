#include "runtime/tensor.h"

#include <cstring>

#include "ir/str.h"
#include "ir/status.h"

#if KILN_WITH_CUDA
#include "runtime/cuda_driver.h"
#endif

namespace kiln {
namespace {

constexpr uint8_t kDLBoolCode = 6;  // kDLBool in DLPack >= 0.8; absent from the 0.6 header

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t step = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = step;
    step *= shape[i];
  }
  return s;
}

// Lowest and highest element offsets the tensor touches (numel > 0).
std::pair<int64_t, int64_t> offset_extent(const std::vector<int64_t>& shape,
                                          const std::vector<int64_t>& strides) {
  int64_t lo = 0, hi = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t span = (shape[i] - 1) * strides[i];
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

// Copies the strided elements starting at `base` into dense row-major `dst`.
void gather(const uint8_t* base, const std::vector<int64_t>& shape,
            const std::vector<int64_t>& strides, int64_t elem, uint8_t* dst, int64_t numel) {
  std::vector<int64_t> index(shape.size(), 0);
  int64_t offset = 0;
  for (int64_t i = 0; i < numel; ++i) {
    std::memcpy(dst + i * elem, base + offset * elem, size_t(elem));
    for (size_t d = shape.size(); d-- > 0;) {
      offset += strides[d];
      if (++index[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

#if !KILN_WITH_CUDA
absl::Status no_cuda_build() {
  return absl::FailedPreconditionError(
      "no CUDA device: kiln was built without CUDA support (KILN_WITH_CUDA=OFF)");
}
#endif

}  // namespace

std::string device_name(DeviceId d) {
  return d.type == DeviceType::cpu ? std::string("cpu") : str_cat("cuda:", d.index);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const {
  // Checked on every call of a compiled graph: no allocation.
  int64_t dense = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != dense) return false;
    dense *= shape_[i];
  }
  return true;
}

std::string Tensor::type_string() const {
  return str_cat(dtype_name(dtype_), "[", str_join(shape_, ", ", [](int64_t d) {
                   return std::to_string(d);
                 }),
                 "] ", device_name(device_));
}

Tensor Tensor::empty_host(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  auto bytes = std::shared_ptr<uint8_t[]>(new uint8_t[std::max<int64_t>(1, t.numel() * dtype_size(dtype))]);
  t.data_ = bytes.get();
  t.owner_ = bytes;
  return t;
}

absl::StatusOr<Tensor> Tensor::empty_cuda(DType dtype, std::vector<int64_t> shape, int device) {
#if KILN_WITH_CUDA
  for (int64_t d : shape)
    if (d < 0) return invalid_argument("tensor shape has negative dimension ", d);
  KILN_ASSIGN_OR_RETURN(cuda::Context * ctx, cuda::Context::primary(device));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  t.device_ = DeviceId::cuda(device);
  KILN_ASSIGN_OR_RETURN(cuda::DeviceBuffer buffer,
                        cuda::DeviceBuffer::allocate(*ctx, t.numel() * dtype_size(dtype)));
  auto owned = std::make_shared<cuda::DeviceBuffer>(std::move(buffer));
  t.data_ = reinterpret_cast<void*>(owned->ptr());
  t.owner_ = owned;
  return t;
#else
  return no_cuda_build();
#endif
}

absl::StatusOr<Tensor> Tensor::wrap(void* data, DType dtype, std::vector<int64_t> shape,
                                    std::vector<int64_t> strides, DeviceId device,
                                    std::shared_ptr<void> owner) {
  for (int64_t d : shape)
    if (d < 0) return invalid_argument("tensor shape has negative dimension ", d);
  if (strides.empty()) strides = contiguous_strides(shape);
  if (strides.size() != shape.size())
    return invalid_argument("tensor has ", shape.size(), " dims but ", strides.size(), " strides");
  if (data == nullptr && !shape.empty()) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n > 0) return invalid_argument("cannot wrap a null pointer as a non-empty tensor");
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.data_ = data;
  t.device_ = device;
  t.owner_ = std::move(owner);
  return t;
}

absl::StatusOr<Tensor> Tensor::from_host(const HostTensor& host, DeviceId device, void* stream) {
  Tensor t;
  if (device.type == DeviceType::cpu) {
    t = empty_host(host.dtype(), host.shape());
  } else {
    KILN_ASSIGN_OR_RETURN(t, empty_cuda(host.dtype(), host.shape(), device.index));
  }
  KILN_RETURN_IF_ERROR(t.copy_from_host(host, stream));
  return t;
}

absl::Status Tensor::copy_from_host(const HostTensor& host, void* stream) {
  if (host.dtype() != dtype_ || host.shape() != shape_ || !is_contiguous())
    return absl::InvalidArgumentError(str_cat("copy_from_host: ", host.type_string(), " into ", type_string(),
                                              is_contiguous() ? "" : " (not contiguous)"));
  if (host.nbytes() == 0 || numel() == 0) return absl::OkStatus();
  if (device_.type == DeviceType::cpu) {
    std::memcpy(data_, host.data(), size_t(host.nbytes()));
    return absl::OkStatus();
  }
#if KILN_WITH_CUDA
  KILN_ASSIGN_OR_RETURN(cuda::Context * ctx, cuda::Context::primary(device_.index));
  (void)ctx;
  KILN_ASSIGN_OR_RETURN(const cuda::DriverApi* api, cuda::driver());
  KILN_RETURN_IF_ERROR(cuda::copy_host_to_device(CUdeviceptr(data_), host.data(), host.nbytes(), CUstream(stream)));
  return stream == nullptr ? absl::OkStatus()
                           : cuda::check(api->cuStreamSynchronize(CUstream(stream)), "cuStreamSynchronize");
#else
  return no_cuda_build();
#endif
}

absl::StatusOr<HostTensor> Tensor::to_host(void* stream) const {
  HostTensor out(dtype_, shape_);
  int64_t n = numel();
  if (n == 0) return out;
  int64_t elem = dtype_size(dtype_);
  auto [lo, hi] = offset_extent(shape_, strides_);
  const uint8_t* base = static_cast<const uint8_t*>(data_);
  if (device_.type == DeviceType::cpu) {
    gather(base, shape_, strides_, elem, out.data(), n);
    return out;
  }
#if KILN_WITH_CUDA
  // Stage the whole span the strides touch, then gather on the host.
  std::vector<uint8_t> staging(size_t((hi - lo + 1) * elem));
  KILN_ASSIGN_OR_RETURN(cuda::Context * ctx, cuda::Context::primary(device_.index));
  (void)ctx;
  KILN_ASSIGN_OR_RETURN(const cuda::DriverApi* api, cuda::driver());
  CUdeviceptr src = CUdeviceptr(base + lo * elem);
  if (stream != nullptr) {
    KILN_RETURN_IF_ERROR(cuda::check(
        api->cuMemcpyDtoHAsync(staging.data(), src, staging.size(), CUstream(stream)), "cuMemcpyDtoHAsync"));
    KILN_RETURN_IF_ERROR(cuda::check(api->cuStreamSynchronize(CUstream(stream)), "cuStreamSynchronize"));
  } else {
    KILN_RETURN_IF_ERROR(cuda::check(api->cuMemcpyDtoH(staging.data(), src, staging.size()), "cuMemcpyDtoH"));
  }
  gather(staging.data() - lo * elem, shape_, strides_, elem, out.data(), n);
  return out;
#else
  (void)hi;
  return no_cuda_build();
#endif
}

absl::StatusOr<DLDataType> to_dlpack_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return DLDataType{kDLFloat, 32, 1};
    case DType::f16: return DLDataType{kDLFloat, 16, 1};
    case DType::bf16: return DLDataType{kDLBfloat, 16, 1};
    case DType::i32: return DLDataType{kDLInt, 32, 1};
    case DType::i64: return DLDataType{kDLInt, 64, 1};
    case DType::boolean: return DLDataType{kDLBoolCode, 8, 1};
    case DType::f64: return DLDataType{kDLFloat, 64, 1};
    case DType::i8: return DLDataType{kDLInt, 8, 1};
    case DType::i16: return DLDataType{kDLInt, 16, 1};
    case DType::u8: return DLDataType{kDLUInt, 8, 1};
    case DType::u16: return DLDataType{kDLUInt, 16, 1};
    case DType::u32: return DLDataType{kDLUInt, 32, 1};
    case DType::u64: return DLDataType{kDLUInt, 64, 1};
  }
  return invalid_argument("unknown dtype");
}

absl::StatusOr<DType> from_dlpack_dtype(DLDataType t) {
  if (t.lanes != 1)
    return invalid_argument("DLPack dtype with ", t.lanes, " lanes is not supported (kiln needs 1)");
  // kDLUInt 8 is u8 (numpy's and torch's uint8); bool is kDLBool only, as DLPack >= 0.8 says.
  for (DType d : kAllDTypes) {
    absl::StatusOr<DLDataType> dl = to_dlpack_dtype(d);
    if (dl.ok() && dl->code == t.code && dl->bits == t.bits) return d;
  }
  return invalid_argument("DLPack dtype (code ", int(t.code), ", ", int(t.bits),
                          " bits) is not supported: kiln has f64 f32 f16 bf16 i8 i16 i32 i64 u8 u16 u32 u64 bool");
}

absl::StatusOr<Tensor> Tensor::from_dlpack(DLManagedTensor* managed) {
  if (managed == nullptr) return invalid_argument("from_dlpack: null DLManagedTensor");
  const DLTensor& dl = managed->dl_tensor;
  DeviceId device;
  switch (dl.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost: device = DeviceId::cpu(); break;
    case kDLCUDA: device = DeviceId::cuda(dl.device.device_id); break;
    default:
      return invalid_argument("DLPack device type ", int(dl.device.device_type),
                              " is not supported (kiln takes CPU, CUDAHost and CUDA tensors)");
  }
#if !KILN_WITH_CUDA
  if (device.type == DeviceType::cuda) return no_cuda_build();
#endif
  KILN_ASSIGN_OR_RETURN(DType dtype, from_dlpack_dtype(dl.dtype));
  if (dl.ndim < 0 || (dl.ndim > 0 && dl.shape == nullptr))
    return invalid_argument("malformed DLPack tensor: ndim ", dl.ndim,
                            dl.shape == nullptr ? " with a null shape" : "");
  std::vector<int64_t> shape(dl.shape, dl.shape + dl.ndim);
  std::vector<int64_t> strides;
  if (dl.strides != nullptr) strides.assign(dl.strides, dl.strides + dl.ndim);
  void* data = static_cast<uint8_t*>(dl.data) + dl.byte_offset;
  // Validate before taking ownership, so an error leaves the caller's tensor untouched.
  KILN_ASSIGN_OR_RETURN(Tensor t, wrap(data, dtype, std::move(shape), std::move(strides), device));
  t.owner_ = std::shared_ptr<void>(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter != nullptr) m->deleter(m);
  });
  return t;
}

namespace {
struct DLPackExport {
  DLManagedTensor managed;
  std::vector<int64_t> shape, strides;
  std::shared_ptr<void> owner;
};
}  // namespace

absl::StatusOr<DLManagedTensor*> Tensor::to_dlpack() const {
  KILN_ASSIGN_OR_RETURN(DLDataType dtype, to_dlpack_dtype(dtype_));
  auto* e = new DLPackExport{{}, shape_, strides_, owner_};
  DLTensor& dl = e->managed.dl_tensor;
  dl.data = data_;
  dl.device = device_.type == DeviceType::cpu ? DLDevice{kDLCPU, 0} : DLDevice{kDLCUDA, device_.index};
  dl.ndim = int32_t(shape_.size());
  dl.dtype = dtype;
  dl.shape = e->shape.data();
  dl.strides = e->strides.data();
  dl.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = [](DLManagedTensor* self) {
    delete static_cast<DLPackExport*>(self->manager_ctx);
  };
  return &e->managed;
}

}  // namespace kiln
