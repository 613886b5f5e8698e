// Views and data movement: reshape permute expand squeeze unsqueeze slice concat split gather.
#include <limits>

#include "ir/index_error.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();

std::vector<double> range(int64_t n) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<double>(i));
  return v;
}

Attrs slice_attrs(int64_t axis, int64_t start, int64_t end, int64_t step) {
  return {{"axis", axis}, {"start", start}, {"end", end}, {"step", step}};
}

TEST_CASE("reshape keeps row-major order, with -1") {
  HostTensor x = tensor(DType::f32, {2, 3}, range(6));
  check_exact(run(Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{3, -1}}}), DType::f32, {3, 2}, range(6));
  check_exact(run(Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{-1}}}), DType::f32, {6}, range(6));
  check_exact(run(Op::Reshape, {tensor(DType::f32, {1}, {5})}, {{"shape", std::vector<SymExpr>{}}}), DType::f32, {}, {5});
  int64_t big = (int64_t{1} << 61) + 1;
  check_ints(run(Op::Reshape, {int_tensor(DType::i64, {2}, {big, -big})}, {{"shape", std::vector<SymExpr>{1, 2, 1}}}),
             DType::i64, {1, 2, 1}, {big, -big});
}

TEST_CASE("permute") {
  // x[i][j][k] = 100i + 10j + k over [2, 3, 4]; dims [2, 0, 1] -> out[k][i][j].
  std::vector<double> v;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) v.push_back(100 * i + 10 * j + k);
  std::vector<double> want;
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) want.push_back(100 * i + 10 * j + k);
  HostTensor x = tensor(DType::bf16, {2, 3, 4}, v);
  check_exact(run(Op::Permute, {x}, {{"dims", std::vector<int64_t>{2, 0, 1}}}), DType::bf16, {4, 2, 3}, want);
  check_exact(run(Op::Permute, {x}, {{"dims", std::vector<int64_t>{-1, 0, -2}}}), DType::bf16, {4, 2, 3}, want);
  check_exact(run(Op::Permute, {tensor(DType::f32, {2, 2}, {1, 2, 3, 4})}, {{"dims", std::vector<int64_t>{1, 0}}}),
              DType::f32, {2, 2}, {1, 3, 2, 4});
}

TEST_CASE("expand broadcasts size-1 dims and adds leading ones, -1 keeps a dim") {
  HostTensor x = tensor(DType::f32, {3, 1}, {1, 2, 3});
  check_exact(run(Op::Expand, {x}, {{"shape", std::vector<SymExpr>{2, 3, 2}}}), DType::f32, {2, 3, 2},
              {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
  check_exact(run(Op::Expand, {x}, {{"shape", std::vector<SymExpr>{-1, 4}}}), DType::f32, {3, 4},
              {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
  check_ints(run(Op::Expand, {int_tensor(DType::boolean, {}, {1})}, {{"shape", std::vector<SymExpr>{2}}}), DType::boolean,
             {2}, {1, 1});
}

TEST_CASE("squeeze and unsqueeze") {
  HostTensor x = tensor(DType::f32, {1, 3, 1}, {1, 2, 3});
  check_exact(run(Op::Squeeze, {x}), DType::f32, {3}, {1, 2, 3});
  check_exact(run(Op::Squeeze, {x}, {{"axes", std::vector<int64_t>{-1}}}), DType::f32, {1, 3}, {1, 2, 3});
  check_exact(run(Op::Unsqueeze, {tensor(DType::f32, {3}, {1, 2, 3})}, {{"axes", std::vector<int64_t>{0, -1}}}),
              DType::f32, {1, 3, 1}, {1, 2, 3});
  check_exact(run(Op::Unsqueeze, {tensor(DType::f32, {}, {4})}, {{"axes", std::vector<int64_t>{0}}}), DType::f32, {1}, {4});
}

TEST_CASE("slice follows Python semantics") {
  HostTensor x = tensor(DType::f32, {7}, range(7));
  auto sl = [&](int64_t start, int64_t end, int64_t step) { return run(Op::Slice, {x}, slice_attrs(0, start, end, step)); };
  check_exact(sl(1, -1, 1), DType::f32, {5}, {1, 2, 3, 4, 5});        // x[1:-1]
  check_exact(sl(0, kMax, 3), DType::f32, {3}, {0, 3, 6});            // x[::3]
  check_exact(sl(-3, 100, 2), DType::f32, {2}, {4, 6});               // x[-3:100:2]
  check_exact(sl(-100, 2, 1), DType::f32, {2}, {0, 1});               // x[-100:2]
  check_exact(sl(5, 2, 1), DType::f32, {0}, {});                      // x[5:2]
  check_exact(sl(-1, kMin, -1), DType::f32, {7}, {6, 5, 4, 3, 2, 1, 0});  // x[::-1]
  check_exact(sl(-1, kMin, -2), DType::f32, {4}, {6, 4, 2, 0});       // x[::-2]
  check_exact(sl(5, 1, -1), DType::f32, {4}, {5, 4, 3, 2});           // x[5:1:-1]
  check_exact(sl(100, -6, -3), DType::f32, {2}, {6, 3});              // x[100:-6:-3]
  check_exact(sl(2, 5, -1), DType::f32, {0}, {});                     // x[2:5:-1]
  // The default end is a real bound: with a negative step it is empty, like x[0:maxsize:-1].
  check_exact(sl(0, kMax, -1), DType::f32, {0}, {});
  check_exact(sl(3, 4, kMax), DType::f32, {1}, {3});
  check_exact(sl(6, kMin, kMin), DType::f32, {1}, {6});
  // Middle axis of a 3-D tensor, negative axis and step.
  HostTensor y = tensor(DType::i32, {2, 3, 2}, range(12));
  check_ints(run(Op::Slice, {y}, slice_attrs(-2, 2, kMin, -2)), DType::i32, {2, 2, 2}, {4, 5, 0, 1, 10, 11, 6, 7});
}

TEST_CASE("concat and split along an axis") {
  HostTensor a = tensor(DType::f32, {2, 1}, {1, 2}), b = tensor(DType::f32, {2, 2}, {3, 4, 5, 6}),
             c = tensor(DType::f32, {2, 0}, {});
  check_exact(run(Op::Concat, {a, b, c, a}, {{"axis", int64_t{-1}}}), DType::f32, {2, 4}, {1, 3, 4, 1, 2, 5, 6, 2});
  check_exact(run(Op::Concat, {b, b}, {{"axis", int64_t{0}}}), DType::f32, {4, 2}, {3, 4, 5, 6, 3, 4, 5, 6});
  HostTensor x = tensor(DType::f32, {2, 5}, range(10));
  std::vector<HostTensor> parts = run_all(Op::Split, {x}, {{"axis", int64_t{1}}, {"sizes", std::vector<SymExpr>{2, 0, 3}}});
  REQUIRE(parts.size() == 3);
  check_exact(parts[0], DType::f32, {2, 2}, {0, 1, 5, 6});
  check_exact(parts[1], DType::f32, {2, 0}, {});
  check_exact(parts[2], DType::f32, {2, 3}, {2, 3, 4, 7, 8, 9});
  std::vector<HostTensor> rows = run_all(Op::Split, {x}, {{"axis", int64_t{-2}}, {"sizes", std::vector<SymExpr>{1, 1}}});
  check_exact(rows[1], DType::f32, {1, 5}, {5, 6, 7, 8, 9});
}

TEST_CASE("gather along an axis with negative indices") {
  HostTensor data = tensor(DType::f32, {4, 2}, range(8));
  HostTensor idx = int_tensor(DType::i64, {2, 2}, {3, -1, 0, -4});
  check_exact(run(Op::Gather, {data, idx}), DType::f32, {2, 2, 2}, {6, 7, 6, 7, 0, 1, 0, 1});
  check_exact(run(Op::Gather, {data, int_tensor(DType::i32, {3}, {1, -2, 1})}, {{"axis", int64_t{-1}}}), DType::f32, {4, 3},
              {1, 0, 1, 3, 2, 3, 5, 4, 5, 7, 6, 7});
  check_exact(run(Op::Gather, {data, int_tensor(DType::i64, {}, {2})}), DType::f32, {2}, {4, 5});
  // The middle axis of a 3-D tensor.
  HostTensor d3 = tensor(DType::f32, {2, 3, 2}, range(12));
  check_exact(run(Op::Gather, {d3, int_tensor(DType::i32, {2}, {2, 0})}, {{"axis", int64_t{1}}}), DType::f32, {2, 2, 2},
              {4, 5, 0, 1, 10, 11, 6, 7});
}

TEST_CASE("gather out of range is an error naming the node and the index") {
  HostTensor data = tensor(DType::f32, {4, 2}, range(8));
  for (int64_t bad : {int64_t{4}, int64_t{-5}, kMin}) {
    absl::StatusOr<std::vector<HostTensor>> r = try_run(Op::Gather, {data, int_tensor(DType::i64, {2, 2}, {0, 1, 2, bad})});
    REQUIRE(!r.ok());
    INFO(r.status().message());
    CHECK(contains(r.status(), "%gather = gather"));
    // The compiled devices' text (kir::index_check_error), then where in the indices.
    CHECK(contains(r.status(), str_cat("gather %gather: index ", bad, " out of range [-4, 4) on axis 0, at [1, 1]")));
    CHECK(is_gather_index_error(r.status()));
  }
}

TEST_CASE("gather with an empty result reads no index and checks none (as compiled devices)") {
  // Rows of size 0, and no rows before the axis: out-of-range indices are not an error.
  HostTensor empty_rows = tensor(DType::f32, {1, 0}, {});
  check_exact(run(Op::Gather, {empty_rows, int_tensor(DType::i64, {1, 2}, {2, -7})}), DType::f32, {1, 2, 0}, {});
  HostTensor no_outer = tensor(DType::f32, {0, 3}, {});
  check_exact(run(Op::Gather, {no_outer, int_tensor(DType::i64, {2}, {5, 9})}, {{"axis", int64_t{1}}}), DType::f32,
              {0, 2}, {});
  // A non-empty result still checks every index.
  HostTensor rows = tensor(DType::f32, {1, 2}, {1, 2});
  CHECK_FALSE(try_run(Op::Gather, {rows, int_tensor(DType::i64, {1, 2}, {0, 2})}).ok());
}

}  // namespace
}  // namespace kiln::test
