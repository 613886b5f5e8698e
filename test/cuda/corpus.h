// The graphs the CUDA tests compile: every op family, every fusion pattern of the passes
// issue, the examples, in f32, f16 and bf16, each with symbol bindings that include 1, odd
// sizes and a larger one.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln::test {

struct CorpusGraph {
  std::string name;
  Graph graph;
  std::vector<Bindings> bindings;
};

// Parsed once; an unparsable corpus entry fails the test that asks.
const std::vector<CorpusGraph>& cuda_corpus();

}  // namespace kiln::test
