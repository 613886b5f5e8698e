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
    Attention,    // one attention node that decompose kept whole: a device's fused routine,
                  // then a permute of its result that the routine stores through strides
    Extern,       // one extern_call node: the registered function over its stored operands
    Collective,   // one all_reduce, all_gather or reduce_scatter (along axis 0): the communicator's call
  };
  int id = 0;
  Kind kind = Kind::Elementwise;
  std::vector<Node*> nodes;     // topological order
  std::vector<Value*> inputs;   // read from outside the group: args or other groups' outputs
  std::vector<Value*> outputs;  // needed outside the group or graph outputs
  // What the group stores: its outputs, and for an Extern or Collective group every result
  // (the user's function or the communicator writes them all, read or not).
  const std::vector<Value*>& stored() const {
    return kind == Kind::Extern || kind == Kind::Collective ? nodes[0]->results() : outputs;
  }
  // Gemm and Attention only: view nodes (reshape, permute, expand, squeeze, unsqueeze,
  // slice), in topological order, that compute an operand of `nodes` from `inputs`. They are
  // index arithmetic on the GEMM's or attention's loads (strides), never copies; empty for
  // other kinds, whose views sit in `nodes`. A cast to f32 of a float value may sit among the views of a
  // GEMM operand: the GEMM loads the narrower type and converts (exact).
  std::vector<Node*> prologue;
  // The group reads only parameters (e.g. the concat of q/k/v weights that have no host
  // data): run it once when the parameters are bound, not on every call. Its outputs
  // live with the parameters, outside the per-call arena.
  bool weight_prep = false;
};

// Scalar `constant` nodes belong to no group and are never listed in `inputs`: a group
// reading one inlines its value as an immediate. A constant the graph returns is the one
// exception: it sits in a group of its own, whose kernel stores it.

struct Schedule {
  std::vector<KernelGroup> groups;  // execution order: inputs come from earlier groups
};

}  // namespace kiln
