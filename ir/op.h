// The op registry: every op's name, kind, arity, attribute schema and shape/dtype rule,
// generated from the single table in ops.def.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/attr.h"
#include "ir/dtype.h"
#include "ir/sym.h"

namespace kiln {

enum class Op : uint16_t {
#define KILN_OP(id, ...) id,
#include "ir/ops.def"
};

enum class OpKind : uint8_t { Elementwise, Broadcast, Reduction, View, Gemm, Composite, Opaque };
std::string_view op_kind_name(OpKind k);

struct TensorType {
  DType dtype;
  Shape shape;
  std::string to_string() const;  // "bf16[B, 4096]"
  friend bool operator==(const TensorType&, const TensorType&) = default;
};

struct AttrSpec {
  std::string name;
  AttrType type;
  bool required = false;
  std::optional<AttrValue> default_value;
};

using InferFn = absl::StatusOr<std::vector<TensorType>> (*)(std::span<const TensorType> in,
                                                            const Attrs& attrs);

struct OpInfo {
  Op op;
  std::string_view name;
  OpKind kind;
  int min_operands;
  int max_operands;  // -1: any number
  std::vector<AttrSpec> attrs;
  InferFn infer;
  const AttrSpec* find_attr(std::string_view n) const;
};

const OpInfo& op_info(Op op);
std::string_view op_name(Op op);
std::optional<Op> find_op(std::string_view name);
std::span<const OpInfo> all_ops();

// Checks names and types against the op's schema and that required ones are present;
// converts parsed values to the schema's types in place.
absl::Status check_attrs(Op op, Attrs& attrs);

// Number of operands and results, attributes, then the op's shape/dtype rule.
absl::StatusOr<std::vector<TensorType>> infer_types(Op op, std::span<const TensorType> in,
                                                    Attrs& attrs);

// NumPy broadcasting of two shapes; symbolic dims must be equal unless one side is 1.
absl::StatusOr<Shape> broadcast_shapes(const Shape& a, const Shape& b);
// Normalizes possibly negative axes against `rank`; rejects out of range and repeats.
absl::StatusOr<std::vector<int64_t>> normalize_axes(std::span<const int64_t> axes, int64_t rank);

}  // namespace kiln
