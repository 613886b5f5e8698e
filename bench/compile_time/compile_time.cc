// Compile time and peak memory against graph size (issue 21): chains of N elementwise ops and
// stacks of L Llama-style decoder layers (examples/models.h). Each workload is traced and
// compiled in a child process of its own, so that the peak RSS printed is its own. Prints per
// workload: graph nodes, the pipeline's time (graph passes and lowering, as compile() runs
// them), its slowest pass (by the pass manager's wall clock), with --device the device's
// kernel compile for one specialization (compile only, no device needed), and peak RSS; then
// the ratios the issue asks about. Times are the process's CPU time (wall time on a shared
// build machine measures its neighbours), the least of --repeat runs.
//   kiln_bench_compile_time [--chain 2000,8000,50000] [--layers 1,32] [--device none|cpu|cuda]
//                           [--repeat 3] [--verify]   (--verify: the verifier after every pass,
//                           as `kiln compile` runs it)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "compiler/compile.h"
#include "compiler/guards.h"
#include "compiler/pipeline.h"
#include "examples/models.h"
#include "ir/str.h"

using namespace kiln;

namespace {

struct Workload {
  std::string name;  // "chain 8000", "decoder x32"
  bool chain = false;
  int64_t size = 0;  // ops of a chain, layers of a stack
};

struct Row {
  int64_t nodes = 0;
  double pipeline_ms = 0, device_ms = 0;
  std::string slowest;
  long peak_rss_kb = 0;
};

// CPU time of this process (all threads), in milliseconds.
double cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// Runs in the child: traces and compiles `w`, returns "nodes pipeline_ms device_ms slowest".
std::string measure(const Workload& w, const std::string& device, bool verify) {
  Graph g = w.chain ? examples::trace_elementwise_chain(w.size)
                    : examples::trace_decoder_stack({}, static_cast<int>(w.size));
  int64_t nodes = static_cast<int64_t>(g.num_nodes());
  Bindings b = w.chain ? Bindings{{"B", 4}} : Bindings{{"B", 1}, {"T", 16}};
  PipelineOptions po;
  po.bindings = b;
  po.verify_passes = verify;
  std::unique_ptr<DeviceAdapter> dev;
  if (device != "none") {
    absl::StatusOr<std::unique_ptr<DeviceAdapter>> d = make_device_adapter(*parse_device(device), 0, true);
    if (!d.ok()) return str_cat("error ", d.status().message());
    dev = *std::move(d);
    po.fused_attention = dev->target().supports_attention;
  }
  double t0 = cpu_ms();
  absl::StatusOr<PipelineResult> r = compile_to_kernels(std::move(g), po);
  double pipeline_ms = cpu_ms() - t0;
  if (!r.ok()) return str_cat("error ", r.status().message());
  const PassStat* slowest = &r->summary.passes.front();
  for (const PassStat& p : r->summary.passes)
    if (p.ms > slowest->ms) slowest = &p;
  std::string slow = fmt::format("{}:{:.0f}ms", slowest->name, slowest->ms);
  double device_ms = 0;
  if (dev) {
    double t1 = cpu_ms();
    std::shared_ptr<CompiledModule> m = CompiledModule::make(std::move(r->state), std::move(r->kernels));
    absl::StatusOr<std::unique_ptr<Executor>> exe =
        specialize(m, *dev, GuardSet::for_bindings(b, true).baked(), Mode::Default);
    if (!exe.ok()) return str_cat("error ", exe.status().message());
    device_ms = cpu_ms() - t1;
  }
  return fmt::format("{} {:.3f} {:.3f} {}", nodes, pipeline_ms, device_ms, slow);
}

// Forks a child that measures `w`; its peak RSS comes from wait4.
Row run_child(const Workload& w, const std::string& device, bool verify) {
  int fds[2];
  if (pipe(fds) != 0) std::exit(1);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string line = measure(w, device, verify);
    ssize_t n = write(fds[1], line.data(), line.size());
    _exit(n == static_cast<ssize_t>(line.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string line;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) line.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  Row row;
  row.peak_rss_kb = ru.ru_maxrss;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || line.rfind("error", 0) == 0) {
    std::fprintf(stderr, "%s: %s\n", w.name.c_str(),
                 line.empty() ? str_cat("the child died (status ", status, ")").c_str() : line.c_str());
    std::exit(1);
  }
  char slow[128] = {};
  std::sscanf(line.c_str(), "%ld %lf %lf %127s", &row.nodes, &row.pipeline_ms, &row.device_ms, slow);
  row.slowest = slow;
  return row;
}

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    out.push_back(std::strtoll(p, &end, 10));
    if (end == p || out.back() <= 0) {
      std::fprintf(stderr, "not a list of positive numbers: %s\n", s);
      std::exit(2);
    }
    p = *end == ',' ? end + 1 : end;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> chains{2000, 8000, 50000}, layers{1, 32};
  std::string device = "none";
  bool verify = false;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--chain" && i + 1 < argc) chains = parse_list(argv[++i]);
    else if (a == "--layers" && i + 1 < argc) layers = parse_list(argv[++i]);
    else if (a == "--device" && i + 1 < argc) device = argv[++i];
    else if (a == "--repeat" && i + 1 < argc) repeat = static_cast<int>(parse_list(argv[++i]).at(0));
    else if (a == "--verify") verify = true;
    else {
      std::fprintf(stderr, "usage: %s [--chain N,..] [--layers L,..] [--device none|cpu|cuda] [--repeat N] [--verify]\n",
                   argv[0]);
      return 2;
    }
  }
  if (device != "none" && !parse_device(device)) {
    std::fprintf(stderr, "unknown device %s\n", device.c_str());
    return 2;
  }
  std::vector<Workload> ws;
  for (int64_t n : chains) ws.push_back({str_cat("chain ", n), true, n});
  for (int64_t l : layers) ws.push_back({str_cat("decoder x", l), false, l});
  std::printf("%-14s %8s %12s  %-26s %12s %10s\n", "workload", "nodes", "pipeline ms", "slowest pass (wall)",
              device == "none" ? "" : (device + " ms").c_str(), "peak RSS");
  std::map<std::string, Row> rows;
  for (const Workload& w : ws) {
    Row r = run_child(w, device, verify);
    for (int i = 1; i < repeat; ++i) {
      Row again = run_child(w, device, verify);
      if (again.pipeline_ms < r.pipeline_ms) std::swap(again.slowest, r.slowest);
      r.pipeline_ms = std::min(r.pipeline_ms, again.pipeline_ms);
      r.device_ms = std::min(r.device_ms, again.device_ms);
      r.peak_rss_kb = std::max(r.peak_rss_kb, again.peak_rss_kb);
    }
    rows[w.name] = r;
    std::printf("%-14s %8ld %12.1f  %-26s %12s %7.1f MB\n", w.name.c_str(), r.nodes, r.pipeline_ms, r.slowest.c_str(),
                device == "none" ? "" : fmt::format("{:.1f}", r.device_ms).c_str(), r.peak_rss_kb / 1024.0);
    std::fflush(stdout);
  }
  // The targets: 4x the ops within 5x the time; 32 layers within 40x one layer.
  auto ratio = [&](const std::string& a, const std::string& b) {
    if (!rows.contains(a) || !rows.contains(b)) return;
    const Row &x = rows[a], &y = rows[b];
    std::printf("%s / %s: nodes %.1fx, pipeline %.1fx%s, peak RSS %.1fx\n", a.c_str(), b.c_str(),
                static_cast<double>(x.nodes) / y.nodes, x.pipeline_ms / y.pipeline_ms,
                device == "none" ? "" : fmt::format(", {} {:.1f}x", device, x.device_ms / y.device_ms).c_str(),
                static_cast<double>(x.peak_rss_kb) / y.peak_rss_kb);
  };
  ratio("chain 8000", "chain 2000");
  ratio("chain 50000", "chain 2000");
  ratio("decoder x32", "decoder x1");
  return 0;
}
