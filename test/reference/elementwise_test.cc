// Elementwise and broadcast ops: values derived by hand or from std:: functions in double.
#include <cmath>
#include <limits>

#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

double bf16_round(double v) { return round_to_dtype(v, DType::bf16); }
double f16_round(double v) { return round_to_dtype(v, DType::f16); }

const std::vector<double> kXs = {-3.25, -1.0, -0.40625, 0.0, 0.2734375, 1.0, 2.75};

// Each unary float op with its definition in double precision.
struct UnaryCase {
  Op op;
  double (*f)(double);
  Attrs attrs;
};
const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {Op::Neg, [](double x) { return -x; }, {}},
      {Op::Abs, [](double x) { return std::fabs(x); }, {}},
      {Op::Exp, [](double x) { return std::exp(x); }, {}},
      {Op::Log, [](double x) { return std::log(x); }, {}},
      {Op::Sqrt, [](double x) { return std::sqrt(x); }, {}},
      {Op::Rsqrt, [](double x) { return 1 / std::sqrt(x); }, {}},
      {Op::Sin, [](double x) { return std::sin(x); }, {}},
      {Op::Cos, [](double x) { return std::cos(x); }, {}},
      {Op::Tanh, [](double x) { return std::tanh(x); }, {}},
      {Op::Sigmoid, [](double x) { return 1 / (1 + std::exp(-x)); }, {}},
      {Op::Relu, [](double x) { return x > 0 ? x : 0.0; }, {}},
      {Op::Gelu, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, {}},
      {Op::Gelu,
       [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); },
       {{"approximate", std::string("tanh")}}},
      {Op::Silu, [](double x) { return x / (1 + std::exp(-x)); }, {}},
      {Op::Erf, [](double x) { return std::erf(x); }, {}},
      {Op::Atan, [](double x) { return std::atan(x); }, {}},
      {Op::Reciprocal, [](double x) { return 1 / x; }, {}},
      {Op::Floor, [](double x) { return std::floor(x); }, {}},
      {Op::Ceil, [](double x) { return std::ceil(x); }, {}},
  };
  return cases;
}

TEST_CASE("unary float ops in f32 match std:: functions to float precision") {
  for (const UnaryCase& c : unary_cases()) {
    INFO(op_name(c.op));
    std::vector<double> want;
    for (double x : kXs) want.push_back(c.f(x));
    HostTensor out = run(c.op, {tensor(DType::f32, {7}, kXs)}, c.attrs);
    CHECK(out.dtype() == DType::f32);
    // A few float ulps: the op computes in float, the reference here in double.
    check_close(out, {7}, want, 4e-7, 5e-7);
  }
}

TEST_CASE("unary float ops in bf16 and f16 round their f32 result to the storage type") {
  for (DType t : {DType::bf16, DType::f16}) {
    for (const UnaryCase& c : unary_cases()) {
      INFO(op_name(c.op) << " in " << dtype_name(t));
      HostTensor out = run(c.op, {tensor(t, {7}, kXs)}, c.attrs);
      REQUIRE(out.dtype() == t);
      for (int64_t i = 0; i < 7; ++i) {
        double want = c.f(kXs[i]), got = out.get(i);
        INFO("x = " << kXs[i] << ": got " << got << ", want about " << want);
        // Stored values are representable in the dtype, within half an ulp of the exact value
        // (plus float error).
        CHECK(same_value(round_to_dtype(got, t), got));
        if (std::isnan(want) || std::isinf(want)) {
          CHECK(same_value(got, want));
        } else {
          // ilogb(0) is INT_MIN: an exact zero has no ulp to subtract from (0 must give 0).
          double ulp = want == 0 ? 0
                       : t == DType::bf16 ? std::ldexp(1.0, std::ilogb(want) - 7)
                                          : std::ldexp(1.0, std::ilogb(want) - 10);
          CHECK(std::fabs(got - want) <= 0.5 * ulp * (1 + 1e-3) + 1e-30);
        }
      }
    }
  }
}

TEST_CASE("special values of unary ops") {
  HostTensor x = tensor(DType::f32, {4}, {kNaN, kInf, -kInf, -0.0});
  check_exact(run(Op::Relu, {x}), DType::f32, {4}, {kNaN, kInf, 0, 0});
  check_exact(run(Op::Exp, {x}), DType::f32, {4}, {kNaN, kInf, 0, 1});
  check_exact(run(Op::Sigmoid, {x}), DType::f32, {4}, {kNaN, 1, 0, 0.5});
  check_exact(run(Op::Reciprocal, {x}), DType::f32, {4}, {kNaN, 0, 0, -kInf});
  check_exact(run(Op::Log, {tensor(DType::f32, {3}, {0, -1, 1})}), DType::f32, {3}, {-kInf, kNaN, 0});
  check_exact(run(Op::Rsqrt, {tensor(DType::f32, {3}, {4, 0.25, 0})}), DType::f32, {3}, {0.5, 2, kInf});
}

TEST_CASE("integer unary ops: neg and abs wrap, relu") {
  const int64_t lo = std::numeric_limits<int32_t>::min();
  HostTensor x = int_tensor(DType::i32, {4}, {lo, -5, 0, 7});
  check_ints(run(Op::Neg, {x}), DType::i32, {4}, {lo, 5, 0, -7});
  check_ints(run(Op::Abs, {x}), DType::i32, {4}, {lo, 5, 0, 7});
  check_ints(run(Op::Relu, {x}), DType::i32, {4}, {0, 0, 0, 7});
  const int64_t lo64 = std::numeric_limits<int64_t>::min();
  check_ints(run(Op::Neg, {int_tensor(DType::i64, {2}, {lo64, 3})}), DType::i64, {2}, {lo64, -3});
  check_ints(run(Op::Not, {int_tensor(DType::boolean, {2}, {0, 1})}), DType::boolean, {2}, {1, 0});
}

TEST_CASE("binary float ops") {
  HostTensor a = tensor(DType::f32, {5}, {1.5, -2, 8, 0.5, 3});
  HostTensor b = tensor(DType::f32, {5}, {2, 4, -0.5, 0.5, 0});
  check_exact(run(Op::Add, {a, b}), DType::f32, {5}, {3.5, 2, 7.5, 1, 3});
  check_exact(run(Op::Sub, {a, b}), DType::f32, {5}, {-0.5, -6, 8.5, 0, 3});
  check_exact(run(Op::Mul, {a, b}), DType::f32, {5}, {3, -8, -4, 0.25, 0});
  check_exact(run(Op::Div, {a, b}), DType::f32, {5}, {0.75, -0.5, -16, 1, kInf});
  check_exact(run(Op::Maximum, {a, b}), DType::f32, {5}, {2, 4, 8, 0.5, 3});
  check_exact(run(Op::Minimum, {a, b}), DType::f32, {5}, {1.5, -2, -0.5, 0.5, 0});
  check_exact(run(Op::Pow, {tensor(DType::f32, {4}, {2, 4, -8, 0}), tensor(DType::f32, {4}, {3, 0.5, 1.0 / 3, 0})}),
              DType::f32, {4}, {8, 2, kNaN, 1});
  // fmod keeps the sign of a; exact where a - trunc(a / b) * b in floats rounds (1e8 / 3.3).
  check_exact(run(Op::Fmod, {tensor(DType::f32, {6}, {5.5, -5.5, 5.5, -5.5, 1e8, 3}),
                             tensor(DType::f32, {6}, {2, 2, -2, -2, 3.3f, 0})}),
              DType::f32, {6}, {1.5, -1.5, 1.5, -1.5, std::fmod(1e8f, 3.3f), kNaN});
  // A ratio that is not representable: the float quotient, not the double one.
  check_exact(run(Op::Div, {tensor(DType::f32, {1}, {1}), tensor(DType::f32, {1}, {3})}), DType::f32, {1},
              {static_cast<double>(1.0f / 3.0f)});
}

TEST_CASE("maximum and minimum propagate NaN from either side") {
  HostTensor a = tensor(DType::f32, {3}, {kNaN, 1, kNaN});
  HostTensor b = tensor(DType::f32, {3}, {1, kNaN, kNaN});
  check_exact(run(Op::Maximum, {a, b}), DType::f32, {3}, {kNaN, kNaN, kNaN});
  check_exact(run(Op::Minimum, {a, b}), DType::f32, {3}, {kNaN, kNaN, kNaN});
}

TEST_CASE("bf16 and f16 binary ops round the f32 result on output") {
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  // 1 + 3*2^-9 rounds up to 1 + 2^-7.
  HostTensor a = tensor(DType::bf16, {2}, {1, 1});
  HostTensor b = tensor(DType::bf16, {2}, {std::ldexp(1.0, -8), 3 * std::ldexp(1.0, -9)});
  check_exact(run(Op::Add, {a, b}), DType::bf16, {2}, {1, 1 + std::ldexp(1.0, -7)});
  HostTensor c = tensor(DType::f16, {2}, {1, 1});
  HostTensor d = tensor(DType::f16, {2}, {std::ldexp(1.0, -11), 3 * std::ldexp(1.0, -12)});
  check_exact(run(Op::Add, {c, d}), DType::f16, {2}, {1, 1 + std::ldexp(1.0, -10)});
  // 3 * 0.3359375 = 1.0078125 exactly in f32 -> a bf16 value; 0.1 * 3 rounds.
  HostTensor x = tensor(DType::bf16, {2}, {0.3359375, 0.1});
  HostTensor three = tensor(DType::bf16, {1}, {3});
  check_exact(run(Op::Mul, {x, three}), DType::bf16, {2},
              {1.0078125, bf16_round(static_cast<float>(bf16_round(0.1)) * 3.0f)});
  check_exact(run(Op::Div, {tensor(DType::f16, {1}, {1}), tensor(DType::f16, {1}, {3})}), DType::f16, {1},
              {f16_round(1.0 / 3)});
  // f16 overflow goes to infinity.
  check_exact(run(Op::Mul, {tensor(DType::f16, {1}, {300}), tensor(DType::f16, {1}, {300})}), DType::f16, {1}, {kInf});
}

TEST_CASE("integer arithmetic wraps, division truncates and x/0 is 0") {
  const int64_t mx = std::numeric_limits<int32_t>::max(), mn = std::numeric_limits<int32_t>::min();
  HostTensor a = int_tensor(DType::i32, {6}, {mx, mn, 65536, 7, -7, mn});
  HostTensor b = int_tensor(DType::i32, {6}, {1, 1, 65536, 2, 2, -1});
  check_ints(run(Op::Add, {a, b}), DType::i32, {6}, {mn, mn + 1, 131072, 9, -5, mx});
  check_ints(run(Op::Sub, {a, b}), DType::i32, {6}, {mx - 1, mx, 0, 5, -9, mn + 1});
  check_ints(run(Op::Mul, {a, b}), DType::i32, {6}, {mx, mn, 0, 14, -14, mn});
  check_ints(run(Op::Div, {a, b}), DType::i32, {6}, {mx, mn, 1, 3, -3, mn});
  HostTensor n = int_tensor(DType::i64, {4}, {5, -5, 0, std::numeric_limits<int64_t>::min()});
  HostTensor z = int_tensor(DType::i64, {4}, {0, 0, 0, -1});
  check_ints(run(Op::Div, {n, z}), DType::i64, {4}, {0, 0, 0, std::numeric_limits<int64_t>::min()});
  check_ints(run(Op::Div, {int_tensor(DType::i64, {2}, {7, -7}), int_tensor(DType::i64, {2}, {-2, -2})}), DType::i64,
             {2}, {-3, 3});
  const int64_t mx64 = std::numeric_limits<int64_t>::max();
  check_ints(run(Op::Add, {int_tensor(DType::i64, {1}, {mx64}), int_tensor(DType::i64, {1}, {1})}), DType::i64, {1},
             {std::numeric_limits<int64_t>::min()});
  check_ints(run(Op::Maximum, {int_tensor(DType::i64, {2}, {mx64, -3}), int_tensor(DType::i64, {2}, {0, 4})}),
             DType::i64, {2}, {mx64, 4});
  check_ints(run(Op::Minimum, {int_tensor(DType::i32, {2}, {5, -3}), int_tensor(DType::i32, {2}, {0, 4})}), DType::i32,
             {2}, {0, -3});
}

TEST_CASE("comparisons give bool; NaN compares false except ne") {
  HostTensor a = tensor(DType::f32, {4}, {1, 2, kNaN, 3});
  HostTensor b = tensor(DType::f32, {4}, {2, 2, kNaN, kNaN});
  check_ints(run(Op::Eq, {a, b}), DType::boolean, {4}, {0, 1, 0, 0});
  check_ints(run(Op::Ne, {a, b}), DType::boolean, {4}, {1, 0, 1, 1});
  check_ints(run(Op::Lt, {a, b}), DType::boolean, {4}, {1, 0, 0, 0});
  check_ints(run(Op::Le, {a, b}), DType::boolean, {4}, {1, 1, 0, 0});
  check_ints(run(Op::Gt, {a, b}), DType::boolean, {4}, {0, 0, 0, 0});
  check_ints(run(Op::Ge, {a, b}), DType::boolean, {4}, {0, 1, 0, 0});
  // i64 values beyond 2^53 compare exactly.
  int64_t big = (int64_t{1} << 60) + 1;
  check_ints(run(Op::Eq, {int_tensor(DType::i64, {1}, {big}), int_tensor(DType::i64, {1}, {big - 1})}),
             DType::boolean, {1}, {0});
  check_ints(run(Op::Lt, {int_tensor(DType::i32, {2}, {-1, 3}), int_tensor(DType::i32, {2}, {0, 3})}), DType::boolean,
             {2}, {1, 0});
  HostTensor t = int_tensor(DType::boolean, {4}, {0, 0, 1, 1}), u = int_tensor(DType::boolean, {4}, {0, 1, 0, 1});
  check_ints(run(Op::And, {t, u}), DType::boolean, {4}, {0, 0, 0, 1});
  check_ints(run(Op::Or, {t, u}), DType::boolean, {4}, {0, 1, 1, 1});
  check_ints(run(Op::Eq, {t, u}), DType::boolean, {4}, {1, 0, 0, 1});
}

TEST_CASE("NumPy broadcasting corner cases") {
  // [3,1] x [1,4] -> [3,4]
  HostTensor col = tensor(DType::f32, {3, 1}, {10, 20, 30}), row = tensor(DType::f32, {1, 4}, {1, 2, 3, 4});
  check_exact(run(Op::Add, {col, row}), DType::f32, {3, 4}, {11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 33, 34});
  check_exact(run(Op::Sub, {row, col}), DType::f32, {3, 4}, {-9, -8, -7, -6, -19, -18, -17, -16, -29, -28, -27, -26});
  // rank-0 x tensor, both orders, and rank-0 x rank-0
  HostTensor s = tensor(DType::f32, {}, {2});
  HostTensor v = tensor(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  check_exact(run(Op::Div, {s, v}), DType::f32, {2, 3},
              {2, 1, static_cast<double>(2.0f / 3.0f), 0.5, static_cast<double>(2.0f / 5.0f), static_cast<double>(2.0f / 6.0f)});
  check_exact(run(Op::Mul, {v, s}), DType::f32, {2, 3}, {2, 4, 6, 8, 10, 12});
  check_exact(run(Op::Sub, {s, tensor(DType::f32, {}, {5})}), DType::f32, {}, {-3});
  // [1] x [5]
  check_exact(run(Op::Mul, {tensor(DType::f32, {1}, {-1}), tensor(DType::f32, {5}, {1, 2, 3, 4, 5})}), DType::f32, {5},
              {-1, -2, -3, -4, -5});
  // [2,1,3] x [4,1] -> [2,4,3]
  HostTensor a = tensor(DType::f32, {2, 1, 3}, {0, 1, 2, 100, 101, 102});
  HostTensor b = tensor(DType::f32, {4, 1}, {0, 10, 20, 30});
  std::vector<double> want;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 3; ++k) want.push_back(i * 100 + k + j * 10);
  check_exact(run(Op::Add, {a, b}), DType::f32, {2, 4, 3}, want);
  // integer and comparison broadcasting
  check_ints(run(Op::Gt, {int_tensor(DType::i32, {3, 1}, {1, 2, 3}), int_tensor(DType::i32, {2}, {1, 2})}),
             DType::boolean, {3, 2}, {0, 0, 1, 0, 1, 1});
  // size-0 dims broadcast to empty
  check_exact(run(Op::Add, {tensor(DType::f32, {0, 3}, {}), tensor(DType::f32, {1, 3}, {1, 2, 3})}), DType::f32, {0, 3}, {});
}

TEST_CASE("where selects with broadcasting in every dtype") {
  HostTensor cond = int_tensor(DType::boolean, {3, 1}, {1, 0, 1});
  HostTensor a = tensor(DType::bf16, {1, 2}, {1.5, -2});
  HostTensor b = tensor(DType::bf16, {}, {7});
  check_exact(run(Op::Where, {cond, a, b}), DType::bf16, {3, 2}, {1.5, -2, 7, 7, 1.5, -2});
  int64_t big = (int64_t{1} << 62) + 3;
  check_ints(run(Op::Where, {int_tensor(DType::boolean, {2}, {0, 1}), int_tensor(DType::i64, {2}, {big, big}),
                             int_tensor(DType::i64, {1}, {-1})}),
             DType::i64, {2}, {-1, big});
  check_exact(run(Op::Where, {int_tensor(DType::boolean, {2}, {1, 0}), tensor(DType::f32, {2}, {kNaN, 1}),
                              tensor(DType::f32, {2}, {0, kNaN})}),
              DType::f32, {2}, {kNaN, kNaN});
}

TEST_CASE("cast") {
  HostTensor f = tensor(DType::f32, {7}, {2.7, -2.7, kNaN, kInf, -kInf, -0.0, 0.5});
  check_ints(run(Op::Cast, {f}, {{"dtype", DType::i32}}), DType::i32, {7}, {2, -2, 0, 0, 0, 0, 0});
  check_ints(run(Op::Cast, {f}, {{"dtype", DType::i64}}), DType::i64, {7}, {2, -2, 0, 0, 0, 0, 0});
  check_ints(run(Op::Cast, {f}, {{"dtype", DType::boolean}}), DType::boolean, {7}, {1, 1, 1, 1, 1, 0, 1});
  check_exact(run(Op::Cast, {int_tensor(DType::boolean, {2}, {1, 0})}, {{"dtype", DType::f32}}), DType::f32, {2}, {1, 0});
  check_ints(run(Op::Cast, {int_tensor(DType::boolean, {2}, {1, 0})}, {{"dtype", DType::i64}}), DType::i64, {2}, {1, 0});
  check_ints(run(Op::Cast, {int_tensor(DType::i32, {3}, {0, -4, 9})}, {{"dtype", DType::boolean}}), DType::boolean, {3},
             {0, 1, 1});
  // i64 -> i32 wraps.
  check_ints(run(Op::Cast, {int_tensor(DType::i64, {2}, {(int64_t{1} << 32) + 5, -1})}, {{"dtype", DType::i32}}),
             DType::i32, {2}, {5, -1});
  // f32 -> bf16 ties to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6; f32 -> f16 likewise.
  HostTensor g = tensor(DType::f32, {3}, {1 + std::ldexp(1.0, -8), 1 + 3 * std::ldexp(1.0, -8), 1e30});
  check_exact(run(Op::Cast, {g}, {{"dtype", DType::bf16}}), DType::bf16, {3},
              {1, 1 + std::ldexp(1.0, -6), bf16_round(1e30)});
  HostTensor h = tensor(DType::f32, {3}, {1 + std::ldexp(1.0, -11), 1 + 3 * std::ldexp(1.0, -11), 1e5});
  check_exact(run(Op::Cast, {h}, {{"dtype", DType::f16}}), DType::f16, {3}, {1, 1 + std::ldexp(1.0, -9), kInf});
  // Integers to bf16: 257 ties to 256, 259 to 260.
  check_exact(run(Op::Cast, {int_tensor(DType::i32, {3}, {257, 259, -3})}, {{"dtype", DType::bf16}}), DType::bf16, {3},
              {256, 260, -3});
  // bf16 -> f16 is exact here; f16 -> bf16 rounds.
  check_exact(run(Op::Cast, {tensor(DType::f16, {1}, {1 + std::ldexp(1.0, -10)})}, {{"dtype", DType::bf16}}),
              DType::bf16, {1}, {1});
  check_exact(run(Op::Cast, {tensor(DType::bf16, {1}, {-0.5})}, {{"dtype", DType::f16}}), DType::f16, {1}, {-0.5});
}

TEST_CASE("constants of every dtype") {
  check_exact(run(Op::Constant, {}, {{"value", 0.5}, {"dtype", DType::f32}}), DType::f32, {}, {0.5});
  check_exact(run(Op::Constant, {}, {{"value", 0.1}, {"dtype", DType::bf16}}), DType::bf16, {}, {bf16_round(0.1)});
  check_exact(run(Op::Constant, {}, {{"value", 0.1}, {"dtype", DType::f16}}), DType::f16, {}, {f16_round(0.1)});
  check_exact(run(Op::Constant, {}, {{"value", int64_t{3}}, {"dtype", DType::f32}}), DType::f32, {}, {3});
  check_ints(run(Op::Constant, {}, {{"value", int64_t{-7}}, {"dtype", DType::i32}}), DType::i32, {}, {-7});
  int64_t big = (int64_t{1} << 62) + 1;
  check_ints(run(Op::Constant, {}, {{"value", big}, {"dtype", DType::i64}}), DType::i64, {}, {big});
  check_ints(run(Op::Constant, {}, {{"value", true}, {"dtype", DType::boolean}}), DType::boolean, {}, {1});
}

}  // namespace
}  // namespace kiln::test
