// Uses an installed kiln through its public headers only (<prefix>/include/kiln/...): traces
// a small MLP, compiles it for the CPU and checks three batch sizes against the reference
// evaluator. `consumer cuda-compile` instead builds the CUDA kernels without a GPU
// (compile_only), which is how a missing NVRTC shows up on a machine without CUDA.
#include <cstdio>
#include <cstring>

#include "kiln/compiler/compile.h"
#include "kiln/frontends/trace/trace.h"
#include "kiln/ir/compare.h"
#include "kiln/ir/reference.h"
#include "kiln/version.h"

namespace kt = kiln::trace;

kiln::Graph trace_mlp() {
  kt::Tracer t("consumer_mlp");
  kt::Tensor x = t.input("x", kiln::f32, {"B", 64});
  kt::Tensor w1 = t.param("w1", kiln::f32, {96, 64});
  kt::Tensor w2 = t.param("w2", kiln::f32, {64, 96});
  t.output(kt::linear(kt::silu(kt::linear(x, w1)), w2), "y");
  return t.finish();
}

int compile_cuda(const kiln::Graph& g) {
  auto cg = kiln::compile(g, {.device = kiln::Device::Cuda, .compile_only = true});
  absl::Status st = cg.ok() ? cg->warm_up({{"B", 4}}) : cg.status();
  std::printf("cuda compile: %s\n", st.ok() ? "ok" : std::string(st.message()).c_str());
  return st.ok() ? 0 : 1;
}

int main(int argc, char** argv) try {
  std::printf("kiln %s (headers %s)\n", kiln::library_version(), KILN_VERSION_STRING);
  kiln::Graph g = trace_mlp();
  if (argc > 1 && std::strcmp(argv[1], "cuda-compile") == 0) return compile_cuda(g);

  auto cg = kiln::compile(g, {.device = kiln::Device::Cpu});
  if (!cg.ok()) {
    std::fprintf(stderr, "consumer: %s\n", std::string(cg.status().message()).c_str());
    return 1;
  }
  // The weights stay where they are across calls, as a server's do: kiln keeps what it derives
  // from a parameter (packed copies) per address, and fresh weight tensors could reuse a freed
  // one's address (README: parameters_changed()). Each batch gets new inputs.
  const kiln::TensorMap weights = kiln::random_args(g, {{"B", 1}}, /*seed=*/7);
  for (int64_t batch : {1, 5, 33}) {
    kiln::TensorMap args = kiln::random_args(g, {{"B", batch}}, /*seed=*/uint64_t(batch));
    args.at("w1") = weights.at("w1");
    args.at("w2") = weights.at("w2");
    auto want = kiln::evaluate(g, args);
    auto got = kiln::run_host(*cg, args);
    if (!want.ok() || !got.ok()) {
      std::fprintf(stderr, "consumer: B=%lld: %s\n", (long long)batch,
                   std::string((want.ok() ? got.status() : want.status()).message()).c_str());
      return 1;
    }
    kiln::Comparison c = kiln::compare_tensors((*want)[0], (*got)[0], kiln::default_tolerance(kiln::DType::f32));
    std::printf("B=%lld: %s (max abs err %.3g)\n", (long long)batch, c.ok ? "matches the reference" : c.message.c_str(),
                c.max_abs_err);
    if (!c.ok) return 1;
  }
  return 0;
} catch (const kt::TraceError& e) {
  std::fprintf(stderr, "consumer: %s\n", e.what());
  return 1;
}
