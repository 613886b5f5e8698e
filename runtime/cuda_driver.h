// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1") so that kiln builds,
// links and runs on machines without a GPU or driver, plus RAII handles over it.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::cuda {

// Every driver entry point kiln uses. cuda.h maps most names to versioned symbols
// (cuMemAlloc -> cuMemAlloc_v2); the table resolves exactly the symbol the macro names, so a
// member `cuMemAlloc` has the type and ABI of the function the header declares (a table by
// hand: clang-format would run its rows together).
// clang-format off
#define KILN_CUDA_DRIVER_FUNCTIONS(X)                                                      \
  X(cuInit) X(cuDriverGetVersion) X(cuGetErrorString) X(cuGetErrorName)                    \
  X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) X(cuDeviceGetAttribute)            \
  X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)             \
  X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxSynchronize)                                \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuLaunchKernel)           \
  X(cuMemAlloc) X(cuMemFree) X(cuMemGetInfo) X(cuMemsetD8) X(cuMemsetD8Async)              \
  X(cuMemcpyDtoH) X(cuMemcpyDtoD) X(cuMemHostAlloc) X(cuMemFreeHost)                       \
  X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync) X(cuPointerGetAttribute)  \
  X(cuStreamCreate) X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamWaitEvent)         \
  X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize)                \
  X(cuEventElapsedTime) X(cuStreamBeginCapture) X(cuStreamEndCapture)                      \
  X(cuGraphInstantiate) X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy)        \
  X(cuFuncSetAttribute)
// clang-format on

struct DriverApi {
#define KILN_CUDA_DRIVER_MEMBER(name) decltype(&::name) name = nullptr;
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_CUDA_DRIVER_MEMBER)
#undef KILN_CUDA_DRIVER_MEMBER
};

// The process-wide driver table, loaded and cuInit'ed on first use. Without a usable
// driver every call returns the same FailedPrecondition, starting "no CUDA device: ".
absl::StatusOr<const DriverApi*> driver();

// OK for CUDA_SUCCESS; otherwise an Internal error "<what>: CUDA_ERROR_X (description)".
absl::Status check(CUresult result, std::string_view what);

// Whether a CUDA device can be used in this process (driver loaded, cuInit ok, >= 1 device).
bool device_available();

struct DeviceProperties {
  std::string name;
  int ordinal = 0;
  int sm_arch = 0;  // compute capability as major*10+minor: 90 for H100
  int sm_count = 0;
  int64_t total_memory = 0;  // bytes
  int max_threads_per_block = 0;
  int max_shared_memory_per_block_optin = 0;  // bytes
  int l2_cache_bytes = 0;
};

class Device {
 public:
  static absl::StatusOr<int> count();
  static absl::StatusOr<Device> get(int ordinal);

  CUdevice handle() const { return handle_; }
  const DeviceProperties& properties() const { return props_; }
  std::string arch_name() const;  // "sm_90"

 private:
  CUdevice handle_ = 0;
  DeviceProperties props_;
};

// The device's primary context (the one the CUDA runtime and PyTorch share), retained once
// per process and made current on the calling thread before any driver call that needs it.
class Context {
 public:
  static absl::StatusOr<Context*> primary(int ordinal = 0);
  absl::Status make_current() const;
  const Device& device() const { return device_; }
  CUcontext handle() const { return ctx_; }

 private:
  Context(Device device, CUcontext ctx) : device_(device), ctx_(ctx) {}
  Device device_;
  CUcontext ctx_;
};

class Stream {
 public:
  static absl::StatusOr<Stream> create(const Context& ctx);
  Stream(Stream&& o) noexcept : stream_(o.stream_) { o.stream_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  ~Stream();
  CUstream handle() const { return stream_; }
  absl::Status synchronize() const;

 private:
  explicit Stream(CUstream s) : stream_(s) {}
  CUstream stream_ = nullptr;
};

class Event {
 public:
  // `timing`: elapsed_ms may read it; else it only orders streams (cheaper to record).
  static absl::StatusOr<Event> create(const Context& ctx, bool timing = true);
  Event(Event&& o) noexcept : event_(o.event_) { o.event_ = nullptr; }
  Event& operator=(Event&& o) noexcept;
  ~Event();
  CUevent handle() const { return event_; }
  absl::Status record(CUstream stream) const;
  absl::Status wait(CUstream stream) const;  // `stream` waits for the work of the last record
  absl::Status synchronize() const;
  // Milliseconds between two recorded, completed events.
  static absl::StatusOr<float> elapsed_ms(const Event& start, const Event& end);

 private:
  explicit Event(CUevent e) : event_(e) {}
  CUevent event_ = nullptr;
};

// Copies `bytes` from host memory to dst: enqueued on `stream`, or with a null stream
// complete (landed on the device) when the call returns.
absl::Status copy_host_to_device(CUdeviceptr dst, const void* src, int64_t bytes, CUstream stream);

// Owned device memory. With no stream, copies to and from the host are complete when they
// return, and a device-to-device copy is ordered on the legacy default stream (the host does
// not wait for it); with a stream, every copy is enqueued on it.
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> allocate(const Context& ctx, int64_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  ~DeviceBuffer();

  CUdeviceptr ptr() const { return ptr_; }
  int64_t size() const { return bytes_; }
  int device_ordinal() const { return ordinal_; }

  absl::Status copy_from_host(const void* src, int64_t bytes, CUstream stream = nullptr);
  absl::Status copy_to_host(void* dst, int64_t bytes, CUstream stream = nullptr) const;
  absl::Status copy_from(const DeviceBuffer& src, int64_t bytes, CUstream stream = nullptr);
  absl::Status fill_bytes(uint8_t value, CUstream stream = nullptr);

 private:
  absl::Status check_size(int64_t bytes, std::string_view what) const;
  CUdeviceptr ptr_ = 0;
  int64_t bytes_ = 0;
  int ordinal_ = 0;
};

// A loaded CUBIN/PTX image and lookups of its kernels.
class Module {
 public:
  static absl::StatusOr<Module> load(const Context& ctx, std::string_view image);
  Module(Module&& o) noexcept : module_(o.module_) { o.module_ = nullptr; }
  Module& operator=(Module&& o) noexcept;
  ~Module();
  absl::StatusOr<CUfunction> function(const std::string& name) const;

 private:
  explicit Module(CUmodule m) : module_(m) {}
  CUmodule module_ = nullptr;
};

struct LaunchDims {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned shared_bytes = 0;
};

// Launches `fn`; `args` holds one pointer per kernel parameter, as cuLaunchKernel wants.
absl::Status launch(CUfunction fn, const LaunchDims& dims, void** args, CUstream stream);

}  // namespace kiln::cuda
