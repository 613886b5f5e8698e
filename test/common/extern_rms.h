// An RMSNorm written the way a user writes an extern op (ir/extern_op.h): its shape rule and
// a host implementation, shared by the CPU and CUDA extern tests (the CUDA one adds a kernel).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/extern_op.h"
#include "ir/str.h"

namespace kiln::testing {

inline constexpr double kExternRmsEps = 1e-6;

// rms_norm(x [..., D], weight [D]) with x's type, as ops.def's rms_norm over axes=[-1].
inline absl::StatusOr<std::vector<TensorType>> extern_rms_infer(std::span<const TensorType> in) {
  if (in.size() != 2) return invalid_argument("takes x and weight, got ", in.size(), " operands");
  const TensorType &x = in[0], &w = in[1];
  if (x.dtype != DType::f32 && x.dtype != DType::bf16)
    return invalid_argument("x must be f32 or bf16, got ", x.to_string());
  if (x.shape.empty() || w.dtype != x.dtype || w.shape.size() != 1 || !(w.shape[0] == x.shape.back()))
    return invalid_argument("weight must be ", dtype_name(x.dtype), "[",
                            x.shape.empty() ? "?" : x.shape.back().to_string(), "] for x ", x.to_string(), ", got ",
                            w.to_string());
  return std::vector<TensorType>{x};
}

inline float extern_load(const ExternTensor& t, int64_t i) {
  if (t.dtype == DType::f32) return static_cast<const float*>(t.data)[i];
  return bf16_bits_to_float(static_cast<const uint16_t*>(t.data)[i]);
}

inline void extern_store(const ExternTensor& t, int64_t i, float v) {
  if (t.dtype == DType::f32) static_cast<float*>(t.data)[i] = v;
  else static_cast<uint16_t*>(t.data)[i] = float_to_bf16_bits(v);
}

// Row by row in f32: out = x / sqrt(mean(x^2) + eps) * weight, rounded once on store.
inline absl::Status extern_rms_host(std::span<const ExternTensor> in, std::span<const ExternTensor> out) {
  const ExternTensor &x = in[0], &w = in[1];
  const int64_t d = x.shape.back(), rows = d == 0 ? 0 : x.numel() / d;
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(extern_load(x, r * d + j)) * extern_load(x, r * d + j);
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + kExternRmsEps));
    for (int64_t j = 0; j < d; ++j)
      extern_store(out[0], r * d + j, extern_load(x, r * d + j) * inv * extern_load(w, j));
  }
  return absl::OkStatus();
}

}  // namespace kiln::testing
