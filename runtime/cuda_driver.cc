#include "runtime/cuda_driver.h"

#include <dlfcn.h>

#include <array>
#include <mutex>

#include "ir/str.h"
#include "ir/status.h"

namespace kiln::cuda {
namespace {

#define KILN_STR2(x) #x
#define KILN_STR(x) KILN_STR2(x)

struct LoadedDriver {
  DriverApi api;
  absl::Status status;
};

LoadedDriver load_driver() {
  LoadedDriver d;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = dlerror();
    d.status = absl::FailedPreconditionError(
        str_cat("no CUDA device: libcuda.so.1 not found (", err ? err : "dlopen failed", ")"));
    return d;
  }
  // The library stays loaded for the life of the process: handles may outlive any owner.
#define KILN_CUDA_DRIVER_LOAD(name)                                                          \
  d.api.name = reinterpret_cast<decltype(&::name)>(dlsym(lib, KILN_STR(name)));             \
  if (d.api.name == nullptr) {                                                               \
    d.status = absl::FailedPreconditionError(str_cat(                                       \
        "no CUDA device: libcuda.so.1 lacks ", KILN_STR(name), " (driver too old for CUDA 13)")); \
    return d;                                                                                \
  }
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_CUDA_DRIVER_LOAD)
#undef KILN_CUDA_DRIVER_LOAD
  CUresult r = d.api.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char* msg = nullptr;
    d.api.cuGetErrorString(r, &msg);
    d.status = absl::FailedPreconditionError(
        str_cat("no CUDA device: cuInit failed: ", msg ? msg : "unknown error", " (", int(r), ")"));
  }
  return d;
}

const LoadedDriver& loaded() {
  static const LoadedDriver d = load_driver();
  return d;
}

}  // namespace

absl::StatusOr<const DriverApi*> driver() {
  const LoadedDriver& d = loaded();
  if (!d.status.ok()) return d.status;
  return &d.api;
}

absl::Status check(CUresult result, std::string_view what) {
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  const char* name = nullptr;
  const char* desc = nullptr;
  if (loaded().status.ok()) {
    loaded().api.cuGetErrorName(result, &name);
    loaded().api.cuGetErrorString(result, &desc);
  }
  return absl::InternalError(str_cat(what, ": ", name ? name : "CUDA error",
                                     " (", desc ? desc : str_cat("code ", int(result)), ")"));
}

bool device_available() {
  auto n = Device::count();
  return n.ok() && *n > 0;
}

#define KILN_API()                                           \
  KILN_ASSIGN_OR_RETURN(const DriverApi* api_ptr_, driver()); \
  const DriverApi& api = *api_ptr_

absl::StatusOr<int> Device::count() {
  KILN_API();
  int n = 0;
  KILN_RETURN_IF_ERROR(check(api.cuDeviceGetCount(&n), "cuDeviceGetCount"));
  return n;
}

absl::StatusOr<Device> Device::get(int ordinal) {
  KILN_API();
  int n = 0;
  KILN_RETURN_IF_ERROR(check(api.cuDeviceGetCount(&n), "cuDeviceGetCount"));
  if (n == 0) return absl::FailedPreconditionError("no CUDA device: the driver reports 0 devices");
  if (ordinal < 0 || ordinal >= n)
    return invalid_argument("CUDA device ", ordinal, " does not exist (", n, " devices)");
  Device d;
  KILN_RETURN_IF_ERROR(check(api.cuDeviceGet(&d.handle_, ordinal), "cuDeviceGet"));
  std::array<char, 256> name{};
  KILN_RETURN_IF_ERROR(check(api.cuDeviceGetName(name.data(), int(name.size()) - 1, d.handle_),
                 "cuDeviceGetName"));
  d.props_.name = name.data();
  d.props_.ordinal = ordinal;
  auto attr = [&](CUdevice_attribute a, int* out) {
    return check(api.cuDeviceGetAttribute(out, a, d.handle_), "cuDeviceGetAttribute");
  };
  int major = 0, minor = 0;
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &major));
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &minor));
  d.props_.sm_arch = major * 10 + minor;
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &d.props_.sm_count));
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &d.props_.max_threads_per_block));
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                &d.props_.max_shared_memory_per_block_optin));
  KILN_RETURN_IF_ERROR(attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, &d.props_.l2_cache_bytes));
  size_t total = 0;
  KILN_RETURN_IF_ERROR(check(api.cuDeviceTotalMem(&total, d.handle_), "cuDeviceTotalMem"));
  d.props_.total_memory = int64_t(total);
  return d;
}

std::string Device::arch_name() const { return str_cat("sm_", props_.sm_arch); }

absl::StatusOr<Context*> Context::primary(int ordinal) {
  // Contexts are retained once and never released: kernels, buffers and modules hold raw
  // handles into them, and the driver tears everything down at process exit anyway.
  static std::mutex mu;
  static std::array<std::unique_ptr<Context>, 64> contexts;
  std::lock_guard<std::mutex> lock(mu);
  KILN_ASSIGN_OR_RETURN(Device dev, Device::get(ordinal));
  if (ordinal >= int(contexts.size()))
    return invalid_argument("CUDA device ", ordinal, " beyond kiln's limit of ", contexts.size());
  if (!contexts[ordinal]) {
    const DriverApi& api = **driver();
    CUcontext ctx = nullptr;
    KILN_RETURN_IF_ERROR(check(api.cuDevicePrimaryCtxRetain(&ctx, dev.handle()), "cuDevicePrimaryCtxRetain"));
    contexts[ordinal].reset(new Context(dev, ctx));
  }
  KILN_RETURN_IF_ERROR(contexts[ordinal]->make_current());
  return contexts[ordinal].get();
}

absl::Status Context::make_current() const {
  KILN_API();
  CUcontext cur = nullptr;
  KILN_RETURN_IF_ERROR(check(api.cuCtxGetCurrent(&cur), "cuCtxGetCurrent"));
  if (cur == ctx_) return absl::OkStatus();
  return check(api.cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
}

absl::StatusOr<Stream> Stream::create(const Context& ctx) {
  KILN_API();
  KILN_RETURN_IF_ERROR(ctx.make_current());
  CUstream s = nullptr;
  KILN_RETURN_IF_ERROR(check(api.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate"));
  return Stream(s);
}

Stream& Stream::operator=(Stream&& o) noexcept {
  std::swap(stream_, o.stream_);
  return *this;
}

Stream::~Stream() {
  if (stream_ != nullptr) (*driver())->cuStreamDestroy(stream_);
}

absl::Status Stream::synchronize() const {
  KILN_API();
  return check(api.cuStreamSynchronize(stream_), "cuStreamSynchronize");
}

absl::StatusOr<Event> Event::create(const Context& ctx, bool timing) {
  KILN_API();
  KILN_RETURN_IF_ERROR(ctx.make_current());
  CUevent e = nullptr;
  KILN_RETURN_IF_ERROR(
      check(api.cuEventCreate(&e, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING), "cuEventCreate"));
  return Event(e);
}

Event& Event::operator=(Event&& o) noexcept {
  std::swap(event_, o.event_);
  return *this;
}

Event::~Event() {
  if (event_ != nullptr) (*driver())->cuEventDestroy(event_);
}

absl::Status Event::record(CUstream stream) const {
  KILN_API();
  return check(api.cuEventRecord(event_, stream), "cuEventRecord");
}

absl::Status Event::wait(CUstream stream) const {
  KILN_API();
  return check(api.cuStreamWaitEvent(stream, event_, 0), "cuStreamWaitEvent");
}

absl::Status Event::synchronize() const {
  KILN_API();
  return check(api.cuEventSynchronize(event_), "cuEventSynchronize");
}

absl::StatusOr<float> Event::elapsed_ms(const Event& start, const Event& end) {
  KILN_API();
  float ms = 0;
  KILN_RETURN_IF_ERROR(check(api.cuEventElapsedTime(&ms, start.event_, end.event_), "cuEventElapsedTime"));
  return ms;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::allocate(const Context& ctx, int64_t bytes) {
  KILN_API();
  if (bytes < 0) return invalid_argument("device allocation of negative size ", bytes);
  KILN_RETURN_IF_ERROR(ctx.make_current());
  DeviceBuffer b;
  b.ordinal_ = ctx.device().properties().ordinal;
  b.bytes_ = bytes;
  // cuMemAlloc rejects 0 bytes; an empty buffer keeps a null pointer.
  if (bytes > 0)
    KILN_RETURN_IF_ERROR(check(api.cuMemAlloc(&b.ptr_, size_t(bytes)),
                   str_cat("cuMemAlloc of ", bytes, " bytes")));
  return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(o.ptr_), bytes_(o.bytes_), ordinal_(o.ordinal_) {
  o.ptr_ = 0;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  std::swap(ordinal_, o.ordinal_);
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != 0) (*driver())->cuMemFree(ptr_);
}

absl::Status DeviceBuffer::check_size(int64_t bytes, std::string_view what) const {
  if (bytes < 0 || bytes > bytes_)
    return invalid_argument(what, " of ", bytes, " bytes exceeds the ", bytes_, "-byte buffer");
  return absl::OkStatus();
}

absl::Status copy_host_to_device(CUdeviceptr dst, const void* src, int64_t bytes, CUstream stream) {
  KILN_API();
  if (stream != nullptr)
    return check(api.cuMemcpyHtoDAsync(dst, src, size_t(bytes), stream), "cuMemcpyHtoDAsync");
  // cuMemcpyHtoD from pageable memory may return once the data is staged, before the DMA
  // lands, and work on a non-blocking stream would not wait for it: copy on the legacy
  // default stream and wait for it instead.
  KILN_RETURN_IF_ERROR(check(api.cuMemcpyHtoDAsync(dst, src, size_t(bytes), nullptr), "cuMemcpyHtoDAsync"));
  return check(api.cuStreamSynchronize(nullptr), "cuStreamSynchronize");
}

absl::Status DeviceBuffer::copy_from_host(const void* src, int64_t bytes, CUstream stream) {
  KILN_RETURN_IF_ERROR(check_size(bytes, "host-to-device copy"));
  if (bytes == 0) return absl::OkStatus();
  return copy_host_to_device(ptr_, src, bytes, stream);
}

absl::Status DeviceBuffer::copy_to_host(void* dst, int64_t bytes, CUstream stream) const {
  KILN_API();
  KILN_RETURN_IF_ERROR(check_size(bytes, "device-to-host copy"));
  if (bytes == 0) return absl::OkStatus();
  if (stream != nullptr)
    return check(api.cuMemcpyDtoHAsync(dst, ptr_, size_t(bytes), stream), "cuMemcpyDtoHAsync");
  return check(api.cuMemcpyDtoH(dst, ptr_, size_t(bytes)), "cuMemcpyDtoH");
}

absl::Status DeviceBuffer::copy_from(const DeviceBuffer& src, int64_t bytes, CUstream stream) {
  KILN_API();
  KILN_RETURN_IF_ERROR(check_size(bytes, "device-to-device copy"));
  KILN_RETURN_IF_ERROR(src.check_size(bytes, "device-to-device copy source"));
  if (bytes == 0) return absl::OkStatus();
  if (stream != nullptr)
    return check(api.cuMemcpyDtoDAsync(ptr_, src.ptr_, size_t(bytes), stream), "cuMemcpyDtoDAsync");
  return check(api.cuMemcpyDtoD(ptr_, src.ptr_, size_t(bytes)), "cuMemcpyDtoD");
}

absl::Status DeviceBuffer::fill_bytes(uint8_t value, CUstream stream) {
  KILN_API();
  if (bytes_ == 0) return absl::OkStatus();
  if (stream != nullptr)
    return check(api.cuMemsetD8Async(ptr_, value, size_t(bytes_), stream), "cuMemsetD8Async");
  return check(api.cuMemsetD8(ptr_, value, size_t(bytes_)), "cuMemsetD8");
}

absl::StatusOr<Module> Module::load(const Context& ctx, std::string_view image) {
  KILN_API();
  KILN_RETURN_IF_ERROR(ctx.make_current());
  CUmodule m = nullptr;
  KILN_RETURN_IF_ERROR(check(api.cuModuleLoadData(&m, image.data()), "cuModuleLoadData"));
  return Module(m);
}

Module& Module::operator=(Module&& o) noexcept {
  std::swap(module_, o.module_);
  return *this;
}

Module::~Module() {
  if (module_ != nullptr) (*driver())->cuModuleUnload(module_);
}

absl::StatusOr<CUfunction> Module::function(const std::string& name) const {
  KILN_API();
  CUfunction f = nullptr;
  KILN_RETURN_IF_ERROR(check(api.cuModuleGetFunction(&f, module_, name.c_str()),
                 str_cat("cuModuleGetFunction(", name, ")")));
  return f;
}

absl::Status launch(CUfunction fn, const LaunchDims& d, void** args, CUstream stream) {
  KILN_API();
  return check(api.cuLaunchKernel(fn, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1],
                                  d.block[2], d.shared_bytes, stream, args, nullptr),
               "cuLaunchKernel");
}

}  // namespace kiln::cuda
