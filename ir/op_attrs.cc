#include "ir/op_attrs.h"

#include <algorithm>
#include <numeric>

#include "ir/status.h"

namespace kiln {

absl::StatusOr<std::vector<int64_t>> reduction_axes(const ReduceAttrs& attrs, int64_t rank) {
  std::optional<std::vector<int64_t>> given = attrs.axes();
  if (!given) {
    std::vector<int64_t> all(rank);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, normalize_axes(*given, rank));
  std::sort(axes.begin(), axes.end());
  return axes;
}

absl::StatusOr<std::vector<int64_t>> reduction_axes(const ArgMaxAttrs& attrs, int64_t rank) {
  return normalize_axes(std::span(&attrs.axis(), 1), rank);
}

absl::StatusOr<std::vector<int64_t>> reduction_axes(const Node& reduction) {
  int64_t rank = static_cast<int64_t>(reduction.operand(0)->shape().size());
  if (reduction.op() == Op::ArgMax) return reduction_axes(ArgMaxAttrs(reduction), rank);
  return reduction_axes(ReduceAttrs(reduction), rank);
}

bool reduction_keepdim(const Node& reduction) {
  if (reduction.op() == Op::ArgMax) return ArgMaxAttrs(reduction).keepdim();
  return ReduceAttrs(reduction).keepdim();
}

std::optional<double> constant_value(const Value* v) {
  const Node* n = v->producer();
  if (!n || n->op() != Op::Constant) return std::nullopt;
  const AttrValue& value = ConstantAttrs(*n).value();
  if (const double* d = std::get_if<double>(&value)) return *d;
  if (const bool* b = std::get_if<bool>(&value)) return *b ? 1.0 : 0.0;
  if (const int64_t* i = std::get_if<int64_t>(&value))
    return is_float(v->dtype()) ? static_cast<double>(static_cast<float>(*i)) : static_cast<double>(*i);
  return std::nullopt;
}

}  // namespace kiln
