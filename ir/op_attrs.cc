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

absl::StatusOr<WindowDims> window_dims(std::vector<int64_t> kernel, const std::optional<std::vector<int64_t>>& strides,
                                       const std::optional<std::vector<int64_t>>& pads,
                                       const std::optional<std::vector<int64_t>>& dilations, bool ceil_mode) {
  size_t n = kernel.size();
  if (n == 0) return invalid_argument("the window needs at least one spatial dim");
  auto list = [&](std::string_view what, const std::optional<std::vector<int64_t>>& v, size_t len, int64_t def,
                  int64_t least) -> absl::StatusOr<std::vector<int64_t>> {
    std::vector<int64_t> out = v.value_or(std::vector<int64_t>(len, def));
    if (out.size() != len) return invalid_argument(what, " has ", out.size(), " entries, expected ", len);
    for (int64_t x : out)
      if (x < least) return invalid_argument(what, " must be >= ", least, ", got ", x);
    return out;
  };
  WindowDims w;
  KILN_ASSIGN_OR_RETURN(w.kernel, list("kernel", kernel, n, 1, 1));
  KILN_ASSIGN_OR_RETURN(w.strides, list("strides", strides, n, 1, 1));
  KILN_ASSIGN_OR_RETURN(w.dilations, list("dilations", dilations, n, 1, 1));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> p, list("pads", pads, 2 * n, 0, 0));
  w.pads_begin.assign(p.begin(), p.begin() + n);
  w.pads_end.assign(p.begin() + n, p.end());
  w.ceil_mode = ceil_mode;
  return w;
}

absl::StatusOr<SymExpr> WindowDims::out(size_t i, const SymExpr& in) const {
  int64_t s = strides[i], pb = pads_begin[i], pe = pads_end[i];
  SymExpr room = in + (pb + pe - span(i));
  if (std::optional<int64_t> r = room.constant()) {
    if (*r < 0)
      return invalid_argument("a window of ", span(i), " does not fit spatial size ", *r + span(i) - pb - pe,
                              " padded by ", pb, "+", pe);
    int64_t o = (ceil_mode ? (*r + s - 1) / s : *r / s) + 1;
    if (ceil_mode && (o - 1) * s >= *r + span(i) - pe) --o;  // (o-1)*s >= in + pb
    return SymExpr(o);
  }
  if (!ceil_mode) return room.floordiv(s) + 1;
  // The last window starts at (o-1)*s - pb < room + s - pb; it can only start past the
  // input when s + pe > span.
  if (s + pe > span(i))
    return invalid_argument("ceil_mode with stride ", s, ", end pad ", pe, " and window ", span(i),
                            " needs a static spatial size, got ", in.to_string());
  return (room + (s - 1)).floordiv(s) + 1;
}

absl::StatusOr<WindowDims> window_dims(Op op, const Attrs& a, const Shape& weight) {
  auto kernel_of = [&]() -> absl::StatusOr<std::vector<int64_t>> {
    std::vector<int64_t> k;
    for (size_t i = 2; i < weight.size(); ++i) {
      std::optional<int64_t> c = weight[i].constant();
      if (!c) return invalid_argument("the kernel size ", weight[i].to_string(), " must be static");
      k.push_back(*c);
    }
    return k;
  };
  switch (op) {
    case Op::Conv: {
      ConvAttrs c(a);
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> k, kernel_of());
      return window_dims(k, c.strides(), c.pads(), c.dilations());
    }
    case Op::ConvTranspose: {
      ConvTransposeAttrs c(a);
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> k, kernel_of());
      return window_dims(k, c.strides(), c.pads(), c.dilations());
    }
    case Op::MaxPool: case Op::AvgPool: {
      PoolAttrs p(a);
      return window_dims(p.kernel(), p.strides(), p.pads(), p.dilations(), p.ceil_mode());
    }
    case Op::Window: {
      WindowAttrs w(a);
      return window_dims(w.kernel(), w.strides(), w.pads(), w.dilations(), w.ceil_mode());
    }
    default: return invalid_argument(op_name(op), " has no window");
  }
}

absl::StatusOr<WindowDims> window_dims(const Node& n) {
  bool conv = n.op() == Op::Conv || n.op() == Op::ConvTranspose;
  return window_dims(n.op(), n.attrs(), conv ? n.operand(1)->shape() : Shape{});
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
