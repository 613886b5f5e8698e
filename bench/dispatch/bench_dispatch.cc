// The host cost of one CompiledGraph call before any kernel runs: binding the symbols from
// the arguments' shapes, checking dtypes, devices and output slots, and finding the
// specialization whose guards hold. A backend whose executables do nothing isolates it.
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

class NullExecutable : public Executable {
 public:
  absl::Status run(std::span<const Tensor>, SymbolValues, std::span<Tensor>, const CallOptions&) override {
    return absl::OkStatus();
  }
  const BuildStats& build_stats() const override { return stats_; }
  void parameters_changed() override {}

 private:
  BuildStats stats_;
};

class NullBackend : public Backend {
 public:
  DeviceId device() const override { return DeviceId::cpu(); }
  absl::StatusOr<std::unique_ptr<Executable>> build(std::shared_ptr<const CompiledModule>, const BuildOptions&) override {
    return std::unique_ptr<Executable>(new NullExecutable());
  }
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
  absl::StatusOr<CompiledGraph> cg = compile(*g, std::make_unique<NullBackend>());
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
  std::printf("graph %s (%zu arguments, %zu symbols) with %s: guard check + dispatch %.0f ns per call "
              "(median of 7 runs of 200000 calls; min %.0f, max %.0f)\n",
              cg->graph().name().c_str(), args.size(), cg->module().symbols.size(), binds.c_str(), per_call[3],
              per_call.front(), per_call.back());
  return 0;
}
