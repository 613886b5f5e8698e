// The ONNX importer on models built here: parameters and constants, symbolic dims, shape
// arithmetic folded at import time, op mappings the node tests do not reach, located
// errors, and corrupt or truncated files.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "frontends/onnx/onnx_import.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "test/onnx/import_util.h"

namespace kiln {
namespace {

using testing::check_ir;
using testing::import_error;
using testing::import_ok;
using testing::kF32;
using testing::kI64;
using testing::ModelBuilder;
using testing::random_tensor;
using testing::run;
using testing::set_attr;

// ---- structure -----------------------------------------------------------------------

TEST_CASE("dim_param dims become symbols; unnamed dims get fresh symbols", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {"batch", "seq len", 8}).input("y", kF32, {std::string(""), 8});
  m.proto().mutable_graph()->mutable_input(1)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->clear_dim_param();
  m.node("Relu", {"x"}, {"r"});
  m.node("Relu", {"y"}, {"s"});
  m.output("r", kF32, {"batch", "seq len", 8}).output("s", kF32, {});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: graph test(%x: f32[batch, seq_len, 8], %y: f32[unk0, 8])
    CHECK: %r = relu(%x) : f32[batch, seq_len, 8]
    CHECK: %s = relu(%y) : f32[unk0, 8]
  )");
  CHECK(g.symbols() == std::vector<std::string>{"batch", "seq_len", "unk0"});
}

TEST_CASE("a fresh symbol never takes a name the model uses", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {"unk0", 0});
  m.proto().mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->clear_dim_value();
  m.node("Relu", {"x"}, {"r"});
  m.output("r", kF32, {});
  check_ir(import_ok(m), "CHECK: %x: f32[unk0, unk1]");
}

TEST_CASE("initializers become parameters with data, computed as ONNX defines", "[onnx][import]") {
  HostTensor w = random_tensor(DType::f32, {4, 3}, 1), b = random_tensor(DType::f32, {3}, 2);
  ModelBuilder m;
  m.input("x", kF32, {"N", 4}).initializer("w", w).initializer("b", b);
  m.node("MatMul", {"x", "w"}, {"xw"});
  m.node("Add", {"xw", "b"}, {"y"});
  m.output("y", kF32, {"N", 3});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: graph test(%x: f32[N, 4], %w: f32[4, 3] param, %b: f32[3] param)
    CHECK: %xw = matmul(%x, %w) : f32[N, 3]
    CHECK: %y = add(%xw, %b) : f32[N, 3]
  )");
  REQUIRE(g.find("w")->data());
  HostTensor x = random_tensor(DType::f32, {5, 4}, 3);
  HostTensor y = run(g, {{"x", x}})[0];
  REQUIRE(y.shape() == std::vector<int64_t>{5, 3});
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 3; ++j) {
      double want = b.get(j);
      for (int64_t k = 0; k < 4; ++k) want += x.get(i * 4 + k) * w.get(k * 3 + j);
      CHECK(y.get(i * 3 + j) == Approx(want).epsilon(1e-6));
    }
}

TEST_CASE("Constant nodes fold: their values feed shapes or become parameters", "[onnx][import]") {
  HostTensor bias = random_tensor(DType::f32, {2, 6}, 4);
  ModelBuilder m;
  m.input("x", kF32, {3, 4});
  set_attr(m.node("Constant", {}, {"shape"}), "value_ints", std::vector<int64_t>{2, -1});
  set_attr(m.node("Constant", {}, {"bias"}), "value", bias);
  m.node("Reshape", {"x", "shape"}, {"r"});
  m.node("Add", {"r", "bias"}, {"y"});
  m.output("y", kF32, {2, 6});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: graph test(%x: f32[3, 4], %bias: f32[2, 6] param)
    CHECK-NOT: constant
    CHECK: %r = reshape(%x, shape=[2, -1]) : f32[2, 6]
    CHECK-NEXT: %y = add(%r, %bias)
  )");
  HostTensor x = random_tensor(DType::f32, {3, 4}, 5);
  HostTensor y = run(g, {{"x", x}})[0];
  for (int64_t i = 0; i < 12; ++i) CHECK(y.get(i) == static_cast<float>(static_cast<float>(x.get(i)) + static_cast<float>(bias.get(i))));
}

// x -> Shape -> Gather(0), Gather(1) -> Unsqueeze -> Concat with a constant tail ->
// Reshape, as exporters write "x.view(x.size(0), x.size(1) * 2, -1)".
ModelBuilder shape_arithmetic_model(const std::vector<testing::OnnxDim>& dims) {
  ModelBuilder m;
  m.input("x", kF32, dims);
  m.int_scalar("i0", 0).int_scalar("i1", 1).ints("two", {2}).ints("tail", {-1}).ints("axes0", {0});
  m.node("Shape", {"x"}, {"s"});
  m.node("Gather", {"s", "i0"}, {"d0"});          // a scalar
  m.node("Gather", {"s", "i1"}, {"d1"});
  m.node("Mul", {"d1", "two"}, {"d1x2"});          // scalar * [1]: a vector
  m.node("Unsqueeze", {"d0", "axes0"}, {"u0"});    // opset 13 form: axes as an input
  set_attr(m.node("Concat", {"u0", "d1x2", "tail"}, {"shape"}), "axis", int64_t{0});
  m.node("Reshape", {"x", "shape"}, {"y"});
  m.output("y", kF32, {});
  return m;
}

TEST_CASE("static shape arithmetic is evaluated at import time", "[onnx][import]") {
  Graph g = import_ok(shape_arithmetic_model({2, 3, 8}));
  check_ir(g, R"(
    CHECK: graph test(%x: f32[2, 3, 8])
    CHECK-NOT: gather
    CHECK-NOT: concat
    CHECK: %y = reshape(%x, shape=[2, 6, -1]) : f32[2, 6, 4]
  )");
  CHECK(g.num_nodes() == 1);
  HostTensor x = random_tensor(DType::f32, {2, 3, 8}, 6);
  HostTensor y = run(g, {{"x", x}})[0];
  CHECK(y.shape() == std::vector<int64_t>{2, 6, 4});
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(y.get(i) == x.get(i));
}

TEST_CASE("shape arithmetic on symbolic shapes becomes symbolic dims", "[onnx][import]") {
  Graph g = import_ok(shape_arithmetic_model({"B", "T", 8}));
  check_ir(g, R"(
    CHECK: graph test(%x: f32[B, T, 8])
    CHECK: %y = reshape(%x, shape=[B, 2*T, -1]) : f32[B, 2*T, 4]
  )");
  CHECK(g.num_nodes() == 1);
  for (auto [b, t] : {std::pair{1, 5}, std::pair{3, 2}}) {
    HostTensor x = random_tensor(DType::f32, {b, t, 8}, 7 + b);
    HostTensor y = run(g, {{"x", x}})[0];
    CHECK(y.shape() == std::vector<int64_t>{b, 2 * t, 4});
    for (int64_t i = 0; i < x.numel(); ++i) CHECK(y.get(i) == x.get(i));
  }
}

TEST_CASE("symbolic shape arithmetic: Div, Sub, Slice of a shape, Size, Expand", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {"B", "T", 6}).input("bias", kF32, {1, 6});
  m.ints("starts", {1}).ints("ends", {3}).ints("two", {2}).ints("one", {1});
  m.node("Shape", {"x"}, {"s"});
  m.node("Slice", {"s", "starts", "ends"}, {"t6"});   // [T, 6]
  m.node("Div", {"t6", "two"}, {"half"});              // [T // 2, 3]
  m.node("Sub", {"half", "one"}, {"less"});            // [T // 2 - 1, 2]
  m.node("Expand", {"bias", "t6"}, {"e"});             // bias broadcast to [T, 6]
  m.node("Size", {"x"}, {"n"});
  m.output("e", kF32, {}).output("less", kI64, {}).output("n", kI64, {});
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
  // T // 2 - 1 and B*T*6 are symbolic: they cannot become tensors of a kiln graph.
  REQUIRE(!g.ok());
  CHECK(g.status().code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(status_message(g.status()), Catch::Contains("'less' holds symbolic dims [T // 2 - 1, 2]"));
  m.proto().mutable_graph()->mutable_output()->DeleteSubrange(1, 2);
  Graph ok = import_ok(m);
  check_ir(ok, "CHECK: %e = expand(%bias, shape=[T, 6]) : f32[T, 6]");
}

// Exporters guard shapes with Equal/Where (e.g. "-1 means keep this dim"): on known values
// they fold, deciding symbolic comparisons from dims being >= 1.
TEST_CASE("Equal, Where, Not and ConstantOfShape fold on shapes", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {"B", "T", 8}).input("bias", kF32, {8});
  m.ints("minus_one", {-1, -1, -1}).ints("three", {3}).ints("zero", {0});
  set_attr(m.node("ConstantOfShape", {"three"}, {"ones"}), "value", [] {
    HostTensor one(DType::i64, {1});
    one.set_int(0, 1);
    return one;
  }());
  m.node("Shape", {"x"}, {"s"});
  m.node("Equal", {"s", "minus_one"}, {"is_unset"});  // B, T, 8 are never -1
  m.node("Where", {"is_unset", "ones", "s"}, {"target"});
  m.node("Expand", {"bias", "target"}, {"y"});
  m.node("Greater", {"s", "zero"}, {"positive"});      // dims are >= 1
  m.node("Not", {"positive"}, {"not_positive"});
  m.node("Cast", {"not_positive"}, {"flags"}).add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("to");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(onnx::TensorProto::INT64);
    return a;
  }());
  m.output("y", kF32, {}).output("flags", kI64, {3});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: graph test(%x: f32[B, T, 8], %bias: f32[8], %flags: i64[3] param)
    CHECK-NOT: where
    CHECK: %y = expand(%bias, shape=[B, T, 8]) : f32[B, T, 8]
  )");
  std::vector<HostTensor> out = run(g, {{"x", random_tensor(DType::f32, {2, 3, 8}, 30)}, {"bias", random_tensor(DType::f32, {8}, 31)}});
  for (int64_t i = 0; i < 3; ++i) CHECK(out[1].get_int(i) == 0);
}

TEST_CASE("Shape of a static tensor folds to a parameter when a graph output", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {2, 5, 7});
  set_attr(m.node("Shape", {"x"}, {"s"}), "start", int64_t{-2});
  m.output("s", kI64, {2});
  Graph g = import_ok(m);
  std::vector<HostTensor> out = run(g, {{"x", random_tensor(DType::f32, {2, 5, 7}, 8)}});
  REQUIRE(out[0].shape() == std::vector<int64_t>{2});
  CHECK(out[0].get_int(0) == 5);
  CHECK(out[0].get_int(1) == 7);
}

// ---- op mappings that the ONNX 1.12 node tests do not exercise ------------------------

// Position ids and a causal mask, as exporters write them: Range(0, T) from x's shape and
// Trilu over the scores, both on symbolic dims.
TEST_CASE("Range and Trilu on symbolic dims", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {"B", "T", 4});
  m.int_scalar("zero", 0).int_scalar("one", 1).int_scalar("two", 2);
  m.node("Shape", {"x"}, {"s"});
  m.node("Gather", {"s", "one"}, {"t"});
  m.node("Range", {"zero", "t", "one"}, {"pos"});
  m.node("Range", {"one", "t", "two"}, {"odd"});
  set_attr(m.node("Transpose", {"x"}, {"xt"}), "perm", std::vector<int64_t>{0, 2, 1});
  m.node("MatMul", {"x", "xt"}, {"scores"});
  set_attr(m.node("Trilu", {"scores"}, {"causal"}), "upper", int64_t{0});
  m.output("pos", kI64, {"T"}).output("odd", kI64, {}).output("causal", kF32, {"B", "T", "T"});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: %pos = iota(shape=[T], axis=0, dtype=i64) : i64[T]
    CHECK: iota(shape=[T // 2], axis=0, dtype=i64)
    CHECK: %odd = add
    CHECK-SAME: : i64[T // 2]
    CHECK: %causal = where
  )");
  for (int64_t t : {1, 4, 7}) {
    HostTensor x = random_tensor(DType::f32, {2, t, 4}, 20 + t);
    std::vector<HostTensor> out = run(g, {{"x", x}});
    REQUIRE(out[0].shape() == std::vector<int64_t>{t});
    for (int64_t i = 0; i < t; ++i) CHECK(out[0].get_int(i) == i);
    REQUIRE(out[1].shape() == std::vector<int64_t>{t / 2});
    for (int64_t i = 0; i < t / 2; ++i) CHECK(out[1].get_int(i) == 1 + 2 * i);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j < t; ++j) {
          double dot = 0;
          for (int64_t k = 0; k < 4; ++k) dot += x.get((b * t + i) * 4 + k) * x.get((b * t + j) * 4 + k);
          CHECK(out[2].get((b * t + i) * t + j) == Approx(j <= i ? dot : 0.0).margin(1e-6));
        }
  }
}

TEST_CASE("Gelu (opset 20) maps to kiln's gelu, exact and tanh forms", "[onnx][import]") {
  for (std::string approx : {"none", "tanh"}) {
    ModelBuilder m(20);
    m.input("x", kF32, {"N"});
    set_attr(m.node("Gelu", {"x"}, {"y"}), "approximate", approx);
    m.output("y", kF32, {"N"});
    Graph g = import_ok(m);
    HostTensor x = random_tensor(DType::f32, {64}, 9);
    for (int64_t i = 0; i < 64; ++i) x.set(i, x.get(i) * 4);
    HostTensor y = run(g, {{"x", x}})[0];
    for (int64_t i = 0; i < 64; ++i) {
      double v = x.get(i);
      double want = approx == "none" ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))
                                     : 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      CHECK(y.get(i) == Approx(want).epsilon(1e-5).margin(1e-6));
    }
  }
}

TEST_CASE("LayerNormalization: stash outputs Mean and InvStdDev are f32 for f16 input", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", onnx::TensorProto::FLOAT16, {"N", 8}).input("w", onnx::TensorProto::FLOAT16, {8});
  set_attr(m.node("LayerNormalization", {"x", "w"}, {"y", "mean", "inv"}), "epsilon", 1e-3f);
  m.output("y", onnx::TensorProto::FLOAT16, {}).output("mean", kF32, {}).output("inv", kF32, {});
  Graph g = import_ok(m);
  HostTensor x = random_tensor(DType::f16, {3, 8}, 10), w = random_tensor(DType::f16, {8}, 11);
  std::vector<HostTensor> out = run(g, {{"x", x}, {"w", w}});
  REQUIRE(out[1].type_string() == "f32[3, 1]");
  REQUIRE(out[2].type_string() == "f32[3, 1]");
  for (int64_t r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < 8; ++j) mean += x.get(r * 8 + j) / 8;
    for (int64_t j = 0; j < 8; ++j) var += (x.get(r * 8 + j) - mean) * (x.get(r * 8 + j) - mean) / 8;
    CHECK(out[1].get(r) == Approx(mean).epsilon(1e-5).margin(1e-6));
    CHECK(out[2].get(r) == Approx(1 / std::sqrt(var + 1e-3)).epsilon(1e-5));
    for (int64_t j = 0; j < 8; ++j)
      CHECK(out[0].get(r * 8 + j) ==
            Approx((x.get(r * 8 + j) - mean) / std::sqrt(var + 1e-3) * w.get(j)).epsilon(2e-3).margin(2e-3));
  }
}

TEST_CASE("shapes fed as graph inputs need frozen_inputs", "[onnx][import]") {
  ModelBuilder m;
  m.input("x", kF32, {2, 6}).input("shape", kI64, {2});
  m.node("Reshape", {"x", "shape"}, {"y"}, "reshape0");
  m.output("y", kF32, {});
  absl::Status s = import_error(m);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(status_message(s), Catch::StartsWith("test.onnx: node 'reshape0' (Reshape, opset 17): shape 'shape' must be known at import time"));
  HostTensor shape(DType::i64, {2});
  shape.set_int(0, 3);
  shape.set_int(1, 4);
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx", {.frozen_inputs = {{"shape", shape}}});
  REQUIRE(g.ok());
  check_ir(*g, R"(
    CHECK: graph test(%x: f32[2, 6])
    CHECK: reshape(%x, shape=[3, 4]) : f32[3, 4]
  )");
  absl::StatusOr<Graph> bad = import_onnx_bytes(m.bytes(), "test.onnx", {.frozen_inputs = {{"nope", shape}}});
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("frozen input 'nope' is not an input of the graph"));
}

// ---- errors name the node, op type and opset ------------------------------------------

TEST_CASE("an unsupported op fails naming the node, op type and opset", "[onnx][import][errors]") {
  ModelBuilder m(13);
  m.input("x", kF32, {1, 3, 8, 8});
  m.node("Relu", {"x"}, {"r"}, "relu0");
  m.node("TfIdfVectorizer", {"r"}, {"y"}, "tfidf1");
  m.output("y", kF32, {});
  absl::Status s = import_error(m);
  CHECK(s.code() == absl::StatusCode::kUnimplemented);
  CHECK(status_message(s) == "test.onnx: node 'tfidf1' (TfIdfVectorizer, opset 13): unsupported op");
  CHECK(onnx_error_op_type(s) == "TfIdfVectorizer");
}

TEST_CASE("a node without a name is named by its index", "[onnx][import][errors]") {
  ModelBuilder m;
  m.input("x", kF32, {4});
  m.node("Relu", {"x"}, {"r"});
  m.node("Unique", {"r"}, {"y"});
  m.output("y", kF32, {});
  CHECK(status_message(import_error(m)) == "test.onnx: node #1 (Unique, opset 17): unsupported op");
}

TEST_CASE("unsupported and mistyped attributes fail naming the attribute", "[onnx][import][errors]") {
  ModelBuilder m;
  m.input("x", kF32, {4, 5});
  onnx::NodeProto& n = m.node("Softmax", {"x"}, {"y"}, "sm");
  m.output("y", kF32, {});
  SECTION("unknown attribute") {
    set_attr(n, "temperature", 2.0f);
    absl::Status s = import_error(m);
    CHECK(s.code() == absl::StatusCode::kUnimplemented);
    CHECK(status_message(s) == "test.onnx: node 'sm' (Softmax, opset 17): unsupported attribute 'temperature'");
  }
  SECTION("wrong type") {
    set_attr(n, "axis", 1.0f);
    absl::Status s = import_error(m);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(status_message(s) == "test.onnx: node 'sm' (Softmax, opset 17): attribute 'axis' must be INT, got FLOAT");
  }
  SECTION("unsupported attribute value") {
    onnx::NodeProto& a = m.node("ArgMax", {"x"}, {"i"}, "am");
    set_attr(a, "select_last_index", int64_t{1});
    m.output("i", kI64, {});
    m.proto().mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_param("N");
    set_attr(a, "axis", int64_t{0});
    absl::Status s = import_error(m);
    CHECK(s.code() == absl::StatusCode::kUnimplemented);
    CHECK_THAT(status_message(s), Catch::StartsWith("test.onnx: node 'am' (ArgMax, opset 17): select_last_index=1 needs a static dim"));
  }
}

TEST_CASE("ill-formed graphs fail with located errors", "[onnx][import][errors]") {
  ModelBuilder m;
  m.input("x", kF32, {2, 3});
  SECTION("operand defined nowhere") {
    m.node("Add", {"x", "ghost"}, {"y"}, "add0");
    m.output("y", kF32, {});
    CHECK(status_message(import_error(m)) == "test.onnx: node 'add0' (Add, opset 17): input 'ghost' is not defined before this node");
  }
  SECTION("output computed by no node") {
    m.node("Relu", {"x"}, {"y"});
    m.output("z", kF32, {});
    CHECK(status_message(import_error(m)) == "test.onnx: graph output 'z': not computed by any node");
  }
  SECTION("output of another dtype than declared") {
    m.node("Relu", {"x"}, {"y"});
    m.output("y", kI64, {});
    CHECK(status_message(import_error(m)) == "test.onnx: graph output 'y': declared i64, but computes f32[2, 3]");
  }
  SECTION("shapes that do not fit") {
    m.ints("shape", {4, 2});
    m.node("Reshape", {"x", "shape"}, {"y"}, "r");
    m.output("y", kF32, {});
    absl::Status s = import_error(m);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(status_message(s), Catch::StartsWith("test.onnx: node 'r' (Reshape, opset 17): ") &&
                                      Catch::Contains("cannot reshape f32[2, 3]"));
  }
  SECTION("an element type kiln lacks") {
    m.input("d", onnx::TensorProto::COMPLEX64, {2});
    m.node("Relu", {"x"}, {"y"});
    m.output("y", kF32, {});
    absl::Status s = import_error(m);
    CHECK(s.code() == absl::StatusCode::kUnimplemented);
    CHECK(status_message(s) == "test.onnx: graph input 'd': unsupported element type COMPLEX64");
  }
  SECTION("an op of another domain") {
    m.node("FusedGemm", {"x"}, {"y"}, "f").set_domain("com.microsoft");
    m.output("y", kF32, {});
    CHECK(status_message(import_error(m)) ==
          "test.onnx: node 'f' (FusedGemm, opset 17): ops of domain 'com.microsoft' are not supported");
  }
  SECTION("no outputs") {
    m.node("Relu", {"x"}, {"y"});
    CHECK(status_message(import_error(m)) == "test.onnx: the graph has no outputs");
  }
}

// ---- corrupt and truncated files ------------------------------------------------------

ModelBuilder small_model() {
  ModelBuilder m;
  m.input("x", kF32, {"N", 4}).initializer("w", random_tensor(DType::f32, {4, 4}, 13));
  m.node("MatMul", {"x", "w"}, {"h"}, "mm");
  set_attr(m.node("Softmax", {"h"}, {"y"}, "sm"), "axis", int64_t{-1});
  m.output("y", kF32, {"N", 4});
  return m;
}

TEST_CASE("every truncation of a model fails cleanly", "[onnx][import][corrupt]") {
  std::string bytes = small_model().bytes();
  REQUIRE(import_onnx_bytes(bytes, "m.onnx").ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<Graph> g = import_onnx_bytes(std::string_view(bytes).substr(0, n), "m.onnx");
    INFO("first " << n << " of " << bytes.size() << " bytes");
    REQUIRE(!g.ok());
    CHECK_THAT(status_message(g.status()), Catch::StartsWith("m.onnx: "));
  }
}

TEST_CASE("a truncated or garbage file fails naming the file", "[onnx][import][corrupt]") {
  std::string bytes = small_model().bytes();
  std::filesystem::path dir = std::filesystem::temp_directory_path() / str_cat("kiln_onnx_test_", ::getpid());
  std::filesystem::create_directories(dir);
  std::string truncated = (dir / "truncated.onnx").string(), garbage = (dir / "garbage.onnx").string();
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::string noise(4096, '\0');
  std::mt19937_64 rng(14);
  for (char& c : noise) c = static_cast<char>(rng());
  std::ofstream(garbage, std::ios::binary) << noise;
  for (const std::string& path : {truncated, garbage}) {
    absl::StatusOr<Graph> g = import_onnx_file(path);
    REQUIRE(!g.ok());
    CHECK(g.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(status_message(g.status()) ==
          str_cat(path, ": not a valid ONNX model (protobuf parse failed; truncated or corrupt?)"));
  }
  absl::StatusOr<Graph> missing = import_onnx_file((dir / "missing.onnx").string());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(status_message(missing.status()) ==
        str_cat((dir / "missing.onnx").string(), ": cannot read the file: No such file or directory"));
  absl::StatusOr<Graph> folder = import_onnx_file(dir.string());  // a directory: an error, not an exception
  CHECK_THAT(status_message(folder.status()), Catch::Contains("not a regular file (a directory)"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("random byte mutations of a model import or fail cleanly", "[onnx][import][corrupt]") {
  std::string bytes = small_model().bytes();
  std::mt19937_64 rng(15);
  int ok = 0, failed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string b = bytes;
    for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) b[rng() % b.size()] = static_cast<char>(rng());
    absl::StatusOr<Graph> g = import_onnx_bytes(b, "m.onnx");
    if (g.ok()) {
      ++ok;
      INFO(print_graph(*g));
      CHECK(verify(*g).ok());
    } else {
      ++failed;
      INFO(status_message(g.status()));
      CHECK(g.status().code() != absl::StatusCode::kInternal);
      CHECK_THAT(status_message(g.status()), Catch::StartsWith("m.onnx: "));
    }
  }
  CHECK(failed > 0);
}

}  // namespace
}  // namespace kiln
