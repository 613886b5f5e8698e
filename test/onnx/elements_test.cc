// GatherElements and ScatterElements as the importer composes them (one-hot selects summed
// over the indexed axis), and GatherND (a flat index into a gather), on symbolic dims at
// several sizes, against the element loops written here, on the reference evaluator and
// compiled for the CPU; an embedding lookup (Gather) whose ids run out of range.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/onnx/model_builder.h"

namespace kiln {
namespace {

using testing::ModelBuilder;
using testing::set_attr;
constexpr int32_t kF32 = onnx::TensorProto::FLOAT, kI64 = onnx::TensorProto::INT64;
constexpr int64_t kDim = 6, kPicks = 3;

// The graph's outputs on the reference evaluator, and the same compiled for the CPU.
std::vector<HostTensor> run_both(const Graph& g, const TensorMap& args) {
  absl::StatusOr<std::vector<HostTensor>> ref = evaluate(g, args);
  INFO(status_message(ref.status()));
  REQUIRE(ref.ok());
#if KILN_WITH_LLVM
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  INFO(status_message(cg.status()));
  REQUIRE(cg.ok());
  absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, args);
  INFO(status_message(cpu.status()));
  REQUIRE(cpu.ok());
  for (int64_t i = 0; i < (*ref)[0].numel(); ++i) CHECK((*cpu)[0].get(i) == Approx((*ref)[0].get(i)).epsilon(1e-6));
#endif
  return *std::move(ref);
}

Graph import_ok(const ModelBuilder& m) {
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "elements.onnx");
  INFO(status_message(g.status()));
  REQUIRE(g.ok());
  return *std::move(g);
}

TEST_CASE("GatherElements picks data along an axis, negative indices from the end", "[onnx][import][elements]") {
  std::mt19937_64 rng(5);
  for (int64_t axis : {0, 1}) {
    // axis 1: data [N, 6], indices [N, 3]; axis 0: data [6, N], indices [3, N].
    ModelBuilder m(13);
    m.input("data", kF32, axis == 1 ? std::vector<testing::OnnxDim>{"N", kDim} : std::vector<testing::OnnxDim>{kDim, "N"});
    m.input("idx", kI64, axis == 1 ? std::vector<testing::OnnxDim>{"N", kPicks} : std::vector<testing::OnnxDim>{kPicks, "N"});
    set_attr(m.node("GatherElements", {"data", "idx"}, {"y"}), "axis", axis);
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    for (int64_t n : {1, 7, 100}) {
      INFO("axis " << axis << ", N=" << n);
      std::vector<int64_t> ds = axis == 1 ? std::vector<int64_t>{n, kDim} : std::vector<int64_t>{kDim, n};
      std::vector<int64_t> is = axis == 1 ? std::vector<int64_t>{n, kPicks} : std::vector<int64_t>{kPicks, n};
      HostTensor data(DType::f32, ds), idx(DType::i64, is);
      data.fill_random(rng);
      std::uniform_int_distribution<int64_t> pick(-kDim, kDim - 1);
      for (int64_t i = 0; i < idx.numel(); ++i) idx.set(i, static_cast<double>(pick(rng)));
      HostTensor y = run_both(g, {{"data", data}, {"idx", idx}})[0];
      REQUIRE(y.shape() == is);
      for (int64_t r = 0; r < is[0]; ++r)
        for (int64_t c = 0; c < is[1]; ++c) {
          int64_t i = static_cast<int64_t>(idx.get(r * is[1] + c));
          if (i < 0) i += kDim;
          CHECK(y.get(r * is[1] + c) == data.get(axis == 1 ? r * kDim + i : i * n + c));
        }
    }
  }
}

TEST_CASE("ScatterElements writes updates along an axis with each reduction", "[onnx][import][elements]") {
  std::mt19937_64 rng(6);
  for (std::string reduction : {"none", "add", "mul", "max", "min"}) {
    ModelBuilder m(16);
    m.input("data", kF32, {"N", kDim});
    m.input("idx", kI64, {"N", kPicks});
    m.input("upd", kF32, {"N", kPicks});
    onnx::NodeProto& node = m.node("ScatterElements", {"data", "idx", "upd"}, {"y"});
    set_attr(node, "axis", int64_t{-1});
    set_attr(node, "reduction", reduction);
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    for (int64_t n : {1, 9, 64}) {
      INFO(reduction << ", N=" << n);
      HostTensor data(DType::f32, {n, kDim}), idx(DType::i64, {n, kPicks}), upd(DType::f32, {n, kPicks});
      data.fill_random(rng);
      upd.fill_random(rng);
      std::vector<int64_t> cols(kDim);
      for (int64_t r = 0; r < n; ++r) {  // distinct columns per row for none; repeats allowed otherwise
        for (int64_t c = 0; c < kDim; ++c) cols[c] = reduction == "none" ? c - (c % 2) * kDim : (c % 2) - kPicks;
        std::shuffle(cols.begin(), cols.end(), rng);
        for (int64_t j = 0; j < kPicks; ++j) idx.set(r * kPicks + j, static_cast<double>(cols[j]));
      }
      HostTensor y = run_both(g, {{"data", data}, {"idx", idx}, {"upd", upd}})[0];
      HostTensor want = data;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < kPicks; ++j) {
          int64_t c = static_cast<int64_t>(idx.get(r * kPicks + j));
          int64_t at = r * kDim + (c < 0 ? c + kDim : c);
          double u = upd.get(r * kPicks + j), w = want.get(at);
          want.set(at, reduction == "none" ? u : reduction == "add" ? w + u : reduction == "mul" ? w * u
                       : reduction == "max" ? std::max(w, u) : std::min(w, u));
        }
      for (int64_t i = 0; i < want.numel(); ++i) CHECK(y.get(i) == Approx(want.get(i)).epsilon(1e-6));
    }
  }
}

TEST_CASE("GatherND picks slices by index tuples, with a batch dim", "[onnx][import][elements]") {
  std::mt19937_64 rng(7);
  ModelBuilder m(13);  // data [2, 4, 3, R], indices [2, M, 2], batch_dims 1 -> [2, M, R]
  m.input("data", kF32, {2, 4, 3, "R"});
  m.input("idx", kI64, {2, "M", 2});
  set_attr(m.node("GatherND", {"data", "idx"}, {"y"}), "batch_dims", int64_t{1});
  m.output("y", kF32, {});
  Graph g = import_ok(m);
  for (auto [mm, r] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {40, 17}}) {
    INFO("M=" << mm << " R=" << r);
    HostTensor data(DType::f32, {2, 4, 3, r}), idx(DType::i64, {2, mm, 2});
    data.fill_random(rng);
    std::uniform_int_distribution<int64_t> i0(-4, 3), i1(-3, 2);
    for (int64_t i = 0; i < idx.numel(); ++i) idx.set(i, static_cast<double>(i % 2 ? i1(rng) : i0(rng)));
    HostTensor y = run_both(g, {{"data", data}, {"idx", idx}})[0];
    REQUIRE(y.shape() == std::vector<int64_t>{2, mm, r});
    for (int64_t bi = 0; bi < 2; ++bi)
      for (int64_t j = 0; j < mm; ++j) {
        int64_t a = static_cast<int64_t>(idx.get((bi * mm + j) * 2)), c = static_cast<int64_t>(idx.get((bi * mm + j) * 2 + 1));
        a = a < 0 ? a + 4 : a;
        c = c < 0 ? c + 3 : c;
        for (int64_t e = 0; e < r; ++e) CHECK(y.get((bi * mm + j) * r + e) == data.get(((bi * 4 + a) * 3 + c) * r + e));
      }
  }
}

TEST_CASE("GatherElements and ScatterElements operands that do not fit fail naming the node",
          "[onnx][import][elements][errors]") {
  ModelBuilder m(16);
  m.input("data", kF32, {4, kDim});
  SECTION("indices of another rank") {
    m.input("idx", kI64, {4});
    m.node("GatherElements", {"data", "idx"}, {"y"}, "ge");
    m.output("y", kF32, {});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
    REQUIRE(!g.ok());
    CHECK(status_message(g.status()) ==
          "test.onnx: node 'ge' (GatherElements, opset 16): indices must be an integer tensor of rank 2, got i64[4]");
  }
  SECTION("updates of another shape than the indices") {
    m.input("idx", kI64, {4, 2});
    m.input("upd", kF32, {4, 3});
    set_attr(m.node("ScatterElements", {"data", "idx", "upd"}, {"y"}, "se"), "axis", int64_t{1});
    m.output("y", kF32, {});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
    REQUIRE(!g.ok());
    CHECK(status_message(g.status()) ==
          "test.onnx: node 'se' (ScatterElements, opset 16): indices must be integers of rank 2 and updates f32 of "
          "their shape, got i64[4, 2] and f32[4, 3]");
  }
}

#if KILN_WITH_LLVM
// An embedding lookup as exported models have it (issue 21): Gather of a table initializer by
// token ids. Ids in [-V, V) match the reference; an id outside it is the reference's error on
// the compiled graph too (the CPU clamped it silently before), and the next call runs.
TEST_CASE("Gather of an embedding table by token ids: an id out of range is an error, compiled too",
          "[onnx][import][gather]") {
  constexpr int64_t kVocab = 11, kWidth = 8;
  std::mt19937_64 rng(21);
  HostTensor table(DType::f32, {kVocab, kWidth});
  table.fill_random(rng);
  ModelBuilder m(13);
  m.initializer("table", table);
  m.input("ids", kI64, {"B", "T"});
  m.node("Gather", {"table", "ids"}, {"emb"});
  m.output("emb", kF32, {});
  Graph g = import_ok(m);
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  INFO(status_message(cg.status()));
  REQUIRE(cg.ok());
  for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {2, 5}, {3, 97}}) {
    INFO("B=" << b << ", T=" << t);
    HostTensor ids(DType::i64, {b, t});
    std::uniform_int_distribution<int64_t> pick(-kVocab, kVocab - 1);
    for (int64_t i = 0; i < ids.numel(); ++i) ids.set_int(i, pick(rng));
    HostTensor want = run_both(g, {{"ids", ids}})[0];
    for (int64_t bad : {kVocab, -kVocab - 1, int64_t{1} << 40}) {
      HostTensor wrong = ids;
      wrong.set_int(ids.numel() - 1, bad);
      REQUIRE_FALSE(evaluate(g, {{"ids", wrong}}).ok());
      absl::StatusOr<std::vector<HostTensor>> got = run_host(*cg, {{"ids", wrong}});
      REQUIRE_FALSE(got.ok());
      INFO(status_message(got.status()));
      CHECK(status_message(got.status()).find(str_cat(": index ", bad, " out of range [-11, 11) on axis 0")) !=
            std::string::npos);
      absl::StatusOr<std::vector<HostTensor>> again = run_host(*cg, {{"ids", ids}});
      REQUIRE(again.ok());
      for (int64_t i = 0; i < want.numel(); ++i) REQUIRE((*again)[0].get(i) == want.get(i));
    }
  }
}
#endif
}  // namespace
}  // namespace kiln
