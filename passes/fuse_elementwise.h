// The fuse_elementwise pass: partitions every node not yet in a GEMM group into kernel
// groups of elementwise/broadcast/view ops with at most one reduction pattern.
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

// Pre: `g` verifies, holds no composite op; `s` holds fuse_linear's Gemm groups.
// Post: every node except scalar constants (and a returned constant too) is in exactly one
// group, groups are in an executable order (ids = positions), and:
//  - views and index-only nodes (iota, comparisons of iotas) have one user each: shared
//    ones were duplicated, since they are index arithmetic and cost nothing to repeat;
//  - views feeding only a GEMM group sit in its prologue (strided loads, no copy), as do
//    casts from a float type to f32 feeding only its GEMM (loads that convert), and
//    index-only nodes feeding only its epilogue (a causal mask) join the epilogue;
//  - an Elementwise group's outputs all have one shape (its index space);
//  - a Reduction group's reductions share one input shape and axes, each output has that
//    shape or a reduced shape (keepdim or not), and a value computed from a reduction of
//    the group is read only by elementwise ops, at its own shape or as the keepdim shape
//    broadcast over the input shape: a whole softmax, rms_norm with the residual add
//    before it, layer_norm followed by gelu;
//  - groups reading only parameters (every value of a static shape) are weight_prep and
//    hold nothing else;
//  - a state write (cache_write) is a scatter kernel with the elementwise, broadcast and view
//    nodes that compute the rows it writes and nothing else reads (the RoPE of k, the permute
//    of v's slice of a fused QKV projection), and with the writes next to it in node order
//    that write rows of the same shape at the same positions (a layer's k and v writes) where
//    no other kernel lies between them; an attention node decompose kept whole is
//    alone in its group (an Attention group: the device's fused routine),
//    but for the views it reads q, k and v through (its prologue: the longest chains of
//    single-user views one strided view with 8-element-aligned rows can replace, e.g. the
//    slice/reshape/permute of a fused QKV projection) and a permute of its result keeping
//    the head dim last (stored in that layout, e.g. [B, T, H, D] for the next GEMM);
//  - an extern call is alone in its group (an Extern group: the user's function), and so is a
//    collective (a Collective group: the communicator's call), with no prologue: the views
//    their operands go through are computed (stored dense) by other groups; a collective is
//    never weight prep (every rank must call it at the same point of every call);
//  - a window's input is computed outside its group, but for reshapes and casts: a window
//    reads each element once per kernel position;
//  - the group graph is acyclic, and no node is computed in two groups;
//  - a group holds at most kMaxFusedNodes nodes: one straight-line kernel of thousands of
//    ops costs the backend compilers (LLVM's register allocator, NVRTC) more than linear
//    time, while a kernel boundary in so long a chain costs one extra buffer write and read.
// Groups grow greedily along producer->consumer edges in node order, each merge checked
// against these rules from what each group keeps about itself and the edges between the two
// (found from the smaller group): a chain of n ops costs about n log n, not n^2. Deterministic: the same graph gives
// the same groups. With KILN_LOG=fusion (ir/log.h) every producer -> consumer edge left between two kernels is logged
// with the rule that kept them apart. Returns whether any group was formed.
absl::StatusOr<bool> fuse_elementwise(Graph& g, Schedule& s);

inline constexpr size_t kMaxFusedNodes = 512;

}  // namespace kiln
