#include <algorithm>
#include <cmath>
#include <random>

#include "ir/dtype.h"
#include "runtime/cuda_driver.h"
#include "runtime/nvrtc.h"
#include "test/common/gpu_test.h"

using namespace kiln;
using namespace kiln::cuda;

TEST_CASE("driver: no device is reported cleanly, a device is described", "[runtime][cuda]") {
  auto n = Device::count();
  if (!n.ok()) {
    std::string msg = status_message(n.status());
    INFO(msg);
    CHECK(msg.rfind("no CUDA device: ", 0) == 0);
    CHECK(!device_available());
    // Every entry point gives the same error instead of crashing.
    CHECK(status_message(Context::primary(0).status()) == msg);
    CHECK(status_message(Device::get(0).status()) == msg);
    CHECK(default_arch() == "sm_90");
    return;
  }
  REQUIRE(*n > 0);
  auto dev = Device::get(0);
  REQUIRE(dev.ok());
  const DeviceProperties& p = dev->properties();
  CHECK(!p.name.empty());
  CHECK(p.sm_arch >= 70);
  CHECK(p.sm_count > 0);
  CHECK(p.total_memory > (int64_t(1) << 30));
  CHECK(default_arch() == dev->arch_name());
  CHECK(!Device::get(*n).ok());  // one past the last device
  test::gpu_summary().push_back(
      {"device", str_cat(p.name, ", ", dev->arch_name(), ", ", p.sm_count, " SMs, ",
                         p.total_memory >> 20, " MiB")});
}

TEST_CASE("driver: an NVRTC bf16 kernel launched on the GPU matches the host", "[runtime][cuda][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  std::string arch = (*ctx)->device().arch_name();
  NvrtcProgram p{"axpb_bf16",
                 "#include <cuda_bf16.h>\n"
                 "extern \"C\" __global__ void axpb_bf16(const __nv_bfloat16* x, __nv_bfloat16* y,\n"
                 "                                       float a, float b, long n) {\n"
                 "  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;\n"
                 "       i += (long)gridDim.x * blockDim.x)\n"
                 "    y[i] = __float2bfloat16(__bfloat162float(x[i]) * a + b);\n"
                 "}\n",
                 arch,
                 {}};
  auto compiled = nvrtc_compile(p);
  REQUIRE(compiled.ok());
  auto module = Module::load(**ctx, compiled->cubin);
  REQUIRE(module.ok());
  auto fn = module->function("axpb_bf16");
  REQUIRE(fn.ok());
  CHECK(!module->function("missing").ok());
  std::mt19937_64 rng(7);
  int64_t worst_mismatches = 0;
  for (long n : {1L, 1001L, 3000017L}) {
    std::uniform_real_distribution<float> u(-4, 4);
    std::vector<uint16_t> x(n), y(n, 0xffff);  // y poisoned with NaN
    for (auto& v : x) v = float_to_bf16_bits(u(rng));
    float a = u(rng), b = u(rng);
    auto dx = DeviceBuffer::allocate(**ctx, n * 2), dy = DeviceBuffer::allocate(**ctx, n * 2);
    REQUIRE(dx.ok());
    REQUIRE(dy.ok());
    REQUIRE(dx->copy_from_host(x.data(), n * 2).ok());
    REQUIRE(dy->fill_bytes(0xff).ok());
    CUdeviceptr px = dx->ptr(), py = dy->ptr();
    void* args[] = {&px, &py, &a, &b, &n};
    LaunchDims dims;
    dims.block[0] = 256;
    dims.grid[0] = unsigned(std::min<long>((n + 255) / 256, 4 * 132));
    REQUIRE(launch(*fn, dims, args, nullptr).ok());
    REQUIRE(dy->copy_to_host(y.data(), n * 2).ok());
    int64_t mismatches = 0;
    for (long i = 0; i < n; ++i) {
      // fmaf: the device contracts x*a+b into one fused multiply-add.
      uint16_t want = float_to_bf16_bits(std::fma(bf16_bits_to_float(x[i]), a, b));
      uint16_t want_unfused = float_to_bf16_bits(bf16_bits_to_float(x[i]) * a + b);
      if (y[i] != want && y[i] != want_unfused) ++mismatches;
    }
    INFO("n = " << n);
    CHECK(mismatches == 0);
    worst_mismatches = std::max(worst_mismatches, mismatches);
  }
  test::gpu_summary().push_back(
      {"NVRTC bf16 kernel (n=1,1001,3000017)",
       str_cat(worst_mismatches == 0 ? "matches host bit-exactly" : "MISMATCH", ", compile ",
               fmt::format("{:.0f}", compiled->compile_ms), " ms for ", arch)});
}

TEST_CASE("driver: device buffers copy both ways, synchronously and on a stream", "[runtime][cuda][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  auto stream = Stream::create(**ctx);
  REQUIRE(stream.ok());
  std::mt19937_64 rng(11);
  for (int64_t bytes : {int64_t(1), int64_t(4097), int64_t(33) << 20}) {
    std::vector<uint8_t> src(bytes), back(bytes, 0);
    for (auto& b : src) b = uint8_t(rng());
    auto a = DeviceBuffer::allocate(**ctx, bytes), b = DeviceBuffer::allocate(**ctx, bytes);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(a->copy_from_host(src.data(), bytes, stream->handle()).ok());
    REQUIRE(b->copy_from(*a, bytes, stream->handle()).ok());
    REQUIRE(b->copy_to_host(back.data(), bytes, stream->handle()).ok());
    REQUIRE(stream->synchronize().ok());
    CHECK(back == src);
    REQUIRE(a->fill_bytes(0xab).ok());
    REQUIRE(a->copy_to_host(back.data(), bytes).ok());
    CHECK(std::all_of(back.begin(), back.end(), [](uint8_t v) { return v == 0xab; }));
    CHECK(!a->copy_to_host(back.data(), bytes + 1).ok());  // larger than the buffer
  }
  auto empty = DeviceBuffer::allocate(**ctx, 0);
  REQUIRE(empty.ok());
  CHECK(empty->ptr() == 0);
  auto huge = DeviceBuffer::allocate(**ctx, int64_t(1) << 50);
  REQUIRE(!huge.ok());
  CHECK(status_message(huge.status()).find("cuMemAlloc of 1125899906842624 bytes: CUDA_ERROR_") == 0);
  test::gpu_summary().push_back({"DeviceBuffer copies (1 B, 4097 B, 33 MiB)", "HtoD/DtoD/DtoH/memset ok"});
}

TEST_CASE("driver: events time a 1 GiB device-to-device copy", "[runtime][cuda][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  auto stream = Stream::create(**ctx);
  REQUIRE(stream.ok());
  const int64_t bytes = int64_t(1) << 30;
  auto a = DeviceBuffer::allocate(**ctx, bytes), b = DeviceBuffer::allocate(**ctx, bytes);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(a->fill_bytes(0x3c).ok());
  auto start = Event::create(**ctx), end = Event::create(**ctx);
  REQUIRE(start.ok());
  REQUIRE(end.ok());
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    REQUIRE(start->record(stream->handle()).ok());
    REQUIRE(b->copy_from(*a, bytes, stream->handle()).ok());
    REQUIRE(end->record(stream->handle()).ok());
    REQUIRE(end->synchronize().ok());
    auto t = Event::elapsed_ms(*start, *end);
    REQUIRE(t.ok());
    if (i >= 2) ms.push_back(*t);  // the first two are warm-up
  }
  std::sort(ms.begin(), ms.end());
  float median = ms[ms.size() / 2];
  double gbps = 2.0 * double(bytes) / (median * 1e-3) / 1e9;
  std::vector<uint8_t> tail(4096);
  REQUIRE(b->copy_to_host(tail.data(), int64_t(tail.size())).ok());
  CHECK(std::all_of(tail.begin(), tail.end(), [](uint8_t v) { return v == 0x3c; }));
  CHECK(gbps > 100);
  test::gpu_summary().push_back(
      {"1 GiB DtoD copy, median of 10 (events)",
       fmt::format("{:.3f} ms, {:.0f} GB/s (read+written)", median, gbps)});
}

TEST_CASE("driver: a stream captured into a CUDA graph replays", "[runtime][cuda][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  const DriverApi& api = **driver();
  auto stream = Stream::create(**ctx);
  REQUIRE(stream.ok());
  const int64_t bytes = 1 << 20;
  auto a = DeviceBuffer::allocate(**ctx, bytes), b = DeviceBuffer::allocate(**ctx, bytes);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(check(api.cuStreamBeginCapture(stream->handle(), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                "begin capture").ok());
  REQUIRE(b->copy_from(*a, bytes, stream->handle()).ok());
  CUgraph graph = nullptr;
  REQUIRE(check(api.cuStreamEndCapture(stream->handle(), &graph), "end capture").ok());
  CUgraphExec exec = nullptr;
  REQUIRE(check(api.cuGraphInstantiate(&exec, graph, 0), "instantiate").ok());
  std::vector<uint8_t> src(bytes), back(bytes);
  std::mt19937_64 rng(3);
  for (auto& v : src) v = uint8_t(rng());
  REQUIRE(a->copy_from_host(src.data(), bytes).ok());  // after capture: the replay copies it
  REQUIRE(check(api.cuGraphLaunch(exec, stream->handle()), "graph launch").ok());
  REQUIRE(stream->synchronize().ok());
  REQUIRE(b->copy_to_host(back.data(), bytes).ok());
  CHECK(std::mismatch(back.begin(), back.end(), src.begin()).first - back.begin() == bytes);  // the first wrong byte
  api.cuGraphExecDestroy(exec);
  api.cuGraphDestroy(graph);
}
