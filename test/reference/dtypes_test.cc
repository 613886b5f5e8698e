// The reference evaluator on f64 and the 8-, 16-bit and unsigned integer types: wrapping in
// the type's width, unsigned division, comparison and max/min, f64 computed in double, and
// casts between every pair of types at their edge values.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include "test/reference/util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

constexpr DType kInts[] = {DType::i8, DType::u8, DType::i16, DType::u16, DType::i32, DType::u32, DType::i64, DType::u64};

// The value a C++ integer of dtype t holds for the bit pattern `bits` (wrap_int's form).
int64_t as_type(__int128 v, DType t) { return wrap_int(static_cast<int64_t>(static_cast<unsigned __int128>(v)), t); }

// t's value as a 128-bit integer: u64 bit patterns read as unsigned.
__int128 wide(int64_t v, DType t) {
  return t == DType::u64 ? static_cast<__int128>(static_cast<uint64_t>(v)) : static_cast<__int128>(v);
}

}  // namespace

TEST_CASE("integer add, sub, mul and neg wrap in the type's width", "[dtypes]") {
  for (DType t : kInts) {
    INFO(dtype_name(t));
    int64_t bits = dtype_bits(t);
    __int128 lo = is_unsigned(t) ? 0 : -(static_cast<__int128>(1) << (bits - 1));
    __int128 hi = is_unsigned(t) ? (static_cast<__int128>(1) << bits) - 1 : (static_cast<__int128>(1) << (bits - 1)) - 1;
    std::vector<__int128> vals{lo, lo + 1, -1, 0, 1, 7, hi - 1, hi};
    std::vector<int64_t> a, b;
    for (__int128 x : vals)
      for (__int128 y : vals) {
        a.push_back(as_type(x, t));
        b.push_back(as_type(y, t));
      }
    int64_t n = static_cast<int64_t>(a.size());
    HostTensor ta = int_tensor(t, {n}, a), tb = int_tensor(t, {n}, b);
    for (Op op : {Op::Add, Op::Sub, Op::Mul}) {
      HostTensor r = run(op, {ta, tb});
      REQUIRE(r.dtype() == t);
      for (int64_t i = 0; i < n; ++i) {
        __int128 x = wide(a[i], t), y = wide(b[i], t);
        __int128 want = op == Op::Add ? x + y : op == Op::Sub ? x - y : static_cast<__int128>(static_cast<unsigned __int128>(x) * static_cast<unsigned __int128>(y));
        INFO(op_name(op) << " element " << i);
        CHECK(r.get_int(i) == as_type(want, t));
      }
    }
    HostTensor neg = run(Op::Neg, {ta});
    for (int64_t i = 0; i < n; ++i) CHECK(neg.get_int(i) == as_type(-wide(a[i], t), t));
  }
}

TEST_CASE("unsigned division, comparison, maximum and minimum are unsigned", "[dtypes]") {
  // 2^63 + 5 and 2^64 - 1 are negative as int64 bit patterns; unsigned they are large.
  int64_t big = static_cast<int64_t>((uint64_t{1} << 63) + 5), top = -1;
  HostTensor a = int_tensor(DType::u64, {4}, {big, top, 10, 3});
  HostTensor b = int_tensor(DType::u64, {4}, {2, 3, top, 0});
  check_ints(run(Op::Div, {a, b}), DType::u64, {4},
             {static_cast<int64_t>(((uint64_t{1} << 63) + 5) / 2), static_cast<int64_t>(~uint64_t{0} / 3), 0, 0});
  check_ints(run(Op::Lt, {a, b}), DType::boolean, {4}, {0, 0, 1, 0});
  check_ints(run(Op::Ge, {a, b}), DType::boolean, {4}, {1, 1, 0, 1});
  check_ints(run(Op::Maximum, {a, b}), DType::u64, {4}, {big, top, top, 3});
  check_ints(run(Op::Minimum, {a, b}), DType::u64, {4}, {2, 3, 10, 0});
  check_ints(run(Op::Max, {a}, {{"axes", std::vector<int64_t>{0}}}), DType::u64, {}, {top});
  check_ints(run(Op::Min, {a}, {{"axes", std::vector<int64_t>{0}}}), DType::u64, {}, {3});
  check_ints(run(Op::ArgMax, {a}, {{"axis", int64_t{0}}}), DType::i64, {}, {1});
  check_ints(run(Op::Abs, {a}), DType::u64, {4}, {big, top, 10, 3});
  check_ints(run(Op::Relu, {a}), DType::u64, {4}, {big, top, 10, 3});
  // Narrower unsigned types: 200 / 3 is 66 in u8 (as int8 bits -56 / 3 would be -18).
  HostTensor c = int_tensor(DType::u8, {3}, {200, 255, 7}), d = int_tensor(DType::u8, {3}, {3, 0, 9});
  check_ints(run(Op::Div, {c, d}), DType::u8, {3}, {66, 0, 0});
  check_ints(run(Op::Gt, {c, d}), DType::boolean, {3}, {1, 1, 0});
  check_ints(run(Op::Sum, {c}), DType::u8, {}, {(200 + 255 + 7) % 256});
  // Signed narrow types truncate toward zero and wrap INT_MIN / -1.
  HostTensor e = int_tensor(DType::i8, {3}, {-128, -7, 100}), f = int_tensor(DType::i8, {3}, {-1, 2, 0});
  check_ints(run(Op::Div, {e, f}), DType::i8, {3}, {-128, -3, 0});
  check_ints(run(Op::Abs, {e}), DType::i8, {3}, {-128, 7, 100});
}

TEST_CASE("f64 computes in double, not through f32", "[dtypes]") {
  double third = 1.0 / 3.0, x = 1e-20;
  HostTensor a = tensor(DType::f64, {3}, {third, 1.0 + 1e-12, 2.0}), b = tensor(DType::f64, {3}, {x, 1.0, 1e300});
  check_exact(run(Op::Add, {a, b}), DType::f64, {3}, {third + x, 1.0 + 1e-12 + 1.0, 2.0 + 1e300});
  check_exact(run(Op::Mul, {a, b}), DType::f64, {3}, {third * x, 1.0 + 1e-12, 2e300});
  check_exact(run(Op::Sub, {a, b}), DType::f64, {3}, {third - x, (1.0 + 1e-12) - 1.0, 2.0 - 1e300});
  check_exact(run(Op::Exp, {a}), DType::f64, {3}, {std::exp(third), std::exp(1.0 + 1e-12), std::exp(2.0)});
  check_exact(run(Op::Sqrt, {b}), DType::f64, {3}, {std::sqrt(x), 1.0, std::sqrt(1e300)});
  check_exact(run(Op::Gt, {a, tensor(DType::f64, {3}, {third, 1.0, 2.0})}), DType::boolean, {3}, {0, 1, 0});
  // A sum whose terms f32 would lose: 1 + 1e-10 * 1000.
  std::vector<double> terms(1001, 1e-10);
  terms[0] = 1.0;
  HostTensor s = run(Op::Sum, {tensor(DType::f64, {1001}, terms)});
  double want = 0;
  for (double t : terms) want += t;
  check_exact(s, DType::f64, {}, {want});
  // matmul accumulates in double and stores without rounding to float.
  HostTensor m = run(Op::MatMul, {tensor(DType::f64, {1, 2}, {third, 1e-17}), tensor(DType::f64, {2, 1}, {3.0, 1.0})});
  check_exact(m, DType::f64, {1, 1}, {third * 3.0 + 1e-17});
}

TEST_CASE("casts between every pair of types at edge values", "[dtypes]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::vector<double> floats{0.0, -0.0, 0.5, -0.5, 1.9, -1.9, 127.5, 128.0, -129.0, 255.9, 256.0, 65535.0,
                                   -32769.0, 4294967296.5, -1e10, 1e19, 3e30, nan, inf, -inf};
  for (DType from : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
    HostTensor x = tensor(from, {static_cast<int64_t>(floats.size())}, floats);
    for (DType to : kAllDTypes) {
      INFO(dtype_name(from) << " -> " << dtype_name(to));
      HostTensor y = run(Op::Cast, {x}, {{"dtype", to}});
      REQUIRE(y.dtype() == to);
      for (int64_t i = 0; i < x.numel(); ++i) {
        double v = x.get(i);
        INFO("value " << v);
        if (to == DType::boolean) CHECK(y.get_int(i) == (v != 0));
        else if (is_float(to)) CHECK(same_value(y.get(i), round_to_dtype(v, to)));
        else CHECK(y.get_int(i) == float_to_int(v, to));
      }
    }
  }
  // Integer sources: every target wraps (or rounds, for floats) the exact source value.
  for (DType from : kInts) {
    std::vector<int64_t> vals{0, 1, -1, 127, -128, 255, 256, 32767, -32768, 65535, 65536, 2147483647, -2147483648LL,
                              4294967295LL, 4294967296LL, std::numeric_limits<int64_t>::max(),
                              std::numeric_limits<int64_t>::min(), 9007199254740993LL};
    for (int64_t& v : vals) v = wrap_int(v, from);
    HostTensor x = int_tensor(from, {static_cast<int64_t>(vals.size())}, vals);
    for (DType to : kAllDTypes) {
      INFO(dtype_name(from) << " -> " << dtype_name(to));
      HostTensor y = run(Op::Cast, {x}, {{"dtype", to}});
      for (size_t i = 0; i < vals.size(); ++i) {
        INFO("value " << vals[i]);
        bool u = from == DType::u64;
        uint64_t uv = static_cast<uint64_t>(vals[i]);
        if (to == DType::boolean) CHECK(y.get_int(i) == (vals[i] != 0));
        else if (to == DType::f64) CHECK(y.get(i) == (u ? static_cast<double>(uv) : static_cast<double>(vals[i])));
        else if (is_float(to))
          CHECK(y.get(i) == round_to_dtype(u ? static_cast<float>(uv) : static_cast<float>(vals[i]), to));
        else CHECK(y.get_int(i) == wrap_int(vals[i], to));
      }
    }
  }
  // bool -> every type is 0 or 1.
  HostTensor bits = int_tensor(DType::boolean, {2}, {0, 1});
  for (DType to : kAllDTypes) CHECK(run(Op::Cast, {bits}, {{"dtype", to}}).get(1) == 1.0);
}

TEST_CASE("constants and host storage of the new types", "[dtypes]") {
  HostTensor c = run(Op::Constant, {}, {{"value", 0.1}, {"dtype", DType::f64}});
  check_exact(c, DType::f64, {}, {0.1});
  HostTensor k = run(Op::Constant, {}, {{"value", int64_t{-1}}, {"dtype", DType::u16}});
  check_ints(k, DType::u16, {}, {65535});
  HostTensor t(DType::u64, {1});
  t.set(0, 1.5e19);
  CHECK(t.get(0) == static_cast<double>(static_cast<uint64_t>(1.5e19)));
  t.set_int(0, -2);
  CHECK(t.get(0) == static_cast<double>(~uint64_t{0} - 1));
  HostTensor s(DType::i16, {1});
  s.set(0, 40000.7);  // truncated to 40000, wrapped to -25536
  CHECK(s.get_int(0) == -25536);
}
