// Shared pieces of the runtime tests: skipping [gpu] tests with a printed reason where no
// CUDA device is usable, and the summary table the GPU run prints at the end.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "ir/str.h"

#if KILN_WITH_CUDA
#include "runtime/cuda_driver.h"
#endif

namespace kiln::test {

// Empty when a CUDA device is usable; otherwise why not.
inline std::string gpu_unavailable_reason() {
#if KILN_WITH_CUDA
  auto n = cuda::Device::count();
  if (!n.ok()) return status_message(n.status());
  if (*n == 0) return "no CUDA device: the driver reports 0 devices";
  return "";
#else
  return "no CUDA device: kiln was built without CUDA (KILN_WITH_CUDA=OFF)";
#endif
}

// Rows of the table printed after all tests ran (only [gpu] tests add rows).
std::vector<std::pair<std::string, std::string>>& gpu_summary();

}  // namespace kiln::test

// ctest marks a test whose output contains "SKIPPED (no GPU)" as skipped (see
// CMakeLists.txt); the WARN prints the reason in the test's output.
#define KILN_REQUIRE_GPU()                                                  \
  do {                                                                      \
    std::string kiln_reason_ = ::kiln::test::gpu_unavailable_reason();      \
    if (!kiln_reason_.empty()) {                                            \
      WARN("SKIPPED (no GPU): " << kiln_reason_);                           \
      return;                                                               \
    }                                                                       \
  } while (0)
