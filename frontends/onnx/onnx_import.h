// ONNX import: a ModelProto (file or bytes) becomes a kiln Graph. Initializers and Constant
// nodes become parameters with host data (scalars become constant nodes); dim_param dims
// become symbols; shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) is
// evaluated at import time, on symbolic shapes into symbolic dims.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/host_tensor.h"

namespace kiln {

struct OnnxImportOptions {
  // Graph inputs replaced by these constant values: an ONNX test may feed a Reshape's
  // shape or a Slice's starts as graph inputs, which kiln needs at import time.
  std::map<std::string, HostTensor> frozen_inputs;
};

// Status codes tell why an import failed, so callers can react:
//   Unimplemented       an op, attribute value or element type kiln does not support;
//   FailedPrecondition  an operand kiln needs at import time (a shape, axes, starts) is
//                       computed at run time, e.g. fed as a graph input;
//   InvalidArgument     a malformed, truncated or inconsistent model.
// Messages name the file, and the node as "node 'name' (OpType, opset N)".
absl::StatusOr<Graph> import_onnx_file(const std::string& path, const OnnxImportOptions& options = {});
absl::StatusOr<Graph> import_onnx_bytes(std::string_view bytes, std::string_view source = "<onnx>",
                                        const OnnxImportOptions& options = {});

// The op type of the node an import error names ("Conv"), or "" when it names no node.
std::string onnx_error_op_type(const absl::Status& s);

}  // namespace kiln
