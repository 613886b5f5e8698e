#include "ir/checked.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <set>
#include <vector>

#include "ir/graph.h"

#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

absl::StatusOr<int64_t> checked_numel(std::span<const int64_t> dims, std::string_view what) {
  int64_t n = 1;
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] < 0)
      return invalid_argument(what, ": dim ", i, " is negative (", dims[i], ")");
  for (int64_t d : dims) {
    std::optional<int64_t> m = checked_mul(n, d);
    if (!m) {
      // A later 0 makes the product 0 without overflow: only a nonzero product overflows.
      for (int64_t z : dims)
        if (z == 0) return 0;
      return invalid_argument(what, ": element count of [", fmt::format("{}", fmt::join(dims, ", ")), "] overflows int64");
    }
    n = *m;
  }
  return n;
}

absl::StatusOr<int64_t> checked_nbytes(DType dtype, std::span<const int64_t> dims, std::string_view what) {
  KILN_ASSIGN_OR_RETURN(int64_t n, checked_numel(dims, what));
  std::optional<int64_t> bytes = checked_mul(n, dtype_size(dtype));
  if (!bytes)
    return invalid_argument(what, ": byte size of ", dtype_name(dtype), "[", fmt::format("{}", fmt::join(dims, ", ")),
                            "] overflows int64");
  return *bytes;
}

absl::Status check_representable(DType dtype, const Shape& shape) {
  std::vector<int64_t> fixed;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i].overflowed())
      return invalid_argument("dim ", i, " of ", shape_to_string(shape), " overflowed int64 in shape arithmetic");
    if (std::optional<int64_t> c = shape[i].constant()) fixed.push_back(*c);
  }
  absl::StatusOr<int64_t> bytes = checked_nbytes(dtype, fixed, "");  // the message is built on error only
  if (!bytes.ok()) return invalid_argument(dtype_name(dtype), shape_to_string(shape), bytes.status().message());
  return absl::OkStatus();
}

absl::Status check_value_sizes(const Graph& g, const Bindings& b, int64_t limit) {
  auto check = [&](const Value& v) -> absl::Status {
    std::set<std::string> syms;
    for (const Dim& d : v.shape()) d.collect_symbols(syms);
    for (const std::string& s : syms)
      if (!b.contains(s)) return absl::OkStatus();  // checked when it is bound
    std::string what = str_cat("%", v.name(), " of type ", v.type().to_string(), " under ", bindings_to_string(b));
    absl::StatusOr<std::vector<int64_t>> dims = evaluate_shape(v.shape(), b);
    if (!dims.ok()) return prefix_error(dims.status(), what, ": ");
    KILN_ASSIGN_OR_RETURN(int64_t bytes, checked_nbytes(v.dtype(), *dims, what));
    return check_allocation(bytes, limit, what);
  };
  for (const Value* v : g.args()) KILN_RETURN_IF_ERROR(check(*v));
  for (const auto& n : g.nodes())
    for (const Value* r : n->results()) KILN_RETURN_IF_ERROR(check(*r));
  return absl::OkStatus();
}

int64_t host_allocation_limit() {
  if (const char* env = std::getenv("KILN_MAX_ALLOC_BYTES")) {
    char* end = nullptr;
    long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return v;
  }
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return INT64_MAX;
  return checked_mul(pages, page).value_or(INT64_MAX);
}

absl::Status check_allocation(int64_t bytes, int64_t limit, std::string_view what) {
  if (bytes <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(str_cat("out of memory: needs ", bytes, " bytes for ", what, " (limit ", limit,
                                              " bytes; set KILN_MAX_ALLOC_BYTES to change it)"));
}

}  // namespace kiln
