// Element types of kiln tensors, and bit-exact conversions for the 16-bit float storage
// types (arithmetic on f16/bf16 happens in f32; these round on store, as PyTorch does).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln {

enum class DType : uint8_t { f32, f16, bf16, i32, i64, boolean };

// Shorthands for user code: kiln::bf16, kiln::f32, ... (bool is a keyword: kiln::bool_).
inline constexpr DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16, i32 = DType::i32,
                       i64 = DType::i64, bool_ = DType::boolean;

inline constexpr DType kAllDTypes[] = {DType::f32, DType::f16, DType::bf16,
                                       DType::i32, DType::i64, DType::boolean};

// Text name as written in the IR: f32 f16 bf16 i32 i64 bool.
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
int64_t dtype_size(DType t);
inline bool is_float(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }
inline bool is_integer(DType t) { return t == DType::i32 || t == DType::i64; }

// Round-to-nearest-even conversions; NaN stays NaN, overflow goes to infinity.
float bf16_bits_to_float(uint16_t bits);
uint16_t float_to_bf16_bits(float value);
float f16_bits_to_float(uint16_t bits);
uint16_t float_to_f16_bits(float value);

// The value `v` takes after being stored in `t` (floats rounded, integers truncated
// toward zero and wrapped as a C++ cast would, bool as v != 0).
double round_to_dtype(double v, DType t);

}  // namespace kiln
