// compare_tensors and default tolerances.
#include <limits>

#include "ir/compare.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST_CASE("default tolerances per dtype") {
  CHECK(default_tolerance(DType::f32).rtol == 1e-4);
  CHECK(default_tolerance(DType::f32).atol == 1e-5);
  CHECK(default_tolerance(DType::f16).rtol == 1e-2);
  CHECK(default_tolerance(DType::f16).atol == 1e-3);
  CHECK(default_tolerance(DType::bf16).rtol == 2e-2);
  CHECK(default_tolerance(DType::bf16).atol == 1e-2);
  for (DType t : {DType::i32, DType::i64, DType::boolean}) {
    CHECK(default_tolerance(t).rtol == 0);
    CHECK(default_tolerance(t).atol == 0);
  }
}

TEST_CASE("within tolerance passes, outside names the worst element") {
  HostTensor e = tensor(DType::f32, {2, 3}, {1, 2, 3, 100, -5, 0});
  Tolerance tol = default_tolerance(DType::f32);
  Comparison same = compare_tensors(e, e, tol);
  CHECK(same.ok);
  CHECK(same.message.empty());
  CHECK(same.max_abs_err == 0);
  // 100 * (1 + 5e-5) is inside rtol; 0 + 5e-6 inside atol.
  HostTensor near = tensor(DType::f32, {2, 3}, {1, 2, 3, 100.005, -5, 5e-6});
  Comparison c = compare_tensors(e, near, tol);
  CHECK(c.ok);
  CHECK(c.max_abs_err > 0.004);
  HostTensor far = tensor(DType::f32, {2, 3}, {1, 2.001, 3, 100.5, -5, 0});
  Comparison f = compare_tensors(e, far, tol);
  CHECK(!f.ok);
  CHECK(f.worst_index == 3);
  CHECK(f.worst_coords == Dims{1, 0});
  CHECK(f.expected == 100);
  CHECK(std::fabs(f.got - 100.5) < 1e-4);
  CHECK(std::fabs(f.max_abs_err - 0.5) < 1e-4);
  INFO(f.message);
  CHECK(f.message.find("2 of 6") != std::string::npos);
  CHECK(f.message.find("[1, 0]") != std::string::npos);
  CHECK(f.message.find("expected 100") != std::string::npos);
  CHECK(f.message.find("got 100.5") != std::string::npos);
}

TEST_CASE("NaN matches only NaN, inf only the same inf") {
  Tolerance tol{1e-2, 1e-2};
  HostTensor e = tensor(DType::bf16, {3}, {kNaN, kInf, -kInf});
  CHECK(compare_tensors(e, e, tol).ok);
  Comparison a = compare_tensors(e, tensor(DType::bf16, {3}, {1, kInf, -kInf}), tol);
  CHECK(!a.ok);
  CHECK(a.worst_index == 0);
  CHECK(compare_tensors(tensor(DType::bf16, {1}, {1}), tensor(DType::bf16, {1}, {kNaN}), tol).ok == false);
  Comparison b = compare_tensors(e, tensor(DType::bf16, {3}, {kNaN, -kInf, -kInf}), tol);
  CHECK(!b.ok);
  CHECK(b.worst_index == 1);
  CHECK(!compare_tensors(tensor(DType::f32, {1}, {1e38}), tensor(DType::f32, {1}, {kInf}), {1, 1}).ok);
}

TEST_CASE("integers and bools compare exactly") {
  int64_t big = (int64_t{1} << 60);
  HostTensor e = int_tensor(DType::i64, {2}, {big, 3});
  CHECK(compare_tensors(e, e, default_tolerance(DType::i64)).ok);
  Comparison c = compare_tensors(e, int_tensor(DType::i64, {2}, {big + 1, 3}), default_tolerance(DType::i64));
  CHECK(!c.ok);
  CHECK(c.worst_index == 0);
  CHECK(!compare_tensors(int_tensor(DType::boolean, {2}, {1, 0}), int_tensor(DType::boolean, {2}, {1, 1}),
                         default_tolerance(DType::boolean)).ok);
}

TEST_CASE("dtype and shape mismatches") {
  Comparison d = compare_tensors(tensor(DType::f32, {2}, {1, 2}), tensor(DType::bf16, {2}, {1, 2}), {1, 1});
  CHECK(!d.ok);
  CHECK(d.message.find("dtype mismatch") != std::string::npos);
  CHECK(d.message.find("bf16[2]") != std::string::npos);
  Comparison s = compare_tensors(tensor(DType::f32, {2}, {1, 2}), tensor(DType::f32, {1, 2}, {1, 2}), {1, 1});
  CHECK(!s.ok);
  CHECK(s.message.find("shape mismatch") != std::string::npos);
  CHECK(s.message.find("f32[1, 2]") != std::string::npos);
  // Empty tensors agree; there is no worst element.
  Comparison z = compare_tensors(tensor(DType::f32, {0}, {}), tensor(DType::f32, {0}, {}), {0, 0});
  CHECK(z.ok);
  CHECK(z.worst_index == -1);
}

}  // namespace
}  // namespace kiln::test
