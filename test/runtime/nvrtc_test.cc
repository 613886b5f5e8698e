#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>

#include "ir/str.h"
#include "runtime/kernel_cache.h"
#include "runtime/nvrtc.h"

using kiln::cuda::NvrtcProgram;

namespace {

// y = x * scale + 1 in bf16, computed in f32 as kiln's storage-type semantics require.
NvrtcProgram bf16_kernel(const std::string& name, float scale) {
  return {name,
          kiln::str_cat("#include <cuda_bf16.h>\n"
                        "extern \"C\" __global__ void ", name,
                        "(const __nv_bfloat16* x, __nv_bfloat16* y, long n) {\n"
                        "  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;\n"
                        "       i += (long)gridDim.x * blockDim.x)\n"
                        "    y[i] = __float2bfloat16(__bfloat162float(x[i]) * ", fmt::format("{:.6f}", scale), "f + 1.0f);\n"
                        "}\n"),
          "sm_90",
          {}};
}

}  // namespace

TEST_CASE("nvrtc compiles a bf16 kernel to an sm_90 CUBIN and PTX", "[runtime][nvrtc]") {
  CHECK(kiln::cuda::nvrtc_version().rfind("13.", 0) == 0);
  auto out = kiln::cuda::nvrtc_compile(bf16_kernel("scale_bf16", 2.5f));
  REQUIRE(out.ok());
  REQUIRE(out->cubin.size() > 4);
  CHECK(out->cubin.substr(0, 4) == "\x7f" "ELF");
  CHECK(out->ptx.find(".target sm_90") != std::string::npos);
  CHECK(out->ptx.find(".entry scale_bf16") != std::string::npos);
  CHECK(out->compile_ms > 0);
}

TEST_CASE("nvrtc options are deterministic and name the arch", "[runtime][nvrtc]") {
  NvrtcProgram p = bf16_kernel("k", 1.0f);
  p.arch = "sm_80";
  p.extra_options = {"-lineinfo"};
  auto a = kiln::cuda::nvrtc_options(p), b = kiln::cuda::nvrtc_options(p);
  CHECK(a == b);
  CHECK(a.front() == "--gpu-architecture=sm_80");
  CHECK(a.back() == "-lineinfo");
}

TEST_CASE("nvrtc errors name the kernel, quote the log and the offending lines", "[runtime][nvrtc]") {
  NvrtcProgram p{"broken_kernel",
                 "extern \"C\" __global__ void broken_kernel(float* y) {\n"
                 "  float a = 1.0f;\n"
                 "  y[threadIdx.x] = a +* ;\n"
                 "}\n",
                 "sm_90",
                 {}};
  auto out = kiln::cuda::nvrtc_compile(p);
  REQUIRE(!out.ok());
  std::string msg = kiln::status_message(out.status());
  INFO(msg);
  CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(msg.find("kernel 'broken_kernel'") != std::string::npos);
  CHECK(msg.find("broken_kernel.cu(3): error") != std::string::npos);  // the compiler log
  CHECK(msg.find("    3 |   y[threadIdx.x] = a +* ;") != std::string::npos);  // the quoted line
  CHECK(msg.find("    1 |") == std::string::npos);  // only cited lines are quoted
}

TEST_CASE("nvrtc errors for a bad option or arch are reported, not fatal", "[runtime][nvrtc]") {
  NvrtcProgram p = bf16_kernel("k", 1.0f);
  p.arch = "sm_1";
  auto out = kiln::cuda::nvrtc_compile(p);
  REQUIRE(!out.ok());
  CHECK(kiln::status_message(out.status()).find("kernel 'k' for sm_1") != std::string::npos);
}

TEST_CASE("nvrtc compiles 8 programs in parallel, results in order", "[runtime][nvrtc]") {
  std::vector<NvrtcProgram> programs;
  for (int i = 0; i < 8; ++i) programs.push_back(bf16_kernel(kiln::str_cat("par_", i), 1.0f + i));
  programs[5].source += "this is not C++\n";
  auto results = kiln::cuda::nvrtc_compile_all(programs, 4);
  REQUIRE(results.size() == 8);
  for (int i = 0; i < 8; ++i) {
    INFO("program " << i);
    if (i == 5) {
      REQUIRE(!results[i].ok());
      CHECK(kiln::status_message(results[i].status()).find("'par_5'") != std::string::npos);
      continue;
    }
    INFO(kiln::status_message(results[i].status()));
    REQUIRE(results[i].ok());
    CHECK(results[i]->ptx.find(kiln::str_cat(".entry par_", i)) != std::string::npos);
  }
}

TEST_CASE("nvrtc output goes through the kernel cache", "[runtime][nvrtc][cache]") {
  auto dir = std::filesystem::temp_directory_path() / kiln::str_cat("kiln_nvrtc_cache_", getpid());
  std::filesystem::remove_all(dir);
  std::vector<NvrtcProgram> programs = {bf16_kernel("cached_a", 3.0f), bf16_kernel("cached_b", 0.5f),
                                        bf16_kernel("cached_c", -2.0f)};
  CHECK(kiln::cuda::nvrtc_cache_key(programs[0]) != kiln::cuda::nvrtc_cache_key(programs[1]));
  NvrtcProgram other_arch = programs[0];
  other_arch.arch = "sm_80";
  CHECK(kiln::cuda::nvrtc_cache_key(programs[0]) != kiln::cuda::nvrtc_cache_key(other_arch));
  kiln::KernelCache first(dir);
  auto a = kiln::cuda::nvrtc_compile_cached(first, programs);
  REQUIRE(a.size() == 3);
  for (auto& r : a) REQUIRE(r.ok());
  CHECK(first.stats().misses == 3);
  CHECK(first.stats().compile_ms > 0);
  CHECK((*a[1])->ptx.find(".entry cached_b") != std::string::npos);
  kiln::KernelCache second(dir);  // a second process
  programs.push_back(bf16_kernel("cached_d", 1.5f));
  auto b = kiln::cuda::nvrtc_compile_cached(second, programs, 2);
  REQUIRE(b.size() == 4);
  for (auto& r : b) REQUIRE(r.ok());
  CHECK(second.stats().disk_hits == 3);
  CHECK(second.stats().misses == 1);
  for (int i = 0; i < 3; ++i) CHECK((*b[i])->cubin == (*a[i])->cubin);
  std::filesystem::remove_all(dir);
}
