// Test runner for the test binaries with [gpu] tests: Catch2, then the GPU summary table.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "test/common/gpu_test.h"

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
    std::printf("\n== kiln GPU summary ==\n");
    for (const auto& [what, result] : rows)
      std::printf("%-*s  %s\n", int(width), what.c_str(), result.c_str());
  }
  return failed;
}
