// CUDA emission without a GPU: every kernel of the test corpus, through the default
// pipeline and lowering, emits CUDA C that NVRTC compiles for sm_90 (dynamic and with every
// symbol specialized to 1), and golden checks on the emitted text of a few kernels.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "codegen/cuda/emit.h"
#include "codegen/gemm.h"
#include "codegen/lower.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "passes/pass_manager.h"
#include "runtime/nvrtc.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"
#include "test/common/graphs.h"
#include "test/cuda/corpus.h"
#include "test/fuzz/check.h"

using namespace kiln;
using kiln::testing::require_checks;

namespace {

// The graph through the default pipeline; a failure is reported and yields nullopt, so
// one broken graph does not hide the others' results.
std::optional<CompileState> pipeline(const Graph& g) {
  CompileState st;
  st.graph = g.clone();
  absl::Status s = graph_pipeline().run(st);
  if (!s.ok()) {
    FAIL_CHECK(str_cat(g.name(), ": ", status_message(s)));
    return std::nullopt;
  }
  return st;
}

std::vector<kir::Kernel> lowered(const CompileState& st) {
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(st.graph, st.schedule);
  if (!ks.ok()) FAIL(status_message(ks.status()));
  return *std::move(ks);
}

cuda::CudaKernel emitted(const kir::Kernel& k, const Bindings& baked, cuda::GemmForm form) {
  absl::StatusOr<cuda::CudaKernel> e = cuda::emit_kernel(k, baked, form);
  if (!e.ok()) FAIL(status_message(e.status()));
  return *std::move(e);
}

// The graph as one hand-made group of `kind` (independent of what the fusion passes do),
// emitted without the prelude.
std::string single_kernel_text(const char* graph_text, KernelGroup::Kind kind) {
  Graph g = kiln::testing::parse_or_fail(graph_text);
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, schedule_single_group(g, kind));
  if (!ks.ok()) FAIL(status_message(ks.status()));
  REQUIRE(ks->size() == 1);
  return emitted(ks->front(), {}, cuda::GemmForm::AccBuffer).source;
}

// Renames the entry points so that two forms of one kernel can share a program.
std::string replace_name(std::string src, const std::string& from, const std::string& to) {
  for (size_t p = src.find(from); p != std::string::npos; p = src.find(from, p + to.size())) src.replace(p, from.size(), to);
  return src;
}

}  // namespace

TEST_CASE("every corpus kernel emits CUDA C that NVRTC compiles for sm_90", "[cuda][nvrtc]") {
  // One program per graph and specialization, as the backend compiles them.
  std::vector<cuda::NvrtcProgram> programs;
  std::vector<std::string> what;
  int kernels = 0, vector_entries = 0;
  for (const test::CorpusGraph& c : test::cuda_corpus()) {
    std::optional<CompileState> st = pipeline(c.graph);
    if (!st) continue;
    std::vector<kir::Kernel> ks = lowered(*st);
    Bindings ones;
    for (const std::string& s : st->graph.symbols()) ones[s] = 1;
    for (const Bindings& baked : {Bindings{}, ones}) {
      std::vector<cuda::CudaKernel> es;
      for (const kir::Kernel& k : ks)
        for (cuda::GemmForm form : {cuda::GemmForm::AccBuffer, cuda::GemmForm::Naive}) {
          if (!k.gemm && form == cuda::GemmForm::Naive) continue;
          cuda::CudaKernel e = emitted(k, baked, form);
          // Deterministic: emitting twice gives the same text.
          REQUIRE(emitted(k, baked, form).source == e.source);
          if (form == cuda::GemmForm::Naive) e.source = replace_name(e.source, e.name, e.name + "_naive");
          vector_entries += !e.vector_name.empty();
          es.push_back(std::move(e));
        }
      std::vector<const cuda::CudaKernel*> ptrs;
      for (const cuda::CudaKernel& e : es) ptrs.push_back(&e);
      kernels += static_cast<int>(es.size());
      programs.push_back({c.name, cuda::program_source(ptrs), "sm_90", {}});
      what.push_back(str_cat(c.name, baked.empty() ? " dynamic" : " specialized"));
    }
  }
  std::vector<absl::StatusOr<cuda::NvrtcOutput>> out = cuda::nvrtc_compile_all(programs);
  for (size_t i = 0; i < out.size(); ++i) {
    INFO(what[i]);
    if (!out[i].ok()) FAIL(status_message(out[i].status()));
    REQUIRE(!out[i]->cubin.empty());
  }
  INFO(kernels << " kernels in " << out.size() << " programs");
  CHECK(kernels >= 100);
  CHECK(vector_entries > 0);
}

TEST_CASE("golden: a bf16 elementwise chain moves 16 bytes per access, adds and multiplies in pairs", "[cuda][golden]") {
  // Elementwise kernels take stream_l2 and keep every access at the normal L2 priority.
  std::string src = single_kernel_text(R"(graph g(%x: bf16[B, 4096], %a: bf16[4096], %b: bf16[4096]) {
  %m = mul(%x, %a)
  %p = add(%m, %b)
  %g = gelu(%p)
  %s = sigmoid(%x)
  %y = mul(%g, %s)
  return %y
})", KernelGroup::Kind::Elementwise);
  require_checks(src, R"(
CHECK: extern "C" __global__ void __launch_bounds__(1024) k0_mul(const unsigned short* __restrict__ b0, {{.*}}long long S_B, int stream_l2) {
CHECK-NOT: kpol
CHECK: for (long long c = {{.*}}; c < n; c += (long long)gridDim.x * blockDim.x) {
CHECK: extern "C" __global__ void __launch_bounds__(1024) k0_mul_v8({{.*}}long long S_B, int stream_l2) {
CHECK-NOT: kpol
CHECK: const long long n = (4096LL * S_B) / 8;
CHECK: alignas(16) unsigned vl0[4];
CHECK: kiln_ldv<unsigned, 4>(reinterpret_cast<const unsigned*>(b0 + {{.*}}), vl0);
CHECK: alignas(16) unsigned vs0[4];
CHECK: #pragma unroll
CHECK: for (int vp = 0; vp < 4; ++vp) {
CHECK: const unsigned t0_p = vl0[vp];
CHECK: const unsigned t1_p = vl1[vp];
CHECK: const unsigned t2_p = kiln_mul_bf16x2(t0_p, t1_p);
CHECK: const unsigned t4_p = kiln_add_bf16x2(t2_p, t3_p);
CHECK: const float t4_0 = kiln_bf_lo(t4_p);
CHECK: const float t4_1 = kiln_bf_hi(t4_p);
CHECK: kiln_erf((t4_0 *
CHECK: const unsigned t5_p = kiln_pack_bf16x2(
CHECK: const unsigned t6_p = kiln_pack_bf16x2(kiln_sigmoid(t0_0), kiln_sigmoid(t0_1));
CHECK: const unsigned t7_p = kiln_mul_bf16x2(t5_p, t6_p);
CHECK: vs0[vp] = t7_p;
CHECK: kiln_stv<unsigned, 4>(reinterpret_cast<unsigned*>(b3 + {{.*}}), vs0);
)");
}

TEST_CASE("golden: integer constants are exact literals (INT64_MAX, INT64_MIN spelled safely, 2^53 + 1, u64 max)", "[cuda][golden]") {
  std::string src = single_kernel_text(test_graphs::kInt64Constants, KernelGroup::Kind::Elementwise);
  for (const char* literal : {"9223372036854775807LL", "(-9223372036854775807LL - 1)", "9007199254740993LL",
                              "((unsigned long long)(-1LL))"}) {
    INFO(literal);
    CHECK(src.find(literal) != std::string::npos);
  }
  // Their value through a double: INT64_MAX rounded to 2^63, which wrapped to INT64_MIN or 0.
  CHECK(src.find("9007199254740992LL") == std::string::npos);
  CHECK(src.find("9223372036854775808") == std::string::npos);
  // NVRTC compiles it: int64_constants is in the corpus that the NVRTC test above compiles,
  // and that [gpu] tests run against the reference.
}

TEST_CASE("golden: bf16 with no add, sub or mul goes lane by lane and rounds its stores in pairs", "[cuda][golden]") {
  std::string src = single_kernel_text(R"(graph g(%x: bf16[N]) {
  %y = gelu(%x)
  return %y
})", KernelGroup::Kind::Elementwise);
  require_checks(src, R"(
CHECK: k0_gelu_v8(
CHECK-NOT: vp
CHECK: alignas(16) float vs0[8];
CHECK: for (int v = 0; v < 8; ++v) {
CHECK: = kiln_bf2f_at(vl0, v);
CHECK: vs0[v] = {{.*}}kiln_erf(
CHECK: kiln_stv_pairs<false, 8>(
)");
}

TEST_CASE("golden: gelu's 0.5x * (1 + tanh(u)) becomes x * sigmoid(2u), its exponent folded", "[cuda][golden]") {
  std::string src = single_kernel_text(R"(graph g(%x: f32[N]) {
  %y = gelu(%x, approximate="tanh")
  return %y
})", KernelGroup::Kind::Elementwise);
  // -2 log2(e) sqrt(2/pi) and that times 0.044715, rounded to f32.
  require_checks(src, R"(
CHECK: k0_gelu(
CHECK-NOT: tanhf(
CHECK-NOT: 0x1p-1f
CHECK-NOT: kiln_half_one_plus_tanh((
CHECK: = kiln_gelu_tanh(t{{[0-9]+}}, -0x1.a5a7dp-4f, -0x1.26aec2p+1f);
)");
}

TEST_CASE("golden: softmax rows reduce by warp shuffles and across warps", "[cuda][golden]") {
  std::string src = single_kernel_text(R"(graph g(%x: bf16[R, 2048]) {
  %f = cast(%x, dtype=f32)
  %m = max(%f, axes=[-1], keepdim=true)
  %d = sub(%f, %m)
  %e = exp(%d)
  %s = sum(%e, axes=[-1], keepdim=true)
  %q = div(%e, %s)
  %y = cast(%q, dtype=bf16)
  return %y
})", KernelGroup::Kind::Reduction);
  // The vector entry reads x and stores y under the L2 policy the host picks (kpol).
  require_checks(src, R"(
CHECK: __shared__ float red_f[32];
CHECK: const long long rows = S_R;
CHECK: float s0;
CHECK: kiln_fmax(
CHECK: __shfl_xor_sync(0xffffffffu, a, m);
CHECK: if (nw > 1) {
CHECK: __syncthreads();
CHECK: float s1;
CHECK: kiln_exp(
CHECK: __frcp_rn(s1)
CHECK: _v8({{.*}}long long S_R, int stream_l2) {
CHECK-NEXT: const unsigned long long kpol = kiln_policy(stream_l2);
CHECK: alignas(16) unsigned rc0[2][4];
CHECK: const long long c = threadIdx.x + (long long)j * blockDim.x;
CHECK-NEXT: const long long q = c * 8;
CHECK: kiln_ldv_once<unsigned, 4>({{.*}}, rc0[j], kpol);
CHECK: float ec0[2][8];
CHECK: const float t{{[0-9]+}} = kiln_exp(t{{[0-9]+}});
CHECK-NEXT: ec0[j][v] = t{{[0-9]+}};
CHECK: const float t{{[0-9]+}} = ec0[j][v];
CHECK-NOT: kiln_exp(
CHECK: = (t{{[0-9]+}} * __frcp_rn(s1));
CHECK: vs0[v] = t{{[0-9]+}};
CHECK: kiln_stv_pairs_once<false, 8>({{.*}}, vs0, kpol);
)");
  // 128 threads hold the row's 256 chunks, 2 each: no chunk loop stops at the row's end.
  CHECK(src.substr(src.find("_v8(")).find("break;") == std::string::npos);
}

TEST_CASE("golden: a row that no whole number of warps splits evenly keeps the guard at its end", "[cuda][golden]") {
  std::string src = single_kernel_text(R"(graph g(%x: bf16[R, 96]) {
  %s = sum(%x, axes=[-1], keepdim=true)
  %y = sub(%x, %s)
  return %y
})", KernelGroup::Kind::Reduction);
  require_checks(src, R"(
CHECK: _v8(
CHECK: const long long c = threadIdx.x + (long long)j * blockDim.x;
CHECK-NEXT: if (c >= 96LL / 8) break;
)");
}

TEST_CASE("golden: a GEMM of one row computes each output with a warp: lanes split k, lane 0 runs the epilogue", "[cuda][golden]") {
  Graph g = kiln::testing::parse_or_fail(R"(graph g(%x: bf16[B, 2048], %w: bf16[512, 2048], %r: bf16[B, 512]) {
  %y = linear(%x, %w)
  %z = add(%y, %r)
  return %z
})");
  Schedule sched = schedule_single_group(g, KernelGroup::Kind::Gemm);
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, sched);
  if (!ks.ok()) FAIL(status_message(ks.status()));
  REQUIRE(ks->size() == 1);
  const kir::Kernel& k = ks->front();
  // Off by default: B = 1 is a cuBLASLt call, its fallback one thread per output.
  ::unsetenv("KILN_WARP_GEMM_ROWS");
  CHECK(!emitted(k, {{"B", 1}}, cuda::GemmForm::Naive).warp_gemm);
  CHECK(decide_gemm(sched.groups[0], k, GemmLibrary::CublasLt, {{"B", 1}})->library);
  // KILN_WARP_GEMM_ROWS=1, B = 1 baked (a decode step's specialization): cuBLASLt is not
  // asked, the kernel is.
  ::setenv("KILN_WARP_GEMM_ROWS", "1", 1);
  cuda::CudaKernel one = emitted(k, {{"B", 1}}, cuda::GemmForm::Naive);
  CHECK(one.warp_gemm);
  CHECK(*one.work.evaluate({{"B", 1}}) == 512 * 32);  // 32 threads per output element
  require_checks(one.source, R"(
CHECK: const long long n = {{.*}}512LL{{.*}} * 32;
CHECK: const long long i = c >> 5;
CHECK: float acc = 0;
CHECK: if ((reinterpret_cast<unsigned long long>(b{{[0-9]+}}) & 15) == 0) {
CHECK: for (long long kb = (threadIdx.x & 31) * 8; kb < 2048LL; kb += 256) {
CHECK: { const long long r0 = kb; wv = *reinterpret_cast<const uint4*>(&b{{[0-9]+}}[
CHECK: for (int j = 0; j < 8; ++j) { const long long r0 = kb + j; acc +=
CHECK: else {
CHECK: for (long long r0 = threadIdx.x & 31; r0 < 2048LL; r0 += 32) acc +=
CHECK: acc += __shfl_xor_sync(0xffffffffu, acc, m);
CHECK: if ((threadIdx.x & 31) == 0) {
)");
  // NVRTC compiles it (the corpus test emits with the form off).
  std::vector<const cuda::CudaKernel*> ptrs = {&one};
  std::vector<cuda::NvrtcProgram> programs = {{"warp_gemm", cuda::program_source(ptrs), "sm_90", {}}};
  std::vector<absl::StatusOr<cuda::NvrtcOutput>> out = cuda::nvrtc_compile_all(programs);
  REQUIRE(out.size() == 1);
  if (!out[0].ok()) FAIL(status_message(out[0].status()));
  absl::StatusOr<GemmDecision> d = decide_gemm(sched.groups[0], k, GemmLibrary::CublasLt, {{"B", 1}});
  REQUIRE(d.ok());
  CHECK(!d->library);
  // Symbolic rows, or more than the limit: one thread per output, as before, and cuBLASLt.
  for (const Bindings& b : {Bindings{}, Bindings{{"B", 2}}}) {
    cuda::CudaKernel e = emitted(k, b, cuda::GemmForm::Naive);
    CHECK(!e.warp_gemm);
    CHECK(e.source.find("__shfl_xor_sync") == std::string::npos);
    d = decide_gemm(sched.groups[0], k, GemmLibrary::CublasLt, b);
    REQUIRE(d.ok());
    CHECK(d->library);
  }
  ::unsetenv("KILN_WARP_GEMM_ROWS");
}

TEST_CASE("the prelude is codegen/cuda/prelude.cuh byte for byte, with no #include", "[cuda]") {
  std::ifstream f(std::string(KILN_SOURCE_DIR) + "/codegen/cuda/prelude.cuh", std::ios::binary);
  std::stringstream text;
  text << f.rdbuf();
  REQUIRE(text.str().rfind("// kiln prelude\n", 0) == 0);
  REQUIRE(cuda::cuda_prelude() == text.str());
  REQUIRE(text.str().find("#include") == std::string::npos);
}
