// Random graphs for differential fuzzing: random op sequences over every op kind (elementwise
// with NumPy broadcasting, reductions with and without keepdim, views, GEMMs, composites),
// with size-1, odd and symbolic dims. Any consumer of graphs (the pass pipeline, a backend)
// runs them against the reference evaluator.
#pragma once

#include <cstdint>
#include <vector>

#include "ir/graph.h"

namespace kiln {

struct RandomGraphOptions {
  int ops = 14;                // ops drawn; dead ones are dropped at the end
  int max_rank = 4;
  bool symbolic = true;        // dims may be the symbols B and T
  bool low_precision = true;   // bf16 and f16 values besides f32
  bool integers = true;        // i32/i64/bool values, comparisons, where, integer casts
  bool reductions = true;
  bool views = true;
  bool gemms = true;
  bool composites = true;
};

struct RandomGraph {
  Graph graph;
  // Symbol values to run it under (when it has symbols): 1, odd and larger sizes.
  std::vector<Bindings> bindings;
};

// The same seed and options give the same graph (printed byte for byte). The graph
// verifies; its numerics stay well conditioned, so that a correct compiler matches the
// reference within default_tolerance: values that carry accumulation-order rounding (sums,
// means, products, GEMMs, composites) never reach a discontinuous op (floor, comparisons,
// integer casts, argmax) or a divisor, log or root.
RandomGraph random_graph(uint64_t seed, const RandomGraphOptions& options = {});

}  // namespace kiln
