#include "compiler/load.h"

#include <filesystem>

#include "frontends/onnx/onnx_import.h"
#include "ir/parser.h"
#include "ir/str.h"

namespace kiln {

absl::StatusOr<Graph> load_graph_file(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  // New formats add a branch here.
  if (ext == ".kiln") return parse_graph_file(path);
  if (ext == ".onnx") return import_onnx_file(path);
  return invalid_argument(path, ": unsupported file type '", ext, "' (expected .kiln or .onnx)");
}

}  // namespace kiln
