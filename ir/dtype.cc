#include "ir/dtype.h"

#include <bit>
#include <cmath>
#include <limits>

namespace kiln {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
    case DType::f64: return "f64";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i16: return "i16";
    case DType::u16: return "u16";
    case DType::u32: return "u32";
    case DType::u64: return "u64";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : kAllDTypes)
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

int64_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::f16: case DType::bf16: case DType::i16: case DType::u16: return 2;
    case DType::i64: case DType::f64: case DType::u64: return 8;
    case DType::boolean: case DType::i8: case DType::u8: return 1;
  }
  return 0;
}

float bf16_bits_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t float_to_bf16_bits(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep it quiet NaN
  uint32_t lsb = (u >> 16) & 1;
  u += 0x7fff + lsb;
  return static_cast<uint16_t>(u >> 16);
}

float f16_bits_to_float(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  uint32_t exp = (bits >> 10) & 0x1f;
  uint32_t man = bits & 0x3ff;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000 | (man << 13));
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    float mag = std::ldexp(static_cast<float>(man), -24);
    return sign ? -mag : mag;
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t float_to_f16_bits(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  float a = std::fabs(value);
  if (std::isnan(value)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  if (a < 6.103515625e-05f) {
    // Subnormal range: quantum 2^-24. nearbyint rounds half to even in the default mode.
    float q = std::nearbyint(a * 16777216.0f);
    return sign | static_cast<uint16_t>(q);  // q == 1024 is the smallest normal, as bits
  }
  uint32_t ua = std::bit_cast<uint32_t>(a);
  uint32_t exp = (ua >> 23) - 112;
  uint32_t man = ua & 0x7fffff;
  uint32_t half = (exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // carry may bump the exponent
  return sign | static_cast<uint16_t>(half);
}

int64_t wrap_int(int64_t v, DType t) {
  switch (t) {
    case DType::i8: return static_cast<int8_t>(static_cast<uint8_t>(v));
    case DType::u8: return static_cast<uint8_t>(v);
    case DType::i16: return static_cast<int16_t>(static_cast<uint16_t>(v));
    case DType::u16: return static_cast<uint16_t>(v);
    case DType::i32: return static_cast<int32_t>(static_cast<uint32_t>(v));
    case DType::u32: return static_cast<uint32_t>(v);
    case DType::boolean: return v != 0;
    default: return v;  // i64, u64 (its bit pattern); floats never come here
  }
}

int64_t float_to_int(double v, DType t) {
  if (!std::isfinite(v)) return 0;
  double tr = std::trunc(v);
  // 9.2e18 rather than 2^63: a round bound that f32 kernels test in f32 without doubt.
  if (t == DType::u64 && tr >= 9.2e18 && tr < 1.8e19) return static_cast<int64_t>(static_cast<uint64_t>(tr));
  if (tr >= 9.2e18 || tr <= -9.2e18) return 0;
  return wrap_int(static_cast<int64_t>(tr), t);
}

double round_to_dtype(double v, DType t) {
  switch (t) {
    case DType::f64: return v;
    case DType::f32: return static_cast<float>(v);
    case DType::bf16: return bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(v)));
    case DType::f16: return f16_bits_to_float(float_to_f16_bits(static_cast<float>(v)));
    case DType::boolean: return v != 0 ? 1 : 0;
    case DType::u64: return static_cast<double>(static_cast<uint64_t>(float_to_int(v, t)));
    default: return static_cast<double>(float_to_int(v, t));
  }
}

}  // namespace kiln
