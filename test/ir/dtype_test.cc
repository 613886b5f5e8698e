// DType names and the bit-exact f16/bf16 conversions: hand-derived bit patterns, an
// independent nearest-even reference for bf16, and the compiler's _Float16 for f16.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ir/dtype.h"

using namespace kiln;

namespace {

float bits_f(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t f_bits(float f) { return std::bit_cast<uint32_t>(f); }

bool bf16_is_nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }
bool f16_is_nan(uint16_t b) { return (b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0; }

// Nearest-even bf16 by comparing the two candidates' distances in double; the value past
// the largest finite bf16 counts as 2^128, as IEEE rounding does before overflowing to inf.
uint16_t bf16_reference(float x) {
  uint32_t u = f_bits(x);
  uint16_t lo = static_cast<uint16_t>(u >> 16);
  uint16_t hi = static_cast<uint16_t>(lo + 1);
  auto value = [](uint16_t b) {
    if ((b & 0x7fff) == 0x7f80) return std::copysign(std::ldexp(1.0, 128), (b & 0x8000) ? -1.0 : 1.0);
    return static_cast<double>(bits_f(static_cast<uint32_t>(b) << 16));
  };
  double dlo = std::fabs(x - value(lo)), dhi = std::fabs(x - value(hi));
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

}  // namespace

TEST_CASE("dtype names, parsing and sizes", "[dtype]") {
  const char* names[] = {"f32", "f16", "bf16", "i32", "i64", "bool", "f64", "i8", "u8", "i16", "u16", "u32", "u64"};
  const int64_t sizes[] = {4, 2, 2, 4, 8, 1, 8, 1, 1, 2, 2, 4, 8};
  static_assert(std::size(names) == std::size(kAllDTypes));
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    CHECK(dtype_name(kAllDTypes[i]) == names[i]);
    CHECK(parse_dtype(names[i]) == kAllDTypes[i]);
    CHECK(dtype_size(kAllDTypes[i]) == sizes[i]);
  }
  CHECK_FALSE(parse_dtype("float32"));
  CHECK_FALSE(parse_dtype(""));
  CHECK_FALSE(parse_dtype("F32"));
  CHECK(is_float(bf16));
  CHECK_FALSE(is_float(i32));
  CHECK(is_integer(i64));
  CHECK_FALSE(is_integer(bool_));
  CHECK(is_float(f64));
  for (DType t : {i8, u8, i16, u16, u32, u64}) CHECK(is_integer(t));
  for (DType t : {u8, u16, u32, u64}) CHECK((is_unsigned(t) && !is_signed(t)));
  for (DType t : {i8, i16, i32, i64, f32, f64}) CHECK((is_signed(t) && !is_unsigned(t)));
  CHECK_FALSE(is_signed(bool_));
  CHECK_FALSE(parse_dtype("uint8"));
}

TEST_CASE("integer wrapping and float-to-integer conversion", "[dtype]") {
  CHECK(wrap_int(255, i8) == -1);
  CHECK(wrap_int(-1, u8) == 255);
  CHECK(wrap_int(256, u8) == 0);
  CHECK(wrap_int(32768, i16) == -32768);
  CHECK(wrap_int(-1, u16) == 65535);
  CHECK(wrap_int(-1, u32) == 4294967295);
  CHECK(wrap_int(int64_t{1} << 32, u32) == 0);
  CHECK(wrap_int(-1, u64) == -1);  // u64 travels as its bit pattern
  CHECK(wrap_int(7, bool_) == 1);
  // Truncation toward zero, then wrapping through int64, as a C++ cast via int64 would.
  CHECK(float_to_int(-1.9, i8) == -1);
  CHECK(float_to_int(300.7, u8) == 44);
  CHECK(float_to_int(-1.0, u8) == 255);
  CHECK(float_to_int(-1.0, u64) == -1);
  CHECK(float_to_int(1e19, u64) == static_cast<int64_t>(static_cast<uint64_t>(1e19)));
  CHECK(float_to_int(1e19, i64) == 0);
  CHECK(float_to_int(std::numeric_limits<double>::quiet_NaN(), u16) == 0);
  CHECK(float_to_int(-std::numeric_limits<double>::infinity(), i32) == 0);
  CHECK(round_to_dtype(1e19, u64) == static_cast<double>(static_cast<uint64_t>(1e19)));
  CHECK(round_to_dtype(-3.5, u8) == 253);
  CHECK(round_to_dtype(0.1, f64) == 0.1);
  CHECK(round_to_dtype(0.1, f32) == static_cast<double>(0.1f));
}

TEST_CASE("bf16 hand-derived bit patterns", "[dtype]") {
  CHECK(float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(float_to_bf16_bits(-2.0f) == 0xc000);
  CHECK(float_to_bf16_bits(0.0f) == 0x0000);
  CHECK(float_to_bf16_bits(-0.0f) == 0x8000);
  // Ties go to even: 1 + 2^-8 sits halfway between 0x3f80 and 0x3f81.
  CHECK(float_to_bf16_bits(bits_f(0x3f808000)) == 0x3f80);
  CHECK(float_to_bf16_bits(bits_f(0x3f818000)) == 0x3f82);
  CHECK(float_to_bf16_bits(bits_f(0x3f808001)) == 0x3f81);
  CHECK(float_to_bf16_bits(bits_f(0x3f807fff)) == 0x3f80);
  // Subnormals round the same way.
  CHECK(float_to_bf16_bits(bits_f(0x00018000)) == 0x0002);
  CHECK(float_to_bf16_bits(bits_f(0x00008000)) == 0x0000);
  CHECK(float_to_bf16_bits(bits_f(0x00008001)) == 0x0001);
  // Overflow: the largest float rounds up to infinity; just below the halfway point it does not.
  CHECK(float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(float_to_bf16_bits(bits_f(0x7f7f7fff)) == 0x7f7f);
  CHECK(float_to_bf16_bits(bits_f(0x7f7f8000)) == 0x7f80);
  CHECK(float_to_bf16_bits(-std::numeric_limits<float>::infinity()) == 0xff80);
  // NaN stays NaN (never turns into infinity), sign kept.
  CHECK(bf16_is_nan(float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN())));
  CHECK(bf16_is_nan(float_to_bf16_bits(bits_f(0x7f800001))));  // payload only in the low bits
  CHECK(float_to_bf16_bits(bits_f(0xff800001)) & 0x8000);
  CHECK(bf16_bits_to_float(0x3f80) == 1.0f);
  CHECK(bf16_bits_to_float(0x0001) == bits_f(0x00010000));
  CHECK(std::isinf(bf16_bits_to_float(0x7f80)));
  CHECK(std::isnan(bf16_bits_to_float(0x7fc0)));
}

TEST_CASE("bf16 rounding matches a nearest-even reference", "[dtype]") {
  // Every bf16 value converts back exactly.
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    float f = bf16_bits_to_float(h);
    if (bf16_is_nan(h)) {
      REQUIRE(bf16_is_nan(float_to_bf16_bits(f)));
      continue;
    }
    REQUIRE(float_to_bf16_bits(f) == h);
  }
  std::mt19937 rng(3);
  for (int i = 0; i < 1000000; ++i) {
    uint32_t u = rng();
    // Bias half of the samples to the exact halfway points, where ties matter.
    if (i % 2) u = (u & 0xffff0000u) | 0x8000u;
    float x = bits_f(u);
    uint16_t got = float_to_bf16_bits(x);
    if (std::isnan(x)) {
      REQUIRE(bf16_is_nan(got));
      REQUIRE((got & 0x8000) == ((u >> 16) & 0x8000));
      continue;
    }
    INFO(std::hex << u);
    REQUIRE(got == bf16_reference(x));
  }
}

TEST_CASE("f16 hand-derived bit patterns", "[dtype]") {
  CHECK(float_to_f16_bits(1.0f) == 0x3c00);
  CHECK(float_to_f16_bits(-2.0f) == 0xc000);
  CHECK(float_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(float_to_f16_bits(-0.0f) == 0x8000);
  // Halfway between 65504 and 65536 (the next step, past the largest finite) overflows.
  CHECK(float_to_f16_bits(65519.996f) == 0x7bff);
  CHECK(float_to_f16_bits(65520.0f) == 0x7c00);
  CHECK(float_to_f16_bits(1e9f) == 0x7c00);
  CHECK(float_to_f16_bits(-1e9f) == 0xfc00);
  // Ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  CHECK(float_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(float_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(float_to_f16_bits(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  // Subnormals: quantum 2^-24.
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);                      // tie -> 0
  CHECK(float_to_f16_bits(3 * std::ldexp(1.0f, -25)) == 0x0002);                  // tie -> even
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -25) * 1.0001f) == 0x0001);
  CHECK(float_to_f16_bits(-std::ldexp(1.0f, -24)) == 0x8001);
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);                      // smallest normal
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)) == 0x0400);  // rounds up into it
  CHECK(float_to_f16_bits(1e-10f) == 0x0000);
  CHECK(f16_is_nan(float_to_f16_bits(std::numeric_limits<float>::quiet_NaN())));
  CHECK(float_to_f16_bits(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f16_bits_to_float(0x3c00) == 1.0f);
  CHECK(f16_bits_to_float(0x7bff) == 65504.0f);
  CHECK(f16_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_bits_to_float(0x03ff) == 1023 * std::ldexp(1.0f, -24));
  CHECK(f16_bits_to_float(0x8400) == -std::ldexp(1.0f, -14));
  CHECK(std::isinf(f16_bits_to_float(0xfc00)));
  CHECK(std::signbit(f16_bits_to_float(0x8000)));
  CHECK(std::isnan(f16_bits_to_float(0x7e00)));
}

TEST_CASE("f16 round trip and halfway points", "[dtype]") {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    float f = f16_bits_to_float(h);
    if (f16_is_nan(h)) {
      REQUIRE(f16_is_nan(float_to_f16_bits(f)));
      continue;
    }
    REQUIRE(float_to_f16_bits(f) == h);
    // The midpoint to the next magnitude (exact in f32) rounds to the even neighbour.
    if ((h & 0x7fff) < 0x7bff) {
      float next = f16_bits_to_float(static_cast<uint16_t>(h + 1));
      float mid = (f + next) / 2;
      uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : h;
      INFO(std::hex << b);
      REQUIRE(float_to_f16_bits(mid) == even);
    }
  }
}

#if defined(__x86_64__) && defined(__FLT16_MAX__)
TEST_CASE("f16 conversions match the compiler's _Float16", "[dtype]") {
  auto native = [](float x) {
    _Float16 h = static_cast<_Float16>(x);
    uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
  };
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    _Float16 n;
    std::memcpy(&n, &h, 2);
    float want = static_cast<float>(n);
    float got = f16_bits_to_float(h);
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
      continue;
    }
    REQUIRE(f_bits(got) == f_bits(want));
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = rng();
    // Half the samples land in f16's range (exponents 2^-26 .. 2^16) with tie-prone low bits.
    if (i % 2) u = (u & 0x807fffffu) | ((101u + rng() % 42) << 23);
    if (i % 4 == 1) u = (u & 0xffffe000u) | 0x1000u;
    float x = bits_f(u);
    uint16_t want = native(x), got = float_to_f16_bits(x);
    if (std::isnan(x)) {
      REQUIRE(f16_is_nan(got));
      continue;
    }
    INFO(std::hex << u);
    REQUIRE(got == want);
  }
}
#endif

TEST_CASE("round_to_dtype", "[dtype]") {
  CHECK(round_to_dtype(0.1, DType::f32) == static_cast<double>(0.1f));
  CHECK(round_to_dtype(1.0 + 1.0 / 512, DType::bf16) == 1.0);
  CHECK(round_to_dtype(1.0 + 3.0 / 256, DType::bf16) == 1.015625);
  CHECK(round_to_dtype(70000, DType::f16) == INFINITY);
  CHECK(round_to_dtype(1.0 + 1.0 / 4096, DType::f16) == 1.0);
  CHECK(std::isnan(round_to_dtype(NAN, DType::bf16)));
  CHECK(round_to_dtype(-1.7, DType::i32) == -1);
  CHECK(round_to_dtype(2.9, DType::i64) == 2);
  CHECK(round_to_dtype(2147483648.0, DType::i32) == -2147483648.0);
  CHECK(round_to_dtype(4294967297.0, DType::i32) == 1);
  CHECK(round_to_dtype(-3e9, DType::i64) == -3e9);
  CHECK(round_to_dtype(0.5, DType::boolean) == 1);
  CHECK(round_to_dtype(0.0, DType::boolean) == 0);
  CHECK(round_to_dtype(-2, DType::boolean) == 1);
}
