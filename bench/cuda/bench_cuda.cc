// Times kiln's CUDA backend on the workloads of workloads.py (see run.sh):
//   kiln_bench_cuda MANIFEST --compile-only      compile + build every workload, report ms
//   kiln_bench_cuda MANIFEST [--reps N]          time every workload in every mode
// Results go to stdout as one JSON object per line ("KILN_RESULT {...}"), then a table.
// GPU time is measured with CUDA events around back-to-back calls and around single
// synchronized calls (time_gpu); the host-overhead workload is timed on the host clock over
// many back-to-back calls.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/cuda_driver.h"

using namespace kiln;
using json = nlohmann::json;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "kiln_bench_cuda: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T check(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) die(str_cat(what, ": ", status_message(v.status())));
  return *std::move(v);
}

void check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) die(str_cat(what, ": ", status_message(s)));
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// GPU time per call of `call`, two ways, each the median over repeats timed with CUDA
// events: back to back (K calls between two events, K about 1 ms of work: the device's time
// per call when the host keeps ahead, as in a serving loop, and the number the tables give)
// and synchronized (one call between two events, then a wait: adds the time from the event
// to the call's first launch, which the host spends in the call).
struct GpuTime {
  double us = 0, sync_us = 0;
};

template <typename F>
GpuTime time_gpu(const cuda::Context& ctx, F call, int reps) {
  cuda::Event e0 = check(cuda::Event::create(ctx), "event"), e1 = check(cuda::Event::create(ctx), "event");
  auto timed = [&](int calls) {
    check(e0.record(nullptr), "record");
    for (int i = 0; i < calls; ++i) call();
    check(e1.record(nullptr), "record");
    check(e1.synchronize(), "sync");
    return check(cuda::Event::elapsed_ms(e0, e1), "elapsed") * 1e3 / calls;
  };
  std::vector<double> one, batch;
  for (int i = 0; i < reps; ++i) one.push_back(timed(1));
  GpuTime t{.sync_us = median(one)};
  const int k = std::clamp(static_cast<int>(1000 / t.sync_us), 3, 100);
  for (int i = 0; i < std::max(5, reps / 3); ++i) batch.push_back(timed(k));
  t.us = median(batch);
  return t;
}

// Device-to-device copy bandwidth (bytes read + written) of copies of `bytes`, back to back.
// A copy of 64 MiB reaches about 92% of the rate of a 1 GiB copy (the fill and drain of the
// transfer weigh more), so each memory-bound workload is also compared with a copy of its
// own size.
double copy_gbps(const cuda::Context& ctx, int64_t bytes = int64_t(1) << 30) {
  cuda::DeviceBuffer a = check(cuda::DeviceBuffer::allocate(ctx, bytes), "alloc");
  cuda::DeviceBuffer b = check(cuda::DeviceBuffer::allocate(ctx, bytes), "alloc");
  check(a.fill_bytes(7), "fill");
  for (int i = 0; i < 2; ++i) check(b.copy_from(a, bytes, nullptr), "copy");
  GpuTime t = time_gpu(ctx, [&] { check(b.copy_from(a, bytes, nullptr), "copy"); }, 10);
  return 2.0 * double(bytes) / (t.us * 1e-6) / 1e9;
}

// The arguments of a call on the GPU; in reduce-overhead mode the inputs are written into
// the CUDA graph's static slots, as a server fills them, so calls copy nothing.
std::vector<Tensor> device_args(CompiledGraph& cg, const Graph& g, const Bindings& b, Mode mode) {
  TensorMap host = random_args(g, b, 2026);
  scale_weights_by_fan_in(g, host);
  StaticSlots slots;
  if (mode == Mode::ReduceOverhead) slots = check(cg.static_slots(b), "static slots");
  std::vector<Tensor> args;
  for (size_t i = 0; i < cg.module().args.size(); ++i) {
    const HostTensor& h = host.at(cg.module().args[i]->name());
    if (slots.inputs.empty() || slots.inputs[i].data() == nullptr) {
      args.push_back(check(Tensor::from_host(h, DeviceId::cuda(0)), "upload"));
    } else {
      check(slots.inputs[i].copy_from_host(h), "upload");
      args.push_back(slots.inputs[i]);
    }
  }
  return args;
}

struct Result {
  std::string name, mode;
  double us = 0, sync_us = 0, gbps = 0, tflops = 0, compile_ms = 0;
  double burst_us = 0, device_us = 0;  // the overhead workload's
  int launches = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: kiln_bench_cuda MANIFEST [--compile-only] [--reps N] [--only NAME] [--no-fused-attention]");
  bool compile_only = false, fused_attention = true;
  int reps = 30;
  std::string only;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--compile-only") compile_only = true;
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--no-fused-attention") fused_attention = false;  // attention as GEMM -> softmax -> GEMM
    else die(str_cat("unknown argument ", a));
  }
  std::ifstream f(argv[1]);
  json manifest = json::parse(f, nullptr, false);
  if (manifest.is_discarded()) die(str_cat("cannot read ", argv[1]));
  cuda::Context* ctx = check(cuda::Context::primary(0), "CUDA");
  const cuda::DeviceProperties& dev = ctx->device().properties();
  double copy = compile_only ? 0 : copy_gbps(*ctx);
  if (!compile_only) std::printf("KILN_COPY {\"device\": \"%s\", \"copy_gbps\": %.1f}\n", dev.name.c_str(), copy);

  std::vector<Result> results;
  for (const json& w : manifest) {
    std::string name = w["name"];
    if (!only.empty() && name != only) continue;
    Graph g = check(parse_graph_file(w["file"]), name);
    Bindings b;
    for (auto& [k, v] : w["bind"].items()) b[k] = v.get<int64_t>();
    std::string kind = w["kind"];
    double same_size_copy = compile_only || kind != "memory"
                                ? 0
                                : copy_gbps(*ctx, static_cast<int64_t>(w["bytes"].get<double>() / 2) / 256 * 256);
    for (Mode mode : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune}) {
      Result r{name, std::string(mode_name(mode))};
      auto t0 = std::chrono::steady_clock::now();
      CompiledGraph cg =
          check(compile(g, {.mode = mode, .device = Device::Cuda, .fused_attention = fused_attention}), name);
      check(cg.warm_up(b), name);
      r.compile_ms = ms_since(t0);
      if (compile_only) {
        CompileStats s = cg.stats();
        std::printf("KILN_COMPILE %s\n", json{{"name", name}, {"mode", r.mode}, {"compile_ms", r.compile_ms},
                                               {"nvrtc_ms", s.compile_ms}, {"disk_hits", s.cache_disk_hits},
                                               {"misses", s.cache_misses}, {"kernels", s.kernels}}
                                             .dump()
                                             .c_str());
        break;  // compile time is the default mode's
      }
      std::vector<Tensor> args = device_args(cg, g, b, mode);
      std::vector<Tensor> outs(g.outputs().size());
      if (mode == Mode::ReduceOverhead) outs = check(cg.static_slots(b), name).outputs;
      auto call = [&] { check(cg.run(args, outs), name); };
      for (int i = 0; i < 3; ++i) call();  // the first call tunes / captures
      check(check(cuda::driver(), "driver")->cuCtxSynchronize() == CUDA_SUCCESS ? absl::OkStatus()
                                                                                 : absl::InternalError("sync"),
            name);
      if (kind == "overhead") {
        const int n = 2000;
        auto h0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i) call();
        r.us = ms_since(h0) * 1e3 / n;
        check(check(cuda::driver(), "driver")->cuCtxSynchronize() == CUDA_SUCCESS ? absl::OkStatus()
                                                                                   : absl::InternalError("sync"),
              name);
        // Host time per call in bursts short enough that the launch queue never fills (the
        // host's own cost), and the device's time per call back to back: `us` is the larger
        // of the two when 2000 calls fill the queue.
        std::vector<double> bursts;
        for (int rep = 0; rep < 50; ++rep) {
          auto b0 = std::chrono::steady_clock::now();
          for (int i = 0; i < 64; ++i) call();
          bursts.push_back(ms_since(b0) * 1e3 / 64);
          check(check(cuda::driver(), "driver")->cuCtxSynchronize() == CUDA_SUCCESS ? absl::OkStatus()
                                                                                     : absl::InternalError("sync"),
                name);
        }
        r.burst_us = median(bursts);
        r.device_us = time_gpu(*ctx, call, reps).us;
      } else {
        GpuTime t = time_gpu(*ctx, call, reps);
        r.us = t.us, r.sync_us = t.sync_us;
      }
      r.gbps = w["bytes"].get<double>() / (r.us * 1e-6) / 1e9;
      r.tflops = w["flops"].get<double>() / (r.us * 1e-6) / 1e12;
      r.launches = cg.stats().launches_per_call;
      std::printf("KILN_RESULT %s\n", json{{"name", r.name}, {"mode", r.mode}, {"us", r.us}, {"sync_us", r.sync_us}, {"burst_us", r.burst_us}, {"device_us", r.device_us}, {"gbps", r.gbps},
                                            {"pct_copy", 100.0 * r.gbps / copy},
                                            {"pct_same_size_copy", same_size_copy > 0 ? 100.0 * r.gbps / same_size_copy : 0.0},
                                            {"tflops", r.tflops},
                                            {"launches", r.launches}, {"compile_ms", r.compile_ms},
                                            {"kind", kind}}
                                          .dump()
                                          .c_str());
      std::fflush(stdout);
      results.push_back(r);
    }
  }
  if (!compile_only) {
    std::printf("\n%-30s %-16s %10s %10s %9s %6s %8s %5s\n", "workload", "mode", "us", "sync us", "GB/s", "%copy",
                "TFLOP/s", "launch");
    for (const Result& r : results)
      std::printf("%-30s %-16s %10.1f %10.1f %9.0f %6.1f %8.1f %5d\n", r.name.c_str(), r.mode.c_str(), r.us, r.sync_us,
                  r.gbps, 100.0 * r.gbps / copy, r.tflops, r.launches);
    std::printf("device %s, copy bandwidth %.0f GB/s\n", dev.name.c_str(), copy);
  }
  return 0;
}
