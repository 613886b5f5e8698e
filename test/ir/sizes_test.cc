// Sizes are checked int64 arithmetic everywhere in ir/ (DESIGN.md, "Sizes"; issue 21):
// negative dims, element counts and byte sizes that overflow, symbolic values that overflow
// under huge bindings, and allocations beyond the limit are errors naming the value; file
// inputs are regular files only.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <limits>

#include "ir/checked.h"
#include "ir/file_io.h"
#include "ir/npy.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/verifier.h"

using namespace kiln;

namespace {

constexpr int64_t k2_40 = int64_t{1} << 40;

std::string parse_error(const std::string& text) {
  absl::StatusOr<Graph> g = parse_graph(text, "t.kiln");
  REQUIRE(!g.ok());
  return status_message(g.status());
}

// A fresh empty directory under the build tree's temp dir.
std::filesystem::path scratch(const std::string& name) {
  std::filesystem::path d = std::filesystem::temp_directory_path() / str_cat("kiln_sizes_", ::getpid(), "_", name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("checked_numel and checked_nbytes refuse negative dims and overflow", "[sizes]") {
  CHECK(*checked_numel(std::vector<int64_t>{3, 4}, "%x") == 12);
  CHECK(*checked_numel(std::vector<int64_t>{}, "%x") == 1);
  CHECK(*checked_numel(std::vector<int64_t>{k2_40, k2_40, 0}, "%x") == 0);  // 0 elements, no overflow
  absl::StatusOr<int64_t> neg = checked_numel(std::vector<int64_t>{2, -3}, "%x");
  REQUIRE(!neg.ok());
  CHECK_THAT(status_message(neg.status()), Catch::Contains("%x: dim 1 is negative (-3)"));
  absl::StatusOr<int64_t> big = checked_numel(std::vector<int64_t>{k2_40, k2_40}, "%y");
  REQUIRE(!big.ok());
  CHECK_THAT(status_message(big.status()), Catch::Contains("%y: element count of [1099511627776, 1099511627776] overflows"));
  absl::StatusOr<int64_t> bytes = checked_nbytes(DType::f32, std::vector<int64_t>{int64_t{1} << 62}, "%z");
  REQUIRE(!bytes.ok());
  CHECK_THAT(status_message(bytes.status()), Catch::Contains("byte size of f32[4611686018427387904] overflows"));
  absl::Status oom = check_allocation(100, 99, "%w");
  CHECK(absl::IsResourceExhausted(oom));
  CHECK_THAT(status_message(oom), Catch::Contains("out of memory: needs 100 bytes for %w"));
}

TEST_CASE("the parser refuses negative static dims with a location", "[sizes][parser]") {
  CHECK_THAT(parse_error("graph g(%x: f32[-3]) {\n  return %x\n}\n"), Catch::Contains("t.kiln:1:17: dim -3 is negative"));
  CHECK_THAT(parse_error("graph g(%x: f32[R, -B]) {\n  return %x\n}\n"), Catch::Contains("dim -B is negative"));
  // Possibly zero or positive: accepted (T >= 1).
  CHECK(parse_graph("graph g(%x: f32[T - 1]) {\n  return %x\n}\n", "t.kiln").ok());
}

TEST_CASE("symbolic values are evaluated with checked arithmetic", "[sizes][sym]") {
  SymExpr b = SymExpr::symbol("B");
  absl::StatusOr<int64_t> v = (b * b * 4).evaluate({{"B", int64_t{1} << 31}});
  REQUIRE(!v.ok());
  CHECK_THAT(status_message(v.status()), Catch::Contains("overflows int64"));
  CHECK(*(b * 4 + 3).evaluate({{"B", 5}}) == 23);
  // Negative dims under a binding are an error of evaluate_shape.
  absl::StatusOr<std::vector<int64_t>> s = evaluate_shape({b - 3}, {{"B", 1}});
  REQUIRE(!s.ok());
  CHECK_THAT(status_message(s.status()), Catch::Contains("is -2 under {B=1}"));
}

TEST_CASE("nested floordiv whose combined divisor overflows keeps its value", "[sizes][sym]") {
  // (x // 2^32) // 2^32: merging the divisors would wrap 2^64 to 0.
  SymExpr x = SymExpr::symbol("x");
  SymExpr e = x.floordiv(int64_t{1} << 32).floordiv(int64_t{1} << 32);
  for (int64_t at : {int64_t{-1}, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), int64_t{5}}) {
    int64_t inner = at >= 0 ? at >> 32 : -((-(at + 1)) >> 32) - 1;  // floor(at / 2^32)
    int64_t want = inner >= 0 ? inner >> 32 : -((-(inner + 1)) >> 32) - 1;
    INFO("x = " << at);
    CHECK(*e.evaluate({{"x", at}}) == want);
  }
}

TEST_CASE("shape arithmetic that overflows is marked, compares unequal and is rejected", "[sizes][sym]") {
  SymExpr n = shape_numel({k2_40, k2_40, k2_40});
  CHECK(n.overflowed());
  CHECK(n != SymExpr(0));
  CHECK(!n.evaluate({}).ok());
  CHECK(!shape_numel({k2_40, 2}).overflowed());
  // A reshape whose element count wrapped ([2^40]^3 -> [2^40, 0] compared equal as 0).
  Graph g("reshape");
  Value* x = *g.add_input("x", TensorType{DType::i8, {k2_40, k2_40, k2_40}});
  absl::StatusOr<Node*> r = g.add_node(Op::Reshape, {x}, {{"shape", Shape{k2_40, 0}}});
  REQUIRE(!r.ok());
  CHECK_THAT(status_message(r.status()), Catch::Contains("overflows int64"));
}

TEST_CASE("the verifier rejects types whose byte size is not representable", "[sizes][verifier]") {
  Graph g("big");
  Value* x = *g.add_input("x", TensorType{DType::f32, {int64_t{1} << 62, 4}});
  g.set_outputs({x});
  absl::Status s = verify(g);
  REQUIRE(!s.ok());
  CHECK_THAT(status_message(s), Catch::Contains("argument %x"));
  CHECK_THAT(status_message(s), Catch::Contains("overflows int64"));

  // Slice from INT64_MIN on a symbolic dim gave the type f32[-2^63].
  Graph h("slice");
  Value* y = *h.add_input("y", TensorType{DType::f32, {SymExpr::symbol("B")}});
  absl::StatusOr<Node*> sl = h.add_node(Op::Slice, {y},
                                        {{"axis", int64_t{0}}, {"start", SymExpr(std::numeric_limits<int64_t>::min())},
                                         {"end", SymExpr(std::numeric_limits<int64_t>::max())}});
  if (sl.ok()) {
    h.set_outputs({(*sl)->result()});
    absl::Status vs = verify(h);
    INFO((*sl)->result()->type().to_string());
    CHECK(!vs.ok());
  }
}

TEST_CASE("the reference evaluator refuses results beyond the allocation limit", "[sizes][reference]") {
  absl::StatusOr<Graph> g = parse_graph(R"(graph big(%x: f32[B]) {
  %y = expand(%x, shape=[16777216, B])
  return %y
}
)", "big.kiln");
  REQUIRE(g.ok());
  TensorMap args;
  args.emplace("x", HostTensor(DType::f32, {16777216}));
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(*g, args);  // 2^50 bytes
  REQUIRE(!out.ok());
  CHECK_THAT(status_message(out.status()), Catch::Contains("out of memory: needs 1125899906842624 bytes for %y"));
  // And under huge bindings: values whose sizes overflow are named before anything runs.
  absl::Status at = check_value_sizes(*g, {{"B", int64_t{1} << 62}}, host_allocation_limit());
  REQUIRE(!at.ok());
  CHECK_THAT(status_message(at), Catch::Contains("%x of type f32[B] under {B=4611686018427387904}"));
}

TEST_CASE("files are read only when they are regular files within the size limit", "[sizes][files]") {
  std::filesystem::path d = scratch("files");
  // A directory.
  absl::StatusOr<HostTensor> dir = read_npy(d.string());
  REQUIRE(!dir.ok());
  CHECK_THAT(status_message(dir.status()), Catch::Contains("not a regular file (a directory)"));
  // A FIFO with no writer: an error at once, not a hang.
  std::filesystem::path fifo = d / "in.npy";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  absl::StatusOr<HostTensor> f = read_npy(fifo.string());
  REQUIRE(!f.ok());
  CHECK_THAT(status_message(f.status()), Catch::Contains("not a regular file (a FIFO)"));
  absl::StatusOr<Graph> g = parse_graph_file(fifo.string());
  REQUIRE(!g.ok());
  // A device.
  absl::StatusOr<HostTensor> zero = read_npy("/dev/zero");
  REQUIRE(!zero.ok());
  CHECK_THAT(status_message(zero.status()), Catch::Contains("a device or socket"));
  // Larger than allowed, and missing.
  std::filesystem::path small = d / "small.txt";
  { std::FILE* out = std::fopen(small.c_str(), "wb"); std::fputs("0123456789", out); std::fclose(out); }
  CHECK(*read_regular_file(small.string(), 10) == "0123456789");
  CHECK_THAT(status_message(read_regular_file(small.string(), 9).status()), Catch::Contains("more than the 9 bytes"));
  CHECK(absl::IsNotFound(read_regular_file((d / "absent").string(), 10).status()));
  std::filesystem::remove_all(d);
}
