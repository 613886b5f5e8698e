// matmul (NumPy rules) and linear, checked against loops written here.
#include "test/reference/util.h"

namespace kiln::test {
namespace {

std::vector<double> iota_values(int64_t n, double scale, double offset) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(offset + scale * static_cast<double>((i * 7) % 11));
  return v;
}

TEST_CASE("matmul 2-D by hand") {
  HostTensor a = tensor(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  HostTensor b = tensor(DType::f32, {3, 2}, {7, 8, 9, 10, 11, 12});
  check_exact(run(Op::MatMul, {a, b}), DType::f32, {2, 2}, {58, 64, 139, 154});
}

TEST_CASE("matmul with 1-D operands removes the promoted dims") {
  HostTensor a = tensor(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6});
  HostTensor v3 = tensor(DType::f32, {3}, {1, 0, -1});
  HostTensor v2 = tensor(DType::f32, {2}, {2, -1});
  check_exact(run(Op::MatMul, {v3, v3}), DType::f32, {}, {2});
  check_exact(run(Op::MatMul, {a, v3}), DType::f32, {2}, {-2, -2});
  check_exact(run(Op::MatMul, {v2, a}), DType::f32, {3}, {-2, -1, 0});
  // 1-D with a batched operand: [3] @ [2, 3, 2] -> [2, 2]
  HostTensor bb = tensor(DType::f32, {2, 3, 2}, {1, 2, 3, 4, 5, 6, 0, 1, 0, 1, 0, 1});
  check_exact(run(Op::MatMul, {v3, bb}), DType::f32, {2, 2}, {-4, -4, 0, 0});
}

TEST_CASE("matmul broadcasts batch dims") {
  // a [1, 2, 3] (batch broadcast) @ b [4, 3, 2] -> [4, 2, 2]; also a [2, 1, 2, 3] @ b [3, 3, 1].
  std::vector<double> av = iota_values(6, 0.5, -1), bv = iota_values(24, 0.25, -0.5);
  HostTensor out = run(Op::MatMul, {tensor(DType::f32, {1, 2, 3}, av), tensor(DType::f32, {4, 3, 2}, bv)});
  std::vector<double> want;
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        double s = 0;
        for (int t = 0; t < 3; ++t) s += av[i * 3 + t] * bv[n * 6 + t * 2 + j];
        want.push_back(s);
      }
  check_exact(out, DType::f32, {4, 2, 2}, want);

  std::vector<double> cv = iota_values(12, 1, -3), dv = iota_values(9, 0.5, -1);
  HostTensor o2 = run(Op::MatMul, {tensor(DType::f32, {2, 1, 2, 3}, cv), tensor(DType::f32, {3, 3, 1}, dv)});
  std::vector<double> want2;
  for (int p = 0; p < 2; ++p)
    for (int n = 0; n < 3; ++n)
      for (int i = 0; i < 2; ++i) {
        double s = 0;
        for (int t = 0; t < 3; ++t) s += cv[p * 6 + i * 3 + t] * dv[n * 3 + t];
        want2.push_back(s);
      }
  check_exact(o2, DType::f32, {2, 3, 2, 1}, want2);
}

TEST_CASE("matmul accumulates in f64 and rounds once") {
  // 2^24 + 1 + 1 is exact only with a wide accumulator.
  HostTensor a = tensor(DType::f32, {1, 3}, {16777216, 1, 1});
  HostTensor b = tensor(DType::f32, {3, 1}, {1, 1, 1});
  check_exact(run(Op::MatMul, {a, b}), DType::f32, {1, 1}, {16777218});
  // bf16: 1 + 2^-8 + 2^-40 rounds once to 1 + 2^-7.
  HostTensor c = tensor(DType::bf16, {3}, {1, std::ldexp(1.0, -8), std::ldexp(1.0, -40)});
  HostTensor d = tensor(DType::bf16, {3}, {1, 1, 1});
  check_exact(run(Op::MatMul, {c, d}), DType::bf16, {}, {1 + std::ldexp(1.0, -7)});
}

TEST_CASE("linear with and without bias, bf16 rounding once including the bias") {
  HostTensor x = tensor(DType::f32, {2, 3}, {1, 2, 3, -1, 0.5, 2});
  HostTensor w = tensor(DType::f32, {2, 3}, {1, 0, -1, 0.5, 0.5, 0.5});
  HostTensor b = tensor(DType::f32, {2}, {10, -1});
  check_exact(run(Op::Linear, {x, w}), DType::f32, {2, 2}, {-2, 3, -3, 0.75});
  check_exact(run(Op::Linear, {x, w, b}), DType::f32, {2, 2}, {8, 2, 7, -0.25});
  // x [3] (rank 1) and x [2, 1, 3] (rank 3)
  check_exact(run(Op::Linear, {tensor(DType::f32, {3}, {1, 2, 3}), w}), DType::f32, {2}, {-2, 3});
  check_exact(run(Op::Linear, {tensor(DType::f32, {2, 1, 3}, {1, 2, 3, -1, 0.5, 2}), w, b}), DType::f32, {2, 1, 2},
              {8, 2, 7, -0.25});
  // bf16: row 0 sums to 1 + 2^-8 and the bias adds 2^-40: one rounding gives 1 + 2^-7
  // (rounding the product sum first would give 1). Row 1 without the tiny part ties to 1.
  HostTensor xb = tensor(DType::bf16, {2, 2}, {1, std::ldexp(1.0, -8), 1, std::ldexp(1.0, -8)});
  HostTensor wb = tensor(DType::bf16, {2, 2}, {1, 1, 0.5, 0.5});
  HostTensor bb = tensor(DType::bf16, {2}, {std::ldexp(1.0, -40), 0.5});
  // out[0][0] = 1 + 2^-8 + 2^-40 -> 1 + 2^-7;  out[0][1] = 0.5 + 2^-9 + 0.5 = 1 + 2^-9 -> 1
  check_exact(run(Op::Linear, {xb, wb, bb}), DType::bf16, {2, 2},
              {1 + std::ldexp(1.0, -7), 1, 1 + std::ldexp(1.0, -7), 1});
  check_exact(run(Op::Linear, {xb, wb}), DType::bf16, {2, 2}, {1, 0.5, 1, 0.5});
}

}  // namespace
}  // namespace kiln::test
