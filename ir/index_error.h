// The error of a gather index outside [-dim, dim) (RELIABILITY.md "Index checks"): one text
// for the reference evaluator and every compiled device, and a payload that marks it, so a
// caller (the differential fuzzer, a serving loop) can tell it from other refusals without
// matching text. prefix_error (ir/str.h) keeps the payload.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace kiln {

// "gather %NODE: index I out of range [-DIM, DIM) on axis AXIS", then `detail` when given.
absl::Status gather_index_error(std::string_view node, int64_t index, int64_t dim, int64_t axis,
                                std::string_view detail = {});

// Whether `s` is (or was made by prefixing) a gather_index_error.
bool is_gather_index_error(const absl::Status& s);

}  // namespace kiln
