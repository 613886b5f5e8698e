// Comparison of a computed tensor with the reference, with per-dtype tolerances, naming
// the worst element when they disagree.
#pragma once

#include <cstdint>
#include <string>

#include "ir/host_tensor.h"

namespace kiln {

struct Tolerance {
  double rtol;
  double atol;
};
Tolerance default_tolerance(DType t);  // f64 1e-10/1e-12, f32 1e-4/1e-5, f16 1e-2/1e-3, bf16 2e-2/1e-2, ints exact

struct Comparison {
  bool ok = true;
  int64_t worst_index = -1;            // flat index of the worst element; -1 if none
  std::vector<int64_t> worst_coords;   // its coordinates
  double expected = 0, got = 0;
  double max_abs_err = 0, max_rel_err = 0;  // relative: over elements with |expected| > atol
  std::string message;                 // "" when ok; else dtype/shape mismatch or the worst element
};
// |got - expected| <= atol + rtol * |expected| everywhere; NaN matches only NaN, inf only
// the same inf.
Comparison compare_tensors(const HostTensor& expected, const HostTensor& got, Tolerance tol);

}  // namespace kiln
