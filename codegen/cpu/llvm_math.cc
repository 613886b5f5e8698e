#include "codegen/cpu/llvm_math.h"

#include <cmath>
#include <initializer_list>
#include <limits>

namespace kiln::cpu {
namespace {

using llvm::Value;

Value* c(llvm::IRBuilder<>& b, double v) { return llvm::ConstantFP::get(b.getFloatTy(), v); }

// a * b + c, fused where the target has FMA (one rounding, one instruction): the
// polynomials below are accurate either way, and FMA halves their cost.
Value* fmuladd(llvm::IRBuilder<>& b, Value* x, Value* y, Value* z) {
  return b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {b.getFloatTy()}, {x, y, z});
}

// Horner's rule, highest coefficient first.
Value* horner(llvm::IRBuilder<>& b, Value* x, std::initializer_list<double> coeffs) {
  Value* p = nullptr;
  for (double k : coeffs) p = p ? fmuladd(b, p, x, c(b, k)) : c(b, k);
  return p;
}

// min(max(x, lo), hi) written with ordered compares, so a NaN passes through unchanged.
Value* clamp(llvm::IRBuilder<>& b, Value* x, double lo, double hi) {
  x = b.CreateSelect(b.CreateFCmpOLT(x, c(b, lo)), c(b, lo), x);
  return b.CreateSelect(b.CreateFCmpOGT(x, c(b, hi)), c(b, hi), x);
}

Value* is_nan(llvm::IRBuilder<>& b, Value* x) { return b.CreateFCmpUNO(x, x); }

// 2^e as a float, for integer e with -126 <= e <= 127 (and 0 for e = -127, infinity for e = 128).
Value* pow2(llvm::IRBuilder<>& b, Value* e) {
  return b.CreateBitCast(b.CreateShl(b.CreateAdd(e, b.getInt32(127)), 23), b.getFloatTy());
}

}  // namespace

// Cephes expf: x = m ln2 + r with |r| <= ln2 / 2 (ln2 split in two for an exact product),
// e^r by a degree-7 polynomial, then scaling by 2^m in two halves so that results in the
// denormal range round once and large m overflow to infinity as they should.
Value* emit_exp(llvm::IRBuilder<>& b, Value* x) {
  Value* nan = is_nan(b, x);
  // Below -104 the result rounds to 0, above 89 it overflows; NaN computes on 0. The clamp
  // at -176 (one max, as at -104) gives m = -254 there: both scale factors are 2^-127,
  // +0.0 as bits, so very negative lanes (masked softmax scores: -inf, -3.4e38, -1e4) get
  // an exact 0 from products that do not underflow; an underflowing or denormal product
  // costs a microcode assist per instruction on many CPUs (masked softmax ran 2.4x slower).
  Value* xc = b.CreateSelect(nan, c(b, 0), clamp(b, x, -176.0, 89.0));
  Value* m = b.CreateUnaryIntrinsic(llvm::Intrinsic::floor, b.CreateFAdd(b.CreateFMul(xc, c(b, 1.44269504088896341)), c(b, 0.5)));
  Value* r = b.CreateFSub(xc, b.CreateFMul(m, c(b, 0.693359375)));
  r = b.CreateFSub(r, b.CreateFMul(m, c(b, -2.12194440e-4)));
  Value* p = horner(b, r, {1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                           5.0000001201e-1});
  Value* y = b.CreateFAdd(fmuladd(b, p, b.CreateFMul(r, r), r), c(b, 1.0));
  Value* mi = b.CreateFPToSI(m, b.getInt32Ty());  // in [-254, 129]
  Value* half = b.CreateAShr(mi, 1);
  Value* rest = b.CreateSub(mi, half);
  Value* out = b.CreateFMul(b.CreateFMul(y, pow2(b, half)), pow2(b, rest));
  return b.CreateSelect(nan, x, out);
}

// Cephes logf: x = 2^e * f with f in [sqrt(1/2), sqrt(2)), log(1 + (f - 1)) by a degree-9
// polynomial, plus e * ln2 (split in two). Denormal inputs are scaled by 2^23 first.
Value* emit_log(llvm::IRBuilder<>& b, Value* x) {
  llvm::Type* i32 = b.getInt32Ty();
  Value* denormal = b.CreateFCmpOLT(x, c(b, std::numeric_limits<float>::min()));
  Value* xs = b.CreateSelect(denormal, b.CreateFMul(x, c(b, 8388608.0)), x);
  Value* bits = b.CreateBitCast(xs, i32);
  Value* e = b.CreateSub(b.CreateLShr(bits, 23), b.getInt32(126));
  e = b.CreateSub(e, b.CreateSelect(denormal, b.getInt32(23), b.getInt32(0)));
  // The mantissa with the exponent of 0.5: f in [0.5, 1).
  Value* f = b.CreateBitCast(b.CreateOr(b.CreateAnd(bits, b.getInt32(0x007fffff)), b.getInt32(0x3f000000)),
                             b.getFloatTy());
  Value* small = b.CreateFCmpOLT(f, c(b, 0.707106781186547524));
  e = b.CreateSub(e, b.CreateZExt(small, i32));
  Value* t = b.CreateFSub(b.CreateSelect(small, b.CreateFAdd(f, f), f), c(b, 1.0));
  Value* z = b.CreateFMul(t, t);
  Value* y = horner(b, t, {7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
                           -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1});
  y = b.CreateFMul(b.CreateFMul(y, t), z);
  Value* fe = b.CreateSIToFP(e, b.getFloatTy());
  y = b.CreateFAdd(y, b.CreateFMul(fe, c(b, -2.12194440e-4)));
  y = b.CreateFSub(y, b.CreateFMul(z, c(b, 0.5)));
  Value* out = b.CreateFAdd(b.CreateFAdd(t, y), b.CreateFMul(fe, c(b, 0.693359375)));
  constexpr double kInf = std::numeric_limits<double>::infinity();
  out = b.CreateSelect(b.CreateFCmpOEQ(x, c(b, kInf)), x, out);
  out = b.CreateSelect(b.CreateFCmpOEQ(x, c(b, 0)), c(b, -kInf), out);
  out = b.CreateSelect(b.CreateFCmpOLT(x, c(b, 0)), c(b, std::numeric_limits<double>::quiet_NaN()), out);
  return b.CreateSelect(is_nan(b, x), x, out);
}

// A [13/6] rational approximation on [-7.9053, 7.9053] (beyond it tanh rounds to +-1);
// tiny inputs return themselves, as tanh(x) = x there in f32.
Value* emit_tanh(llvm::IRBuilder<>& b, Value* x) {
  Value* xc = clamp(b, x, -7.90531110763549805, 7.90531110763549805);
  Value* x2 = b.CreateFMul(xc, xc);
  Value* p = horner(b, x2, {-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                            1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03});
  p = b.CreateFMul(p, xc);
  Value* q = horner(b, x2, {1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03});
  Value* out = b.CreateFDiv(p, q);
  Value* tiny = b.CreateFCmpOLT(b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x), c(b, 0.0004));
  return b.CreateSelect(tiny, x, out);
}

// A [13/8] rational approximation on [-4, 4]; beyond it erf rounds to +-1 in f32.
Value* emit_erf(llvm::IRBuilder<>& b, Value* x) {
  Value* xc = clamp(b, x, -4.0, 4.0);
  Value* x2 = b.CreateFMul(xc, xc);
  Value* p = horner(b, x2, {-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                            -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02});
  p = b.CreateFMul(p, xc);
  Value* q = horner(b, x2, {-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                            -7.37332916720468e-03, -1.42647390514189e-02});
  // From |x| = 4 on, exactly +-1 (as the CUDA prelude's kiln_erf): gelu(-inf) is then
  // -inf * 0 = NaN, as the reference computes it.
  Value* far = b.CreateFCmpOGE(b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x), c(b, 4.0));
  Value* one = b.CreateBinaryIntrinsic(llvm::Intrinsic::copysign, c(b, 1.0), x);
  return b.CreateSelect(far, one, b.CreateFDiv(p, q));
}

// 1 / (1 + e^-x) with a true division: the divider runs beside the FMA units, which the
// exp, erf and tanh polynomials keep busy (a reciprocal estimate plus a Newton step made
// gelu(x)*sigmoid(x) 15-30% slower on 2 AVX-512 cores).
Value* emit_sigmoid(llvm::IRBuilder<>& b, Value* x) {
  return b.CreateFDiv(c(b, 1.0), b.CreateFAdd(c(b, 1.0), emit_exp(b, b.CreateFNeg(x))));
}

// 2^x for the sigmoid forms of the tanh intrinsics (kir::Intrinsic), which add it to 1:
// Cephes exp2f's x = m + r with |r| <= 1/2 and 2^r = 1 + r P(r), P of degree 5, scaled by
// 2^m in one step. Results below 2^-126 flush to 0 and those from 2^127.5 on overflow to
// infinity (as CUDA's ex2.approx.ftz, which overflows from 2^128); NaN passes through.
// Elsewhere within Cephes' bound (relative error 1.7e-7, under 2 ulps).
Value* emit_exp2(llvm::IRBuilder<>& b, Value* x) {
  // A NaN stays NaN through the clamp; the last select returns x for it, never the
  // conversion of NaN to an integer (poison).
  Value* xc = clamp(b, x, -127.0, 128.0);
  Value* m = b.CreateUnaryIntrinsic(llvm::Intrinsic::floor, b.CreateFAdd(xc, c(b, 0.5)));
  Value* r = b.CreateFSub(xc, m);
  Value* p = horner(b, r, {1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3, 5.550332471162809e-2,
                           2.402264791363012e-1, 6.931472028550421e-1});
  // m in [-127, 128]: 2^-127 is 0 as exponent bits, 2^128 infinity.
  Value* out = b.CreateFMul(fmuladd(b, r, p, c(b, 1.0)), pow2(b, b.CreateFPToSI(m, b.getInt32Ty())));
  return b.CreateSelect(is_nan(b, x), x, out);
}

// atan: |x| > 1 maps to pi/2 - atan(1/|x|), then t > tan(pi/8) to pi/4 + atan((t - 1) / (t + 1)),
// leaving |t| <= tan(pi/8) = 0.4142, where the Taylor series to t^17 is within t^19 / 19 < 3e-9
// (alternating). The sign is restored last; NaN passes through the arithmetic, and
// +-infinity gives +-pi/2.
Value* emit_atan(llvm::IRBuilder<>& b, Value* x) {
  Value* a = b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x);
  Value* big = b.CreateFCmpOGT(a, c(b, 1.0));
  Value* t = b.CreateSelect(big, b.CreateFDiv(c(b, 1.0), a), a);
  Value* mid = b.CreateFCmpOGT(t, c(b, 0.41421356237309503));
  t = b.CreateSelect(mid, b.CreateFDiv(b.CreateFSub(t, c(b, 1.0)), b.CreateFAdd(t, c(b, 1.0))), t);
  Value* z = b.CreateFMul(t, t);
  Value* p = horner(b, z, {1.0 / 17, -1.0 / 15, 1.0 / 13, -1.0 / 11, 1.0 / 9, -1.0 / 7, 1.0 / 5, -1.0 / 3, 1.0});
  Value* r = b.CreateFAdd(b.CreateFMul(p, t), b.CreateSelect(mid, c(b, M_PI / 4), c(b, 0.0)));
  r = b.CreateSelect(big, b.CreateFSub(c(b, M_PI / 2), r), r);
  return b.CreateSelect(b.CreateFCmpOLT(x, c(b, 0.0)), b.CreateFNeg(r), r);
}

Value* emit_pow(llvm::IRBuilder<>& b, Value* x, Value* y) {
  if (auto* k = llvm::dyn_cast<llvm::ConstantFP>(y)) {
    double e = k->getValueAPF().convertToFloat();
    if (e == std::trunc(e) && std::abs(e) <= 4) {
      if (e == 0) return c(b, 1.0);
      // x^|e| by squaring: x, x^2, x^2 * x, x^2 * x^2.
      int n = static_cast<int>(std::abs(e));
      Value* sq = n >= 2 ? b.CreateFMul(x, x) : nullptr;
      Value* p = n == 1 ? x : n == 2 ? sq : n == 3 ? b.CreateFMul(sq, x) : b.CreateFMul(sq, sq);
      return e < 0 ? b.CreateFDiv(c(b, 1.0), p) : p;
    }
  }
  return b.CreateIntrinsic(llvm::Intrinsic::pow, {b.getFloatTy()}, {x, y});
}

}  // namespace kiln::cpu
