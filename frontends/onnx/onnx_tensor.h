// Conversions between ONNX TensorProto (initializers, Constant values, the backend test
// data's .pb files) and kiln HostTensor, and between ONNX element types and kiln dtypes.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/host_tensor.h"
#include "onnx.pb.h"

namespace kiln {

// The kiln dtype of an ONNX element type; nullopt for types kiln lacks (uint8, double,
// string, ...).
std::optional<DType> dtype_from_onnx(int32_t elem_type);
int32_t dtype_to_onnx(DType t);
// "FLOAT", "UINT8", ... or "type 99" for values outside the enum.
std::string onnx_type_name(int32_t elem_type);

// Reads raw_data or the typed fields (float_data, int32_data for the 8/16-bit types,
// int64_data). Unimplemented for element types kiln lacks and external data;
// InvalidArgument when the payload does not match the dims.
absl::StatusOr<HostTensor> tensor_from_onnx(const onnx::TensorProto& t);
// Writes raw_data; `name` becomes the proto's name.
onnx::TensorProto tensor_to_onnx(const HostTensor& t, const std::string& name);

// A serialized TensorProto file (the backend test data's input_N.pb / output_N.pb).
absl::StatusOr<HostTensor> read_onnx_tensor_file(const std::string& path);

}  // namespace kiln
