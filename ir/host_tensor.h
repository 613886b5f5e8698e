// A dense, row-major tensor in host memory, stored in its own dtype: parameter data,
// reference-evaluator values, .npy files. Elements read as double and are rounded to the
// dtype when written, which is exactly the storage-type semantics of DESIGN.md.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ir/dtype.h"

namespace kiln {

class HostTensor {
 public:
  HostTensor() = default;
  // Zero-filled. The shape must have a representable byte size (callers check untrusted
  // shapes with checked_nbytes and the allocation limit first, ir/checked.h).
  HostTensor(DType dtype, std::vector<int64_t> shape);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const { return numel_; }
  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* data() { return bytes_.data(); }
  int64_t nbytes() const { return static_cast<int64_t>(bytes_.size()); }

  double get(int64_t i) const;           // as a double; 64-bit ints beyond 2^53 lose bits
  // Exact for integer and bool dtypes; a u64 comes as its bit pattern (wrap_int in ir/dtype.h).
  int64_t get_int(int64_t i) const;
  void set(int64_t i, double v);         // rounded to the dtype (float_to_int for integers)
  void set_int(int64_t i, int64_t v);    // wrapped to an integer dtype's width
  // get/set/get_int/set_int check 0 <= i < numel().

  // Floats uniform in [lo, hi); integers uniform in [lo, hi) truncated; bools fair coins.
  void fill_random(std::mt19937_64& rng, double lo = -1.0, double hi = 1.0);
  std::string type_string() const;  // "bf16[2, 3]"
  // Chunk `index` of `count` equal chunks along `axis` (a tensor-parallel rank's shard); an
  // axis that does not divide into `count` is a broken invariant (callers check it).
  HostTensor chunk(int64_t axis, int64_t index, int64_t count) const;
  // The values converted to dtype `t`, each through get() and set() (a float checkpoint's
  // tensor as the graph's float dtype).
  HostTensor converted(DType t) const;

 private:
  uint8_t* at(int64_t i);  // element i's bytes; an index outside [0, numel) stops the process
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 1;
  std::vector<uint8_t> bytes_ = std::vector<uint8_t>(4);
};

}  // namespace kiln
