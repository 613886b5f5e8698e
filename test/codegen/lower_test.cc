// Lowering of hand-made kernel groups (one group per node, whole chains, reduction
// patterns, GEMMs with epilogues and prologue views) checked against the reference
// evaluator through the kernel-IR evaluator, plus golden checks on the printed kernels.
#include <catch2/catch.hpp>

#include "codegen/kernel_eval.h"
#include "codegen/lower.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"
#include "test/common/graphs.h"
#include "test/fuzz/check.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_checks;
using kiln::testing::require_ok;

namespace {

std::vector<Bindings> bindings_of(const std::string& sym, std::initializer_list<int64_t> values) {
  std::vector<Bindings> out;
  for (int64_t v : values) out.push_back(Bindings{{sym, v}});
  return out;
}

std::string lowered_text(const Graph& g, const Schedule& s) {
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, s);
  if (!ks.ok()) FAIL(status_message(ks.status()));
  std::string text;
  for (const kir::Kernel& k : *ks) text += kir::print_kernel(k);
  return text;
}

}  // namespace

TEST_CASE("every node in its own kernel matches the reference", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kChain);
  require_ok(check_schedule_matches_reference(g, schedule_per_node(g), bindings_of("B", {1, 3, 17}), 1));
}

TEST_CASE("a chain of broadcasting elementwise ops fuses into one kernel", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kChain);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Elementwise);
  require_ok(check_schedule_matches_reference(g, s, bindings_of("B", {1, 3, 17}), 2));
  std::string text = lowered_text(g, s);
  // One kernel over [B, 7] storing both outputs; y broadcasts along B (read at o1 only),
  // z along the last dim (read at o0 only).
  require_checks(text, R"(
CHECK: kernel k0_cast
CHECK: in  x: f32[B, 7]
CHECK: out b: f32[B, 7]
CHECK: out l: bf16[B, 7]
CHECK: symbols B
CHECK: for o0 < B, o1 < 7:
CHECK: load y[o1]
CHECK: load z[o0]
CHECK: store b[o0 * 7 + o1]
CHECK: store l[o0 * 7 + o1]
CHECK-NOT: kernel
)");
  // Deterministic: lowering twice prints the same text.
  REQUIRE(lowered_text(g, s) == text);
}

TEST_CASE("softmax as primitives lowers to reduce, reduce, map in one kernel", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kSoftmax);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Reduction);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 5}}, {{"B", 3}, {"T", 8}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 3));
  require_checks(lowered_text(g, s), R"(
CHECK: kernel k0_max
CHECK: for o0 < B, o1 < T:
CHECK: s0 = reduce max acc f32 for r0 < 19:
CHECK: fold
CHECK: s1 = reduce sum acc f32 for r0 < 19:
CHECK: sub({{.*}}, s0)
CHECK: map for r0 < 19:
CHECK: store y[
CHECK-NOT: reduce
)");
}

TEST_CASE("rms_norm with the residual add before it: one kernel, two outputs", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kRmsNorm);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Reduction);
  REQUIRE(s.groups[0].outputs.size() == 2);
  require_ok(check_schedule_matches_reference(g, s, bindings_of("B", {1, 5, 33}), 4));
  require_checks(lowered_text(g, s), R"(
CHECK: s0 = reduce sum acc f32 for r0 < 32:
CHECK: map for r0 < 32:
CHECK: store h[
CHECK: store y[
)");
}

TEST_CASE("reductions: axes, keepdim, negative axes, integer and argmax", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kReductions);
  require_ok(check_schedule_matches_reference(g, schedule_per_node(g), bindings_of("B", {1, 2, 7}), 5));
}

TEST_CASE("integer constants stay exact in the kernel IR: INT64_MAX, INT64_MIN, 2^53 + 1, u64 max", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kInt64Constants);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Elementwise);
  // The kernel-IR evaluator computes with them exactly, as the reference does (integer
  // outputs compare exactly).
  require_ok(check_schedule_matches_reference(g, s, bindings_of("B", {1, 3, 17}), 30));
  require_ok(check_schedule_matches_reference(g, schedule_per_node(g), bindings_of("B", {1, 5}), 31));
  std::string text = lowered_text(g, s);
  require_checks(text, R"(
CHECK: minimum({{.*}}, 9223372036854775807:i64)
CHECK: maximum({{.*}}, -9223372036854775808:i64)
CHECK: add({{.*}}, 9007199254740993:i64)
CHECK: minimum({{.*}}, 18446744073709551615:u64)
)");
  // Two constants of one value are one node to same_as; nearby values are not.
  REQUIRE(kir::Expr::constant_int(INT64_MAX, DType::i64).same_as(kir::Expr::constant_int(INT64_MAX, DType::i64)));
  REQUIRE(!kir::Expr::constant_int(INT64_MAX, DType::i64).same_as(kir::Expr::constant_int(INT64_MAX - 1, DType::i64)));
  REQUIRE(!kir::Expr::constant_int((int64_t{1} << 53) + 1, DType::i64).same_as(kir::Expr::constant_int(int64_t{1} << 53, DType::i64)));
  // Narrow dtypes hold the wrapped value; a float value converts as the reference's set does.
  REQUIRE(kir::Expr::constant_int(300, DType::u8).node().int_value == 44);
  REQUIRE(kir::Expr::constant_int(-1, DType::i32).node().int_value == -1);
  REQUIRE(kir::Expr::constant(-2.7, DType::i64).node().int_value == -2);
}

TEST_CASE("views become index arithmetic inside one kernel", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kViews);
  require_ok(check_schedule_matches_reference(g, schedule_per_node(g), bindings_of("B", {1, 2, 5}), 6));
  require_ok(check_schedule_matches_reference(g, schedule_single_group(g, KernelGroup::Kind::Elementwise),
                                              bindings_of("B", {1, 2, 5}), 7));
}

TEST_CASE("reshape of symbolic dims: a split and merge back simplify to the flat offset", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kReshape);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Elementwise);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 3}, {"T", 5}}, {{"B", 4}, {"T", 2}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 8));
  // [B, T] -> [B*T] -> [T, B]: the floordiv and mod of the split collapse back into the flat
  // offset, (f // T) * T + f % T = f.
  require_checks(lowered_text(g, s), "CHECK: load x[o0 * B + o1]");
}

TEST_CASE("concat, split and gather", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kConcatSplitGather);
  std::vector<Bindings> bs = {{{"B", 1}, {"K", 1}}, {{"B", 4}, {"K", 7}}};
  require_ok(check_schedule_matches_reference(g, schedule_per_node(g), bs, 9));
  require_ok(check_schedule_matches_reference(g, schedule_single_group(g, KernelGroup::Kind::Elementwise), bs, 10));
}

TEST_CASE("a gather's index check: masked stores in the stage that reads it, the reference's error", "[lower][gather]") {
  Graph g = parse_or_fail(R"(graph gs(%t: f32[V, 4], %ids: i64[N]) {
  %g = gather(%t, %ids, axis=0)
  %e = exp(%g)
  %s = sum(%e, axes=[1])
  return %s
})");
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Reduction);
  std::vector<Bindings> bs = {{{"V", 2}, {"N", 1}}, {{"V", 5}, {"N", 9}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 11));
  // One check: the Check buffer after the output; the reduce stage stores V + 1 and the raw
  // index where the index wrapped once is outside [0, V).
  require_checks(lowered_text(g, s), R"(
CHECK: out s: f32[N]
CHECK: chk k0_sum.checks: i64[2]
CHECK: s0 = reduce sum acc f32 for r0 < 4:
CHECK: store if t{{[0-9]+}} k0_sum.checks[0] = add(index(V), 1:i64)
CHECK: store if t{{[0-9]+}} k0_sum.checks[1] = t{{[0-9]+}}
CHECK: fold
)");
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, s);
  REQUIRE(ks.ok());
  REQUIRE(ks->front().checks.size() == 1);
  CHECK(ks->front().checks[0].node == "g");
  for (int64_t bad : {5, -6, 1000}) {
    TensorMap args = random_args(g, {{"V", 5}, {"N", 3}}, 12);
    args.at("ids").set_int(1, bad);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
    REQUIRE_FALSE(want.ok());
    absl::StatusOr<std::vector<HostTensor>> got = evaluate_kernels(g, s, *ks, args);
    REQUIRE_FALSE(got.ok());
    CHECK(status_message(got.status()) == str_cat("gather %g: index ", bad, " out of range [-5, 5) on axis 0"));
  }
  // An in-range negative index wraps once, as the reference's does.
  TensorMap args = random_args(g, {{"V", 5}, {"N", 3}}, 13);
  args.at("ids").set_int(0, -5);
  args.at("ids").set_int(2, -1);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args), got = evaluate_kernels(g, s, *ks, args);
  REQUIRE(want.ok());
  REQUIRE(got.ok());
  CHECK(compare_tensors(want->front(), got->front(), default_tolerance(DType::f32)).ok);
}

TEST_CASE("gemm groups carry their epilogue", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kMlp);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Gemm);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 3}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 11));
  require_checks(lowered_text(g, s), R"(
CHECK: kernel k0_linear
CHECK: acc: f32 = gemm batch [] m B*T n 8 k 16
CHECK: a x[(o0 * T + o1) * 16 + r0] strides offset 0 outer [16*T, 16, 0] k 1
CHECK: b w[o2 * 16 + r0] strides offset 0 outer [0, 0, 16] k 1
CHECK: t0: f32 = load bias[o2]
CHECK-NEXT: t1: f32 = add(acc, t0)
CHECK: store y[
)");
}

TEST_CASE("batched matmul with broadcast batch dims, vectors, and a transposing prologue", "[lower]") {
  Graph g = parse_or_fail(test_graphs::kMatmuls);
  Schedule s;
  Node* kt = g.find("kt")->producer();
  Node* mm = g.find("s")->producer();
  s.groups.push_back(make_group(g, {mm}, KernelGroup::Kind::Gemm, 0));
  s.groups[0].inputs = {g.find("q"), g.find("k")};
  s.groups[0].prologue = {kt};
  s.groups.push_back(make_group(g, {g.find("z")->producer()}, KernelGroup::Kind::Gemm, 1));
  s.groups.push_back(make_group(g, {g.find("u")->producer()}, KernelGroup::Kind::Gemm, 2));
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 3}, {"T", 4}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 12));
  // k is read transposed: its k-stride is 1 and the batch dim of q broadcasts over it.
  require_checks(lowered_text(g, s), R"(
CHECK: kernel k0_matmul
CHECK: gemm batch [B, 2] m T n T k 8
CHECK: b k[(o1 * T + o3) * 8 + r0] strides offset 0 outer [0, 8*T, 0, 8] k 1
)");
}

// The two GEMM operands every exported transformer has (issue 16): a reshape [B, S, H] ->
// [B*S, H] before a linear, and the attention heads merge before the output projection.
constexpr const char* kReshapeLinear = R"(graph rl(%x: f32[B, S, 16], %w: f32[8, 16] param) {
  %r = reshape(%x, shape=[-1, 16])
  %y = linear(%r, %w)
  return %y
})";
constexpr const char* kHeadsMerge = R"(graph hm(%x: f32[B, 2, S, 4], %w: f32[6, 8] param) {
  %p = permute(%x, dims=[0, 2, 1, 3])
  %r = reshape(%p, shape=[B, S, 8])
  %y = linear(%r, %w)
  return %y
})";

TEST_CASE("a reshape before a GEMM leaves an affine operand", "[lower]") {
  Graph g = parse_or_fail(kReshapeLinear);
  Schedule s;
  s.groups.push_back(make_group(g, {g.find("y")->producer()}, KernelGroup::Kind::Gemm, 0));
  s.groups[0].inputs = {g.find("x"), g.find("w")};
  s.groups[0].prologue = {g.find("r")->producer()};
  std::vector<Bindings> bs = {{{"B", 1}, {"S", 1}}, {{"B", 3}, {"S", 7}}, {{"B", 8}, {"S", 64}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 13));
  // Row o0 of [B*S, 16] is x[o0 // S, o0 % S]: the split and merge cancel, x is a [B*S, 16] matrix.
  require_checks(lowered_text(g, s), R"(
CHECK: gemm batch [] m B*S n 8 k 16
CHECK: a x[o0 * 16 + r0] strides offset 0 outer [16, 0] k 1
CHECK: b w[o1 * 16 + r0] strides offset 0 outer [0, 16] k 1
)");
}

TEST_CASE("a reshape chain [B, S, 16] -> [B, 16*S] -> [B*S, 16] before a GEMM leaves an affine operand", "[lower]") {
  Graph g = parse_or_fail(R"(graph rc(%x: f32[B, S, 16], %w: f32[8, 16] param) {
  %f = reshape(%x, shape=[B, -1])
  %r = reshape(%f, shape=[-1, 16])
  %y = linear(%r, %w)
  return %y
})");
  Schedule s;
  s.groups.push_back(make_group(g, {g.find("y")->producer()}, KernelGroup::Kind::Gemm, 0));
  s.groups[0].inputs = {g.find("x"), g.find("w")};
  s.groups[0].prologue = {g.find("f")->producer(), g.find("r")->producer()};
  std::vector<Bindings> bs = {{{"B", 1}, {"S", 1}}, {{"B", 3}, {"S", 7}}, {{"B", 8}, {"S", 64}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 15));
  require_checks(lowered_text(g, s), "CHECK: a x[o0 * 16 + r0] strides offset 0 outer [16, 0] k 1");
}

TEST_CASE("the heads merge before a GEMM: per batch a two-level stride along k, no affine index", "[lower]") {
  Graph g = parse_or_fail(kHeadsMerge);
  Schedule s;
  s.groups.push_back(make_group(g, {g.find("y")->producer()}, KernelGroup::Kind::Gemm, 0));
  s.groups[0].inputs = {g.find("x"), g.find("w")};
  s.groups[0].prologue = {g.find("p")->producer(), g.find("r")->producer()};
  std::vector<Bindings> bs = {{{"B", 1}, {"S", 1}}, {{"B", 3}, {"S", 7}}, {{"B", 8}, {"S", 64}}};
  require_ok(check_schedule_matches_reference(g, s, bs, 14));
  // Element r0 = h*4 + d of row (o0, o1) is x[o0, h, o1, d]: a gather (codegen/gemm.h) makes it a matrix.
  require_checks(lowered_text(g, s), R"(
CHECK: gemm batch [] m B*S n 6 k 8
CHECK: a x[((o0 * 2 + r0 // 4) * S + o1) * 4 + r0 % 4] (not affine)
CHECK: b w[o2 * 8 + r0] strides
)");
}

TEST_CASE("lowering errors name the group and the node", "[lower]") {
  SECTION("composite ops must be decomposed first") {
    Graph g = parse_or_fail("graph s(%x: f32[4, 8]) {\n  %y = softmax(%x)\n  return %y\n}");
    absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, schedule_per_node(g));
    REQUIRE_FALSE(ks.ok());
    REQUIRE_THAT(status_message(ks.status()), Catch::Contains("group 0") && Catch::Contains("must be decomposed"));
  }
  SECTION("a reduction result read across rows cannot share its kernel") {
    Graph g = parse_or_fail("graph s(%x: f32[4, 4]) {\n  %m = sum(%x, axes=[1])\n  %y = add(%x, %m)\n  return %y\n}");
    absl::StatusOr<std::vector<kir::Kernel>> ks =
        lower_schedule(g, schedule_single_group(g, KernelGroup::Kind::Reduction));
    REQUIRE_FALSE(ks.ok());
    REQUIRE_THAT(status_message(ks.status()), Catch::Contains("%m = sum") && Catch::Contains("across rows"));
  }
  SECTION("the evaluator rejects arguments of the wrong shape") {
    Graph g = parse_or_fail("graph s(%x: f32[4, B]) {\n  %y = exp(%x)\n  return %y\n}");
    Schedule s = schedule_per_node(g);
    absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, s);
    REQUIRE(ks.ok());
    TensorMap args;
    args.emplace("x", HostTensor(DType::f32, {5, 2}));
    absl::StatusOr<std::vector<HostTensor>> r = evaluate_kernels(g, s, *ks, args);
    REQUIRE_FALSE(r.ok());
    REQUIRE_THAT(status_message(r.status()), Catch::Contains("x"));
  }
}
