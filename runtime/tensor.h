// kiln::Tensor, the tensor compiled graphs take and return: host or CUDA memory, a dtype,
// a shape and strides (in elements), owning its memory or wrapping a caller's, with copies
// to and from HostTensor and zero-copy DLPack import/export (PyTorch, CuPy, JAX).
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/host_tensor.h"

namespace kiln {

enum class DeviceType : uint8_t { cpu, cuda };

// Where a tensor's memory lives: the host, or one CUDA device.
struct DeviceId {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  static DeviceId cpu() { return {}; }
  static DeviceId cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool operator==(const DeviceId&) const = default;
};
std::string device_name(DeviceId d);  // "cpu", "cuda:0"

class Tensor {
 public:
  Tensor() = default;

  // Owning, contiguous, uninitialized memory.
  static Tensor empty_host(DType dtype, std::vector<int64_t> shape);
  static absl::StatusOr<Tensor> empty_cuda(DType dtype, std::vector<int64_t> shape, int device = 0);

  // Wraps memory the caller owns and keeps alive (or that `owner` keeps alive, if given).
  // strides empty: contiguous row-major. Shapes must be >= 0.
  static absl::StatusOr<Tensor> wrap(void* data, DType dtype, std::vector<int64_t> shape,
                                     std::vector<int64_t> strides, DeviceId device,
                                     std::shared_ptr<void> owner = nullptr);

  // A contiguous owning copy of `host` on `device`. `stream` (a CUstream, or null for the
  // legacy default stream) orders the copy; the call returns once the copy is complete.
  static absl::StatusOr<Tensor> from_host(const HostTensor& host, DeviceId device = DeviceId::cpu(),
                                          void* stream = nullptr);
  // A dense row-major host copy, honoring strides; same stream rule as from_host.
  absl::StatusOr<HostTensor> to_host(void* stream = nullptr) const;
  // Writes `host` into this contiguous tensor of the same dtype and shape (filling a CUDA
  // graph's static input slot, say); same stream rule as from_host.
  absl::Status copy_from_host(const HostTensor& host, void* stream = nullptr);

  // Takes `managed` without copying. On success the returned tensor (and its copies) own it
  // and call its deleter when the last of them is gone; on error the caller still owns it.
  // Supported: kDLCPU, kDLCUDAHost (as cpu), kDLCUDA; lanes 1; f32 f16 bf16 i32 i64 bool.
  static absl::StatusOr<Tensor> from_dlpack(DLManagedTensor* managed);
  // A DLManagedTensor viewing this tensor's memory. It shares ownership: the memory lives
  // until the consumer calls its deleter, even if every kiln::Tensor is gone (a wrapping
  // tensor's export is valid only as long as the caller's memory).
  absl::StatusOr<DLManagedTensor*> to_dlpack() const;

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t rank() const { return int64_t(shape_.size()); }
  int64_t numel() const;
  void* data() const { return data_; }
  DeviceId device() const { return device_; }
  bool is_contiguous() const;
  bool owns_memory() const { return owner_ != nullptr; }
  std::string type_string() const;  // "bf16[2, 3] cuda:0"

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_, strides_;
  void* data_ = nullptr;
  DeviceId device_;
  std::shared_ptr<void> owner_;  // keeps the memory alive; null when wrapping
};

// DLPack dtype mapping. bool exports as kDLBool (code 6, DLPack >= 0.8, what PyTorch 2
// uses); import also accepts 8-bit kDLUInt as bool, which is how DLPack 0.6 producers wrote it.
absl::StatusOr<DLDataType> to_dlpack_dtype(DType dtype);
absl::StatusOr<DType> from_dlpack_dtype(DLDataType dtype);

}  // namespace kiln
