// Pictures of what the compiler fused (`kiln compile --graph`): the graph as given beside the
// graph after the passes, there with one box per kernel group holding its ops (GEMM groups,
// which a library runs where the device has one, and weight prep marked), edges labelled
// with dtype and shape, and each planned value's arena offset in its tooltip. kiln writes
// the DOT; Graphviz's `dot` renders SVG, and the HTML is one self-contained file: both
// pictures inline, hover details shown by a few lines of JS, nothing fetched.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "compiler/pipeline.h"

namespace kiln {

// Node ids: b<N> for the N-th node of `before`, a<N> for the N-th node after the passes;
// ba<N>/aa<N> for arguments, bo<N>/ao<N> for outputs (what tests count).
// One DOT graph holding two clusters, "before fusion" and "after fusion", side by side.
std::string graph_dot(const Graph& before, const PipelineResult& after);
// A self-contained HTML page: the two pictures as SVG in two panes (rendered by `dot`).
absl::StatusOr<std::string> graph_html(const Graph& before, const PipelineResult& after);
// `dot_text` rendered as SVG by Graphviz's `dot` from PATH; a clear error when it is missing.
absl::StatusOr<std::string> render_svg(const std::string& dot_text);
// Whether `dot` can run, or why not (checked before anything is written).
absl::Status graphviz_available();

}  // namespace kiln
