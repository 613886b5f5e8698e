// Checked int64 arithmetic for sizes: every element count, byte size, stride, offset and
// arena size in kiln goes through these, so that an overflow or a negative dim is an error
// naming the value instead of a wrapped number (DESIGN.md, "Sizes"). Also the limit on a
// single allocation, which turns a huge but representable size into "out of memory".
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/sym.h"

namespace kiln {

// nullopt on overflow.
inline std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<int64_t> checked_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// The product of `dims`; an error when a dim is negative or the product overflows int64.
// `what` names the value in the message ("%x", "input 0").
absl::StatusOr<int64_t> checked_numel(std::span<const int64_t> dims, std::string_view what);
// numel * dtype_size, checked the same way.
absl::StatusOr<int64_t> checked_nbytes(DType dtype, std::span<const int64_t> dims, std::string_view what);

// Whether a tensor of this dtype and shape can exist: no dim overflowed in shape arithmetic,
// no constant dim is negative, and the byte size of the constant dims fits int64 (symbolic
// dims are checked when they are bound). The verifier runs it on every value.
absl::Status check_representable(DType dtype, const Shape& shape);

class Graph;
// Every argument and node result of `g` whose symbols `b` binds: its dims evaluated without
// overflow, none negative, its byte size representable and at most `limit`. The error
// names the value, its type and the bindings. Run where symbols are bound (--bind), so a
// huge binding is refused before anything is allocated.
absl::Status check_value_sizes(const Graph& g, const Bindings& b, int64_t limit);

// The largest single allocation kiln makes on the host: KILN_MAX_ALLOC_BYTES when set (a
// positive integer), else the machine's physical memory. A device adapter uses its own
// device's memory the same way.
int64_t host_allocation_limit();
// "out of memory: needs N bytes for <what> (limit L bytes; ...)" when bytes > limit.
absl::Status check_allocation(int64_t bytes, int64_t limit, std::string_view what);

}  // namespace kiln
