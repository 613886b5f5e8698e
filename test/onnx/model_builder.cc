#include "test/onnx/model_builder.h"

#include "frontends/onnx/onnx_tensor.h"

namespace kiln::testing {
namespace {

void set_type(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem_type, const std::vector<OnnxDim>& dims) {
  vi->set_name(name);
  onnx::TypeProto_Tensor* t = vi->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  onnx::TensorShapeProto* shape = t->mutable_shape();
  for (const OnnxDim& d : dims) {
    onnx::TensorShapeProto_Dimension* dim = shape->add_dim();
    if (const int64_t* v = std::get_if<int64_t>(&d)) dim->set_dim_value(*v);
    else dim->set_dim_param(std::get<std::string>(d));
  }
}

onnx::AttributeProto* add_attr(onnx::NodeProto& n, const std::string& name, onnx::AttributeProto::AttributeType type) {
  onnx::AttributeProto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(type);
  return a;
}

}  // namespace

ModelBuilder::ModelBuilder(int64_t opset) {
  model_.set_ir_version(8);
  model_.set_producer_name("kiln-test");
  onnx::OperatorSetIdProto* o = model_.add_opset_import();
  o->set_domain("");
  o->set_version(opset);
  model_.mutable_graph()->set_name("test");
}

ModelBuilder& ModelBuilder::input(const std::string& name, int32_t elem_type, const std::vector<OnnxDim>& dims) {
  set_type(model_.mutable_graph()->add_input(), name, elem_type, dims);
  return *this;
}

ModelBuilder& ModelBuilder::output(const std::string& name, int32_t elem_type, const std::vector<OnnxDim>& dims) {
  set_type(model_.mutable_graph()->add_output(), name, elem_type, dims);
  return *this;
}

ModelBuilder& ModelBuilder::initializer(const std::string& name, const HostTensor& t) {
  *model_.mutable_graph()->add_initializer() = tensor_to_onnx(t, name);
  return *this;
}

ModelBuilder& ModelBuilder::ints(const std::string& name, const std::vector<int64_t>& values) {
  HostTensor t(DType::i64, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) t.set_int(i, values[i]);
  return initializer(name, t);
}

ModelBuilder& ModelBuilder::int_scalar(const std::string& name, int64_t value) {
  HostTensor t(DType::i64, {});
  t.set_int(0, value);
  return initializer(name, t);
}

onnx::NodeProto& ModelBuilder::node(const std::string& op_type, const std::vector<std::string>& inputs,
                                    const std::vector<std::string>& outputs, const std::string& name) {
  onnx::NodeProto* n = model_.mutable_graph()->add_node();
  n->set_op_type(op_type);
  n->set_name(name);
  for (const std::string& i : inputs) n->add_input(i);
  for (const std::string& o : outputs) n->add_output(o);
  return *n;
}

std::string ModelBuilder::bytes() const { return model_.SerializeAsString(); }

void set_attr(onnx::NodeProto& n, const std::string& name, int64_t v) {
  add_attr(n, name, onnx::AttributeProto::INT)->set_i(v);
}

void set_attr(onnx::NodeProto& n, const std::string& name, float v) {
  add_attr(n, name, onnx::AttributeProto::FLOAT)->set_f(v);
}

void set_attr(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  add_attr(n, name, onnx::AttributeProto::STRING)->set_s(v);
}

void set_attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto* a = add_attr(n, name, onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void set_attr(onnx::NodeProto& n, const std::string& name, const HostTensor& v) {
  *add_attr(n, name, onnx::AttributeProto::TENSOR)->mutable_t() = tensor_to_onnx(v, "");
}

}  // namespace kiln::testing
