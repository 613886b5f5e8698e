// The ONNX backend node tests as a conformance suite: every test directory (model.onnx +
// test_data_set_*/input_N.pb, output_N.pb) is imported, run by an executor (the reference
// evaluator, or a compiled backend plugged in by the caller), and its outputs compared
// with the expected ones.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/host_tensor.h"
#include "ir/reference.h"

namespace kiln {

// Where Debian's libonnx-testdata installs the node tests.
inline constexpr const char* kOnnxNodeTestDir = "/usr/share/libonnx-testdata/data/node";

// Runs an imported graph on its runtime inputs (keyed by the graph's input names, as
// evaluate() takes them) and returns its outputs in order.
using OnnxExecutor =
    std::function<absl::StatusOr<std::vector<HostTensor>>(const Graph& g, const TensorMap& inputs)>;
// The reference evaluator as an executor.
OnnxExecutor reference_executor();

enum class ConformanceStatus { Pass, Fail, Skip };

struct ConformanceResult {
  std::string test;  // the directory's name, e.g. "test_add_bcast"
  ConformanceStatus status;
  std::string reason;   // why it failed or was skipped; notes on a pass (e.g. frozen inputs)
  std::string op_type;  // for a skip or failure at import: the ONNX op at fault, if one is
};

struct ConformanceReport {
  std::vector<ConformanceResult> results;  // sorted by test name
  int passed = 0, failed = 0, skipped = 0;
};

// Runs every subdirectory of `dir` holding a model.onnx. A test is skipped (with its
// reason) when kiln lacks an op, attribute or element type it uses, or when it encodes
// semantics kiln defines differently (a fixed list, each with its reason); it fails on any
// other import error, execution error or mismatch. Outputs must match in dtype and shape,
// and elementwise within rtol 1e-3, atol 1e-7, or the rtol/atol of a data.json beside the
// model. An error only when `dir` cannot be read.
absl::StatusOr<ConformanceReport> run_onnx_conformance(const std::string& dir, const OnnxExecutor& execute);

// One line per test ("name  PASS|FAIL|SKIP  reason"), then the skipped tests grouped by
// the op type at fault, then exactly "onnx node tests: P passed, F failed, S skipped".
std::string format_conformance_report(const ConformanceReport& report);

}  // namespace kiln
