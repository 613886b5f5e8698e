// The CUDA scheduling pass (codegen/cuda/schedule.h) in printed kernel IR: the schedule
// section print_kernel writes for kernels of the default pipeline, after the fused-form
// rewrite, and the split steps giving what emit_kernel gives.
#include <catch2/catch.hpp>

#include "codegen/cuda/emit.h"
#include "codegen/cuda/schedule.h"
#include "codegen/intrinsics.h"
#include "codegen/lower.h"
#include "ir/str.h"
#include "passes/pass_manager.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"

using namespace kiln;
using kiln::testing::require_checks;

namespace {

// Every kernel of the graph through the default pipeline, lowering, the fused-form rewrite
// and the scheduling pass, as print_kernel writes them. Checks on the way that printing the
// scheduled kernels gives what emit_kernel gives.
std::string scheduled_text(const char* graph_text) {
  CompileState st;
  st.graph = testing::parse_or_fail(graph_text);
  testing::require_ok(graph_pipeline().run(st));
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(st.graph, st.schedule);
  if (!ks.ok()) FAIL(status_message(ks.status()));
  std::string text;
  for (const kir::Kernel& lowered : *ks) {
    kir::Kernel k = lowered;
    kir::rewrite_intrinsics(k);
    testing::require_ok(cuda::schedule_kernel(k));
    absl::StatusOr<cuda::CudaKernel> printed = cuda::print_scheduled_kernel(k, {});
    absl::StatusOr<cuda::CudaKernel> emitted = cuda::emit_kernel(lowered, {});
    REQUIRE(printed.ok());
    REQUIRE(emitted.ok());
    REQUIRE(printed->source == emitted->source);
    text += kir::print_kernel(k);
  }
  return text;
}

}  // namespace

TEST_CASE("schedule: a bf16 elementwise chain goes 8 lanes wide, its adds and multiplies in pairs", "[cuda][schedule]") {
  std::string text = scheduled_text(R"(graph g(%x: bf16[B, 4096], %a: bf16[4096], %b: bf16[4096]) {
  %m = mul(%x, %a)
  %p = add(%m, %b)
  %g = gelu(%p)
  %s = sigmoid(%x)
  %y = mul(%g, %s)
  return %y
})");
  // 16 bytes of the narrowest dtype per access; 4096 divides by 8, B needs no guard. The
  // bf16 add and muls of bf16 operands go as bf16x2 instructions, with their operands and
  // the stored value held as pairs.
  require_checks(text, R"(
CHECK: kernel k0_mul
CHECK: t2: bf16 = mul(t0, t1)
CHECK: t4: bf16 = add(t2, t3)
CHECK: t7: bf16 = mul(t5, t6)
CHECK: store y[o0 * 4096 + o1] = t7
CHECK-NEXT: schedule:
CHECK-NEXT: launch elementwise, work 4096*B
CHECK-NEXT: vector width 8 along o1, divisible [], aligned [x, a, b, y]:
CHECK-NEXT: x[o0 * 4096 + o1]
CHECK-NEXT: a[o1]
CHECK-NEXT: b[o1]
CHECK-NEXT: y[o0 * 4096 + o1]
CHECK-NEXT: stage 0 in bf16 pairs: packed t2, t4, t7; paired t0, t1, t2, t3, t4, t5, t6, t7
CHECK-NOT: streamed
CHECK-NOT: cache
)");
}

TEST_CASE("schedule: layer_norm + gelu rows keep x in registers, streamed", "[cuda][schedule]") {
  std::string text = scheduled_text(R"(graph g(%x: bf16[R, 4096], %w: bf16[4096] param, %b: bf16[4096] param) {
  %n = layer_norm(%x, %w, %b, axes=[-1], eps=1e-5)
  %y = gelu(%n)
  return %y
})");
  // x is read by all three stages: loaded once per row into registers, 4 chunks of 8 in
  // each of 128 threads, exactly the row. What each row reads once (x) and writes (y) goes
  // evict-first where the data exceed L2; the weights every row reads do not.
  require_checks(text, R"(
CHECK: kernel k2_mean
CHECK: s0 = reduce sum
CHECK: s1 = reduce sum
CHECK: map for r0 < 4096:
CHECK: schedule:
CHECK-NEXT: launch rows, work R, row [4096]
CHECK-NEXT: vector width 8 along r0, divisible [], aligned [x, cast_1, cast_2, y], streams L2:
CHECK-NEXT: x[o0 * 4096 + r0] streamed
CHECK-NEXT: cast_1[r0]
CHECK-NEXT: cast_2[r0]
CHECK-NEXT: y[o0 * 4096 + r0] streamed
CHECK-NEXT: row cache 4 chunks per thread, 128 threads: x[o0 * 4096 + r0]
CHECK-NOT: value cache
CHECK-NOT: pairs
)");
}

TEST_CASE("schedule: softmax keeps exp(x - max) for its map, which multiplies by 1 / sum", "[cuda][schedule]") {
  std::string text = scheduled_text(R"(graph g(%x: bf16[R, 2048]) {
  %y = softmax(%x)
  return %y
})");
  // The map's exp(x - max) (t9) is the sum stage's t5: kept in registers (ec0) over the
  // row's 2 chunks per thread, in 128 threads.
  require_checks(text, R"(
CHECK: s1 = reduce sum acc f32 for r0 < 2048:
CHECK: t5: f32 = exp(t4)
CHECK: map for r0 < 2048:
CHECK: t9: f32 = exp(t8)
CHECK-NEXT: t10: f32 = mul_reciprocal(t9, s1)
CHECK: schedule:
CHECK-NEXT: launch rows, work R, row [2048]
CHECK-NEXT: vector width 8 along r0, divisible [], aligned [x, y], streams L2:
CHECK-NEXT: x[o0 * 2048 + r0] streamed
CHECK-NEXT: y[o0 * 2048 + r0] streamed
CHECK-NEXT: row cache 2 chunks per thread, 128 threads: x[o0 * 2048 + r0]
CHECK-NEXT: value cache ec0: t5 read by t9
)");
}

TEST_CASE("schedule: the tanh gelu is one intrinsic", "[cuda][schedule]") {
  std::string text = scheduled_text(R"(graph g(%x: f32[N]) {
  %y = gelu(%x, approximate="tanh")
  return %y
})");
  // -2 log2(e) sqrt(2/pi) times 0.044715, and -2 log2(e) sqrt(2/pi), rounded to f32. N
  // must be a multiple of 4 for the vector entry.
  require_checks(text, R"(
CHECK: t0: f32 = load x[o0]
CHECK-NEXT: t1: f32 = gelu_tanh(t0, -0.10294324159622192:f32, -2.302208185195923:f32)
CHECK-NEXT: store y[o0] = t1
CHECK-NEXT: schedule:
CHECK-NEXT: launch elementwise, work N
CHECK-NEXT: vector width 4 along o0, divisible [N], aligned [x, y]:
CHECK-NEXT: x[o0]
CHECK-NEXT: y[o0]
CHECK-NOT: {{.}}
)");
}
