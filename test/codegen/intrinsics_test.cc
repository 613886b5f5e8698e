// The fused-form rewrite (codegen/intrinsics.h): the trees it replaces, in printed kernel
// IR, the near misses it leaves alone, and the rewritten kernels on the kernel-IR evaluator
// against the reference evaluator on fresh random inputs.
#include <catch2/catch.hpp>

#include <cmath>

#include "codegen/intrinsics.h"
#include "codegen/kernel_eval.h"
#include "codegen/lower.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"
#include "test/common/graphs.h"
#include "test/fuzz/check.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_checks;
using kir::Expr;
using kir::Index;

namespace {

std::vector<kir::Kernel> lowered(const Graph& g, const Schedule& s) {
  absl::StatusOr<std::vector<kir::Kernel>> ks = lower_schedule(g, s);
  if (!ks.ok()) FAIL(status_message(ks.status()));
  return *std::move(ks);
}

std::string text_of(const std::vector<kir::Kernel>& ks) {
  std::string s;
  for (const kir::Kernel& k : ks) s += kir::print_kernel(k);
  return s;
}

// The rewritten kernels of `s` on the kernel-IR evaluator against the reference evaluator
// of `g`, on random inputs in [-scale, scale), within the default tolerance of `t`.
void require_rewritten_matches_reference(const Graph& g, const Schedule& s, const std::vector<kir::Kernel>& ks,
                                         const Bindings& b, double scale, DType t, uint64_t seed) {
  TensorMap args = random_args(g, b, seed);
  for (auto& [name, tensor] : args)
    for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, tensor.get(i) * scale);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  absl::StatusOr<std::vector<HostTensor>> got = evaluate_kernels(g, s, ks, args);
  if (!want.ok()) FAIL(status_message(want.status()));
  if (!got.ok()) FAIL(status_message(got.status()));
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance(t));
    INFO(text_of(ks));
    INFO(c.message);
    REQUIRE(c.ok);
  }
}

// A one-point kernel storing `value` (over loads of x: f32[1] and w: f32[1]) into y: f32[1].
kir::Kernel point_kernel(const Expr& value) {
  kir::Kernel k;
  k.name = "k0_test";
  k.buffers = {{"x", DType::f32, {1}, kir::Buffer::Role::Input},
               {"w", DType::f32, {1}, kir::Buffer::Role::Input},
               {"y", value.dtype(), {1}, kir::Buffer::Role::Output}};
  k.domain = {1};
  kir::Stage st;
  st.stores.push_back({2, Index::outer(0), value});
  k.stages.push_back(std::move(st));
  return k;
}

Expr num(double v) { return Expr::constant(v, DType::f32); }
Expr bin(Op op, const Expr& a, const Expr& b) { return Expr::binary(op, a, b, DType::f32); }

}  // namespace

TEST_CASE("rewrite: the tanh gelu as lowered becomes gelu_tanh, its constants folded", "[intrinsics]") {
  for (const char* dtype : {"f32", "bf16"}) {
    DYNAMIC_SECTION(dtype) {
      Graph g = parse_or_fail(str_cat("graph g(%x: ", dtype, "[N, 37]) {\n  %y = gelu(%x, approximate=\"tanh\")\n  return %y\n}"));
      Schedule s = schedule_single_group(g, KernelGroup::Kind::Elementwise);
      std::vector<kir::Kernel> ks = lowered(g, s);
      REQUIRE(kir::rewrite_intrinsics(ks[0]));
      // -2 log2(e) sqrt(2/pi) and that times 0.044715, rounded to f32.
      require_checks(text_of(ks), R"(
CHECK: gelu_tanh(
CHECK-SAME: , -0.10{{[0-9]+}}:f32, -2.30{{[0-9]+}}:f32)
CHECK-NOT: tanh(
CHECK-NOT: mul(
)");
      // Nothing is left to rewrite.
      REQUIRE_FALSE(kir::rewrite_intrinsics(ks[0]));
      // Over the range where tanh saturates and beyond, as the reference computes it.
      for (double scale : {1.0, 6.0, 40.0})
        require_rewritten_matches_reference(g, s, ks, {{"N", 5}}, scale, parse_dtype(dtype).value(), 17);
    }
  }
}

TEST_CASE("rewrite: a division by a row statistic becomes mul_reciprocal", "[intrinsics]") {
  Graph g = parse_or_fail(test_graphs::kSoftmax);
  Schedule s = schedule_single_group(g, KernelGroup::Kind::Reduction);
  std::vector<kir::Kernel> ks = lowered(g, s);
  REQUIRE(kir::rewrite_intrinsics(ks[0]));
  require_checks(text_of(ks), R"(
CHECK: s1 = reduce sum
CHECK: map for r0 < 19:
CHECK: mul_reciprocal(t{{[0-9]+}}, s1)
CHECK-NOT: div(
)");
  require_rewritten_matches_reference(g, s, ks, {{"B", 2}, {"T", 3}}, 4.0, DType::f32, 23);
}

TEST_CASE("rewrite: 1 + tanh(u) anywhere; near misses stay as they are", "[intrinsics]") {
  Expr x = Expr::load(0, Index::outer(0), DType::f32), w = Expr::load(1, Index::outer(0), DType::f32);
  auto one_plus_tanh = [](const Expr& u) { return bin(Op::Add, num(1), Expr::unary(Op::Tanh, u, DType::f32)); };
  auto gelu = [&](const Expr& cubed) {  // as codegen/lower.cc writes it, with the cube's last factor given
    Expr cube = bin(Op::Mul, bin(Op::Mul, bin(Op::Mul, num(0.044715), x), x), cubed);
    return bin(Op::Mul, bin(Op::Mul, num(0.5), x), one_plus_tanh(bin(Op::Mul, num(0.79788456), bin(Op::Add, x, cube))));
  };
  SECTION("1 + tanh(u), either operand order") {
    for (Expr e : {one_plus_tanh(bin(Op::Mul, x, w)), bin(Op::Add, Expr::unary(Op::Tanh, x, DType::f32), num(1))}) {
      kir::Kernel k = point_kernel(e);
      REQUIRE(kir::rewrite_intrinsics(k));
      REQUIRE_THAT(kir::print_kernel(k), Catch::Contains("= one_plus_tanh(") && !Catch::Contains("add("));
    }
  }
  SECTION("a gelu whose cube reads another value keeps its product, with 1 + tanh rewritten") {
    kir::Kernel k = point_kernel(gelu(w));
    REQUIRE(kir::rewrite_intrinsics(k));
    std::string text = kir::print_kernel(k);
    INFO(text);
    REQUIRE(text.find("gelu_tanh") == std::string::npos);
    REQUIRE(text.find("mul(mul(0.5:f32, load x[o0]), one_plus_tanh(") != std::string::npos);
  }
  SECTION("bf16 arithmetic, a division by a let and 2 + tanh are not fused forms") {
    Expr t = Expr::unary(Op::Tanh, Expr::cast(x, DType::bf16), DType::bf16);
    for (Expr e : {Expr::binary(Op::Add, Expr::constant(1, DType::bf16), t, DType::bf16), bin(Op::Div, x, w),
                   bin(Op::Add, num(2), Expr::unary(Op::Tanh, x, DType::f32))}) {
      kir::Kernel k = point_kernel(e);
      std::string before = kir::print_kernel(k);
      REQUIRE_FALSE(kir::rewrite_intrinsics(k));
      REQUIRE(kir::print_kernel(k) == before);
    }
  }
  SECTION("a node read twice is rewritten once and stays shared") {
    Expr e = gelu(x);
    kir::Kernel k = point_kernel(bin(Op::Add, e, e));
    REQUIRE(kir::rewrite_intrinsics(k));
    const kir::ExprNode& sum = k.stages[0].stores[0].value.node();
    REQUIRE(sum.a.kind() == kir::ExprKind::Intrinsic);
    REQUIRE(&sum.a.node() == &sum.b.node());
    // The loads below it are the kernel's own nodes.
    REQUIRE(&sum.a.node().a.node() == &x.node());
  }
  SECTION("the rewritten values on the kernel-IR evaluator") {
    HostTensor xs(DType::f32, {1}), ws(DType::f32, {1}), y(DType::f32, {1});
    for (double xv : {-30.0, -5.5, -2.0, -0.3, 0.0, 0.7, 3.0, 12.0}) {
      xs.set(0, xv);
      ws.set(0, 0.25);
      for (int form = 0; form < 2; ++form) {
        kir::Kernel k = point_kernel(form == 0 ? gelu(x) : one_plus_tanh(bin(Op::Mul, x, w)));
        REQUIRE(kir::rewrite_intrinsics(k));
        REQUIRE(run_kernel(k, {&xs, &ws}, {&y}, {}).ok());
        float xf = static_cast<float>(xv);
        double want = form == 0 ? 0.5 * xf * (1 + std::tanh(0.79788456 * (xf + 0.044715 * xf * xf * xf)))
                                : 1 + std::tanh(xf * 0.25);
        INFO("form " << form << " x " << xv << " got " << y.get(0) << " want " << want);
        REQUIRE(std::fabs(y.get(0) - want) <= 1e-6 + 1e-6 * std::fabs(want));
      }
    }
  }
}
