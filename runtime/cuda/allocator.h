// A caching allocator of device memory for the tensors compiled graphs return: freed blocks
// go back to a per-device free list keyed by their rounded size instead of to cuMemFree, so
// steady-state calls allocate nothing from the driver. As with PyTorch's caching allocator,
// a block is reused by the next allocation in host order: tensors are assumed to be used on
// one stream (or synchronized by the caller) before they are dropped.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "runtime/tensor.h"

namespace kiln::cuda {

// A contiguous tensor on `device` whose memory returns to the cache when the last copy of
// the tensor is gone.
absl::StatusOr<Tensor> pooled_tensor(DType dtype, std::vector<int64_t> shape, int device);

struct PoolStats {
  int64_t driver_allocations = 0;  // cuMemAlloc calls
  int64_t reuses = 0;              // allocations served from the free list
  int64_t cached_bytes = 0;        // held in free lists now
};
PoolStats pool_stats(int device);

}  // namespace kiln::cuda
