// Typed reads of a node's attributes, generated from ops.def: one accessor class per
// attribute set, e.g. GeluAttrs(n).approximate() or ReduceAttrs(n).keepdim(). A misspelt
// attribute, or one that the set does not have, is a compile error. Also the facts every
// layer derives from attributes: a reduction's axes, a constant's value.
#pragma once

#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "ir/graph.h"

namespace kiln {

// The C++ type of an attribute's value.
template <AttrType T> struct AttrCpp;
template <> struct AttrCpp<AttrType::Int> { using type = int64_t; };
template <> struct AttrCpp<AttrType::Float> { using type = double; };
template <> struct AttrCpp<AttrType::Bool> { using type = bool; };
template <> struct AttrCpp<AttrType::String> { using type = std::string; };
template <> struct AttrCpp<AttrType::DType> { using type = DType; };
template <> struct AttrCpp<AttrType::Ints> { using type = std::vector<int64_t>; };
template <> struct AttrCpp<AttrType::Floats> { using type = std::vector<double>; };
template <> struct AttrCpp<AttrType::Dims> { using type = std::vector<SymExpr>; };
template <> struct AttrCpp<AttrType::Scalar> { using type = AttrValue; };  // an int64_t, double or bool
template <> struct AttrCpp<AttrType::Dim> { using type = SymExpr; };
template <AttrType T>
using attr_cpp_t = typename AttrCpp<T>::type;

// One tag type per attribute set of ops.def (declared once per op that names it).
namespace attr_set {
#define KILN_OP(id, name, kind, min_operands, max_operands, set, infer) struct set;
#include "ir/ops.def"
}  // namespace attr_set

// The attributes of an op of attribute set `Set`, which check_attrs has checked (every
// node's are): a required attribute reads as a const reference, an optional one as a
// std::optional, one with a default as the value set or else the default.
template <typename Set>
class AttrsOf {
 public:
  explicit AttrsOf(const Attrs& attrs) : attrs_(&attrs) {}
  explicit AttrsOf(const Node& n) : attrs_(&n.attrs()) {}

  // Each accessor exists only in its set's class: its requires-clause names the set.
#define KILN_ATTR(set, name, type, presence, ...) \
  KILN_ATTR_##presence(set, name, AttrType::type __VA_OPT__(, ) __VA_ARGS__)
#define KILN_ATTR_Required(set, name, type)                                        \
  const attr_cpp_t<type>& name() const requires std::is_same_v<Set, attr_set::set> { \
    return *find<type>(#name);                                                     \
  }
#define KILN_ATTR_Optional(set, name, type)                                                  \
  std::optional<attr_cpp_t<type>> name() const requires std::is_same_v<Set, attr_set::set> { \
    const attr_cpp_t<type>* v = find<type>(#name);                                           \
    return v ? std::optional(*v) : std::nullopt;                                             \
  }
#define KILN_ATTR_Default(set, name, type, ...)                                    \
  const attr_cpp_t<type>& name() const requires std::is_same_v<Set, attr_set::set> { \
    static const attr_cpp_t<type> kDefault{__VA_ARGS__};                           \
    const attr_cpp_t<type>* v = find<type>(#name);                                 \
    return v ? *v : kDefault;                                                      \
  }
#include "ir/ops.def"
#undef KILN_ATTR_Required
#undef KILN_ATTR_Optional
#undef KILN_ATTR_Default

 private:
  template <AttrType T>
  const attr_cpp_t<T>* find(std::string_view name) const {
    const AttrValue* v = attrs_->find(name);
    if constexpr (T == AttrType::Scalar) return v;
    else return v ? std::get_if<attr_cpp_t<T>>(v) : nullptr;
  }

  const Attrs* attrs_;
};

// GeluAttrs, ReduceAttrs, ...: one alias per set that has attributes (repeated per
// attribute, which C++ allows for an alias of the same type).
#define KILN_ATTR(set, ...) using set##Attrs = AttrsOf<attr_set::set>;
#include "ir/ops.def"

// A reduction's axes: `axes` (all of them when absent) or argmax's `axis`, normalized
// against the input's rank and sorted; an error names an axis out of range or repeated.
absl::StatusOr<std::vector<int64_t>> reduction_axes(const ReduceAttrs& attrs, int64_t rank);
absl::StatusOr<std::vector<int64_t>> reduction_axes(const ArgMaxAttrs& attrs, int64_t rank);
absl::StatusOr<std::vector<int64_t>> reduction_axes(const Node& reduction);
// Whether a reduction keeps each reduced dim, with size 1.
bool reduction_keepdim(const Node& reduction);

// Where a slice (ops.def) starts along a dim of extent `dim`, where it ends (exclusive, in
// the step's direction) and how many elements it takes. `clamped`: constant bounds on a static dim,
// normalized and clamped as Python does; otherwise start and end are the attributes after a
// negative constant counts from the end (and end >= 2^62 means `dim`), and the slice is
// valid only where 0 <= start <= end <= dim (check_slice_range, ir/verifier.h, proves it).
struct SliceBounds {
  SymExpr start, end, length;
  bool clamped = false;
};
// Pre: slice_step_ok(...) holds (as it does for every verified slice node).
SliceBounds slice_bounds(const Dim& dim, const SymExpr& start, const SymExpr& end, int64_t step);
SliceBounds slice_bounds(const Node& slice);
// Why a slice's step cannot be used: 0, or negative with a symbolic dim or bound.
absl::Status slice_step_ok(const Dim& dim, const SymExpr& start, const SymExpr& end, int64_t step);
// The conditions an unclamped slice needs, each an expression that must be >= 0 (none for a
// clamped one), with what each says: "start >= 0", "end <= dim", "start <= end".
std::vector<std::pair<SymExpr, std::string>> slice_conditions(const SliceBounds& b, const Dim& dim);
// The geometry of a sliding window over the trailing spatial dims (conv, conv_transpose,
// pools, window): per spatial dim its kernel size, stride, dilation and pads, validated
// (kernel, stride, dilation >= 1, pads >= 0, one entry per spatial dim, pads 2 per dim).
struct WindowDims {
  std::vector<int64_t> kernel, strides, dilations, pads_begin, pads_end;
  bool ceil_mode = false;
  size_t rank() const { return kernel.size(); }
  int64_t span(size_t i) const { return dilations[i] * (kernel[i] - 1) + 1; }  // extent of one window
  // Output size along spatial dim i for input size `in`: floor((in + pads - span) / stride) + 1,
  // or rounded up with ceil_mode, where a window that would start past the input and the
  // begin padding is dropped (as ONNX and PyTorch do); an error for a symbolic `in` whose
  // size depends on that rule, and for a window larger than a static padded input.
  absl::StatusOr<SymExpr> out(size_t i, const SymExpr& in) const;
};
absl::StatusOr<WindowDims> window_dims(std::vector<int64_t> kernel, const std::optional<std::vector<int64_t>>& strides,
                                       const std::optional<std::vector<int64_t>>& pads,
                                       const std::optional<std::vector<int64_t>>& dilations, bool ceil_mode = false);
// The geometry of a conv/conv_transpose (kernel from the weight's static trailing dims), a
// pool or a window node.
absl::StatusOr<WindowDims> window_dims(const Node& n);
absl::StatusOr<WindowDims> window_dims(Op op, const Attrs& attrs, const Shape& weight);

// The value of a scalar `constant` node's result as kernels compute with it: a float as
// written, a bool as 0 or 1, an integer as itself (through f32 for a float dtype, as the
// reference evaluator converts it); nullopt for a value that no constant node produces.
std::optional<double> constant_value(const Value* v);

}  // namespace kiln
