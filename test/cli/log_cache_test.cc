// Separate processes and what carries between them: the CPU backend's object code in the
// disk kernel cache (a second `kiln` process compiles nothing and still matches the
// reference), and the KILN_LOG topics a process prints (cache hits, fusion decisions).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>

#include "test/cli/process.h"

using namespace kiln::testing;
namespace fs = std::filesystem;

namespace {

// Sets an environment variable for one test; the processes it spawns inherit it.
class EnvVar {
 public:
  EnvVar(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~EnvVar() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

int count_entries(const fs::path& dir) {
  int n = 0;
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".kbin";
  return n;
}

}  // namespace

#if KILN_CLI_HAS_CPU
TEST_CASE("a second process finds the CPU kernels' object code in the disk cache", "[cli][cache]") {
  TempDir dir;
  EnvVar cache("KILN_CACHE_DIR", (dir / "cache").string());
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  std::vector<std::string> compile = {"compile", decoder, "--bind", "B=2", "--bind", "T=3", "--device", "cpu"};
  std::regex counts(R"(\((\d+) compiled, (\d+) from the JIT cache\))");

  Run first = run_binary(KILN_BINARY, compile, dir);
  INFO(first.err);
  REQUIRE(first.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(first.out, m, counts));
  int kernels = std::stoi(m[1]);
  CHECK(kernels > 0);
  // The second RMS norm's weight cast and mean are the first one's kernels: JIT cache hits.
  const int repeated = std::stoi(m[2]);
  CHECK(repeated == 2);
  CHECK(count_entries(dir / "cache") == kernels);

  Run second = run_binary(KILN_BINARY, compile, dir);
  INFO(second.err);
  REQUIRE(second.status == 0);
  REQUIRE(std::regex_search(second.out, m, counts));
  CHECK(m[1] == "0");
  CHECK(std::stoi(m[2]) == kernels + repeated);

  // Kernels loaded from disk compute what the reference does, at batch sizes 1 and 5 (the
  // symbolic kernels are shared; B=1 is a specialization of its own).
  for (const char* b : {"B=1", "B=5"}) {
    EnvVar log("KILN_LOG", "cache:2");
    Run run = run_binary(KILN_BINARY, {"run", decoder, "--bind", b, "--bind", "T=3", "--device", "cpu", "--check"}, dir);
    INFO(run.out << run.err);
    CHECK(run.status == 0);
    CHECK(run.err.find("[kiln:cache] cpu kernel ") != std::string::npos);
  }
}

TEST_CASE("KILN_LOG=fusion says why adjacent ops were not fused", "[cli][log]") {
  TempDir dir;
  // exp feeds two reductions over different axes: one kernel cannot compute both.
  write_text(dir / "two_rows.kiln", R"(graph two_rows(%x: f32[N, 8]) {
  %e = exp(%x) : f32[N, 8]
  %rows = sum(%e, axes=[1]) : f32[N]
  %cols = sum(%e, axes=[0]) : f32[8]
  return %rows, %cols
}
)");
  EnvVar log("KILN_LOG", "fusion");
  Run r = run_binary(KILN_BINARY, {"compile", (dir / "two_rows.kiln").string(), "--bind", "N=4"}, dir);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("[kiln:fusion] not fused: %e = exp -> %cols = sum: two reductions over different rows") !=
        std::string::npos);
  CHECK(r.err.find("[kiln:compile]") == std::string::npos);  // only the topic asked for
}
#endif
