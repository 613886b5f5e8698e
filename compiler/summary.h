// One-line summaries of result tensors (dtype, shape, min, max, mean, checksum), as printed
// by the examples and `kiln run`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/host_tensor.h"

namespace kiln {

struct TensorSummary {
  DType dtype;
  std::vector<int64_t> shape;
  // Over all elements as doubles; NaN if any element is NaN or the tensor is empty.
  double min, max, mean;
  // FNV-1a 64 of the tensor's bytes (its own dtype, row-major, little-endian): equal
  // checksums mean bit-identical results.
  uint64_t checksum;
};

TensorSummary summarize(const HostTensor& t);
std::string checksum_hex(uint64_t checksum);  // 16 lowercase hex digits
// "n: bf16[2, 4096] min=-4.03 max=3.98 mean=0.0012 checksum=8f3a..."
std::string format_summary(const std::string& name, const TensorSummary& s);

}  // namespace kiln
