// The CUDA form of the fused attention step (codegen/attention.h): generated CUDA C for
// NVRTC, the text of attention.cuh specialized by #defines per form and tile configuration.
// The kernel is FlashAttention-2's algorithm on mma.sync (bf16/f16, f32 accumulation, online
// softmax in registers, causal/window tiles skipped, GQA rows packed per kv head) with
// split-KV (flash-decoding) across CTAs and across the warps of a CTA. No device needed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "codegen/attention.h"

namespace kiln::cuda {

// One tile configuration: warps along query rows, 16-row m-tiles per warp (each K/V
// fragment read from shared memory feeds mt MMAs: shared-memory traffic per MMA falls as
// mt grows, registers rise), warps along keys, keys per tile. wn > 1 splits each key tile
// between warps (decode: few rows, many keys).
struct AttentionConfig {
  int wm = 4, mt = 1, wn = 1, bn = 64;
  int threads() const { return wm * wn * 32; }
  int rows() const { return wm * mt * 16; }  // query rows (G * Tq packed) per CTA
  std::string name() const;                  // "4x2x1x64": wm x mt x wn x bn
  bool operator==(const AttentionConfig&) const = default;
};

// OK when CUDA runs `f` fused: bf16/f16, head dim 64, 128 or 256, KVH dividing H. Else the
// reason (the step then decomposes).
absl::Status cuda_attention_supported(const AttentionForm& f);

// The configurations a call may use, for max-autotune and the default choice: prefill
// 4x2x1x64 (128 rows, 4 warps) and 4x1x1x64 (64 rows: more CTAs for short prompts), decode
// 1x1x4x64; D=256 keeps one m-tile per warp and 32-key prefill tiles (registers).
std::vector<AttentionConfig> attention_configs(const AttentionForm& f);

// Shared memory bytes of a CTA of `c`.
int attention_shared_bytes(const AttentionForm& f, const AttentionConfig& c);

// The CUDA C of `f` with `c`: entry points kiln_attention and kiln_attention_combine, no
// #include. Pre: cuda_attention_supported(f).
std::string attention_source(const AttentionForm& f, const AttentionConfig& c);

}  // namespace kiln::cuda
