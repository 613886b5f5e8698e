#include "runtime/cuda/device.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include <nvtx3/nvToolsExt.h>  // header-only (NVTX 3): it finds a profiler at run time, links nothing

#include "codegen/cuda/attention.h"
#include "codegen/cuda/schedule.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cublaslt.h"
#include "runtime/cuda/allocator.h"
#include "runtime/cuda/program.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"

namespace kiln::cuda {
namespace {

class Graph final : public Replay {
 public:
  explicit Graph(CUgraphExec exec) : exec_(exec) {}
  ~Graph() override {
    if (absl::StatusOr<const DriverApi*> api = driver(); api.ok()) (*api)->cuGraphExecDestroy(exec_);
  }
  absl::Status launch(void* stream) override {
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    return check(api->cuGraphLaunch(exec_, static_cast<CUstream>(stream)), "cuGraphLaunch");
  }

 private:
  CUgraphExec exec_;
};

// A profiled call's marks as events recorded on its stream.
class EventTimeline final : public Timeline {
 public:
  explicit EventTimeline(Context* ctx) : ctx_(ctx) {}
  absl::Status mark(const CallContext& c) override {
    KILN_ASSIGN_OR_RETURN(Event e, Event::create(*ctx_));
    KILN_RETURN_IF_ERROR(e.record(static_cast<CUstream>(c.stream)));
    events_.push_back(std::move(e));
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<double>> read() override {
    std::vector<double> ms;
    if (events_.empty()) return ms;
    KILN_RETURN_IF_ERROR(events_.back().synchronize());
    for (const Event& e : events_) {
      KILN_ASSIGN_OR_RETURN(float t, Event::elapsed_ms(events_.front(), e));
      ms.push_back(t);
    }
    return ms;
  }

 private:
  Context* ctx_;
  std::vector<Event> events_;
};

// An executor's communication stream: non-blocking, so that it never waits on the legacy
// default stream implicitly (its work would then queue behind the steps it overlaps); its
// events order streams only. Made before any capture (the executor makes it when created).
class CommStream final : public SideStream {
 public:
  static absl::StatusOr<std::unique_ptr<SideStream>> create(const Context& ctx, int events) {
    KILN_ASSIGN_OR_RETURN(Stream st, Stream::create(ctx));
    KILN_ASSIGN_OR_RETURN(Event fork, Event::create(ctx, false));
    std::unique_ptr<CommStream> c(new CommStream(std::move(st), std::move(fork)));
    for (int i = 0; i < events; ++i) {
      KILN_ASSIGN_OR_RETURN(Event e, Event::create(ctx, false));
      c->events_.push_back(std::move(e));
    }
    return std::unique_ptr<SideStream>(std::move(c));
  }
  void* stream() override { return stream_.handle(); }
  absl::Status fork(void* from) override {
    KILN_RETURN_IF_ERROR(fork_.record(static_cast<CUstream>(from)));
    return fork_.wait(stream_.handle());
  }
  absl::Status record(int event) override {
    KILN_ASSIGN_OR_RETURN(const Event* e, at(event));
    return e->record(stream_.handle());
  }
  absl::Status join(int event, void* into) override {
    KILN_ASSIGN_OR_RETURN(const Event* e, at(event));
    return e->wait(static_cast<CUstream>(into));
  }

 private:
  CommStream(Stream st, Event fork) : stream_(std::move(st)), fork_(std::move(fork)) {}
  absl::StatusOr<const Event*> at(int event) const {
    if (event < 0 || static_cast<size_t>(event) >= events_.size())
      return absl::InternalError(str_cat("comm stream: event ", event, " of ", events_.size()));
    return &events_[event];
  }
  Stream stream_;
  Event fork_;
  std::vector<Event> events_;
};

class CudaAdapter final : public DeviceAdapter {
 public:
  // `ctx` null: compile only.
  CudaAdapter(int device, Context* ctx, std::unique_ptr<CublasLt> lt, std::string arch)
      : device_(device), ctx_(ctx), lt_(std::move(lt)), arch_(std::move(arch)) {}

  DeviceId device() const override { return DeviceId::cuda(device_); }
  int64_t allocation_limit() const override {
    int64_t total = ctx_ ? ctx_->device().properties().total_memory : 0;
    return total > 0 ? std::min(total, host_allocation_limit()) : host_allocation_limit();
  }
  const Target& target() const override { return cuda::target(); }
  std::string arch() const override { return arch_; }

  absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program> p, const LoadOptions& o) override {
    return load_program(CudaDevice{ctx_, lt_.get(), arch_}, std::move(p), o.dump);
  }

  absl::Status activate() override {
    if (!ctx_) return absl::OkStatus();
    return ctx_->make_current();
  }

  absl::StatusOr<DeviceMemory> allocate(int64_t bytes) override {
    KILN_RETURN_IF_ERROR(require_device());
    KILN_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*ctx_, bytes));
    auto owned = std::make_shared<DeviceBuffer>(std::move(buf));
    return DeviceMemory(owned->ptr(), owned->size(), owned);
  }

  // Parameter data carried by the graph, uploaded once per adapter (one compiled graph).
  absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& data) override {
    KILN_RETURN_IF_ERROR(require_device());
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = resident_.find(data.get()); it != resident_.end()) return it->second.second.ptr();
    KILN_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(*ctx_, std::max<int64_t>(data->nbytes(), 1)));
    KILN_RETURN_IF_ERROR(buf.copy_from_host(data->data(), data->nbytes()));
    DevicePtr p = buf.ptr();
    resident_.emplace(data.get(), std::pair{data, std::move(buf)});
    return p;
  }

  absl::StatusOr<Tensor> empty(DType dtype, std::vector<int64_t> shape) override {
    KILN_RETURN_IF_ERROR(require_device());
    return pooled_tensor(dtype, std::move(shape), device_);
  }

  absl::Status copy(DevicePtr dst, DevicePtr src, int64_t bytes, const CallContext& c) override {
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    return check(api->cuMemcpyDtoDAsync(dst, src, bytes, static_cast<CUstream>(c.stream)), "cuMemcpyDtoDAsync");
  }

  // Page-locked: the copy into it is asynchronous, and a captured graph may hold it.
  absl::StatusOr<DeviceMemory> allocate_host(int64_t bytes) override {
    KILN_RETURN_IF_ERROR(require_device());
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    KILN_RETURN_IF_ERROR(ctx_->make_current());
    void* p = nullptr;
    KILN_RETURN_IF_ERROR(check(api->cuMemHostAlloc(&p, std::max<int64_t>(bytes, 1), 0), "cuMemHostAlloc"));
    std::memset(p, 0, std::max<int64_t>(bytes, 1));
    auto owner = std::shared_ptr<void>(p, [api](void* q) { api->cuMemFreeHost(q); });
    return DeviceMemory(reinterpret_cast<DevicePtr>(p), bytes, std::move(owner));
  }

  absl::Status copy_to_host(void* dst, DevicePtr src, int64_t bytes, const CallContext& c) override {
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    return check(api->cuMemcpyDtoHAsync(dst, src, bytes, static_cast<CUstream>(c.stream)), "cuMemcpyDtoHAsync");
  }

  absl::Status synchronize(void* stream) override {
    KILN_RETURN_IF_ERROR(require_device());
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    return check(api->cuStreamSynchronize(static_cast<CUstream>(stream)), "cuStreamSynchronize");
  }

  std::optional<DeviceMemoryInfo> memory_info() override {
    absl::StatusOr<const DriverApi*> api = driver();
    size_t free = 0, total = 0;
    if (!ctx_ || !api.ok() || !ctx_->make_current().ok() || (*api)->cuMemGetInfo(&free, &total) != CUDA_SUCCESS)
      return std::nullopt;
    return DeviceMemoryInfo{static_cast<int64_t>(free), static_cast<int64_t>(total)};
  }

  absl::StatusOr<std::unique_ptr<Timeline>> timeline() override {
    KILN_RETURN_IF_ERROR(require_device());
    return std::make_unique<EventTimeline>(ctx_);
  }
  void push_range(const char* name) override { nvtxRangePushA(name); }
  void pop_range() override { nvtxRangePop(); }

  bool can_capture() const override { return ctx_ != nullptr; }

  absl::StatusOr<std::unique_ptr<Replay>> capture(const std::function<absl::Status(const CallContext&)>& launches) override {
    KILN_RETURN_IF_ERROR(require_device());
    KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
    if (!capture_stream_) {
      KILN_ASSIGN_OR_RETURN(Stream st, Stream::create(*ctx_));
      capture_stream_ = std::move(st);
    }
    CUstream cs = capture_stream_->handle();
    // Anything made lazily on first use (GEMM plans, fallback kernels) exists before capture.
    // That run is real (it writes state in place), so it waits for the caller's streams to
    // finish filling the static slots it reads.
    KILN_RETURN_IF_ERROR(check(api->cuCtxSynchronize(), "cuCtxSynchronize"));
    KILN_RETURN_IF_ERROR(launches(CallContext{cs}));
    KILN_RETURN_IF_ERROR(capture_stream_->synchronize());
    KILN_RETURN_IF_ERROR(check(api->cuStreamBeginCapture(cs, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture"));
    absl::Status launched = launches(CallContext{cs});
    CUgraph graph = nullptr;
    absl::Status ended = check(api->cuStreamEndCapture(cs, &graph), "cuStreamEndCapture");
    KILN_RETURN_IF_ERROR(launched);
    KILN_RETURN_IF_ERROR(ended);
    CUgraphExec exec = nullptr;
    absl::Status inst = check(api->cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
    api->cuGraphDestroy(graph);
    KILN_RETURN_IF_ERROR(inst);
    return std::unique_ptr<Replay>(new Graph(exec));
  }

  // Compile only: nothing runs, so nothing overlaps.
  absl::StatusOr<std::unique_ptr<SideStream>> side_stream(int events) override {
    if (!ctx_) return nullptr;
    return CommStream::create(*ctx_, events);
  }

  bool can_time() const override { return ctx_ != nullptr; }

  // The median of five timed runs after two warm-up runs.
  absl::StatusOr<double> time_ms(const std::function<absl::Status()>& run, const CallContext& c) override {
    KILN_RETURN_IF_ERROR(require_device());
    CUstream st = static_cast<CUstream>(c.stream);
    KILN_ASSIGN_OR_RETURN(Event start, Event::create(*ctx_));
    KILN_ASSIGN_OR_RETURN(Event end, Event::create(*ctx_));
    for (int i = 0; i < 2; ++i) KILN_RETURN_IF_ERROR(run());
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) {
      KILN_RETURN_IF_ERROR(start.record(st));
      KILN_RETURN_IF_ERROR(run());
      KILN_RETURN_IF_ERROR(end.record(st));
      KILN_RETURN_IF_ERROR(end.synchronize());
      KILN_ASSIGN_OR_RETURN(float ms, Event::elapsed_ms(start, end));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[2];
  }

 private:
  absl::Status require_device() const {
    if (!ctx_) return absl::FailedPreconditionError("this CUDA device adapter compiles only (no device): it cannot run");
    return absl::OkStatus();
  }

  int device_ = 0;
  Context* ctx_;
  std::unique_ptr<CublasLt> lt_;
  std::string arch_;
  std::mutex mu_;
  std::map<const HostTensor*, std::pair<std::shared_ptr<const HostTensor>, DeviceBuffer>> resident_;
  std::optional<Stream> capture_stream_;
};

}  // namespace

const Target& target() {
  static const Target t{"cuda",
                        GemmLibrary::CublasLt,
                        prepare_kernel,
                        /*accumulator_in_ir=*/true,
                        /*native_window_copy=*/false,
                        /*native_depthwise=*/false,
                        /*native_bias_clamp=*/false,
                        /*native_row_reduce=*/false,
                        [](const AttentionForm& f) { return cuda_attention_supported(f).ok(); },
                        ExternDevice::Cuda,
                        /*comm_stream=*/true};
  return t;
}

KernelCache& kernel_cache() {
  static KernelCache* cache = new KernelCache(KernelCache::directory_from_env());
  return *cache;
}

absl::StatusOr<std::unique_ptr<DeviceAdapter>> make_adapter(int device) {
  KILN_ASSIGN_OR_RETURN(Context * ctx, Context::primary(device));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<CublasLt> lt, CublasLt::create(*ctx));
  std::string arch = str_cat("sm_", ctx->device().properties().sm_arch);
  return std::unique_ptr<DeviceAdapter>(new CudaAdapter(device, ctx, std::move(lt), std::move(arch)));
}

std::unique_ptr<DeviceAdapter> make_compile_only_adapter(std::string arch) {
  return std::unique_ptr<DeviceAdapter>(new CudaAdapter(0, nullptr, nullptr, std::move(arch)));
}

}  // namespace kiln::cuda
