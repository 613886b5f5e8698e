// Compiled packages (compiler/package.h): `kiln compile --save` in one process, then `kiln run`
// of the package and kiln::load_compiled() in others with an empty kernel cache: no kernel is
// compiled, the outputs match the reference, a binding outside the saved guards compiles a
// new specialization and says so; damaged packages and packages for another target are
// clear errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "compiler/package.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "runtime/sha256.h"
#include "test/cli/process.h"
#include "test/common/gpu_test.h"

using namespace kiln::testing;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Symbolic batch and seq, parameters with data (its initializers): the package carries both.
const std::string kOnnxBlock = std::string(KILN_EXAMPLES_DIR) + "/onnx_block.onnx";

// `kiln compile` with --save into `pkg`, in a process whose kernel cache is `cache`.
Run save(const TempDir& dir, const fs::path& pkg, const std::string& device, const fs::path& cache) {
  return run_binary(KILN_BINARY,
                    {"compile", kOnnxBlock, "--bind", "batch=2", "--bind", "seq=3", "--device", device, "--save",
                     pkg.string()},
                    dir, {{"KILN_CACHE_DIR", cache.string()}});
}

int count_entries(const fs::path& dir) {
  int n = 0;
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".kbin";
  return n;
}

// `kiln run pkg --check --json` at these bindings with fresh random inputs: its JSON.
json run_package(const TempDir& dir, const fs::path& pkg, const fs::path& cache, const std::string& batch,
                 const std::string& seq, int seed) {
  Run r = run_binary(KILN_BINARY,
                     {"run", pkg.string(), "--bind", "batch=" + batch, "--bind", "seq=" + seq, "--seed",
                      std::to_string(seed), "--check", "--json"},
                     dir, {{"KILN_CACHE_DIR", cache.string()}});
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.status == 0);
  json j = json::parse(r.out);
  for (const json& out : j["outputs"]) CHECK(out["check"]["ok"] == true);
  return j;
}

std::string read_bytes(const fs::path& p) { return read_text(p); }

// `bytes` with its trailing checksum made right again: damage the checksum does not catch.
std::string resealed(std::string bytes) {
  std::string_view body(bytes.data(), bytes.size() - 32);
  kiln::Sha256::Digest d = kiln::Sha256::hash(body);
  std::memcpy(bytes.data() + body.size(), d.data(), 32);
  return bytes;
}

}  // namespace

#if KILN_CLI_HAS_CPU
TEST_CASE("a CPU package runs in a second process without compiling, a third binding compiles", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  Run s = save(dir, pkg, "cpu", dir / "cache_a");
  INFO(s.out << s.err);
  REQUIRE(s.status == 0);
  CHECK(s.out.find("saved " + pkg.string()) != std::string::npos);
  CHECK(s.out.find("1 specialization (batch >= 2, seq >= 2)") != std::string::npos);
  REQUIRE(fs::exists(pkg));

  // An empty cache directory: every kernel comes from the package.
  fs::path cache_b = dir / "cache_b";
  for (auto [batch, seq, seed] : {std::tuple{"2", "3", 1}, std::tuple{"33", "17", 2}}) {
    json j = run_package(dir, pkg, cache_b, batch, seq, seed);
    CHECK(j["stats"]["compiles"] == 1);
    CHECK(j["stats"]["recompiles"] == 0);
    CHECK(j["stats"]["cache_misses"] == 0);
    CHECK(j["stats"]["cache_memory_hits"].get<int>() == j["stats"]["kernels"].get<int>());
    CHECK(j["stats"]["kernels"].get<int>() > 0);
  }
  CHECK(count_entries(cache_b) == 0);  // nothing compiled, so nothing written

  // batch = 1 fails the saved guard: a second specialization is compiled, and named.
  json j = run_package(dir, pkg, cache_b, "1", "5", 3);
  CHECK(j["stats"]["compiles"] == 2);
  CHECK(j["stats"]["recompiles"] == 1);
  CHECK(j["stats"]["cache_misses"].get<int>() > 0);
  REQUIRE(j["stats"]["recompile_reasons"].size() == 1);
  CHECK(j["stats"]["recompile_reasons"][0].get<std::string>().find("batch = 1 fails guard batch >= 2") != std::string::npos);

  // The text form says where the program came from.
  Run text = run_binary(KILN_BINARY, {"run", pkg.string(), "--bind", "batch=3", "--bind", "seq=2", "--check"}, dir,
                        {{"KILN_CACHE_DIR", cache_b.string()}});
  INFO(text.out << text.err);
  CHECK(text.status == 0);
  CHECK(text.out.find("loaded " + pkg.string() + ": cpu LLVM ") != std::string::npos);
  CHECK(text.out.find("0 misses") != std::string::npos);
}

TEST_CASE("kiln::load_compiled starts a CPU package with zero compiles in this process", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  REQUIRE(save(dir, pkg, "cpu", dir / "cache").status == 0);
  absl::StatusOr<kiln::Package> p = kiln::read_package(pkg.string());
  REQUIRE(p.ok());
  absl::StatusOr<kiln::CompiledGraph> cg = kiln::load_compiled(*p);
  INFO((cg.ok() ? std::string() : std::string(cg.status().message())));
  REQUIRE(cg.ok());
  CHECK(cg->stats().cache_misses == 0);
  CHECK(cg->stats().compiles == 1);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto [batch, seq] : {std::pair{2, 3}, std::pair{5, 9}}) {
    kiln::HostTensor x(kiln::DType::f32, {batch, seq, 16});
    for (int64_t i = 0; i < x.numel(); ++i) x.set(i, u(rng));
    auto got = kiln::run_host(*cg, {{"x", x}});
    REQUIRE(got.ok());
    auto want = kiln::evaluate(p->graph, {{"x", x}});
    REQUIRE(want.ok());
    kiln::Comparison c = kiln::compare_tensors((*want)[0], (*got)[0], kiln::default_tolerance(kiln::DType::f32));
    INFO(c.message);
    CHECK(c.ok);
  }
  CHECK(cg->stats().cache_misses == 0);
}

TEST_CASE("a package for another target or kiln version is refused, naming both", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  REQUIRE(save(dir, pkg, "cpu", dir / "cache").status == 0);
  absl::StatusOr<kiln::Package> p = kiln::read_package(pkg.string());
  REQUIRE(p.ok());
  std::string target = p->target;

  kiln::Package other = *kiln::read_package(pkg.string());
  other.target = "LLVM 16.0.6, pentium4, features 00000000";
  absl::StatusOr<kiln::CompiledGraph> cg = kiln::load_compiled(other);
  REQUIRE_FALSE(cg.ok());
  std::string msg(cg.status().message());
  CHECK(cg.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(msg.find("compiled for cpu LLVM 16.0.6, pentium4, features 00000000") != std::string::npos);
  CHECK(msg.find("this machine compiles for cpu " + target) != std::string::npos);

  kiln::Package old = *kiln::read_package(pkg.string());
  old.kiln_version = "0.0";
  cg = kiln::load_compiled(old);
  REQUIRE_FALSE(cg.ok());
  CHECK(std::string(cg.status().message()).find("built by kiln 0.0") != std::string::npos);
}

TEST_CASE("a damaged package is a clear error, never a crash", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  REQUIRE(save(dir, pkg, "cpu", dir / "cache").status == 0);
  std::string bytes = read_bytes(pkg);
  REQUIRE(kiln::parse_package(bytes, "p").ok());

  // A byte changed anywhere (200 places spread over the file, and each of the first and last
  // 64), or a truncation (40 lengths).
  int changed = 0;
  const size_t stride = std::max<size_t>(1, bytes.size() / 200);
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i % stride != 0 && i >= 64 && i + 64 < bytes.size()) continue;
    std::string b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x5a);
    absl::StatusOr<kiln::Package> p = kiln::parse_package(b, "p");
    INFO("byte " << i);
    REQUIRE_FALSE(p.ok());
    std::string msg(p.status().message());
    CHECK((msg.find("corrupted kiln package") != std::string::npos || msg.find("not a kiln package") != std::string::npos ||
           msg.find("kiln package format") != std::string::npos));
    ++changed;
  }
  CHECK(changed > 100);
  for (size_t n = 0; n < bytes.size(); n += std::max<size_t>(1, bytes.size() / 40))
    CHECK_FALSE(kiln::parse_package(bytes.substr(0, n), "p").ok());

  // Damage behind a valid checksum (a hand-made file): lengths, counts and graph text are
  // still checked. Each byte of the first 512 set to 0xff, the checksum recomputed.
  int refused = 0;
  for (size_t i = 16; i < std::min<size_t>(512, bytes.size() - 32); ++i) {
    std::string b = bytes;
    b[i] = '\xff';
    refused += !kiln::parse_package(resealed(b), "p").ok();
  }
  CHECK(refused > 100);

  // Through the CLI: a flipped byte in the middle and a truncated file, each exit status 1.
  for (bool truncate : {false, true}) {
    std::string b = bytes;
    if (truncate) b.resize(b.size() / 2);
    else b[b.size() / 2] ^= 1;
    fs::path bad = dir / "bad.kilnpkg";
    write_text(bad, b);
    Run r = run_binary(KILN_BINARY, {"run", bad.string()}, dir);
    INFO(r.out << r.err);
    CHECK(r.status == 1);
    CHECK(r.err.find(bad.string() + ": corrupted kiln package: its SHA-256 checksum does not match") != std::string::npos);
  }
  Run r = run_binary(KILN_BINARY, {"run", (dir / "absent.kilnpkg").string()}, dir);
  CHECK(r.status == 1);
  CHECK(r.err.find("absent.kilnpkg: cannot read the file") != std::string::npos);
}

TEST_CASE("kiln run refuses options that disagree with the package", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  REQUIRE(save(dir, pkg, "cpu", dir / "cache").status == 0);
  Run r = run_binary(KILN_BINARY, {"run", pkg.string(), "--mode", "max-autotune"}, dir);
  CHECK(r.status == 1);
  CHECK(r.err.find("the package was compiled in mode default, not --mode max-autotune") != std::string::npos);
  r = run_binary(KILN_BINARY, {"run", pkg.string(), "--float", "bf16"}, dir);
  CHECK(r.status == 1);
  CHECK(r.err.find("--float applies when compiling") != std::string::npos);
}
#endif

#if KILN_CLI_HAS_CUDA
TEST_CASE("a CUDA package is written without a GPU, with every kernel's CUBIN and PTX", "[cli][package]") {
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  Run s = save(dir, pkg, "cuda", dir / "cache");
  INFO(s.out << s.err);
  REQUIRE(s.status == 0);
  absl::StatusOr<kiln::Package> p = kiln::read_package(pkg.string());
  REQUIRE(p.ok());
  CHECK(p->device == "cuda");
  CHECK(p->target.find("sm_") == 0);
  CHECK(p->target.find(", NVRTC ") != std::string::npos);
  REQUIRE(p->specializations.size() == 1);
  CHECK(p->specializations[0].guards == "batch >= 2, seq >= 2");
  // The same count as `kiln compile --device cuda` reports compiling (or reading) kernels.
  REQUIRE_FALSE(p->kernels.empty());
  CHECK(static_cast<int>(p->kernels.size()) == count_entries(dir / "cache"));
  for (const auto& [key, k] : p->kernels) {
    CHECK(k->cubin.substr(0, 4) == "\x7f" "ELF");
    CHECK(k->ptx.find(".entry") != std::string::npos);
  }
}

TEST_CASE("a CUDA package runs on the GPU without compiling", "[cli][package][gpu]") {
  KILN_REQUIRE_GPU();
  TempDir dir;
  fs::path pkg = dir / "block.kilnpkg";
  Run s = save(dir, pkg, "cuda", dir / "cache_a");
  INFO(s.out << s.err);
  REQUIRE(s.status == 0);
  for (auto [batch, seq, seed] : {std::tuple{"2", "3", 1}, std::tuple{"33", "17", 2}}) {
    json j = run_package(dir, pkg, dir / "cache_b", batch, seq, seed);
    CHECK(j["device"] == "cuda");
    CHECK(j["stats"]["cache_misses"] == 0);
    CHECK(j["stats"]["compiles"] == 1);
  }
  json j = run_package(dir, pkg, dir / "cache_b", "1", "5", 3);
  CHECK(j["stats"]["compiles"] == 2);
  CHECK(j["stats"]["cache_misses"].get<int>() > 0);
}
#endif
