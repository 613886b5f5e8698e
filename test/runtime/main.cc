// Test runner for kiln_test_runtime: Catch2, then the GPU summary table if [gpu] tests ran.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "test/runtime/gpu_test.h"

namespace kiln::test {
std::vector<std::pair<std::string, std::string>>& gpu_summary() {
  static std::vector<std::pair<std::string, std::string>> rows;
  return rows;
}
}  // namespace kiln::test

int main(int argc, char** argv) {
  int failed = Catch::Session().run(argc, argv);
  const auto& rows = kiln::test::gpu_summary();
  if (!rows.empty()) {
    size_t width = 0;
    for (const auto& [what, _] : rows) width = std::max(width, what.size());
    std::printf("\n== kiln runtime GPU summary ==\n");
    for (const auto& [what, result] : rows)
      std::printf("%-*s  %s\n", int(width), what.c_str(), result.c_str());
  }
  return failed;
}
