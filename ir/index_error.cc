#include "ir/index_error.h"

#include "ir/str.h"

namespace kiln {
namespace {
constexpr char kPayload[] = "kiln/gather_index_out_of_range";
}  // namespace

absl::Status gather_index_error(std::string_view node, int64_t index, int64_t dim, int64_t axis,
                                std::string_view detail) {
  absl::Status s = invalid_argument("gather %", node, ": index ", index, " out of range [", -dim, ", ", dim,
                                    ") on axis ", axis, detail);
  s.SetPayload(kPayload, absl::Cord(str_cat(index)));
  return s;
}

bool is_gather_index_error(const absl::Status& s) { return s.GetPayload(kPayload).has_value(); }

}  // namespace kiln
