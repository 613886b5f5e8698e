#include "runtime/nvrtc.h"

#include <nvrtc.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include "ir/log.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cuda_driver.h"
#include "runtime/dylib.h"

#ifndef KILN_CUDA_INCLUDE_DIR
#define KILN_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif

namespace kiln::cuda {
namespace {

// NVRTC is loaded on first use (dlopen), never linked: programs that do not compile CUDA
// kernels run where it is not installed.
#define KILN_NVRTC_FUNCTIONS(X)                                                              \
  X(nvrtcVersion) X(nvrtcGetErrorString) X(nvrtcCreateProgram) X(nvrtcDestroyProgram)       \
  X(nvrtcCompileProgram) X(nvrtcGetProgramLogSize) X(nvrtcGetProgramLog) X(nvrtcGetCUBINSize) \
  X(nvrtcGetCUBIN) X(nvrtcGetPTXSize) X(nvrtcGetPTX)

// The process-wide table, loaded once; every later call returns the same error.
KILN_LIBRARY_TABLE(NvrtcApi, KILN_NVRTC_FUNCTIONS, nvrtc_api, "libnvrtc.so.13", "KILN_NVRTC_LIBRARY",
                   "NVRTC (CUDA 13), which compiles kiln's CUDA kernels")

// Source lines the log points at: NVRTC writes "<name>.cu(N): error: ..." and sometimes
// "line N" in notes. Each cited line is quoted once, numbered, in ascending order.
std::string quote_cited_lines(const std::string& log, const std::string& source) {
  static const std::regex cited(R"(\.cu\((\d+)\)|\bline (\d+))");
  std::set<int> lines;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), cited); it != std::sregex_iterator();
       ++it) {
    const auto& m = *it;
    std::string digits = m[1].matched ? m[1].str() : m[2].str();
    int line = 0;
    if (std::from_chars(digits.data(), digits.data() + digits.size(), line).ec == std::errc()) lines.insert(line);
  }
  std::vector<std::string> source_lines;
  size_t start = 0;
  while (start <= source.size()) {
    size_t end = source.find('\n', start);
    if (end == std::string::npos) end = source.size();
    source_lines.push_back(source.substr(start, end - start));
    start = end + 1;
  }
  std::string out;
  for (int n : lines) {
    if (n < 1 || n > int(source_lines.size())) continue;
    out += fmt::format("{:>5} | {}\n", n, source_lines[n - 1]);
  }
  return out;
}

std::string program_log(const NvrtcApi& api, nvrtcProgram prog) {
  size_t size = 0;
  if (api.nvrtcGetProgramLogSize(prog, &size) != NVRTC_SUCCESS || size <= 1) return "";
  std::string log(size, '\0');
  if (api.nvrtcGetProgramLog(prog, log.data()) != NVRTC_SUCCESS) return "";
  log.resize(size - 1);  // drop the terminating NUL
  while (!log.empty() && (log.back() == '\n' || log.back() == ' ')) log.pop_back();
  return log;
}

// Copies out one NVRTC result buffer (CUBIN or PTX) through its size/get pair.
template <typename SizeFn, typename GetFn>
absl::StatusOr<std::string> fetch(const NvrtcApi& api, nvrtcProgram prog, SizeFn size_fn, GetFn get_fn,
                                  const NvrtcProgram& p, const char* what) {
  size_t size = 0;
  nvrtcResult r = size_fn(prog, &size);
  std::string out(size, '\0');
  if (r == NVRTC_SUCCESS) r = get_fn(prog, out.data());
  if (r != NVRTC_SUCCESS)
    return absl::InternalError(str_cat("NVRTC could not return the ", what, " of kernel '",
                                       p.name, "': ", api.nvrtcGetErrorString(r)));
  return out;
}

// Runs f(0..n-1) on min(max_threads, n) threads (max_threads <= 0: the hardware
// concurrency, at most 8); results in index order. NVRTC programs compile independently.
template <typename T, typename F>
std::vector<absl::StatusOr<T>> parallel_map(size_t n, int max_threads, F f) {
  std::vector<std::optional<absl::StatusOr<T>>> slots(n);
  if (max_threads <= 0) max_threads = std::clamp(int(std::thread::hardware_concurrency()), 1, 8);
  int n_threads = std::min<int>(max_threads, int(n));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) slots[i] = f(i);
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < n_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  std::vector<absl::StatusOr<T>> results;
  results.reserve(n);
  for (auto& s : slots) results.push_back(std::move(*s));
  return results;
}

}  // namespace

std::string nvrtc_version() {
  auto api = nvrtc_api();
  int major = 0, minor = 0;
  if (!api.ok() || (*api)->nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return str_cat(major, ".", minor);
}

std::vector<std::string> nvrtc_options(const NvrtcProgram& program) {
  const char* include = std::getenv("KILN_CUDA_INCLUDE_DIR");
  if (include == nullptr || *include == '\0') include = KILN_CUDA_INCLUDE_DIR;
  std::vector<std::string> opts = {str_cat("--gpu-architecture=", program.arch),
                                   str_cat("--include-path=", include),
                                   "--std=c++17"};
  opts.insert(opts.end(), program.extra_options.begin(), program.extra_options.end());
  return opts;
}

std::string default_arch() {
  if (!device_available()) return "sm_90";
  auto dev = Device::get(0);
  return dev.ok() ? dev->arch_name() : "sm_90";
}

absl::StatusOr<NvrtcOutput> nvrtc_compile(const NvrtcProgram& p) {
  auto start = std::chrono::steady_clock::now();
  KILN_ASSIGN_OR_RETURN(const NvrtcApi* api_ptr, nvrtc_api());
  const NvrtcApi& api = *api_ptr;
  nvrtcProgram prog = nullptr;
  std::string file = str_cat(p.name.empty() ? "kernel" : p.name, ".cu");
  nvrtcResult r = api.nvrtcCreateProgram(&prog, p.source.c_str(), file.c_str(), 0, nullptr, nullptr);
  if (r != NVRTC_SUCCESS)
    return absl::InternalError(
        str_cat("NVRTC could not create program for kernel '", p.name, "': ", api.nvrtcGetErrorString(r)));
  // Destroys the program on every path out of this function.
  auto destroy = [&api](nvrtcProgram* q) { api.nvrtcDestroyProgram(q); };
  std::unique_ptr<nvrtcProgram, decltype(destroy)> guard(&prog, destroy);
  std::vector<std::string> opts = nvrtc_options(p);
  std::vector<const char*> argv;
  for (const std::string& o : opts) argv.push_back(o.c_str());
  r = api.nvrtcCompileProgram(prog, int(argv.size()), argv.data());
  NvrtcOutput out;
  out.log = program_log(api, prog);
  if (r != NVRTC_SUCCESS) {
    std::string quoted = quote_cited_lines(out.log, p.source);
    return invalid_argument("NVRTC failed to compile kernel '", p.name, "' for ", p.arch, " (",
                            api.nvrtcGetErrorString(r), "):\n", out.log,
                            quoted.empty() ? "" : "\noffending source lines:\n", quoted);
  }
  KILN_ASSIGN_OR_RETURN(out.cubin, fetch(api, prog, api.nvrtcGetCUBINSize, api.nvrtcGetCUBIN, p, "CUBIN"));
  KILN_ASSIGN_OR_RETURN(out.ptx, fetch(api, prog, api.nvrtcGetPTXSize, api.nvrtcGetPTX, p, "PTX"));
  if (!out.ptx.empty() && out.ptx.back() == '\0') out.ptx.pop_back();
  out.compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

std::vector<absl::StatusOr<NvrtcOutput>> nvrtc_compile_all(std::span<const NvrtcProgram> programs,
                                                           int max_threads) {
  return parallel_map<NvrtcOutput>(programs.size(), max_threads,
                                   [&](size_t i) { return nvrtc_compile(programs[i]); });
}

std::string nvrtc_cache_key(const NvrtcProgram& program) {
  return kernel_cache_key(program.source, nvrtc_options(program), nvrtc_version(), program.arch);
}

std::vector<absl::StatusOr<std::shared_ptr<const CompiledKernel>>> nvrtc_compile_cached(
    KernelCache& cache, std::span<const NvrtcProgram> programs, int max_threads) {
  return parallel_map<std::shared_ptr<const CompiledKernel>>(
      programs.size(), max_threads, [&](size_t i) {
        const NvrtcProgram& p = programs[i];
        std::string key = nvrtc_cache_key(p);
        double compile_ms = -1;  // stays negative on a cache hit
        auto k = cache.get_or_compile(key, [&]() -> absl::StatusOr<CompiledKernel> {
          KILN_ASSIGN_OR_RETURN(NvrtcOutput out, nvrtc_compile(p));
          compile_ms = out.compile_ms;
          return CompiledKernel{std::move(out.cubin), std::move(out.ptx)};
        });
        if (k.ok()) {
          std::string where = cache.directory() ? cache.entry_path(key).string() : "memory";
          if (compile_ms >= 0)
            log_line(LogTopic::cache, 1, fmt::format("cuda kernel {}: compiled by NVRTC in {:.1f} ms, stored in {}",
                                                     p.name, compile_ms, where));
          else
            log_line(LogTopic::cache, 2, str_cat("cuda kernel ", p.name, ": cache hit (", where, ")"));
        }
        return k;
      });
}

}  // namespace kiln::cuda
