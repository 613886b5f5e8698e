// Reductions: axes (negative, several, none), keepdim, integer wrap, NaN, argmax ties.
#include <limits>

#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Attrs axes(std::vector<int64_t> a, bool keepdim = false) { return {{"axes", a}, {"keepdim", keepdim}}; }

TEST_CASE("sum mean max min prod over named axes") {
  HostTensor x = tensor(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  check_exact(run(Op::Sum, {x}), DType::f32, {}, {21});
  check_exact(run(Op::Sum, {x}, {{"keepdim", true}}), DType::f32, {1, 1}, {21});
  check_exact(run(Op::Sum, {x}, axes({0})), DType::f32, {3}, {5, 7, 9});
  check_exact(run(Op::Sum, {x}, axes({-1}, true)), DType::f32, {2, 1}, {6, 15});
  check_exact(run(Op::Mean, {x}, axes({1})), DType::f32, {2}, {2, 5});
  check_exact(run(Op::Mean, {x}, axes({-2}, true)), DType::f32, {1, 3}, {2.5, 3.5, 4.5});
  check_exact(run(Op::Max, {x}, axes({1})), DType::f32, {2}, {3, 6});
  check_exact(run(Op::Min, {x}, axes({0})), DType::f32, {3}, {1, 2, 3});
  check_exact(run(Op::Prod, {x}, axes({1})), DType::f32, {2}, {6, 120});
  check_exact(run(Op::Prod, {x}, axes({0, 1})), DType::f32, {}, {720});
  // An explicit empty list reduces nothing.
  check_exact(run(Op::Sum, {x}, axes({})), DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  // A rank-0 input: the reduction of one element.
  check_exact(run(Op::Max, {tensor(DType::f32, {}, {-4})}), DType::f32, {}, {-4});
}

TEST_CASE("reductions over non-adjacent axes of an odd-sized tensor") {
  // x[i][j][k] = 100i + 10j + k over [3, 1, 5]; reduce axes 0 and 2 (given as -1 and 0).
  std::vector<double> v;
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 5; ++k) v.push_back(100 * i + k);
  HostTensor x = tensor(DType::f32, {3, 1, 5}, v);
  check_exact(run(Op::Sum, {x}, axes({-1, 0})), DType::f32, {1}, {3 * 10 + 5 * 300});
  check_exact(run(Op::Max, {x}, axes({0, 2}, true)), DType::f32, {1, 1, 1}, {204});
  check_exact(run(Op::Sum, {x}, axes({1})), DType::f32, {3, 5}, v);
  check_exact(run(Op::Min, {x}, axes({0})), DType::f32, {1, 5}, {0, 1, 2, 3, 4});
  check_exact(run(Op::Mean, {x}, axes({2})), DType::f32, {3, 1}, {2, 102, 202});
}

TEST_CASE("float reductions accumulate in f64 and round once") {
  // 1 + 2^-8 + 2^-40: rounding straight to bf16 gives 1 + 2^-7, while an f32 accumulator
  // (or rounding through float with nearest-even) would give 1.
  double tiny = std::ldexp(1.0, -40), h = std::ldexp(1.0, -8);
  HostTensor x = tensor(DType::bf16, {3}, {1, h, tiny});
  check_exact(run(Op::Sum, {x}), DType::bf16, {}, {1 + std::ldexp(1.0, -7)});
  // f32: 2^24 + 1 + 1 is exact in f64, 2^24 in an f32 accumulator.
  HostTensor y = tensor(DType::f32, {3}, {16777216, 1, 1});
  check_exact(run(Op::Sum, {y}), DType::f32, {}, {16777218});
  // mean in f16: (2 + 2^-10 + 2^-20) / 2 is just above the midpoint 1 + 2^-11: rounds up.
  HostTensor z = tensor(DType::f16, {2}, {2, 2 * std::ldexp(1.0, -11) + std::ldexp(1.0, -20)});
  check_exact(run(Op::Mean, {z}), DType::f16, {}, {1 + std::ldexp(1.0, -10)});
  check_exact(run(Op::Prod, {tensor(DType::bf16, {2}, {1 + std::ldexp(1.0, -7), 1 + std::ldexp(1.0, -7)})}), DType::bf16,
              {}, {1 + std::ldexp(1.0, -6)});
}

TEST_CASE("max and min propagate NaN; sum of NaN is NaN") {
  HostTensor x = tensor(DType::f32, {2, 3}, {1, kNaN, 3, 4, 5, 6});
  check_exact(run(Op::Max, {x}, axes({1})), DType::f32, {2}, {kNaN, 6});
  check_exact(run(Op::Min, {x}, axes({1})), DType::f32, {2}, {kNaN, 4});
  check_exact(run(Op::Sum, {x}, axes({0})), DType::f32, {3}, {5, kNaN, 9});
  check_exact(run(Op::Max, {tensor(DType::f32, {2}, {kNaN, 1})}), DType::f32, {}, {kNaN});
}

TEST_CASE("integer sum and prod wrap to the dtype; max and min are exact") {
  const int64_t mx = std::numeric_limits<int32_t>::max(), mn = std::numeric_limits<int32_t>::min();
  HostTensor x = int_tensor(DType::i32, {2, 2}, {mx, 1, 65536, 65536});
  check_ints(run(Op::Sum, {x}, axes({1})), DType::i32, {2}, {mn, 131072});
  check_ints(run(Op::Prod, {x}, axes({-1})), DType::i32, {2}, {mx, 0});
  // Accumulated in int64: mx + mx - mx fits back exactly.
  check_ints(run(Op::Sum, {int_tensor(DType::i32, {3}, {mx, mx, -mx})}), DType::i32, {}, {mx});
  int64_t big = (int64_t{1} << 60) + 7;
  HostTensor y = int_tensor(DType::i64, {3}, {big, -big - 5, 3});
  check_ints(run(Op::Max, {y}), DType::i64, {}, {big});
  check_ints(run(Op::Min, {y}), DType::i64, {}, {-big - 5});
  check_ints(run(Op::Sum, {y}), DType::i64, {}, {-2});
  check_ints(run(Op::Sum, {int_tensor(DType::i64, {2}, {std::numeric_limits<int64_t>::max(), 2})}), DType::i64, {},
             {std::numeric_limits<int64_t>::min() + 1});
}

TEST_CASE("argmax: first maximum, NaN wins, i64 output, keepdim and negative axis") {
  check_ints(run(Op::ArgMax, {tensor(DType::f32, {5}, {1, 3, 3, 2, -1})}), DType::i64, {}, {1});
  check_ints(run(Op::ArgMax, {tensor(DType::f32, {5}, {1, kNaN, 5, kNaN, 9})}), DType::i64, {}, {1});
  check_ints(run(Op::ArgMax, {tensor(DType::f32, {3}, {kNaN, 2, 3})}), DType::i64, {}, {0});
  HostTensor x = tensor(DType::bf16, {2, 3}, {1, 7, 7, 9, 2, 9});
  check_ints(run(Op::ArgMax, {x}, {{"axis", int64_t{0}}}), DType::i64, {3}, {1, 0, 1});
  check_ints(run(Op::ArgMax, {x}, {{"axis", int64_t{-1}}, {"keepdim", true}}), DType::i64, {2, 1}, {1, 0});
  check_ints(run(Op::ArgMax, {int_tensor(DType::i32, {4}, {-5, -2, -2, -9})}), DType::i64, {}, {1});
  check_ints(run(Op::ArgMax, {tensor(DType::f32, {3, 1}, {4, 5, 6})}, {{"axis", int64_t{1}}}), DType::i64, {3}, {0, 0, 0});
}

TEST_CASE("empty reductions: sum 0, prod 1, max is an error naming the node") {
  HostTensor e = tensor(DType::f32, {2, 0}, {});
  check_exact(run(Op::Sum, {e}, axes({1})), DType::f32, {2}, {0, 0});
  check_exact(run(Op::Prod, {e}, axes({1})), DType::f32, {2}, {1, 1});
  absl::StatusOr<std::vector<HostTensor>> r = try_run(Op::Max, {e}, axes({1}));
  REQUIRE(!r.ok());
  CHECK(contains(r.status(), "max"));
  CHECK(contains(r.status(), "empty"));
}

}  // namespace
}  // namespace kiln::test
