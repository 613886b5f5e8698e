// Reading files that come from outside (.kiln, .onnx, .npy, cache entries, autotune
// records) without trusting them: only regular files (a directory, FIFO or device is an
// error, never a hang or an exception), and only up to a size the caller names. Writing
// files whole or not at all.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace kiln {

// The whole file. Errors (InvalidArgument, or NotFound when it does not exist) name the path:
// missing, not a regular file, larger than `max_bytes`, unreadable.
absl::StatusOr<std::string> read_regular_file(const std::string& path, int64_t max_bytes);

// A default cap for model-sized inputs (.kiln text, .onnx, .npy): the host's allocation
// limit (ir/checked.h).
int64_t max_input_file_bytes();

// Writes `path` through `writer` (which returns false when a write failed) into a temporary
// file beside it (<path>.tmp.<pid>) that is renamed over `path` once complete, so readers
// see the old file or the new one, never a part. On any failure the temporary file is
// removed and the error names `path` and what failed.
absl::Status write_file_atomically(const std::string& path, const std::function<bool(std::FILE*)>& writer);

}  // namespace kiln
