#include "ir/compare.h"

#include <cmath>
#include <limits>

#include "ir/attr.h"
#include "ir/str.h"

namespace kiln {

Tolerance default_tolerance(DType t) {
  switch (t) {
    case DType::f64: return {1e-10, 1e-12};  // reassociated sums and libm, not f32 rounding
    case DType::f32: return {1e-4, 1e-5};
    case DType::f16: return {1e-2, 1e-3};
    case DType::bf16: return {2e-2, 1e-2};
    default: return {0, 0};
  }
}

Comparison compare_tensors(const HostTensor& expected, const HostTensor& got, Tolerance tol) {
  Comparison c;
  if (expected.dtype() != got.dtype() || expected.shape() != got.shape()) {
    c.ok = false;
    c.message = str_cat(expected.dtype() != got.dtype() ? "dtype" : "shape", " mismatch: expected ",
                        expected.type_string(), ", got ", got.type_string());
    return c;
  }
  constexpr double kInf = std::numeric_limits<double>::infinity();
  bool exact_ints = !is_float(expected.dtype());
  // The worst element is the one furthest past its allowance (or closest to it when all pass).
  double worst_excess = -kInf;
  int64_t failures = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    double e = expected.get(i), g = got.get(i), err;
    if (exact_ints) {
      int64_t ei = expected.get_int(i), gi = got.get_int(i);
      err = ei == gi ? 0 : std::max(1.0, std::fabs(g - e));  // i64 beyond 2^53 differs by >= 1
    } else if (std::isnan(e) || std::isnan(g)) {
      err = std::isnan(e) && std::isnan(g) ? 0 : kInf;
    } else if (std::isinf(e) || std::isinf(g)) {
      err = e == g ? 0 : kInf;
    } else {
      err = std::fabs(g - e);
    }
    double allowed = tol.atol + tol.rtol * (std::isfinite(e) ? std::fabs(e) : 0);
    // Relative error only where |expected| exceeds atol: near zero the absolute bound rules.
    double rel = err == 0 || std::fabs(e) <= tol.atol ? 0 : std::isfinite(err) ? err / std::fabs(e) : kInf;
    c.max_abs_err = std::max(c.max_abs_err, err);
    c.max_rel_err = std::max(c.max_rel_err, rel);
    bool fails = err > allowed;
    failures += fails;
    double excess = err == kInf ? kInf : err - allowed;
    if (excess > worst_excess) {
      worst_excess = excess;
      c.worst_index = i;
      c.expected = e;
      c.got = g;
    }
  }
  if (c.worst_index >= 0) {
    c.worst_coords.assign(expected.rank(), 0);
    for (int64_t d = expected.rank(), rest = c.worst_index; d-- > 0; rest /= expected.shape()[d])
      c.worst_coords[d] = rest % expected.shape()[d];
  }
  c.ok = failures == 0;
  if (!c.ok) {
    double err = std::isnan(c.expected) || std::isnan(c.got) || std::isinf(c.expected) || std::isinf(c.got)
                     ? (c.expected == c.got ? 0 : kInf)
                     : std::fabs(c.got - c.expected);
    c.message = str_cat(failures, " of ", expected.numel(), " elements of ", expected.type_string(),
                        " differ; worst at [", fmt::format("{}", fmt::join(c.worst_coords, ", ")),
                        "]: expected ", format_double(c.expected), ", got ", format_double(c.got),
                        ", error ", format_double(err), " > ", format_double(tol.atol), " + ",
                        format_double(tol.rtol), " * |expected|; max abs error ",
                        format_double(c.max_abs_err), ", max rel error ", format_double(c.max_rel_err));
  }
  return c;
}

}  // namespace kiln
