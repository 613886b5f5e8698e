// The reference semantics of the collectives (ops.def: all_reduce, all_gather,
// reduce_scatter) through evaluate_ranks: one graph run as N ranks in lockstep. And the
// reason they exist: a two-layer MLP split Megatron-style across ranks (first weight by
// rows, second by columns, one all_reduce) computes the unsplit MLP.
#include <limits>
#include <random>

#include "ir/parser.h"
#include "ir/status.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

Graph parse(const char* text) {
  absl::StatusOr<Graph> g = parse_graph(text);
  INFO((g.ok() ? std::string() : status_message(g.status())));
  REQUIRE(g.ok());
  return *std::move(g);
}

std::vector<std::vector<HostTensor>> ranks_of(const Graph& g, const std::vector<TensorMap>& args) {
  absl::StatusOr<std::vector<std::vector<HostTensor>>> out = evaluate_ranks(g, args);
  INFO((out.ok() ? std::string() : status_message(out.status())));
  REQUIRE(out.ok());
  REQUIRE(out->size() == args.size());
  return *std::move(out);
}

TEST_CASE("all_reduce: the ranks' sum in f64, rounded once; integers wrap", "[reference][collective]") {
  Graph g = parse(
      "graph g(%x: f32[3], %h: bf16[2], %i: i32[2]) {\n"
      "  %a = all_reduce(%x, ranks=3)\n  %b = all_reduce(%h, ranks=3)\n  %c = all_reduce(%i, ranks=3)\n"
      "  return %a, %b, %c\n}");
  std::vector<TensorMap> args;
  const int32_t big = std::numeric_limits<int32_t>::max();
  // bf16 1 + 2^-8 + 2^-8: rounding after each add would give 1 twice (ties to even); once, 1 + 2^-7.
  const double e = std::ldexp(1.0, -8);
  std::vector<std::vector<double>> x = {{1, 2, 1e8}, {10, 20, 1}, {100, 200, -1e8}};
  std::vector<double> h = {1, e, e};
  for (int r = 0; r < 3; ++r)
    args.push_back({{"x", tensor(DType::f32, {3}, x[r])},
                    {"h", tensor(DType::bf16, {2}, {h[r], -1})},
                    {"i", int_tensor(DType::i32, {2}, {r == 0 ? big : 1, -r})}});
  std::vector<std::vector<HostTensor>> out = ranks_of(g, args);
  for (int r = 0; r < 3; ++r) {
    CHECK(doubles_of(out[r][0]) == std::vector<double>{111, 222, 1});  // 1e8 + 1 - 1e8 exactly in f64
    CHECK(doubles_of(out[r][1]) == std::vector<double>{1 + 2 * e, -3});
    CHECK(out[r][2].get_int(0) == std::numeric_limits<int32_t>::min() + 1);  // INT32_MAX + 2 wraps
    CHECK(out[r][2].get_int(1) == -3);
  }
}

TEST_CASE("all_gather and reduce_scatter: rank order along the axis", "[reference][collective]") {
  Graph g = parse(
      "graph g(%x: f32[2, 2]) {\n"
      "  %a = all_gather(%x, axis=-1, ranks=2)\n  %s = reduce_scatter(%x, axis=0, ranks=2)\n"
      "  return %a, %s\n}");
  std::vector<TensorMap> args = {{{"x", tensor(DType::f32, {2, 2}, {1, 2, 3, 4})}},
                                 {{"x", tensor(DType::f32, {2, 2}, {10, 20, 30, 40})}}};
  std::vector<std::vector<HostTensor>> out = ranks_of(g, args);
  for (int r = 0; r < 2; ++r) {
    CHECK(out[r][0].shape() == Dims{2, 4});
    CHECK(doubles_of(out[r][0]) == std::vector<double>{1, 2, 10, 20, 3, 4, 30, 40});
    CHECK(out[r][1].shape() == Dims{1, 2});
  }
  CHECK(doubles_of(out[0][1]) == std::vector<double>{11, 22});
  CHECK(doubles_of(out[1][1]) == std::vector<double>{33, 44});
  // The shards themselves (HostTensor::chunk, which reduce_scatter and the shard pass cut with).
  HostTensor t = tensor(DType::f32, {2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(doubles_of(t.chunk(1, 1, 2)) == std::vector<double>{3, 4, 7, 8});
  CHECK(t.chunk(1, 1, 2).shape() == Dims{2, 2});
  CHECK(doubles_of(t.chunk(0, 0, 2)) == std::vector<double>{1, 2, 3, 4});
}

TEST_CASE("collectives: types, rank counts and shapes that do not fit are errors", "[reference][collective]") {
  CHECK_THAT(status_message(parse_graph("graph g(%x: f32[3]) {\n  %s = reduce_scatter(%x, axis=0, ranks=2)\n"
                                        "  return %s\n}")
                                .status()),
             Catch::Contains("does not divide into 2 equal chunks"));
  CHECK_THAT(
      status_message(parse_graph("graph g(%x: bool[2]) {\n  %s = all_reduce(%x, ranks=2)\n  return %s\n}").status()),
      Catch::Contains("expected a numeric tensor"));
  CHECK_THAT(
      status_message(parse_graph("graph g(%x: f32[2]) {\n  %s = all_reduce(%x, ranks=0)\n  return %s\n}").status()),
      Catch::Contains("ranks must be at least 1"));

  Graph g = parse("graph g(%x: f32[N]) {\n  %s = all_reduce(%x, ranks=2)\n  return %s\n}");
  // One rank: evaluate() runs no collective over more.
  absl::StatusOr<std::vector<HostTensor>> one = evaluate(g, {{"x", tensor(DType::f32, {2}, {1, 2})}});
  REQUIRE(!one.ok());
  CHECK_THAT(status_message(one.status()), Catch::Contains("a collective over 2 ranks, evaluated as 1 rank"));
  // The ranks' operands must have one shape.
  std::vector<TensorMap> args = {{{"x", tensor(DType::f32, {2}, {1, 2})}}, {{"x", tensor(DType::f32, {3}, {1, 2, 3})}}};
  absl::StatusOr<std::vector<std::vector<HostTensor>>> two = evaluate_ranks(g, args);
  REQUIRE(!two.ok());
  CHECK_THAT(status_message(two.status()), Catch::Contains("rank 1's operand f32[3] differs from rank 0's f32[2]"));
  // Errors of one rank's op name the rank.
  args[1]["x"] = int_tensor(DType::i32, {2}, {1, 2});
  two = evaluate_ranks(g, args);
  REQUIRE(!two.ok());
  CHECK_THAT(status_message(two.status()), Catch::Contains("rank 1: argument %x: expected f32[N], got i32[2]"));
  CHECK(!evaluate_ranks(g, std::vector<TensorMap>{}).ok());
  // One rank of ranks=1: the identity.
  Graph id = parse("graph g(%x: f32[2]) {\n  %s = all_reduce(%x, ranks=1)\n  return %s\n}");
  absl::StatusOr<std::vector<HostTensor>> same = evaluate(id, {{"x", tensor(DType::f32, {2}, {1, 2})}});
  REQUIRE(same.ok());
  CHECK(doubles_of((*same)[0]) == std::vector<double>{1, 2});
}

TEST_CASE("a Megatron-split MLP over 1, 2 and 4 ranks computes the unsplit MLP", "[reference][collective]") {
  // Unsplit: y = relu(x @ w1^T) @ w2^T. Split: rank r holds rows r of w1 (its hidden units)
  // and the matching columns of w2; its partial products sum to y in one all_reduce.
  Graph full = parse(
      "graph mlp(%x: f32[B, 8], %w1: f32[16, 8] param, %w2: f32[8, 16] param) {\n"
      "  %l = linear(%x, %w1)\n  %h = relu(%l)\n  %y = linear(%h, %w2)\n  return %y\n}");
  std::mt19937_64 rng(7);
  HostTensor x(DType::f32, {3, 8}), w1(DType::f32, {16, 8}), w2(DType::f32, {8, 16});
  for (HostTensor* t : {&x, &w1, &w2}) t->fill_random(rng);
  std::vector<HostTensor> want = *evaluate(full, {{"x", x}, {"w1", w1}, {"w2", w2}});
  for (int ranks : {1, 2, 4}) {
    DYNAMIC_SECTION(ranks << " ranks") {
      Graph split =
          parse(str_cat("graph mlp(%x: f32[B, 8], %w1: f32[", 16 / ranks, ", 8] param, %w2: f32[8, ", 16 / ranks,
                        "] param) {\n  %l = linear(%x, %w1)\n  %h = relu(%l)\n  %p = linear(%h, %w2)\n",
                        "  %y = all_reduce(%p, ranks=", ranks, ")\n  return %y\n}")
                    .c_str());
      std::vector<TensorMap> args;
      for (int r = 0; r < ranks; ++r)
        args.push_back({{"x", x}, {"w1", w1.chunk(0, r, ranks)}, {"w2", w2.chunk(1, r, ranks)}});
      std::vector<std::vector<HostTensor>> out = ranks_of(split, args);
      for (int r = 0; r < ranks; ++r) {
        std::vector<double> got = doubles_of(out[r][0]), expected = doubles_of(want[0]);
        REQUIRE(got.size() == expected.size());
        for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(expected[i]).epsilon(1e-6).margin(1e-6));
      }
    }
  }
}

}  // namespace
}  // namespace kiln::test
