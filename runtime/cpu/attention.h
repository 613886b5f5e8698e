// The CPU's fused attention step (codegen/attention.h): FlashAttention-2's tiled online
// softmax over key blocks, never a [Tq, Tk] score buffer. Operands are read through their
// strides (contiguous or paged k/v, broadcast masks) and converted to f32 tiles on the way
// in (f32, f16 and bf16 forms); arithmetic is f32, the output rounded once on store.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "codegen/attention.h"
#include "ir/sym.h"
#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

// The forms the CPU runs fused: q/k/v of f32, f16 or bf16 (an additive mask of that dtype
// or f32, or a bool mask), any head dim and group size.
bool supports_attention(const AttentionForm& f);

// One step at a call's sizes: every dim and stride evaluated.
struct AttentionCall : AttentionSizes {
  AttentionForm form;
};
absl::StatusOr<AttentionCall> bind_attention(const AttentionStep& s, const Bindings& b);

// The operands' addresses, as DeviceProgram::run_attention takes them (null: absent).
struct AttentionArgs {
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  void* out = nullptr;
  const void *mask = nullptr, *kv_lens = nullptr, *block_table = nullptr;
};

// Runs the step, parallel over (batch, kv head, query block) on `pool`: each task reads a
// k/v block once for the G query heads that share it, skips key blocks no query of the task
// sees (causal, window, kv_lens), and writes its rows of out. A query row that sees no key
// is NaN (as the reference). A kv_lens entry outside [0, Tk] is clamped to it (the reference
// reports it; the decomposition reads it so); a block-table entry (for a key below kv_lens)
// outside [0, num_blocks) is an error naming it, and nothing is written then.
absl::Status run_attention(const AttentionCall& c, const AttentionArgs& a, ThreadPool& pool);

}  // namespace kiln::cpu
