// The scalar semantics of kiln's elementwise ops (DESIGN.md): floats compute in f32 (the
// caller rounds the result to the storage dtype), f64 in double, integers in two's
// complement int64 (the caller wraps to the dtype's width; a u64 travels as its bit
// pattern, so ops whose answer depends on signedness take `is_unsigned`). The reference evaluator and the kernel IR evaluator both call these,
// so the two oracles the tests trust cannot drift apart.
#pragma once

#include <cstdint>
#include <optional>

#include "ir/op.h"

namespace kiln {

// -a, wrapping at INT64_MIN.
int64_t wrap_neg(int64_t a);
// a // b rounded toward negative infinity (Python's //); b != 0.
int64_t floor_div(int64_t a, int64_t b);
// a unary float op, computed in the argument's type (f32 for f32/f16/bf16, double for f64);
// `tanh_gelu` picks gelu's tanh form. NaN for an op not defined on floats.
float unary_float(Op op, float x, bool tanh_gelu = false);
double unary_float(Op op, double x, bool tanh_gelu = false);
// A unary integer op (neg, abs, relu, not); nullopt for one not defined on integers. abs and
// relu of an unsigned value are the value.
std::optional<int64_t> unary_int(Op op, int64_t v, bool is_unsigned = false);
// A binary float op in the arguments' type; comparisons give 0 or 1. NaN for an op not
// defined on floats.
double binary_float(Op op, float a, float b);
double binary_float(Op op, double a, double b);
// A binary integer op: wrapping add, sub and mul, division truncating toward zero (x / 0 is
// 0, INT64_MIN / -1 wraps), comparisons and logical and/or give 0 or 1. 0 for an op not
// defined on integers. With `is_unsigned`, a and b are u64 bit patterns (or smaller unsigned
// values) and division, maximum, minimum and the comparisons are unsigned.
int64_t binary_int(Op op, int64_t a, int64_t b, bool is_unsigned = false);

}  // namespace kiln
