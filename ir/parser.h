// The text IR parser. Errors carry file:line:col and say what was expected; a failed parse
// returns no graph.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

absl::StatusOr<Graph> parse_graph(std::string_view text, std::string_view filename = "<input>");
absl::StatusOr<Graph> parse_graph_file(const std::string& path);
// A comma-separated list of tensor types, "f32[B, 64], i32[B]" (extern_call's `results`).
absl::StatusOr<std::vector<TensorType>> parse_types(std::string_view text);

}  // namespace kiln
