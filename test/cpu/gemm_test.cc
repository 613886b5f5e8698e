// GEMM operands on the CPU (issue 16): a reshape before a linear reaches BLAS in place, the
// attention heads merge through one gather into scratch, batches over a shared weight fold
// into rows, a GEMM with nothing after it writes its output from BLAS; each against the
// reference evaluator at several sizes per symbolic dim, and the program text saying which
// GEMMs BLAS runs. OpenBLAS's core: kiln replaces a weaker one, never a user's.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "ir/parser.h"
#include "ir/str.h"
#include "runtime/cpu/gemm.h"
#include "test/common/catch_helpers.h"
#include "test/cpu/cpu_check.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_checks;
using kiln::testing::require_ok;

// OpenBLAS's, from its archive (runtime/cpu/gemm.cc says what they do).
extern "C" void gotoblas_dynamic_init(void);
extern "C" void gotoblas_dynamic_quit(void);
extern "C" char* openblas_get_corename(void);

namespace {

// B in {1, 3, 8} by S in {1, 7, 64}.
std::vector<Bindings> sizes() {
  std::vector<Bindings> out;
  for (int64_t b : {1, 3, 8})
    for (int64_t s : {1, 7, 64}) out.push_back({{"B", b}, {"S", s}});
  return out;
}

// The default pipeline's program for `g` (no symbol baked), checked against the reference.
std::string checked_program(const Graph& g, uint64_t seed) {
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = testing::make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  require_ok(testing::check_cpu_matches_reference(g, *m, sizes(), seed));
  absl::StatusOr<std::unique_ptr<Executor>> exe = testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  return (*exe)->program().to_string();
}

}  // namespace

TEST_CASE("cpu: a reshape [B, S, H] -> [B*S, H] before a linear is read by BLAS in place", "[cpu][gemm]") {
  Graph g = parse_or_fail(R"(graph rl(%x: f32[B, S, 24], %w: f32[40, 24] param, %b: f32[40] param) {
  %r = reshape(%x, shape=[-1, 24])
  %l = linear(%r, %w, %b)
  %y = gelu(%l)
  return %y
})");
  require_checks(checked_program(g, 21), R"(
CHECK: BLAS k{{[0-9]+}}_linear, f32 accumulator
CHECK-NOT: gathered
)");
}

TEST_CASE("cpu: a reshape chain [B, S, H] -> [B, S*H] -> [B*S, H] before a linear is read in place too", "[cpu][gemm]") {
  Graph g = parse_or_fail(R"(graph rc(%x: f32[B, S, 24], %w: f32[40, 24] param) {
  %f = reshape(%x, shape=[B, -1])
  %r = reshape(%f, shape=[-1, 24])
  %y = linear(%r, %w)
  return %y
})");
  // Nothing after the GEMM: BLAS writes the output itself, no accumulator, no epilogue.
  require_checks(checked_program(g, 26), R"(
CHECK: BLAS k{{[0-9]+}}_linear
CHECK-NOT: gathered
CHECK-NOT: accumulator
CHECK-NOT: epilogue
)");
}

TEST_CASE("cpu: the heads merge before the output projection is gathered once, then BLAS", "[cpu][gemm]") {
  SECTION("linear, f32") {
    Graph g = parse_or_fail(R"(graph hm(%x: f32[B, 4, S, 8], %w: f32[20, 32] param) {
  %p = permute(%x, dims=[0, 2, 1, 3])
  %r = reshape(%p, shape=[B, S, 32])
  %y = linear(%r, %w)
  return %y
})");
    require_checks(checked_program(g, 22), R"(
CHECK: BLAS k{{[0-9]+}}_linear, A gathered
CHECK: first A gathered: k{{[0-9]+}}_linear_a(
)");
  }
  SECTION("matmul with a [K, N] weight, bf16, and a residual add") {
    Graph g = parse_or_fail(R"(graph hm(%x: bf16[B, 2, S, 16], %w: bf16[32, 24] param, %res: bf16[B, S, 24]) {
  %p = permute(%x, dims=[0, 2, 1, 3])
  %r = reshape(%p, shape=[B, S, 32])
  %m = matmul(%r, %w)
  %y = add(%m, %res)
  return %y
})");
    require_checks(checked_program(g, 23), R"(
CHECK: BLAS k{{[0-9]+}}_matmul, A gathered
)");
  }
}

TEST_CASE("cpu: weights kept as [K, N] copies across calls of every row count", "[cpu][gemm]") {
  // f32 weights in place and bf16 weights converted: few rows read a kept [K, N] copy, one
  // row runs sgemv, many rows read an f32 weight in place; one executable serves them all,
  // each binding with weights at new addresses.
  Graph g = parse_or_fail(R"(graph w(%x: f32[M, 48], %w: f32[40, 48] param, %h: bf16[M, 40], %v: bf16[24, 40] param) {
  %l = linear(%x, %w)
  %p = linear(%h, %v)
  return %l, %p
})");
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = testing::make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  std::vector<Bindings> bs;
  for (int64_t rows : {1, 3, 64, 65, 300, 2, 1}) bs.push_back({{"M", rows}});
  require_ok(testing::check_cpu_matches_reference(g, *m, bs, 25));
}

TEST_CASE("cpu: a [B, S, K] matmul by a weight shared over B runs its batches as rows of one GEMM", "[cpu][gemm]") {
  // Folded: A dense over (B, S) in f32, or bf16 (packed either way); not folded: A's rows
  // not one strided run (a permuted view), or B batched too.
  Graph g = parse_or_fail(R"(graph f(%x: f32[B, S, 24], %w: f32[24, 40] param, %h: bf16[B, S, 16], %v: bf16[16, 8] param, %t: f32[S, B, 24], %u: f32[B, 24, 8]) {
  %y = matmul(%x, %w)
  %z = matmul(%h, %v)
  %p = permute(%t, dims=[1, 0, 2])
  %q = matmul(%p, %w)
  %r = matmul(%x, %u)
  %e = gelu(%y)
  return %e, %z, %q, %r
})");
  require_checks(checked_program(g, 27), R"(
CHECK: BLAS k{{[0-9]+}}_matmul
)");
}

namespace {

// Makes OpenBLAS pick its core again, as at start-up, under OPENBLAS_CORETYPE=`coretype`
// (unset for nullptr), which stays so.
void restart_openblas(const char* coretype) {
  if (coretype) setenv("OPENBLAS_CORETYPE", coretype, 1);
  else unsetenv("OPENBLAS_CORETYPE");
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
}

// Puts the process back as it was: OpenBLAS's own pick, then kiln's choice.
struct RestoreBlasCore {
  ~RestoreBlasCore() {
    restart_openblas(nullptr);
    cpu::choose_blas_core();
  }
};

}  // namespace

TEST_CASE("cpu: kiln replaces a weaker OpenBLAS core by the one the CPU calls for, never a user's",
          "[cpu][gemm][blas]") {
  cpu::init_blas();  // the process's own choice, made before the test's
  RestoreBlasCore restore;
  const std::string want = cpu::blas_core_for_cpu();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    REQUIRE(want == "SkylakeX");
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) REQUIRE(want == "Haswell");
  if (want.empty()) {
    WARN("no AVX: nothing better than Prescott's kernels for this CPU");
    return;
  }

  SECTION("a weaker core OpenBLAS picked is replaced, and GEMMs run on the new one") {
    restart_openblas("Prescott");  // as on a CPU OpenBLAS does not know
    unsetenv("OPENBLAS_CORETYPE");
    REQUIRE(std::string(openblas_get_corename()) == "Prescott");
    REQUIRE(cpu::choose_blas_core() == want + " (chosen by kiln: OpenBLAS picked Prescott)");
    REQUIRE(std::getenv("OPENBLAS_CORETYPE") == nullptr);
    REQUIRE(std::string(openblas_get_corename()) == want);
    // sgemv (one row), OpenBLAS's small-matrix path and its blocked one (past its P and Q).
    Graph g = parse_or_fail(R"(graph l(%x: f32[M, K], %w: f32[N, K] param, %b: f32[N] param) {
  %y = linear(%x, %w, %b)
  return %y
})");
    absl::StatusOr<std::shared_ptr<const CompiledModule>> m = testing::make_module(g);
    if (!m.ok()) FAIL(status_message(m.status()));
    std::vector<Bindings> bs{
        {{"M", 1}, {"K", 40}, {"N", 24}}, {{"M", 7}, {"K", 33}, {"N", 20}}, {{"M", 300}, {"K", 520}, {"N", 72}}};
    require_ok(testing::check_cpu_matches_reference(g, *m, bs, 28));
  }
  SECTION("a core the user sets stays") {
    restart_openblas("Prescott");
    REQUIRE(cpu::choose_blas_core() == "Prescott (set by OPENBLAS_CORETYPE)");
    REQUIRE(std::string(openblas_get_corename()) == "Prescott");
    REQUIRE(std::string(std::getenv("OPENBLAS_CORETYPE")) == "Prescott");
  }
}

TEST_CASE(
    "cpu: GEMM epilogues that add a bias and clamp run natively (per row, per column, none; rows of 1 to 17, streamed "
    "where short)",
    "[cpu][gemm]") {
  // A 1x1-conv-like matmul [M, K] x [B, K, N] with a bias [M, 1] along the rows and ReLU6, a
  // linear's own bias along its 11 columns (a vector and a tail) with ReLU, a clamp without a bias; a bare matmul
  // (BLAS writes its output: no epilogue); one the routine does not take (a residual add):
  // a generated epilogue.
  Graph g = parse_or_fail(
      R"(graph e(%x: f32[B, 12, N], %w: f32[20, 12] param, %b: f32[20, 1] param, %h: f32[B, N, 12], %v: f32[11, 12] param, %c: f32[11] param, %w2: f32[20, 12] param, %w3: f32[20, 12] param, %w4: f32[20, 12] param, %r: f32[B, 20, N]) {
  %zero = constant(value=0.0, dtype=f32)
  %six = constant(value=6.0, dtype=f32)
  %m = matmul(%w, %x)
  %y = add(%m, %b)
  %lo = maximum(%y, %zero)
  %hi = minimum(%lo, %six)
  %l = linear(%h, %v, %c)
  %lr = relu(%l)
  %p = matmul(%w2, %x)
  %q = matmul(%w3, %x)
  %qc = minimum(%q, %zero)
  %s = matmul(%w4, %x)
  %sr = add(%s, %r)
  return %hi, %lr, %p, %qc, %sr
})");
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = testing::make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  int native = 0, generated = 0;
  for (size_t k = 0; k < (*exe)->program().kernels.size(); ++k) {
    std::string d = (*exe)->describe_kernel(static_cast<int>(k));
    INFO(d);
    native += d.find("(native bias and clamp)") != std::string::npos;
    generated += d.find("_matmul") != std::string::npos && d.find("native") == std::string::npos;
  }
  CHECK(native == 3);
  CHECK(generated == 1);  // the residual add
  std::vector<Bindings> bs;
  // Rows of 3, 5, 9 and 15 go as one stream of vectors (periods of 8 rows, across the batch's 20-row boundary).
  for (int64_t n : {1, 2, 3, 4, 5, 8, 9, 15, 17}) bs.push_back({{"B", n % 2 ? 3 : 1}, {"N", n}});
  require_ok(testing::check_cpu_matches_reference(g, *m, bs, 31));
}
