// Extern ops (ir/extern_op.h) on CUDA: an RMSNorm whose .cuda launches a kernel the test
// compiles with NVRTC and loads through kiln's driver helpers, on the stream kiln runs the
// call on, inside an MLP block; in default mode and in reduce-overhead (captured into the
// CUDA graph and replayed on new inputs), against the built-in rms_norm on the reference.
// Without a GPU the kernel still NVRTC-compiles for sm_90 and the [gpu] test skips.
#include <catch2/catch.hpp>

#include <map>
#include <mutex>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/extern_op.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"
#include "test/common/catch_helpers.h"
#include "test/common/extern_rms.h"
#include "test/common/gpu_test.h"

using namespace kiln;
using kiln::testing::parse_or_fail;

namespace {

// One block of 128 threads per row of d elements: the sum of squares by warp shuffles, then
// out = x / sqrt(mean + eps) * w, as extern_rms_host computes it.
constexpr const char* kRmsSource = R"(#include <cuda_bf16.h>
extern "C" __global__ void test_rms_norm(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int d,
                                         float eps) {
  __shared__ float part[4];
  const long long row = blockIdx.x;
  float ss = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float v = __bfloat162float(x[row * d + j]);
    ss += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  const float inv = rsqrtf((part[0] + part[1] + part[2] + part[3]) / d + eps);
  for (int j = threadIdx.x; j < d; j += blockDim.x)
    y[row * d + j] = __float2bfloat16(__bfloat162float(x[row * d + j]) * inv * __bfloat162float(w[j]));
}
)";

cuda::NvrtcProgram rms_program(std::string arch) { return {"test_rms_norm", kRmsSource, std::move(arch), {}}; }

// Registers test.cuda_rms_norm once: its kernel loaded before any call (nothing is compiled
// or allocated during a call, which CUDA graph capture forbids), the host version as the
// reference's.
void register_cuda_rms() {
  static std::once_flag once;
  std::call_once(once, [] {
    absl::StatusOr<cuda::NvrtcOutput> out = cuda::nvrtc_compile(rms_program(cuda::default_arch()));
    testing::require_ok(out.status());
    absl::StatusOr<cuda::Context*> ctx = cuda::Context::primary(0);
    testing::require_ok(ctx.status());
    absl::StatusOr<cuda::Module> loaded = cuda::Module::load(**ctx, out->cubin);
    testing::require_ok(loaded.status());
    auto module = std::make_shared<cuda::Module>(*std::move(loaded));
    absl::StatusOr<CUfunction> fn = module->function("test_rms_norm");
    testing::require_ok(fn.status());
    auto launch = [module, fn = *fn](std::span<const ExternTensor> in, std::span<const ExternTensor> res,
                                     void* stream) -> absl::Status {
      if (in[0].dtype != DType::bf16) return invalid_argument("the CUDA kernel is bf16 only");
      int d = static_cast<int>(in[0].shape.back());
      int64_t rows = d == 0 ? 0 : in[0].numel() / d;
      if (rows == 0) return absl::OkStatus();
      float eps = static_cast<float>(testing::kExternRmsEps);
      void* x = in[0].data;
      void* w = in[1].data;
      void* y = res[0].data;
      void* args[] = {&x, &w, &y, &d, &eps};
      cuda::LaunchDims dims;
      dims.grid[0] = static_cast<unsigned>(rows);
      dims.block[0] = 128;
      return cuda::launch(fn, dims, args, static_cast<CUstream>(stream));
    };
    testing::require_ok(register_extern_op({.name = "test.cuda_rms_norm",
                                            .infer = testing::extern_rms_infer,
                                            .cuda = launch,
                                            .reference = testing::extern_rms_host}));
  });
}

constexpr const char* kBlock =
    R"(graph block(%x: bf16[B, T, 64], %nw: bf16[64] param, %w1: bf16[128, 64] param, %w2: bf16[64, 128] param) {
  %h = NORM
  %a = linear(%h, %w1)
  %s = silu(%a)
  %b = linear(%s, %w2)
  %y = add(%x, %b)
  return %y
})";

std::string block_text(const std::string& norm) {
  std::string t = kBlock;
  t.replace(t.find("NORM"), 4, norm);
  return t;
}

}  // namespace

TEST_CASE("extern: the test's CUDA RMSNorm kernel compiles with NVRTC for sm_90", "[cuda][nvrtc][extern]") {
  absl::StatusOr<cuda::NvrtcOutput> out = cuda::nvrtc_compile(rms_program("sm_90"));
  if (!out.ok()) FAIL(status_message(out.status()));
  CHECK_FALSE(out->cubin.empty());
}

TEST_CASE("cuda: an extern op's kernel runs on kiln's stream, launched and captured, and matches the reference",
          "[cuda][gpu][extern]") {
  KILN_REQUIRE_GPU();
  register_cuda_rms();
  Graph builtin = parse_or_fail(block_text("rms_norm(%x, %nw, axes=[-1], eps=1e-06)"));
  Graph ext = parse_or_fail(block_text("extern_call(%x, %nw, name=\"test.cuda_rms_norm\") : bf16[B, T, 64]"));
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    INFO(mode_name(mode));
    absl::StatusOr<CompiledGraph> cg = compile(ext, {.mode = mode, .device = Device::Cuda});
    if (!cg.ok()) FAIL(status_message(cg.status()));
    // The parameters stay where they are (a replay reads them in place; new addresses would
    // capture again); x is new on every call.
    TensorMap weights = random_args(builtin, {{"B", 1}, {"T", 1}}, 99);
    scale_weights_by_fan_in(builtin, weights);
    weights.erase("x");
    std::map<std::string, Tensor> on_device;
    for (const Value* v : cg->module().args)
      if (v->is_param()) on_device.emplace(v->name(), *Tensor::from_host(weights.at(v->name()), DeviceId::cuda(0)));
    uint64_t seed = 0;
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {2, 7}, {3, 130}}) {
      for (int call = 0; call < 3; ++call) {  // reduce-overhead: a capture, then replays on new inputs
        INFO("B = " << b << ", T = " << t << ", call " << call);
        TensorMap host = random_args(builtin, {{"B", b}, {"T", t}}, ++seed);
        for (const auto& [name, w] : weights) host.insert_or_assign(name, w);
        absl::StatusOr<std::vector<HostTensor>> want = evaluate(builtin, host);
        REQUIRE(want.ok());
        std::vector<Tensor> args;
        for (const Value* v : cg->module().args)
          args.push_back(v->is_param() ? on_device.at(v->name())
                                       : *Tensor::from_host(host.at(v->name()), DeviceId::cuda(0)));
        absl::StatusOr<std::vector<Tensor>> got = (*cg)(args);
        if (!got.ok()) FAIL(status_message(got.status()));
        Comparison c = compare_tensors((*want)[0], *(*got)[0].to_host(), default_tolerance(DType::bf16));
        INFO(c.message);
        CHECK(c.ok);
      }
    }
    CompiledGraph::SpecializationInfo info = cg->specialization_info().back();
    CHECK_THAT(info.program->to_string(), Catch::Contains("extern test.cuda_rms_norm(b0, b1) -> b2 on cuda"));
    CHECK(std::string(info.strategy) == (mode == Mode::ReduceOverhead ? "capture and replay" : "launch directly"));
  }
}
