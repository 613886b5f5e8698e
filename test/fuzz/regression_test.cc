// Graphs that once failed (found by kiln_fuzz or by review), kept as IR files under
// test/fuzz/regressions/ with a comment naming the bug: each goes through the whole
// pipeline against the reference, fused against one kernel per node, and compiled for the
// CPU (and, where a GPU is present, CUDA) against the reference.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>

#include "ir/parser.h"
#include "ir/str.h"
#include "test/fuzz/check.h"

using namespace kiln;

TEST_CASE("fuzz regressions compile and match the reference", "[fuzz]") {
  std::vector<std::filesystem::path> files;
  // $KILN_REGRESSIONS_DIR where the binary runs away from its source tree (a GPU machine).
  const char* dir = std::getenv("KILN_REGRESSIONS_DIR");
  for (const auto& e : std::filesystem::directory_iterator(dir && *dir ? dir : KILN_REGRESSIONS_DIR))
    if (e.path().extension() == ".kiln") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 6);
  for (const std::filesystem::path& file : files) {
    DYNAMIC_SECTION(file.filename().string()) {
      absl::StatusOr<Graph> g = parse_graph_file(file.string());
      INFO((g.ok() ? std::string() : status_message(g.status())));
      REQUIRE(g.ok());
      std::vector<Bindings> bindings;
      for (int64_t v : {1, 3, 4}) {
        Bindings b;
        for (const std::string& s : g->symbols()) b[s] = v;
        bindings.push_back(b);
      }
      absl::Status s = check_compiled_matches_reference(*g, bindings, 5);
      if (s.ok()) s = check_fused_matches_unfused(*g, bindings, 5);
#if KILN_WITH_LLVM
      if (s.ok()) s = check_device_matches_reference(*g, Device::Cpu, bindings, 5);
#endif
      // On a GPU, also CUDA in the default and reduce-overhead modes (several of the files
      // are the CUDA fuzzer's findings).
      if (s.ok() && device_available(Device::Cuda).ok())
        for (Mode m : {Mode::Default, Mode::ReduceOverhead})
          if (s.ok()) s = check_device_matches_reference(*g, Device::Cuda, bindings, 5, 1, m);
      INFO(status_message(s));
      CHECK(s.ok());
    }
  }
}
