#include "codegen/cuda/attention.h"

#include <algorithm>

#include "ir/str.h"

namespace kiln::cuda {

const std::string& attention_kernel_text();  // attention.cuh, embedded at build time

std::string AttentionConfig::name() const { return str_cat(wm, "x", mt, "x", wn, "x", bn); }

absl::Status cuda_attention_supported(const AttentionForm& f) {
  if (f.dtype != DType::bf16 && f.dtype != DType::f16)
    return absl::UnimplementedError(str_cat("fused attention on CUDA takes bf16 or f16, not ", dtype_name(f.dtype)));
  if (f.head_dim != 64 && f.head_dim != 128 && f.head_dim != 256)
    return absl::UnimplementedError(str_cat("fused attention on CUDA takes head dim 64, 128 or 256, not ", f.head_dim));
  if (f.kv_heads <= 0 || f.heads % f.kv_heads != 0)
    return absl::InvalidArgumentError(str_cat("kv heads ", f.kv_heads, " do not divide heads ", f.heads));
  if (!(f.scale > 0))  // the kernel keeps raw scores and folds the scale into exp2
    return absl::UnimplementedError(str_cat("fused attention on CUDA takes a positive scale, not ", f.scale));
  if (f.mask == AttentionForm::Mask::Additive && f.mask_dtype != f.dtype)
    return absl::UnimplementedError(str_cat("an additive mask of ", dtype_name(f.mask_dtype), " with ", dtype_name(f.dtype)));
  return absl::OkStatus();
}

std::vector<AttentionConfig> attention_configs(const AttentionForm& f) {
  if (f.head_dim == 256) return {{4, 1, 1, 32}, {8, 1, 1, 32}, {1, 1, 4, 64}};
  return {{4, 2, 1, 64}, {4, 1, 1, 64}, {1, 1, 4, 64}, {4, 2, 1, 32}};
}

int attention_shared_bytes(const AttentionForm& f, const AttentionConfig& c) {
  const int sd = static_cast<int>(f.head_dim) + 8;
  const int q = c.rows() * sd * 2, kv = 4 * c.bn * sd * 2;
  const int merge = c.wn * c.rows() * (static_cast<int>(f.head_dim) + 2) * 4;
  return q + std::max(kv, merge);
}

std::string attention_source(const AttentionForm& f, const AttentionConfig& c) {
  auto flag = [](bool b) { return b ? 1 : 0; };
  int mask_t = 0;  // f32, bf16, f16, bool
  if (f.mask == AttentionForm::Mask::Bool) mask_t = 3;
  else if (f.mask_dtype == DType::bf16) mask_t = 1;
  else if (f.mask_dtype == DType::f16) mask_t = 2;
  // Floats as exact hex literals, so the source (a cache key) is stable and exact.
  auto real = [](double v) { return fmt::format("{:a}f", static_cast<float>(v)); };
  std::string s = str_cat("// kiln attention: ", f.to_string(), ", tiles ", c.name(), "\n");
  s += fmt::format(
      "#define KD {}\n#define KG {}\n#define KKVH {}\n#define KWM {}\n#define KMT {}\n#define KWN {}\n#define KBN {}\n"
      "#define KTYPE \"{}\"\n#define KCAUSAL {}\n#define KWINDOW {}\n#define KHAS_SOFTCAP {}\n#define KSOFTCAP {}\n#define KSCALE {}\n"
      "#define KMASK {}\n#define KMASK_T {}\n#define KKVLENS {}\n#define KPAGED {}\n#define KBS {}\n#define KIDX64 {}\n"
      "#define KTAB64 {}\n",
      f.head_dim, f.group(), f.kv_heads, c.wm, c.mt, c.wn, c.bn, f.dtype == DType::f16 ? "f16" : "bf16", flag(f.causal),
      f.window, flag(f.softcap > 0), f.softcap > 0 ? real(f.softcap) : "0", real(f.scale), static_cast<int>(f.mask), mask_t,
      flag(f.kv_lens), flag(f.paged()), std::max<int64_t>(f.block_size, 1), flag(f.index_dtype == DType::i64),
      flag(f.table_dtype == DType::i64));
  s += attention_kernel_text();
  return s;
}

}  // namespace kiln::cuda
