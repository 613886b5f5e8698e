// Test runner for the test binaries that compile kernels or have [gpu] tests: a fresh kernel
// cache, Catch2, then the GPU summary table (when a [gpu] test ran).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "test/common/gpu_test.h"

namespace kiln::test {
std::vector<std::pair<std::string, std::string>>& gpu_summary() {
  static std::vector<std::pair<std::string, std::string>> rows;
  return rows;
}
}  // namespace kiln::test

int main(int argc, char** argv) {
  // A run starts with an empty kernel cache and tune store unless the caller names one, so
  // max-autotune really tunes and every kernel really compiles: a result must not depend on
  // what an earlier run left in the user's cache.
  std::string fresh;
  if (const char* dir = std::getenv("KILN_CACHE_DIR"); dir == nullptr || *dir == '\0') {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kiln-test-cache-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) {
      fresh = tmpl;
      setenv("KILN_CACHE_DIR", fresh.c_str(), 1);
    }
  }
  int failed = Catch::Session().run(argc, argv);
  if (!fresh.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(fresh, ec);
  }
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
