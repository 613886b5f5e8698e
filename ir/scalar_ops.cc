#include "ir/scalar_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <typename T>
T unary(Op op, T x, bool tanh_gelu) {
  const T one = 1;
  switch (op) {
    case Op::Neg: return -x;
    case Op::Abs: return std::fabs(x);
    case Op::Exp: return std::exp(x);
    case Op::Log: return std::log(x);
    case Op::Sqrt: return std::sqrt(x);
    case Op::Rsqrt: return one / std::sqrt(x);
    case Op::Sin: return std::sin(x);
    case Op::Cos: return std::cos(x);
    case Op::Tanh: return std::tanh(x);
    case Op::Sigmoid: return one / (one + std::exp(-x));
    case Op::Relu: return x < 0 ? T(0) : x;
    case Op::Gelu:
      if (tanh_gelu) {
        // The f32 constants exactly as f32 kernels write them.
        const T beta = static_cast<T>(std::sqrt(2.0 / M_PI));
        const T kappa = sizeof(T) == 4 ? static_cast<T>(0.044715f) : static_cast<T>(0.044715);
        return T(0.5) * x * (one + std::tanh(beta * (x + kappa * x * x * x)));
      }
      return T(0.5) * x * (one + std::erf(x * static_cast<T>(M_SQRT1_2)));
    case Op::Silu: return x * (one / (one + std::exp(-x)));
    case Op::Erf: return std::erf(x);
    case Op::Atan: return std::atan(x);
    case Op::Reciprocal: return one / x;
    case Op::Floor: return std::floor(x);
    case Op::Ceil: return std::ceil(x);
    default: return static_cast<T>(kNaN);
  }
}

template <typename T>
double binary(Op op, T a, T b) {
  switch (op) {
    case Op::Add: return a + b;
    case Op::Sub: return a - b;
    case Op::Mul: return a * b;
    case Op::Div: return a / b;
    case Op::Pow: return std::pow(a, b);
    case Op::Fmod: return std::fmod(a, b);
    case Op::Maximum: return std::isnan(a) || std::isnan(b) ? kNaN : std::max(a, b);
    case Op::Minimum: return std::isnan(a) || std::isnan(b) ? kNaN : std::min(a, b);
    case Op::Eq: return a == b;
    case Op::Ne: return a != b;
    case Op::Lt: return a < b;
    case Op::Le: return a <= b;
    case Op::Gt: return a > b;
    case Op::Ge: return a >= b;
    default: return kNaN;
  }
}

}  // namespace

int64_t wrap_neg(int64_t a) { return static_cast<int64_t>(0 - static_cast<uint64_t>(a)); }

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

float unary_float(Op op, float x, bool tanh_gelu) { return unary(op, x, tanh_gelu); }
double unary_float(Op op, double x, bool tanh_gelu) { return unary(op, x, tanh_gelu); }

std::optional<int64_t> unary_int(Op op, int64_t v, bool is_unsigned) {
  switch (op) {
    case Op::Neg: return wrap_neg(v);
    case Op::Abs: return v < 0 && !is_unsigned ? wrap_neg(v) : v;
    case Op::Relu: return is_unsigned ? v : std::max<int64_t>(v, 0);
    case Op::Not: return !v;
    default: return std::nullopt;
  }
}

double binary_float(Op op, float a, float b) { return binary(op, a, b); }
double binary_float(Op op, double a, double b) { return binary(op, a, b); }

int64_t binary_int(Op op, int64_t a, int64_t b, bool is_unsigned) {
  uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  if (is_unsigned) {
    switch (op) {
      case Op::Div: return ub == 0 ? 0 : static_cast<int64_t>(ua / ub);
      case Op::Maximum: return static_cast<int64_t>(std::max(ua, ub));
      case Op::Minimum: return static_cast<int64_t>(std::min(ua, ub));
      case Op::Lt: return ua < ub;
      case Op::Le: return ua <= ub;
      case Op::Gt: return ua > ub;
      case Op::Ge: return ua >= ub;
      default: break;  // the same bits either way
    }
  }
  switch (op) {
    case Op::Add: return static_cast<int64_t>(ua + ub);
    case Op::Sub: return static_cast<int64_t>(ua - ub);
    case Op::Mul: return static_cast<int64_t>(ua * ub);
    case Op::Div: return b == 0 ? 0 : b == -1 ? wrap_neg(a) : a / b;
    case Op::Maximum: return std::max(a, b);
    case Op::Minimum: return std::min(a, b);
    case Op::Eq: return a == b;
    case Op::Ne: return a != b;
    case Op::Lt: return a < b;
    case Op::Le: return a <= b;
    case Op::Gt: return a > b;
    case Op::Ge: return a >= b;
    case Op::And: return a && b;
    case Op::Or: return a || b;
    default: return 0;
  }
}

}  // namespace kiln
