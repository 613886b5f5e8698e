// Slices with symbolic bounds, as exporters write them from shape arithmetic: imported as
// kiln slices whose bounds are dims, proved in range or assumed through the symbols'
// bounds, and run on the reference evaluator and the CPU backend at several sizes.
#include <catch2/catch.hpp>

#include <random>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "test/onnx/import_util.h"

namespace kiln {
namespace {

using testing::check_ir;
using testing::import_ok;
using testing::kF32;
using testing::ModelBuilder;

HostTensor random_tensor(std::vector<int64_t> shape, uint64_t seed) {
  return testing::random_tensor(DType::f32, std::move(shape), seed);
}

// The reference evaluator's outputs on `args`, and the CPU backend's, which must agree.
std::vector<HostTensor> run_both(const Graph& g, const TensorMap& args) {
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  INFO(status_message(want.status()));
  REQUIRE(want.ok());
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  INFO(status_message(cg.status()));
  REQUIRE(cg.ok());
  std::vector<Tensor> in;
  for (const Value* v : cg->module().args) {
    absl::StatusOr<Tensor> t = Tensor::from_host(args.at(v->name()));
    REQUIRE(t.ok());
    in.push_back(*t);
  }
  absl::StatusOr<std::vector<Tensor>> got = (*cg)(in);
  INFO(status_message(got.status()));
  REQUIRE(got.ok());
  REQUIRE(got->size() == want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    absl::StatusOr<HostTensor> h = (*got)[i].to_host();
    REQUIRE(h.ok());
    Comparison c = compare_tensors((*want)[i], *h, default_tolerance(DType::f32));
    INFO(c.message);
    CHECK(c.ok);
  }
  return *std::move(want);
}

// seq = x.shape[1], as a 1-element shape tensor ("seq_v").
void seq_of(ModelBuilder& m, const std::string& x) {
  m.ints("axis1", {1}).ints("zero", {0});
  m.node("Shape", {x}, {"shape"});
  m.node("Gather", {"shape", "axis1"}, {"seq_v"});
}

// BERT: position embeddings are rows 0..seq of a [1, 512, H] table.
TEST_CASE("a dynamic slice of a constant table imports, bounding seq by the table", "[onnx][slice]") {
  ModelBuilder m;
  m.input("x", kF32, {"B", "seq", 8});
  m.initializer("table", random_tensor({1, 512, 8}, 7));
  seq_of(m, "x");
  m.node("Slice", {"table", "zero", "seq_v", "axis1"}, {"pos"});
  m.node("Add", {"x", "pos"}, {"y"});
  m.output("y", kF32, {"B", "seq", 8});
  Graph g = import_ok(m);
  check_ir(g, R"(CHECK: symbol seq in [1, 512]
CHECK: slice(%table, axis=1, start=0, end=seq) : f32[1, seq, 8])");
  for (int64_t seq : {1, 7, 512}) {
    for (int64_t b : {1, 3}) {
      HostTensor x = random_tensor({b, seq, 8}, 100 + seq);
      std::vector<HostTensor> out = run_both(g, {{"x", x}});
      REQUIRE(out[0].shape() == std::vector<int64_t>{b, seq, 8});
    }
  }
  // A longer sequence than the table is outside seq's bounds: rejected, not clamped.
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  REQUIRE(cg.ok());
  absl::StatusOr<Tensor> x = Tensor::from_host(random_tensor({1, 513, 8}, 3));
  REQUIRE(x.ok());
  absl::StatusOr<std::vector<Tensor>> y = (*cg)({*x});
  REQUIRE(!y.ok());
  CHECK_THAT(status_message(y.status()), Catch::Contains("seq = 513 is outside its bounds [1, 512]"));
}

// GPT-2: mask[:, :, :, :key.shape[-2]] where the mask's dim is that length: a no-op.
TEST_CASE("a slice up to the dim's own length is the identity", "[onnx][slice]") {
  ModelBuilder m;
  m.input("x", kF32, {"B", "seq", 4});
  seq_of(m, "x");
  m.node("Slice", {"x", "zero", "seq_v", "axis1"}, {"y"});
  m.node("Relu", {"y"}, {"z"});
  m.output("z", kF32, {"B", "seq", 4});
  Graph g = import_ok(m);
  check_ir(g, "CHECK: slice(%x, axis=1, start=0, end=seq) : f32[B, seq, 4]");
  CHECK(g.symbol_bounds().empty());  // nothing had to be assumed
  for (int64_t seq : {1, 9, 64}) run_both(g, {{"x", random_tensor({2, seq, 4}, seq)}});
}

// T5: the last seq elements of a row of length seq, start = -seq.
TEST_CASE("a symbolic negative start counts from the end", "[onnx][slice]") {
  ModelBuilder m;
  m.input("x", kF32, {"seq", 6, "seq"});
  m.ints("axis2", {2}).ints("big", {std::numeric_limits<int64_t>::max()});
  m.ints("axis0", {0});
  m.node("Shape", {"x"}, {"shape"});
  m.node("Gather", {"shape", "axis0"}, {"seq_v"});
  m.node("Neg", {"seq_v"}, {"minus_seq"});
  m.node("Slice", {"x", "minus_seq", "big", "axis2"}, {"y"});
  m.output("y", kF32, {"seq", 6, "seq"});
  Graph g = import_ok(m);
  check_ir(g, "CHECK: slice(%x, axis=2, start=0, end=seq) : f32[seq, 6, seq]");
  for (int64_t seq : {1, 5, 33}) run_both(g, {{"x", random_tensor({seq, 6, seq}, seq)}});
}

TEST_CASE("slices with symbolic and constant bounds run on every size", "[onnx][slice]") {
  // x[:, 1:seq - 1, ::2 ] with seq >= 2 assumed, and x[:, 3:] with seq >= 3 assumed.
  ModelBuilder m;
  m.input("x", kF32, {2, "seq", 5});
  seq_of(m, "x");
  m.ints("one", {1}).ints("three", {3}).ints("two", {2}).ints("axis2", {2});
  m.ints("big", {std::numeric_limits<int64_t>::max()});
  m.node("Sub", {"seq_v", "one"}, {"seq_minus_1"});
  m.node("Slice", {"x", "one", "seq_minus_1", "axis1"}, {"mid"});
  m.node("Slice", {"mid", "zero", "big", "axis2", "two"}, {"mid2"});
  m.node("Slice", {"x", "three", "big", "axis1"}, {"tail"});
  m.output("mid2", kF32, {}).output("tail", kF32, {});
  Graph g = import_ok(m);
  check_ir(g, R"(CHECK: symbol seq in [3, inf]
CHECK: slice(%x, axis=1, start=1, end=seq - 1) : f32[2, seq - 2, 5]
CHECK: slice({{.*}}, axis=2, start=0, end=9223372036854775807, step=2) : f32[2, seq - 2, 3]
CHECK: slice(%x, axis=1, start=3, end=seq) : f32[2, seq - 3, 5])");
  for (int64_t seq : {3, 4, 17, 100}) {
    HostTensor x = random_tensor({2, seq, 5}, seq);
    std::vector<HostTensor> out = run_both(g, {{"x", x}});
    // mid2[b, i, j] = x[b, 1 + i, 2 j], tail[b, i, j] = x[b, 3 + i, j]
    REQUIRE(out[0].shape() == std::vector<int64_t>{2, seq - 2, 3});
    REQUIRE(out[1].shape() == std::vector<int64_t>{2, seq - 3, 5});
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < seq - 3; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          CHECK(out[0].get((b * (seq - 2) + i) * 3 + j) == x.get((b * seq + 1 + i) * 5 + 2 * j));
          CHECK(out[1].get((b * (seq - 3) + i) * 5 + j) == x.get((b * seq + 3 + i) * 5 + j));
        }
  }
}

TEST_CASE("a symbolic bound of unknown sign fails, naming the node and the bound", "[onnx][slice][errors]") {
  ModelBuilder m;
  m.input("x", kF32, {"seq"});
  m.ints("axis0", {0}).ints("five", {5}).ints("zero", {0});
  m.node("Shape", {"x"}, {"shape"});
  m.node("Sub", {"shape", "five"}, {"s"});  // seq - 5: negative for seq < 5
  m.node("Slice", {"x", "s", "shape", "axis0"}, {"y"}, "cut");
  m.output("y", kF32, {});
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
  REQUIRE(!g.ok());
  CHECK(g.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(status_message(g.status()), Catch::Contains("test.onnx: node 'cut' (Slice, opset 17): start seq - 5 may be "
                                                         "negative or not"));
}

}  // namespace
}  // namespace kiln
