#include "frontends/onnx/onnx_conformance.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "frontends/onnx/onnx_import.h"
#include "frontends/onnx/onnx_tensor.h"
#include "ir/compare.h"
#include "ir/status.h"
#include "ir/str.h"
#include "onnx.pb.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

struct SemanticSkip {
  std::string op_type;
  std::string reason;
};

// Tests whose expected outputs follow semantics kiln defines differently on purpose.
const std::map<std::string, SemanticSkip, std::less<>>& semantic_skips() {
  static const auto* skips = new std::map<std::string, SemanticSkip, std::less<>>{
      {"test_cast_FLOAT_to_BFLOAT16",
       {"Cast", "expected values truncate f32 to bf16; kiln rounds to nearest even (as PyTorch)"}},
  };
  return *skips;
}

std::vector<fs::path> sorted_entries(const fs::path& dir, std::string_view prefix) {
  std::vector<fs::path> out;
  std::error_code ec;
  // increment(ec), not a range-for, whose ++ throws on an I/O error.
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().starts_with(prefix)) out.push_back(it->path());
  std::sort(out.begin(), out.end());
  return out;
}

// input_0.pb, input_1.pb, ... in numeric order (input_10 after input_9).
std::vector<fs::path> numbered_files(const fs::path& dir, std::string_view prefix) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (int i = 0;; ++i) {
    fs::path p = dir / str_cat(prefix, i, ".pb");
    if (!fs::exists(p, ec)) break;
    out.push_back(p);
  }
  return out;
}

absl::StatusOr<std::string> read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(str_cat(path.string(), ": cannot open"));
  std::stringstream buf;
  buf << f.rdbuf();
  return buf.str();
}

// ONNX 1.12's test data stores bfloat16 tensors as UINT16 bit patterns; `want` is the
// dtype the model declares for this input or output.
absl::StatusOr<HostTensor> read_test_tensor(const fs::path& path, std::optional<DType> want) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  onnx::TensorProto t;
  if (!t.ParseFromString(bytes)) return invalid_argument(path.string(), ": not a valid ONNX TensorProto");
  if (want == DType::bf16 && t.data_type() == onnx::TensorProto::UINT16) t.set_data_type(onnx::TensorProto::BFLOAT16);
  absl::StatusOr<HostTensor> out = tensor_from_onnx(t);
  if (!out.ok()) return prefix_error(out.status(), path.filename().string(), ": ");
  return out;
}

// The suite's tolerances, or those a data.json beside the model states (as ONNX's test
// loader reads them).
absl::StatusOr<Tolerance> test_tolerance(const fs::path& dir) {
  Tolerance tol{1e-3, 1e-7};
  fs::path json_path = dir / "data.json";
  std::error_code ec;
  if (!fs::exists(json_path, ec)) return tol;
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(json_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument("data.json: not a JSON object");
  for (auto [key, field] : {std::pair{"rtol", &tol.rtol}, std::pair{"atol", &tol.atol}}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_number() || j[key].get<double>() < 0)
      return invalid_argument("data.json: '", key, "' must be a non-negative number");
    *field = j[key].get<double>();
  }
  return tol;
}

// The part of an import error after "path: ", which the table's test column already says.
std::string short_message(const absl::Status& s, const std::string& path) {
  std::string m = status_message(s);
  if (m.starts_with(path + ": ")) m = m.substr(path.size() + 2);
  return m;
}

// A runtime input as the test data feeds it: the model's name, declared element type
// and declared dims (nullopt for a dim without a value).
struct TestInput {
  std::string name;
  std::optional<DType> dtype;  // nullopt where kiln lacks the type (import then fails)
  std::optional<std::vector<std::optional<int64_t>>> dims;  // nullopt without a shape
};

// "[3, 4]", "[N, 4]" ('?' for a dim without value).
std::string declared_dims_string(const std::vector<std::optional<int64_t>>& dims) {
  return str_cat("[", str_join(dims, ", ", [](const std::optional<int64_t>& d) { return d ? str_cat(*d) : "?"; }), "]");
}

bool fits_declared(const HostTensor& t, const std::vector<std::optional<int64_t>>& dims) {
  if (t.rank() != static_cast<int64_t>(dims.size())) return false;
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] && *dims[i] != t.shape()[i]) return false;
  return true;
}

ConformanceResult run_test(const fs::path& dir, const OnnxExecutor& execute) {
  ConformanceResult r{dir.filename().string(), ConformanceStatus::Fail, "", ""};
  auto finish = [&](ConformanceStatus st, std::string reason) {
    r.status = st;
    r.reason = std::move(reason);
    return r;
  };
  auto import_error = [&](const absl::Status& s, const std::string& model_path) {
    // Missing features of kiln, not wrong answers: an op, attribute or type it lacks, or an
    // operand it needs at import time that the model computes at run time.
    bool missing = s.code() == absl::StatusCode::kUnimplemented || s.code() == absl::StatusCode::kFailedPrecondition;
    r.op_type = onnx_error_op_type(s);
    return finish(missing ? ConformanceStatus::Skip : ConformanceStatus::Fail, short_message(s, model_path));
  };
  if (auto it = semantic_skips().find(r.test); it != semantic_skips().end()) {
    r.op_type = it->second.op_type;
    return finish(ConformanceStatus::Skip, it->second.reason);
  }

  std::string model_path = (dir / "model.onnx").string();
  absl::StatusOr<std::string> model_bytes = read_file(model_path);
  if (!model_bytes.ok()) return finish(ConformanceStatus::Fail, status_message(model_bytes.status()));
  absl::StatusOr<Tolerance> tol = test_tolerance(dir);
  if (!tol.ok()) return finish(ConformanceStatus::Fail, status_message(tol.status()));
  // The test data feeds the graph inputs that have no initializer, in the model's order.
  std::vector<TestInput> test_inputs;
  {
    onnx::ModelProto model;
    if (!model.ParseFromString(*model_bytes)) return finish(ConformanceStatus::Fail, "model.onnx does not parse");
    std::set<std::string> inits;
    for (const onnx::TensorProto& t : model.graph().initializer()) inits.insert(t.name());
    for (const onnx::ValueInfoProto& vi : model.graph().input()) {
      if (inits.contains(vi.name())) continue;
      const onnx::TypeProto_Tensor& tt = vi.type().tensor_type();
      TestInput in{vi.name(), dtype_from_onnx(tt.elem_type()), std::nullopt};
      if (tt.has_shape()) {
        in.dims.emplace();
        for (const onnx::TensorShapeProto::Dimension& d : tt.shape().dim())
          in.dims->push_back(d.has_dim_value() ? std::optional<int64_t>(d.dim_value()) : std::nullopt);
      }
      test_inputs.push_back(std::move(in));
    }
  }

  absl::StatusOr<Graph> plain = import_onnx_bytes(*model_bytes, model_path);
  if (!plain.ok() && plain.status().code() != absl::StatusCode::kFailedPrecondition)
    return import_error(plain.status(), model_path);

  std::vector<fs::path> sets = sorted_entries(dir, "test_data_set_");
  if (sets.empty()) return finish(ConformanceStatus::Fail, "no test_data_set_* directory");
  for (const fs::path& set : sets) {
    std::string set_name = set.filename().string();
    std::vector<fs::path> in_files = numbered_files(set, "input_"), out_files = numbered_files(set, "output_");
    if (in_files.size() != test_inputs.size())
      return finish(ConformanceStatus::Fail,
                    str_cat(set_name, " has ", in_files.size(), " inputs, the model ", test_inputs.size()));
    std::vector<HostTensor> inputs;
    for (size_t i = 0; i < in_files.size(); ++i) {
      absl::StatusOr<HostTensor> t = read_test_tensor(in_files[i], test_inputs[i].dtype);
      if (!t.ok())
        return finish(t.status().code() == absl::StatusCode::kUnimplemented ? ConformanceStatus::Skip
                                                                           : ConformanceStatus::Fail,
                      str_cat(set_name, "/", status_message(t.status())));
      // kiln checks inputs against the shapes a model declares; data that contradicts
      // them is a defect of the test, not a question kiln can answer.
      if (test_inputs[i].dims && !fits_declared(*t, *test_inputs[i].dims))
        return finish(ConformanceStatus::Skip,
                      str_cat(set_name, ": input '", test_inputs[i].name, "' holds ", t->type_string(),
                              ", but the model declares ", declared_dims_string(*test_inputs[i].dims)));
      inputs.push_back(*std::move(t));
    }

    // Shapes, axes or starts fed as graph inputs: kiln needs them at import time, so the
    // model is imported again with this data set's integer and bool inputs frozen as
    // constants, and float inputs of at most 8 elements and rank <= 1 (Resize's scales,
    // Pad's value), which models hold as constants too.
    OnnxImportOptions options;
    absl::StatusOr<Graph> frozen_graph = absl::UnknownError("unused");
    const Graph* g = plain.ok() ? &*plain : nullptr;
    if (!g) {
      for (size_t i = 0; i < inputs.size(); ++i)
        if (is_integer(inputs[i].dtype()) || inputs[i].dtype() == DType::boolean ||
            (inputs[i].rank() <= 1 && inputs[i].numel() <= 8))
          options.frozen_inputs[test_inputs[i].name] = inputs[i];
      frozen_graph = import_onnx_bytes(*model_bytes, model_path, options);
      if (!frozen_graph.ok()) return import_error(frozen_graph.status(), model_path);
      g = &*frozen_graph;
      r.reason = "integer, bool and small float inputs frozen as constants";
    }

    TensorMap args;
    std::vector<Value*> graph_inputs = g->inputs();
    size_t next = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (options.frozen_inputs.contains(test_inputs[i].name)) continue;
      if (next >= graph_inputs.size()) return finish(ConformanceStatus::Fail, "more test inputs than graph inputs");
      args[graph_inputs[next++]->name()] = inputs[i];
    }
    absl::StatusOr<std::vector<HostTensor>> got = execute(*g, args);
    if (!got.ok()) return finish(ConformanceStatus::Fail, str_cat(set_name, ": ", status_message(got.status())));
    if (got->size() != out_files.size())
      return finish(ConformanceStatus::Fail,
                    str_cat(set_name, ": the graph has ", got->size(), " outputs, the test ", out_files.size()));
    for (size_t i = 0; i < out_files.size(); ++i) {
      absl::StatusOr<HostTensor> want = read_test_tensor(out_files[i], (*got)[i].dtype());
      if (!want.ok()) return finish(ConformanceStatus::Fail, str_cat(set_name, "/", status_message(want.status())));
      Comparison c = compare_tensors(*want, (*got)[i], *tol);
      if (!c.ok) return finish(ConformanceStatus::Fail, str_cat(set_name, " output ", i, ": ", c.message));
    }
  }
  return finish(ConformanceStatus::Pass, r.reason);
}

// "node 'x' (Conv, opset 11): unsupported op" -> "unsupported op", and "graph input 'x':
// unsupported element type DOUBLE" -> "unsupported element type DOUBLE": the reason a
// skip group shares.
std::string group_reason(const std::string& reason) {
  size_t end = reason.starts_with("node ")           ? reason.find("): ")
               : reason.starts_with("graph input '") ? reason.find("': ")
                                                     : std::string::npos;
  return end == std::string::npos ? reason : reason.substr(end + 3);
}

}  // namespace

OnnxExecutor reference_executor() {
  return [](const Graph& g, const TensorMap& inputs) { return evaluate(g, inputs); };
}

absl::StatusOr<ConformanceReport> run_onnx_conformance(const std::string& dir, const OnnxExecutor& execute) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(str_cat(dir, ": not a directory"));
  ConformanceReport report;
  for (const fs::path& test : sorted_entries(dir, "")) {
    if (!fs::exists(test / "model.onnx", ec)) continue;
    ConformanceResult r = run_test(test, execute);
    (r.status == ConformanceStatus::Pass   ? report.passed
     : r.status == ConformanceStatus::Fail ? report.failed
                                           : report.skipped)++;
    report.results.push_back(std::move(r));
  }
  return report;
}

std::string format_conformance_report(const ConformanceReport& report) {
  std::string out;
  size_t width = 0;
  for (const ConformanceResult& r : report.results) width = std::max(width, r.test.size());
  for (const ConformanceResult& r : report.results) {
    std::string_view st = r.status == ConformanceStatus::Pass   ? "PASS"
                          : r.status == ConformanceStatus::Fail ? "FAIL"
                                                                : "SKIP";
    out += fmt::format("{:<{}}  {}  {}\n", r.test, width, st, r.reason);
  }
  // Per op type at fault: how many tests it skips, and each distinct reason.
  std::map<std::string, std::pair<int, std::set<std::string>>> by_op;
  for (const ConformanceResult& r : report.results) {
    if (r.status != ConformanceStatus::Skip) continue;
    auto& [count, reasons] = by_op[r.op_type.empty() ? std::string("(graph inputs, test data)") : r.op_type];
    ++count;
    reasons.insert(group_reason(r.reason));
  }
  if (!by_op.empty()) {
    out += fmt::format("\nskipped tests by op type ({} op types):\n", by_op.size());
    for (const auto& [op, entry] : by_op)
      out += fmt::format("  {} ({} {}): {}\n", op, entry.first, entry.first == 1 ? "test" : "tests",
                         str_join(entry.second, "; ", [](const std::string& s) { return s; }));
  }
  out += fmt::format("onnx node tests: {} passed, {} failed, {} skipped\n", report.passed, report.failed,
                     report.skipped);
  return out;
}

}  // namespace kiln
