// The model zoo of issue 16 (test/onnx/zoo, built by tools/zoo/make_zoo.py): every enabled
// model imports, and at both committed size sets its reference and CPU outputs match
// onnxruntime's; on fresh random inputs at a third size, CPU matches the reference. Every
// pending model still fails to import with the error its manifest entry records, so a model
// the importer learns to read fails here until it is enabled.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/compare.h"
#include "ir/npy.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/convert_float.h"
#include "passes/match_attention.h"
#include "test/common/catch_helpers.h"

namespace kiln {
namespace {

using nlohmann::json;

const std::string kZooDir = KILN_ZOO_DIR;
const std::string kSourceDir = KILN_SOURCE_DIR;

// Entries are read with at(): a missing key fails the test with nlohmann's message naming it.
json read_manifest() {
  std::ifstream f(kZooDir + "/manifest.json");
  REQUIRE(f);
  json m = json::parse(f, nullptr, /*allow_exceptions=*/false);
  REQUIRE(!m.is_discarded());
  REQUIRE(m.contains("models"));
  return m;
}

HostTensor npy(const std::string& rel) {
  absl::StatusOr<HostTensor> t = read_npy(kZooDir + "/" + rel);
  INFO(status_message(t.status()));
  REQUIRE(t.ok());
  return *std::move(t);
}

// An import error as the manifest records it: the checkout's absolute path made relative,
// as make_zoo.py writes it from `kiln dump`.
std::string portable(std::string message) {
  for (size_t at; (at = message.find(kSourceDir + "/")) != std::string::npos;)
    message.erase(at, kSourceDir.size() + 1);
  return message;
}

void check_close(const std::vector<HostTensor>& got, const std::vector<HostTensor>& expected, Tolerance tol,
                 const std::vector<std::string>& names, const std::string& what) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    Comparison c = compare_tensors(expected[i], got[i], tol);
    INFO(what << ", output " << names[i] << ": " << c.message);
    CHECK(c.ok);
  }
}

// Inputs drawn from each input's range in the manifest, shaped under `bindings`.
TensorMap fresh_inputs(const json& model, const json& bindings, uint64_t seed) {
  std::mt19937_64 rng(seed);
  TensorMap args;
  for (const json& in : model.at("inputs")) {
    std::vector<int64_t> shape;
    for (const json& d : in.at("dims")) shape.push_back(d.is_string() ? bindings.at(d.get<std::string>()).get<int64_t>() : d.get<int64_t>());
    HostTensor t(in.at("dtype") == "int64" ? DType::i64 : DType::f32, shape);
    t.fill_random(rng, in.at("range").at(0).get<double>(), in.at("range").at(1).get<double>());
    args.emplace(in.at("name").get<std::string>(), std::move(t));
  }
  return args;
}

void check_enabled(const json& model) {
  const std::string name = model.at("name");
  absl::StatusOr<Graph> g = import_onnx_file(kZooDir + "/" + model.at("model").get<std::string>());
  if (!g.ok()) FAIL(status_message(g.status()));
  testing::require_ok(verify(*g));
  const Tolerance tol{model.at("rtol").get<double>(), model.at("atol").get<double>()};
  const std::vector<std::string> outputs = model.at("outputs");
#if KILN_WITH_LLVM
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  auto run_cpu = [&](const TensorMap& args) {
    absl::StatusOr<std::vector<HostTensor>> out = run_host(*cg, args);
    if (!out.ok()) FAIL(status_message(out.status()));
    return *std::move(out);
  };
#endif
  auto run_reference = [&](const TensorMap& args) {
    absl::StatusOr<std::vector<HostTensor>> out = evaluate(*g, args);
    if (!out.ok()) FAIL(status_message(out.status()));
    return *std::move(out);
  };
  for (const json& set : model.at("size_sets")) {
    const std::string where = str_cat(name, " at ", set.at("name").get<std::string>(), " vs onnxruntime");
    TensorMap args;
    for (const auto& [in, rel] : set.at("inputs").items()) args.emplace(in, npy(rel));
    std::vector<HostTensor> expected;
    for (const std::string& out : outputs) expected.push_back(npy(set.at("outputs").at(out)));
    check_close(run_reference(args), expected, tol, outputs, "reference, " + where);
#if KILN_WITH_LLVM
    check_close(run_cpu(args), expected, tol, outputs, "cpu, " + where);
#endif
  }
#if KILN_WITH_LLVM
  const uint64_t seed = std::random_device{}();
  TensorMap fresh = fresh_inputs(model, model.at("fresh_bindings"), seed);
  check_close(run_cpu(fresh), run_reference(fresh), tol, outputs,
              str_cat("cpu vs reference, ", name, " at ", model.at("fresh_bindings").dump(), ", inputs of seed ", seed));
#endif
}

TEST_CASE("model zoo: every enabled model matches onnxruntime on the reference and CPU devices",
          "[onnx][zoo]") {
  json m = read_manifest();
  int enabled = 0;
  for (const json& model : m.at("models")) {
    if (model.at("status") != "enabled") continue;
    ++enabled;
    DYNAMIC_SECTION(model.at("name").get<std::string>()) { check_enabled(model); }
  }
  CHECK(enabled >= 1);  // the control model, at least
}

// max |got - expected| over a tensor as a fraction of max |expected|: the error measure of a
// whole network run in a narrow float type, where per-element tolerances do not fit (an
// output near zero carries the rounding error of the large values it was computed from).
double scaled_error(const HostTensor& expected, const HostTensor& got) {
  REQUIRE(expected.numel() == got.numel());
  double err = 0, scale = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    err = std::max(err, std::abs(got.get(i) - expected.get(i)));
    scale = std::max(scale, std::abs(expected.get(i)));
  }
  return std::isnan(err) ? err : err / std::max(scale, 1e-30);
}

// Each enabled model stored in bf16 (convert_float, the CLI's --float bf16) at its larger size
// set: the reference evaluator's bf16 answer is within 5% of onnxruntime's f32 answer (the
// rounding of a 2-layer network), and the CPU's bf16 answer is no further from it than twice
// the reference's error plus 0.5%: a compiled bf16 model loses no more than bf16 storage does.
void check_bf16(const json& model) {
  const std::string name = model.at("name");
  absl::StatusOr<Graph> f32 = import_onnx_file(kZooDir + "/" + model.at("model").get<std::string>());
  if (!f32.ok()) FAIL(status_message(f32.status()));
  absl::StatusOr<Graph> g = convert_float(*f32, DType::bf16);
  if (!g.ok()) FAIL(status_message(g.status()));
  testing::require_ok(verify(*g));
  const json& set = model.at("size_sets").back();
  TensorMap args;
  for (const auto& [in, rel] : set.at("inputs").items()) {
    HostTensor t = npy(rel);
    if (t.dtype() == DType::f32) {
      HostTensor narrow(DType::bf16, t.shape());
      for (int64_t i = 0; i < t.numel(); ++i) narrow.set(i, t.get(i));
      t = std::move(narrow);
    }
    args.emplace(in, std::move(t));
  }
  absl::StatusOr<std::vector<HostTensor>> ref = evaluate(*g, args);
  if (!ref.ok()) FAIL(status_message(ref.status()));
#if KILN_WITH_LLVM
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, args);
  if (!cpu.ok()) FAIL(status_message(cpu.status()));
#endif
  const std::vector<std::string> outputs = model.at("outputs");
  for (size_t i = 0; i < outputs.size(); ++i) {
    HostTensor expected = npy(set.at("outputs").at(outputs[i]));
    const double ref_err = scaled_error(expected, (*ref)[i]);
    INFO(name << " output " << outputs[i] << ": bf16 reference error " << ref_err << " of the output's scale");
    CHECK(ref_err <= 0.05);
#if KILN_WITH_LLVM
    const double cpu_err = scaled_error(expected, (*cpu)[i]);
    INFO("bf16 cpu error " << cpu_err);
    CHECK(cpu_err <= 2 * ref_err + 0.005);
#endif
  }
}

TEST_CASE("model zoo in bf16: the reference and the CPU stay within bf16 error of onnxruntime's f32 outputs",
          "[onnx][zoo]") {
  json m = read_manifest();
  for (const json& model : m.at("models")) {
    if (model.at("status") != "enabled") continue;
    DYNAMIC_SECTION(model.at("name").get<std::string>()) { check_bf16(model); }
  }
}

// HF's exported attention (MatMul, scale, masks, Softmax, MatMul) becomes the attention op in
// every layer of the text models; check_enabled above compiles them so, against onnxruntime.
TEST_CASE("model zoo: the text models' attention is matched into attention ops", "[onnx][zoo]") {
  for (const char* name : {"gpt2", "bert", "llama", "t5_encoder"}) {
    INFO(name);
    absl::StatusOr<Graph> g = import_onnx_file(str_cat(kZooDir, "/", name, "/model.onnx"));
    if (!g.ok()) FAIL(status_message(g.status()));
    int softmaxes = 0;
    for (const auto& n : g->nodes()) softmaxes += n->op() == Op::Softmax;
    absl::StatusOr<bool> changed = match_attention(*g);
    REQUIRE(changed.ok());
    CHECK(*changed);
    testing::require_ok(verify(*g));
    std::string text = print_graph(*g);
    int attention = 0;
    for (size_t at = 0; (at = text.find(" = attention(", at)) != std::string::npos; ++at) ++attention;
    CHECK(softmaxes == 2);  // two layers each
    CHECK(attention == softmaxes);
    CHECK(text.find(" = softmax(") == std::string::npos);
  }
}

TEST_CASE("model zoo: every pending model still fails to import, with the error recorded", "[onnx][zoo]") {
  json m = read_manifest();
  const std::string prefix = "pending: ";
  for (const json& model : m.at("models")) {
    const std::string status = model.at("status"), name = model.at("name");
    if (status == "enabled") continue;
    INFO(name << ": status must be \"enabled\" or \"pending: <error>\", is \"" << status << "\"");
    REQUIRE(status.rfind(prefix, 0) == 0);
    absl::StatusOr<Graph> g = import_onnx_file(kZooDir + "/" + model.at("model").get<std::string>());
    INFO(name << " imports now: check it, set its status to \"enabled\" (tools/zoo/zoo_status.py)");
    CHECK(!g.ok());
    if (g.ok()) continue;
    INFO(name << "'s import error changed: update its status (tools/zoo/zoo_status.py)");
    CHECK(portable(status_message(g.status())) == status.substr(prefix.size()));
  }
}

}  // namespace
}  // namespace kiln
