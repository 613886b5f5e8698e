// Element types of kiln tensors, and bit-exact conversions for the 16-bit float storage
// types (arithmetic on f16/bf16 happens in f32; these round on store, as PyTorch does).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln {

// New types go at the end: the enumerator values are part of hashes and cache keys.
enum class DType : uint8_t { f32, f16, bf16, i32, i64, boolean, f64, i8, u8, i16, u16, u32, u64 };

// Shorthands for user code: kiln::bf16, kiln::f32, ... (bool is a keyword: kiln::bool_).
inline constexpr DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16, i32 = DType::i32,
                       i64 = DType::i64, bool_ = DType::boolean, f64 = DType::f64, i8 = DType::i8,
                       u8 = DType::u8, i16 = DType::i16, u16 = DType::u16, u32 = DType::u32,
                       u64 = DType::u64;

inline constexpr DType kAllDTypes[] = {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64,
                                       DType::boolean, DType::f64, DType::i8, DType::u8, DType::i16,
                                       DType::u16, DType::u32, DType::u64};

// Text name as written in the IR, as numpy and torch abbreviate them: f64 f32 f16 bf16
// i8 i16 i32 i64 u8 u16 u32 u64 bool.
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
int64_t dtype_size(DType t);
inline bool is_float(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}
inline bool is_unsigned(DType t) {
  return t == DType::u8 || t == DType::u16 || t == DType::u32 || t == DType::u64;
}
inline bool is_integer(DType t) {
  return t == DType::i32 || t == DType::i64 || t == DType::i8 || t == DType::i16 || is_unsigned(t);
}
// Floats and the signed integers (numpy's notion); bool and the unsigned types are not.
inline bool is_signed(DType t) { return is_float(t) || (is_integer(t) && !is_unsigned(t)); }
// Bits of an integer type's value (8 for bool).
inline int64_t dtype_bits(DType t) { return 8 * dtype_size(t); }

// Round-to-nearest-even conversions; NaN stays NaN, overflow goes to infinity.
float bf16_bits_to_float(uint16_t bits);
uint16_t float_to_bf16_bits(float value);
float f16_bits_to_float(uint16_t bits);
uint16_t float_to_f16_bits(float value);

// An int64 wrapped into integer type t (two's complement, modulo 2^bits): sign-extended for
// the signed types, zero-extended for the unsigned ones. A u64 is returned as its bit
// pattern (values >= 2^63 are negative int64s); bool is v != 0.
int64_t wrap_int(int64_t v, DType t);

// A float converted to integer type t, as kiln's cast does: truncated toward zero to an
// int64, then wrapped as wrap_int. NaN, inf and |v| >= 9.2e18 give 0, except that u64 takes
// [9.2e18, 1.8e19) directly. The result is in wrap_int's representation.
int64_t float_to_int(double v, DType t);

// The value `v` takes after being stored in `t` (floats rounded, integers as float_to_int,
// bool as v != 0). A u64 comes back as its unsigned value.
double round_to_dtype(double v, DType t);

}  // namespace kiln
