#include "runtime/cuda/allocator.h"

#include <map>
#include <memory>
#include <mutex>

#include "runtime/cuda_driver.h"
#include "ir/status.h"

namespace kiln::cuda {
namespace {

// Small blocks round to 512 bytes, large ones to 1 MiB: shapes that differ slightly still
// share blocks, and a block wastes at most a few percent.
int64_t rounded(int64_t bytes) {
  int64_t unit = bytes < (1 << 20) ? 512 : (1 << 20);
  return std::max<int64_t>(unit, (bytes + unit - 1) / unit * unit);
}

struct Pool {
  std::mutex mu;
  std::multimap<int64_t, DeviceBuffer> free;  // by rounded size
  PoolStats stats;
};

Pool& pool(int device) {
  // Never destroyed: tensors may outlive static destruction order at exit.
  static auto* pools = new std::map<int, std::unique_ptr<Pool>>();
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Pool>& p = (*pools)[device];
  if (!p) p = std::make_unique<Pool>();
  return *p;
}

// Returns its buffer to the pool when the last tensor holding it goes.
struct PooledBlock {
  Pool* pool;
  int64_t size;
  DeviceBuffer buffer;
  ~PooledBlock() {
    std::lock_guard<std::mutex> lock(pool->mu);
    pool->stats.cached_bytes += size;
    pool->free.emplace(size, std::move(buffer));
  }
};

}  // namespace

absl::StatusOr<Tensor> pooled_tensor(DType dtype, std::vector<int64_t> shape, int device) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("tensor shape has a negative dimension");
    numel *= d;
  }
  int64_t size = rounded(numel * dtype_size(dtype));
  Pool& p = pool(device);
  auto block = std::make_shared<PooledBlock>();
  block->pool = &p;
  block->size = size;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (auto it = p.free.find(size); it != p.free.end()) {
      block->buffer = std::move(it->second);
      p.free.erase(it);
      p.stats.cached_bytes -= size;
      ++p.stats.reuses;
    }
  }
  if (block->buffer.ptr() == 0) {
    KILN_ASSIGN_OR_RETURN(Context * ctx, Context::primary(device));
    absl::StatusOr<DeviceBuffer> b = DeviceBuffer::allocate(*ctx, size);
    if (!b.ok()) {
      // Out of memory with blocks cached: give them back to the driver and try once more.
      std::multimap<int64_t, DeviceBuffer> drop;
      {
        std::lock_guard<std::mutex> lock(p.mu);
        drop.swap(p.free);
        p.stats.cached_bytes = 0;
      }
      drop.clear();
      b = DeviceBuffer::allocate(*ctx, size);
      if (!b.ok()) return b.status();
    }
    block->buffer = *std::move(b);
    std::lock_guard<std::mutex> lock(p.mu);
    ++p.stats.driver_allocations;
  }
  void* data = reinterpret_cast<void*>(block->buffer.ptr());
  return Tensor::wrap(data, dtype, std::move(shape), {}, DeviceId::cuda(device), std::move(block));
}

PoolStats pool_stats(int device) {
  Pool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  return p.stats;
}

}  // namespace kiln::cuda
