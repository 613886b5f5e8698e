// The host cost of one CompiledGraph call apart from the device's own work: binding the
// symbols from the arguments' shapes, checking dtypes, devices and output slots, finding the
// specialization whose guards hold, and the executor's per-call work (plan lookup, buffer
// addresses, one call per step). A device adapter whose launches do nothing isolates it.
//   kiln_bench_dispatch [GRAPH.kiln B=1,T=512]   (default: the decoder-layer example)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "compiler/compile.h"
#include "ir/parser.h"
#include "ir/str.h"

using namespace kiln;

namespace {

class NullStep final : public StepPlan {};

class NullProgram final : public DeviceProgram {
 public:
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_kernel(int, const Bindings&, SymbolValues) override {
    return std::make_unique<NullStep>();
  }
  absl::Status launch(int, StepPlan&, std::span<const DevicePtr>, const CallContext&) override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<StepPlan>> plan_gemm(int, const Bindings&) override { return std::make_unique<NullStep>(); }
  absl::StatusOr<bool> run_gemm(int, StepPlan&, DevicePtr, DevicePtr, DevicePtr, DevicePtr, DevicePtr,
                                const CallContext&) override {
    return true;
  }
  std::string describe_kernel(int) const override { return "null"; }
  const BuildStats& stats() const override { return stats_; }

 private:
  BuildStats stats_;
};

class NullDevice final : public DeviceAdapter {
 public:
  DeviceId device() const override { return DeviceId::cpu(); }
  const Target& target() const override { return target_; }
  absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program>, const LoadOptions&) override {
    return std::make_unique<NullProgram>();
  }
  absl::StatusOr<DeviceMemory> allocate(int64_t bytes) override {
    auto m = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
    return DeviceMemory(reinterpret_cast<DevicePtr>(m->data()), bytes, m);
  }
  absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& data) override {
    return reinterpret_cast<DevicePtr>(data->data());
  }
  absl::StatusOr<Tensor> empty(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::empty_host(dtype, std::move(shape));
  }
  absl::Status copy(DevicePtr, DevicePtr, int64_t, const CallContext&) override { return absl::OkStatus(); }

 private:
  Target target_{"null", GemmLibrary::Blas, nullptr};
};

}  // namespace

int main(int argc, char** argv) {
  std::string file = argc > 1 ? argv[1] : std::string(KILN_SOURCE_DIR) + "/examples/decoder_layer.kiln";
  std::string binds = argc > 2 ? argv[2] : "B=1,T=512";
  absl::StatusOr<Graph> g = parse_graph_file(file);
  if (!g.ok()) return std::fprintf(stderr, "%s\n", status_message(g.status()).c_str()), 1;
  Bindings b;
  for (size_t at = 0; at < binds.size();) {
    size_t comma = binds.find(',', at), eq = binds.find('=', at);
    b[binds.substr(at, eq - at)] = std::stoll(binds.substr(eq + 1, comma - eq - 1));
    at = comma == std::string::npos ? binds.size() : comma + 1;
  }
  absl::StatusOr<CompiledGraph> cg = compile(*g, std::make_unique<NullDevice>());
  if (!cg.ok()) return std::fprintf(stderr, "%s\n", status_message(cg.status()).c_str()), 1;
  // Host tensors of the right shapes; their data is never read.
  std::vector<std::vector<uint8_t>> storage;
  std::vector<Tensor> args;
  for (const Value* v : cg->module().args) {
    std::vector<int64_t> shape = *evaluate_shape(v->shape(), b);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    storage.emplace_back(std::max<int64_t>(1, n * dtype_size(v->dtype())));
    args.push_back(*Tensor::wrap(storage.back().data(), v->dtype(), shape, {}, DeviceId::cpu()));
  }
  std::vector<Tensor> outs(cg->graph().outputs().size());
  if (absl::Status s = cg->run(args, outs); !s.ok()) return std::fprintf(stderr, "%s\n", status_message(s).c_str()), 1;
  std::vector<double> per_call;
  for (int rep = 0; rep < 7; ++rep) {
    const int n = 200000;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) (void)cg->run(args, outs);
    per_call.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n);
  }
  std::sort(per_call.begin(), per_call.end());
  std::printf("graph %s (%zu arguments, %zu symbols) with %s: guard check, dispatch and executor %.0f ns per call "
              "(median of 7 runs of 200000 calls; min %.0f, max %.0f)\n",
              cg->graph().name().c_str(), args.size(), cg->module().symbols.size(), binds.c_str(), per_call[3],
              per_call.front(), per_call.back());
  return 0;
}
