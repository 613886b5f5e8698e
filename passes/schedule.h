// Kernel groups: the unit that fusion produces and lowering consumes. A Schedule
// partitions the computing nodes of a Graph (views included) into groups run in order;
// each group becomes one kernel (or one GEMM call with its epilogue).
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

struct KernelGroup {
  enum class Kind : uint8_t {
    Elementwise,  // elementwise/broadcast/view nodes over one index space
    Reduction,    // one reduction pattern with its prologue and epilogue
    Gemm,         // nodes[0] is the matmul/linear; the rest is its epilogue
  };
  int id = 0;
  Kind kind = Kind::Elementwise;
  std::vector<Node*> nodes;     // topological order
  std::vector<Value*> inputs;   // read from outside the group: args or other groups' outputs
  std::vector<Value*> outputs;  // needed outside the group or graph outputs
};

struct Schedule {
  std::vector<KernelGroup> groups;  // execution order: inputs come from earlier groups
};

}  // namespace kiln
