// The fused attention step: how an `attention` op (ops.def) runs as one device routine
// instead of its GEMM -> softmax -> GEMM decomposition. The form is what a device's kernel
// specializes on (compiled once per form); the sizes and strides are evaluated per call.
// Semantics are the reference's (ir/reference.cc attention); this header only says how a
// call is laid out. The CPU runs it as a native tiled online-softmax routine, CUDA as
// generated flash-attention kernels (codegen/cuda/attention.*).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/graph.h"
#include "ir/sym.h"

namespace kiln {

// What a kernel for the step specializes on: all static.
struct AttentionForm {
  DType dtype = DType::f32;  // q, k, v and out
  int64_t heads = 0, kv_heads = 0, head_dim = 0;  // H, KVH (divides H), D
  double scale = 0;                               // resolved (1/sqrt(D) when the op has none)
  bool causal = false;                            // bottom-right aligned (ops.def)
  int64_t window = 0;                             // > 0: sliding window
  double softcap = 0;                             // > 0: softcap * tanh(s / softcap)
  enum class Mask : uint8_t { None, Additive, Bool };
  Mask mask = Mask::None;
  DType mask_dtype = DType::f32;    // Additive: `dtype` (ops.def); Bool: boolean
  bool kv_lens = false;             // per-sequence key counts given
  DType index_dtype = DType::i32;   // of kv_lens
  DType table_dtype = DType::i32;   // of the block table
  int64_t block_size = 0;           // > 0: paged k/v [num_blocks, block_size, KVH, D]

  bool paged() const { return block_size > 0; }
  int64_t group() const { return heads / kv_heads; }  // query heads per kv head
  std::string to_string() const;  // "bf16 H=32 KVH=8 D=128 causal paged(16)": names and cache keys
  bool operator==(const AttentionForm&) const = default;
};

// Element strides of a 4-D operand, as symbolic dims (a broadcast dim has stride 0).
using Strides4 = std::array<Dim, 4>;

// One attention step of a Program. Buffers index Program::buffers (-1: absent). Element
// offsets and strides let the step read q/k/v and write out in place of the views around
// it (q, k and v read from slices of one fused [B, T, (H + 2 KVH) * D] projection, out
// written as the [B, T, H, D] the next GEMM reads as [B, T, H*D]).
struct AttentionStep {
  AttentionForm form;
  int q = -1, k = -1, v = -1, out = -1;
  int mask = -1, kv_lens = -1, block_table = -1;
  Dim batch, tq, tk;  // B, Tq, Tk (paged: max_blocks * block_size)
  Dim max_blocks;     // paged: the block table's second dim
  Dim num_blocks;     // paged: k/v's first dim (block ids past it are out of range)
  // q/out over [B, H, Tq, D]; k/v over [B, KVH, Tk, D] (paged: over [num_blocks,
  // block_size, KVH, D]); the mask over [B, H, Tq, Tk] (0 where broadcast).
  Strides4 q_strides, k_strides, v_strides, out_strides, mask_strides;
  Dim q_offset, k_offset, v_offset, out_offset;  // elements from the buffer's start
};

// One call's sizes: an AttentionStep's dims and strides evaluated at the call's symbol
// values (what every device's plan starts from).
struct AttentionSizes {
  int64_t batch = 0, tq = 0, tk = 0, max_blocks = 0, num_blocks = 0;  // the last two: paged
  std::array<int64_t, 4> qs{}, ks{}, vs{}, os{}, ms{};               // element strides of q, k, v, out, mask
  int64_t q_offset = 0, k_offset = 0, v_offset = 0, out_offset = 0;  // in elements
};
// Errors name an unbound symbol.
absl::StatusOr<AttentionSizes> evaluate_sizes(const AttentionStep& s, const Bindings& b);

// The form of attention node `n` (ops.def): its dtypes, head counts and options, with the
// scale resolved. An error where the node has no static form (symbolic H, KVH, D or
// block_size, or a symbolic D and no scale): such a node is decomposed.
absl::StatusOr<AttentionForm> attention_form(const Node& n);

// Element strides of a dense row-major tensor of rank 4, and of `shape` read broadcast
// (aligned right, size-1 dims stride 0) as a rank-4 tensor.
Strides4 dense_strides(const Shape& shape);
Strides4 broadcast_strides(const Shape& shape);

}  // namespace kiln
