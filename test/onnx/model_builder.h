// Builds small ONNX models for tests: graph inputs and outputs with static or named dims,
// initializers, nodes with attributes, serialized to the bytes that import_onnx_bytes reads.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "ir/host_tensor.h"
#include "onnx.pb.h"

namespace kiln::testing {

// A dim as a model declares it: a value, or a dim_param name.
using OnnxDim = std::variant<int64_t, std::string>;

class ModelBuilder {
 public:
  explicit ModelBuilder(int64_t opset = 17);
  ModelBuilder& input(const std::string& name, int32_t elem_type, const std::vector<OnnxDim>& dims);
  ModelBuilder& output(const std::string& name, int32_t elem_type, const std::vector<OnnxDim>& dims);
  ModelBuilder& initializer(const std::string& name, const HostTensor& t);
  // An i64 initializer of rank 1 (shapes, axes, starts).
  ModelBuilder& ints(const std::string& name, const std::vector<int64_t>& values);
  // An i64 initializer of rank 0 (a Gather index).
  ModelBuilder& int_scalar(const std::string& name, int64_t value);
  onnx::NodeProto& node(const std::string& op_type, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "");
  onnx::ModelProto& proto() { return model_; }
  std::string bytes() const;

 private:
  onnx::ModelProto model_;
};

void set_attr(onnx::NodeProto& n, const std::string& name, int64_t v);
void set_attr(onnx::NodeProto& n, const std::string& name, float v);
void set_attr(onnx::NodeProto& n, const std::string& name, const std::string& v);
void set_attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v);
void set_attr(onnx::NodeProto& n, const std::string& name, const HostTensor& v);

}  // namespace kiln::testing
