#include "test/executor/interpreter_device.h"

#include <cstdlib>
#include <cstring>

#include "codegen/kernel_eval.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln::testing {
namespace {

struct Plan final : StepPlan {
  Bindings bindings;
};

class InterpreterProgram final : public DeviceProgram {
 public:
  InterpreterProgram(std::shared_ptr<const Program> p, std::shared_ptr<DeviceCounts> counts,
                     std::function<bool()> recording, std::function<void(std::function<absl::Status()>)> record)
      : p_(std::move(p)), counts_(std::move(counts)), recording_(std::move(recording)), record_(std::move(record)) {
    stats_.kernels = p_->compiled_kernels();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int, const Bindings& b, SymbolValues) override {
    ++counts_->plans;
    auto plan = std::make_unique<Plan>();
    plan->bindings = b;
    return plan;
  }

  absl::Status launch(int kernel, StepPlan& plan, std::span<const DevicePtr> buffers, const CallContext&) override {
    std::vector<DevicePtr> at(buffers.begin(), buffers.end());
    const Bindings& b = static_cast<const Plan&>(plan).bindings;
    auto run = [this, kernel, at, b]() { return run_kernel_at(kernel, at, b); };
    if (counts_->side_stream) counts_->log.push_back(str_cat("launch ", p_->kernels[kernel].kernel.name));
    if (recording_()) {
      record_(run);
      return absl::OkStatus();
    }
    return run();
  }

  absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int, const Bindings&) override { return std::make_unique<Plan>(); }
  // A library that cannot run anything: the executor falls back to each GEMM's own kernel.
  absl::StatusOr<bool> run_gemm(int, StepPlan&, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr,
                                const CallContext&) override {
    ++counts_->gemm_calls;
    return false;
  }
  std::string describe_kernel(int kernel) const override { return p_->kernels[kernel].kernel.name; }
  const BuildStats& stats() const override { return stats_; }

 private:
  // Kernel `kernel` over the memory at `at` (its buffers, then an accumulator it reads):
  // every input copied into a host tensor, the evaluator run, the outputs copied back.
  absl::Status run_kernel_at(int kernel, const std::vector<DevicePtr>& at, const Bindings& b) {
    const kir::Kernel& k = p_->kernels[kernel].kernel;
    if (p_->kernels[kernel].accumulator_input)
      return absl::UnimplementedError(str_cat("kernel ", k.name, ": the interpreter has no library accumulators"));
    ++counts_->launches[k.name];
    std::vector<HostTensor> in, out;
    std::vector<const HostTensor*> ins;
    std::vector<HostTensor*> outs;
    std::vector<size_t> out_buffer;
    for (size_t i = 0; i < k.buffers.size(); ++i) {
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(k.buffers[i].shape, b));
      HostTensor t(k.buffers[i].dtype, shape);
      // Inputs, and the check words: they keep a fired check until the executor reports it.
      if (k.buffers[i].role != kir::Buffer::Role::Output)
        std::memcpy(t.data(), reinterpret_cast<const void*>(at[i]), static_cast<size_t>(t.numel() * dtype_size(t.dtype())));
      if (k.buffers[i].role == kir::Buffer::Role::Input) {
        in.push_back(std::move(t));
      } else {
        out.push_back(std::move(t));
        out_buffer.push_back(i);
      }
    }
    for (const HostTensor& t : in) ins.push_back(&t);
    for (HostTensor& t : out) outs.push_back(&t);
    KILN_RETURN_IF_ERROR(run_kernel(k, ins, outs, b));
    for (size_t o = 0; o < out.size(); ++o)
      std::memcpy(reinterpret_cast<void*>(at[out_buffer[o]]), out[o].data(),
                  static_cast<size_t>(out[o].numel() * dtype_size(out[o].dtype())));
    return absl::OkStatus();
  }

  std::shared_ptr<const Program> p_;
  std::shared_ptr<DeviceCounts> counts_;
  std::function<bool()> recording_;
  std::function<void(std::function<absl::Status()>)> record_;
  BuildStats stats_;
};

class Recorded final : public Replay {
 public:
  Recorded(std::vector<std::function<absl::Status()>> ops, std::shared_ptr<DeviceCounts> counts)
      : ops_(std::move(ops)), counts_(std::move(counts)) {}
  absl::Status launch(void*) override {
    ++counts_->replays;
    for (const auto& op : ops_) KILN_RETURN_IF_ERROR(op());
    return absl::OkStatus();
  }

 private:
  std::vector<std::function<absl::Status()>> ops_;
  std::shared_ptr<DeviceCounts> counts_;
};

// The ops of a side stream, logged; its handle is its own address.
class LoggedSideStream final : public SideStream {
 public:
  explicit LoggedSideStream(std::shared_ptr<DeviceCounts> counts) : counts_(std::move(counts)) {}
  void* stream() override { return this; }
  absl::Status fork(void*) override { return log("fork"); }
  absl::Status record(int event) override { return log(str_cat("record ", event)); }
  absl::Status join(int event, void*) override { return log(str_cat("join ", event)); }

 private:
  absl::Status log(std::string what) {
    counts_->log.push_back(std::move(what));
    return absl::OkStatus();
  }
  std::shared_ptr<DeviceCounts> counts_;
};

class InterpreterDevice final : public DeviceAdapter {
 public:
  InterpreterDevice(std::shared_ptr<DeviceCounts> counts, GemmLibrary library)
      : counts_(std::move(counts)), target_{"interpreter", library, nullptr} {
    target_.comm_stream = counts_->side_stream;
  }

  DeviceId device() const override { return DeviceId::cpu(); }
  const Target& target() const override { return target_; }

  absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program> p, const LoadOptions&) override {
    return std::make_unique<InterpreterProgram>(
        std::move(p), counts_, [this] { return recording_ != nullptr; },
        [this](std::function<absl::Status()> op) { recording_->push_back(std::move(op)); });
  }

  absl::StatusOr<DeviceMemory> allocate(int64_t bytes) override {
    void* p = std::calloc(static_cast<size_t>(std::max<int64_t>(bytes, 1)), 1);
    return DeviceMemory(reinterpret_cast<DevicePtr>(p), bytes, std::shared_ptr<void>(p, std::free));
  }
  absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& data) override {
    return reinterpret_cast<DevicePtr>(data->data());
  }
  absl::StatusOr<Tensor> empty(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::empty_host(dtype, std::move(shape));
  }
  absl::Status copy(DevicePtr dst, DevicePtr src, int64_t bytes, const CallContext&) override {
    auto op = [=] {
      std::memcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), static_cast<size_t>(bytes));
      return absl::OkStatus();
    };
    if (recording_) {
      recording_->push_back(op);
      return absl::OkStatus();
    }
    ++counts_->copies;
    return op();
  }

  absl::StatusOr<std::unique_ptr<SideStream>> side_stream(int) override {
    if (!counts_->side_stream) return nullptr;
    return std::unique_ptr<SideStream>(new LoggedSideStream(counts_));
  }

  bool can_capture() const override { return true; }
  absl::StatusOr<std::unique_ptr<Replay>> capture(const std::function<absl::Status(const CallContext&)>& launches) override {
    KILN_RETURN_IF_ERROR(launches(CallContext{}));
    std::vector<std::function<absl::Status()>> ops;
    recording_ = &ops;
    absl::Status s = launches(CallContext{});
    recording_ = nullptr;
    KILN_RETURN_IF_ERROR(s);
    ++counts_->captures;
    return std::unique_ptr<Replay>(new Recorded(std::move(ops), counts_));
  }

 private:
  std::shared_ptr<DeviceCounts> counts_;
  Target target_;
  std::vector<std::function<absl::Status()>>* recording_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceAdapter> make_interpreter_device(std::shared_ptr<DeviceCounts> counts, GemmLibrary library) {
  return std::make_unique<InterpreterDevice>(std::move(counts), library);
}

}  // namespace kiln::testing
