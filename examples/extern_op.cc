// An extern op (ir/extern_op.h): an MLP block whose RMSNorm is the user's own C++ function,
// registered with its shape rule, called from a traced graph, compiled on the CPU. Prints the
// traced IR, the CPU program (the call between kiln's GEMMs, its result an arena buffer) and
// the compiled result against the reference evaluator at T = 5.
#include <cmath>
#include <cstdio>
#include <string>

#include "compiler/compile.h"
#include "frontends/trace/trace.h"
#include "ir/compare.h"
#include "ir/extern_op.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace {

// x [..., D] f32 and weight [D] f32 -> x's type. Errors say which operand is wrong.
absl::StatusOr<std::vector<kiln::TensorType>> rms_infer(std::span<const kiln::TensorType> in) {
  if (in.size() != 2 || in[0].dtype != kiln::f32 || in[0].shape.empty() || in[1].dtype != kiln::f32 ||
      in[1].shape.size() != 1 || !(in[1].shape[0] == in[0].shape.back()))
    return kiln::invalid_argument("expects x f32[..., D] and weight f32[D]");
  return std::vector<kiln::TensorType>{in[0]};
}

// Dense row-major host memory in, dense results out (never aliasing an operand).
absl::Status rms_cpu(std::span<const kiln::ExternTensor> in, std::span<const kiln::ExternTensor> out) {
  const float *x = static_cast<const float*>(in[0].data), *w = static_cast<const float*>(in[1].data);
  float* y = static_cast<float*>(out[0].data);
  const int64_t d = in[0].shape.back(), rows = in[0].numel() / d;
  for (int64_t r = 0; r < rows; ++r) {
    float ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[r * d + j] * x[r * d + j];
    float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + 1e-6f);
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = x[r * d + j] * inv * w[j];
  }
  return absl::OkStatus();
}

int fail(const absl::Status& s) {
  std::fprintf(stderr, "extern_op: %s\n", kiln::status_message(s).c_str());
  return 1;
}

}  // namespace

int main() try {
  namespace t = kiln::trace;
  if (absl::Status s = kiln::register_extern_op({.name = "my.rms_norm", .infer = rms_infer, .cpu = rms_cpu}); !s.ok())
    return fail(s);

  t::Tracer tr("block");
  t::Tensor x = tr.input("x", kiln::f32, {"T", 256});
  t::Tensor norm = tr.param("norm", kiln::f32, {256});
  t::Tensor w1 = tr.param("w1", kiln::f32, {512, 256});
  t::Tensor w2 = tr.param("w2", kiln::f32, {256, 512});
  t::Tensor h = tr.name(t::extern_call("my.rms_norm", {x, norm})[0], "h");
  tr.output(x + t::linear(t::silu(t::linear(h, w1)), w2), "y");
  kiln::Graph g = tr.finish();
  std::fputs(kiln::print_graph(g).c_str(), stdout);

  absl::StatusOr<kiln::CompiledGraph> cg = kiln::compile(g, {.device = kiln::Device::Cpu});
  if (!cg.ok()) return fail(cg.status());
  kiln::TensorMap args = kiln::random_args(g, {{"T", 5}}, /*seed=*/0);
  kiln::scale_weights_by_fan_in(g, args);
  std::vector<kiln::Tensor> in;
  for (const kiln::Value* a : cg->module().args) in.push_back(*kiln::Tensor::from_host(args.at(a->name())));
  absl::StatusOr<std::vector<kiln::Tensor>> out = (*cg)(in);
  if (!out.ok()) return fail(out.status());
  std::printf("\n%s", cg->specialization_info().back().program->to_string().c_str());

  absl::StatusOr<std::vector<kiln::HostTensor>> want = kiln::evaluate(g, args);  // runs rms_cpu too
  if (!want.ok()) return fail(want.status());
  kiln::Comparison c = kiln::compare_tensors((*want)[0], *(*out)[0].to_host(), kiln::default_tolerance(kiln::f32));
  std::printf("\nT=5 against the reference evaluator: %s\n", c.ok ? "match" : c.message.c_str());
  return c.ok ? 0 : 1;
} catch (const kiln::trace::TraceError& e) {
  std::fprintf(stderr, "extern_op: %s\n", e.what());
  return 1;
}
