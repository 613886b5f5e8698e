// The ONNX node tests through the reference evaluator and compiled for the CPU, against
// expected_passes.txt; and the conformance runner itself on small synthetic test directories.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_conformance.h"
#include "frontends/onnx/onnx_tensor.h"
#include "ir/str.h"
#include "test/onnx/model_builder.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> read_expected_passes() {
  std::ifstream f(KILN_ONNX_EXPECTED_PASSES);
  REQUIRE(f);
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    names.push_back(line);
  }
  return names;
}

// Runs the node tests through `execute` and checks them against expected_passes.txt.
void check_node_tests(const OnnxExecutor& execute) {
  absl::StatusOr<ConformanceReport> report = run_onnx_conformance(kOnnxNodeTestDir, execute);
  REQUIRE(report.ok());
  std::map<std::string, const ConformanceResult*> by_name;
  for (const ConformanceResult& r : report->results) by_name[r.test] = &r;
  std::vector<std::string> expected = read_expected_passes();
  std::string regressions;
  for (const std::string& name : expected) {
    auto it = by_name.find(name);
    if (it == by_name.end()) regressions += str_cat("  ", name, ": no such test in ", kOnnxNodeTestDir, "\n");
    else if (it->second->status != ConformanceStatus::Pass)
      regressions += str_cat("  ", name, ": ", it->second->status == ConformanceStatus::Fail ? "FAIL" : "SKIP", " ",
                             it->second->reason, "\n");
  }
  INFO("expected passes that no longer pass:\n" << regressions);
  CHECK(regressions.empty());
  std::string failures;
  for (const ConformanceResult& r : report->results)
    if (r.status == ConformanceStatus::Fail) failures += str_cat("  ", r.test, ": ", r.reason, "\n");
  INFO("failures (each is a bug in kiln's semantics or the importer):\n" << failures);
  CHECK(report->failed == 0);
  std::set<std::string> listed(expected.begin(), expected.end());
  std::string new_passes;
  for (const ConformanceResult& r : report->results)
    if (r.status == ConformanceStatus::Pass && !listed.contains(r.test)) new_passes += str_cat("  ", r.test, "\n");
  if (!new_passes.empty()) WARN("passing tests missing from expected_passes.txt (add them):\n" << new_passes);
  // The whole table when something is wrong; the skip summary and counts otherwise.
  std::string text = format_conformance_report(*report);
  if (!regressions.empty() || report->failed > 0) std::printf("%s", text.c_str());
  else std::printf("%s", text.substr(text.find("\nskipped tests by op type") + 1).c_str());
}

TEST_CASE("ONNX node tests: every expected pass passes and nothing fails", "[onnx][conformance]") {
  check_node_tests(reference_executor());
}

#if KILN_WITH_LLVM
TEST_CASE("ONNX node tests compiled for the CPU: every expected pass passes", "[onnx][conformance][cpu]") {
  check_node_tests([](const Graph& g, const TensorMap& inputs) -> absl::StatusOr<std::vector<HostTensor>> {
    absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
    if (!cg.ok()) return cg.status();
    return run_host(*cg, inputs);
  });
}
#endif

// ---- the runner on synthetic test directories ----------------------------------------

using testing::ModelBuilder;
constexpr int32_t kF32 = onnx::TensorProto::FLOAT;

class TestDir {
 public:
  TestDir() : root_(fs::temp_directory_path() / str_cat("kiln_onnx_conformance_", ::getpid())) {
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~TestDir() { fs::remove_all(root_); }
  std::string path() const { return root_.string(); }

  // A test directory holding `m` and one data set.
  void add(const std::string& name, const ModelBuilder& m, const std::vector<HostTensor>& inputs,
           const std::vector<HostTensor>& outputs) {
    fs::path dir = root_ / name, set = dir / "test_data_set_0";
    fs::create_directories(set);
    std::ofstream(dir / "model.onnx", std::ios::binary) << m.bytes();
    for (size_t i = 0; i < inputs.size(); ++i)
      std::ofstream(set / str_cat("input_", i, ".pb"), std::ios::binary) << tensor_to_onnx(inputs[i], "").SerializeAsString();
    for (size_t i = 0; i < outputs.size(); ++i)
      std::ofstream(set / str_cat("output_", i, ".pb"), std::ios::binary) << tensor_to_onnx(outputs[i], "").SerializeAsString();
  }
  void write(const std::string& name, const std::string& file, const std::string& text) {
    std::ofstream(root_ / name / file) << text;
  }

 private:
  fs::path root_;
};

HostTensor filled(std::vector<int64_t> shape, std::vector<double> values) {
  HostTensor t(DType::f32, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) t.set(i, values[i]);
  return t;
}

ModelBuilder add_model() {
  ModelBuilder m;
  m.input("a", kF32, {2}).input("b", kF32, {2});
  m.node("Add", {"a", "b"}, {"c"});
  m.output("c", kF32, {2});
  return m;
}

std::map<std::string, ConformanceResult> run_dir(const TestDir& d, const OnnxExecutor& execute = reference_executor()) {
  absl::StatusOr<ConformanceReport> report = run_onnx_conformance(d.path(), execute);
  REQUIRE(report.ok());
  std::map<std::string, ConformanceResult> out;
  for (const ConformanceResult& r : report->results) out.emplace(r.test, r);
  return out;
}

TEST_CASE("conformance runner: pass, mismatch, tolerance from data.json", "[onnx][conformance]") {
  TestDir d;
  HostTensor a = filled({2}, {1.5, -2}), b = filled({2}, {0.25, 4});
  d.add("test_good", add_model(), {a, b}, {filled({2}, {1.75, 2})});
  d.add("test_off", add_model(), {a, b}, {filled({2}, {1.75, 2.01})});
  d.add("test_loose", add_model(), {a, b}, {filled({2}, {1.75, 2.01})});
  d.write("test_loose", "data.json", R"({"url": "", "rtol": 0.01})");
  d.add("test_bad_json", add_model(), {a, b}, {filled({2}, {1.75, 2})});
  d.write("test_bad_json", "data.json", "[1, 2");
  d.add("test_one_input", add_model(), {a}, {filled({2}, {1.75, 2})});
  d.add("test_int_output", add_model(), {a, b}, {HostTensor(DType::i64, {2})});
  std::map<std::string, ConformanceResult> r = run_dir(d);
  CHECK(r.at("test_good").status == ConformanceStatus::Pass);
  CHECK(r.at("test_off").status == ConformanceStatus::Fail);
  CHECK_THAT(r.at("test_off").reason, Catch::StartsWith("test_data_set_0 output 0: "));
  CHECK(r.at("test_loose").status == ConformanceStatus::Pass);
  CHECK(r.at("test_bad_json").status == ConformanceStatus::Fail);
  CHECK(r.at("test_bad_json").reason == "data.json: not a JSON object");
  CHECK(r.at("test_one_input").status == ConformanceStatus::Fail);
  CHECK(r.at("test_one_input").reason == "test_data_set_0 has 1 inputs, the model 2");
  CHECK(r.at("test_int_output").status == ConformanceStatus::Fail);
}

TEST_CASE("conformance runner: skips name the op at fault and their reason", "[onnx][conformance]") {
  TestDir d;
  ModelBuilder uniq;
  uniq.input("x", kF32, {2});
  uniq.node("Unique", {"x"}, {"y"}, "n0");
  uniq.output("y", kF32, {2});
  d.add("test_uniq", uniq, {filled({2}, {0, 1})}, {filled({2}, {0, 1})});
  HostTensor wrong_shape = filled({3}, {1, 2, 3});
  d.add("test_declared", add_model(), {wrong_shape, wrong_shape}, {wrong_shape});
  ConformanceReport report = *run_onnx_conformance(d.path(), reference_executor());
  REQUIRE(report.results.size() == 2);
  const ConformanceResult& skip = report.results[1];  // sorted: test_declared, test_uniq
  CHECK(skip.test == "test_uniq");
  CHECK(skip.status == ConformanceStatus::Skip);
  CHECK(skip.op_type == "Unique");
  CHECK(skip.reason == "node 'n0' (Unique, opset 17): unsupported op");
  CHECK(report.results[0].status == ConformanceStatus::Skip);
  CHECK(report.results[0].reason == "test_data_set_0: input 'a' holds f32[3], but the model declares [2]");
  std::string text = format_conformance_report(report);
  CHECK_THAT(text, Catch::Contains("test_uniq      SKIP  node 'n0' (Unique, opset 17): unsupported op\n"));
  CHECK_THAT(text, Catch::Contains("  Unique (1 test): unsupported op\n"));
  CHECK_THAT(text, Catch::EndsWith("\nonnx node tests: 0 passed, 0 failed, 2 skipped\n"));
}

TEST_CASE("conformance runner: integer inputs that must be known at import are frozen", "[onnx][conformance]") {
  TestDir d;
  ModelBuilder m;
  m.input("x", kF32, {2, 3}).input("shape", onnx::TensorProto::INT64, {2});
  m.node("Reshape", {"x", "shape"}, {"y"});
  m.output("y", kF32, {3, 2});
  HostTensor x = filled({2, 3}, {1, 2, 3, 4, 5, 6}), shape(DType::i64, {2});
  shape.set_int(0, 3);
  shape.set_int(1, 2);
  d.add("test_reshape", m, {x, shape}, {filled({3, 2}, {1, 2, 3, 4, 5, 6})});
  ConformanceResult r = run_dir(d).at("test_reshape");
  CHECK(r.status == ConformanceStatus::Pass);
  CHECK(r.reason == "integer, bool and small float inputs frozen as constants");
}

TEST_CASE("conformance runner: the executor is a parameter", "[onnx][conformance]") {
  TestDir d;
  d.add("test_good", add_model(), {filled({2}, {1, 2}), filled({2}, {3, 4})}, {filled({2}, {4, 6})});
  int calls = 0;
  OnnxExecutor off_by_one = [&](const Graph& g, const TensorMap& inputs) -> absl::StatusOr<std::vector<HostTensor>> {
    ++calls;
    absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, inputs);
    if (out.ok()) (*out)[0].set(1, (*out)[0].get(1) + 1);
    return out;
  };
  ConformanceResult r = run_dir(d, off_by_one).at("test_good");
  CHECK(calls == 1);
  CHECK(r.status == ConformanceStatus::Fail);
  CHECK_THAT(r.reason, Catch::Contains("test_data_set_0 output 0: "));
  OnnxExecutor broken = [](const Graph&, const TensorMap&) -> absl::StatusOr<std::vector<HostTensor>> {
    return absl::UnavailableError("no device");
  };
  r = run_dir(d, broken).at("test_good");
  CHECK(r.status == ConformanceStatus::Fail);
  CHECK(r.reason == "test_data_set_0: no device");
}

TEST_CASE("conformance runner: a directory that does not exist is an error", "[onnx][conformance]") {
  absl::StatusOr<ConformanceReport> r = run_onnx_conformance("/nonexistent/kiln/onnx", reference_executor());
  CHECK(r.status().code() == absl::StatusCode::kNotFound);
  CHECK(status_message(r.status()) == "/nonexistent/kiln/onnx: not a directory");
}

}  // namespace
}  // namespace kiln
