// Helpers of the ONNX importer tests: models built with ModelBuilder imported (or failing),
// their IR checked with FileCheck lines, and run on the reference evaluator.
#pragma once

#include <catch2/catch.hpp>

#include <random>
#include <string_view>
#include <vector>

#include "frontends/onnx/onnx_import.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "test/common/filecheck.h"
#include "test/onnx/model_builder.h"

namespace kiln::testing {

constexpr int32_t kF32 = onnx::TensorProto::FLOAT, kI64 = onnx::TensorProto::INT64;

inline Graph import_ok(const ModelBuilder& m) {
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
  INFO(status_message(g.status()));
  REQUIRE(g.ok());
  REQUIRE(verify(*g).ok());
  return *std::move(g);
}

inline void check_ir(const Graph& g, std::string_view checks) {
  std::string ir = print_graph(g);
  FileCheckResult r = file_check(ir, checks);
  INFO(ir << "\n" << r.message);
  CHECK(r.ok);
}

inline absl::Status import_error(const ModelBuilder& m) {
  absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
  REQUIRE(!g.ok());
  return g.status();
}

inline HostTensor random_tensor(DType t, std::vector<int64_t> shape, uint64_t seed) {
  HostTensor h(t, std::move(shape));
  std::mt19937_64 rng(seed);
  h.fill_random(rng);
  return h;
}

inline std::vector<HostTensor> run(const Graph& g, const TensorMap& args) {
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, args);
  INFO(status_message(out.status()));
  REQUIRE(out.ok());
  return *std::move(out);
}

}  // namespace kiln::testing
