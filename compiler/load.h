// Reads a graph from a file, choosing the reader by the file's extension: the one place
// where the CLI (and anything else that takes a model path) learns new formats.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// .kiln: the text IR; .onnx: an ONNX model (frontends/onnx). Any other extension is an
// "unsupported file type" error naming the file. The graph is returned as read, not yet
// verified.
absl::StatusOr<Graph> load_graph_file(const std::string& path);

}  // namespace kiln
