#include "ir/op_attrs.h"

#include <algorithm>
#include <numeric>

#include "ir/status.h"
#include "ir/str.h"

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

absl::Status slice_step_ok(const Dim& dim, const SymExpr& start, const SymExpr& end, int64_t step) {
  if (step == 0) return absl::InvalidArgumentError("step must not be 0");
  if (step < 0 && !(dim.constant() && start.constant() && end.constant()))
    return absl::InvalidArgumentError(str_cat("a negative step needs a static dim and constant bounds, got dim ",
                                              dim.to_string(), ", start ", start.to_string(), ", end ", end.to_string()));
  return absl::OkStatus();
}

SliceBounds slice_bounds(const Dim& dim, const SymExpr& start, const SymExpr& end, int64_t step) {
  std::optional<int64_t> n = dim.constant(), s = start.constant(), e = end.constant();
  if (n && s && e) {  // Python's rules
    int64_t first, last, len;
    if (step > 0) {
      first = *s < 0 ? std::max<int64_t>(0, *n + *s) : std::min(*s, *n);
      last = *e < 0 ? std::max<int64_t>(0, *n + *e) : std::min(*e, *n);
      len = last > first ? (last - first - 1) / step + 1 : 0;  // no overflow for huge steps
    } else {
      first = *s < 0 ? std::max<int64_t>(-1, *n + *s) : std::min(*s, *n - 1);
      last = *e < 0 ? std::max<int64_t>(-1, *n + *e) : std::min(*e, *n - 1);
      len = first > last ? 1 - (first - last - 1) / step : 0;  // truncation; no -step overflow
    }
    return SliceBounds{first, last, len, true};
  }
  constexpr int64_t kToEnd = int64_t{1} << 62;
  SymExpr first = s && *s < 0 ? dim + *s : start;
  SymExpr last = e && *e >= kToEnd ? dim : e && *e < 0 ? dim + *e : end;
  return SliceBounds{first, last, (last - first + (step - 1)).floordiv(step), false};
}

SliceBounds slice_bounds(const Node& slice) {
  SliceAttrs a(slice);
  const Shape& shape = slice.operand(0)->shape();
  int64_t rank = static_cast<int64_t>(shape.size()), axis = a.axis() < 0 ? a.axis() + rank : a.axis();
  return slice_bounds(shape[axis], a.start(), a.end(), a.step());
}

std::vector<std::pair<SymExpr, std::string>> slice_conditions(const SliceBounds& b, const Dim& dim) {
  if (b.clamped) return {};
  return {{b.start, "start >= 0"}, {dim - b.end, "end <= dim"}, {b.end - b.start, "start <= end"}};
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
