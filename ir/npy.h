// NumPy .npy files (format 1.0/2.0, little-endian, C order): f32 f64 f16 i32 i64 bool.
// bf16 has no NumPy type, so bf16 tensors are written as float32.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ir/host_tensor.h"

namespace kiln {

// f64 files load as f32. Errors name the file and what was wrong with it.
absl::StatusOr<HostTensor> read_npy(const std::string& path);
// Written to a temporary file and renamed, so a failure leaves nothing behind.
absl::Status write_npy(const std::string& path, const HostTensor& t);

}  // namespace kiln
