// NumPy .npy files (format 1.0/2.0, little-endian, C order): f32 f64 f16 i32 i64 bool.
// bf16 has no NumPy type, so bf16 tensors are written as float32.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/host_tensor.h"

namespace kiln {

// f64 files load as f32. Errors name the file and what was wrong with it. Only a regular
// file within the host's allocation limit is read (ir/file_io.h).
absl::StatusOr<HostTensor> read_npy(const std::string& path);
// The same from the file's bytes; errors start with `name`.
absl::StatusOr<HostTensor> parse_npy(std::string_view bytes, std::string_view name);
// Written to a temporary file and renamed, so a failure leaves nothing behind.
absl::Status write_npy(const std::string& path, const HostTensor& t);

}  // namespace kiln
