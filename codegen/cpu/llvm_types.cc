#include "codegen/cpu/llvm_types.h"

#include "llvm/IR/Intrinsics.h"

namespace kiln::cpu {
namespace {

using llvm::Value;

// An f32 value rounded to float dtype t (f32, f16 or bf16) and back. bf16 is rounded in
// 32-bit lanes (the same bits as widening bf16_bits(v)): no narrowing and widening between
// them, which in vector loops are cross-lane shuffles.
Value* round_float(llvm::IRBuilder<>& b, Value* v, DType t) {
  if (t == DType::f16) return b.CreateFPExt(b.CreateFPTrunc(v, b.getHalfTy()), b.getFloatTy());
  if (t != DType::bf16) return v;
  Value* u = b.CreateBitCast(v, b.getInt32Ty());
  Value* lsb = b.CreateAnd(b.CreateLShr(u, 16), b.getInt32(1));
  Value* rounded = b.CreateAdd(u, b.CreateAdd(b.getInt32(0x7fff), lsb));
  Value* nan = b.CreateOr(u, b.getInt32(0x400000));
  Value* bits = b.CreateAnd(b.CreateSelect(b.CreateFCmpUNO(v, v), nan, rounded), b.getInt32(0xffff0000u));
  return b.CreateBitCast(bits, b.getFloatTy());
}

// A float register value (f32 or double) to integer dtype t, as kiln::float_to_int: NaN,
// infinities and |v| >= 9.2e18 give 0, except that u64 takes [9.2e18, 1.8e19).
Value* float_to_int(llvm::IRBuilder<>& b, Value* v, DType t) {
  llvm::Type* ft = v->getType();
  auto c = [&](double x) { return llvm::ConstantFP::get(ft, x); };
  Value* sat = b.CreateIntrinsic(llvm::Intrinsic::fptosi_sat, {b.getInt64Ty(), ft}, {v});
  Value* big = b.CreateFCmpUGE(b.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, v), c(9.2e18));
  Value* out_of_range = b.getInt64(0);
  if (t == DType::u64) {
    Value* fits = b.CreateAnd(b.CreateFCmpOGE(v, c(9.2e18)), b.CreateFCmpOLT(v, c(1.8e19)));
    Value* usat = b.CreateIntrinsic(llvm::Intrinsic::fptoui_sat, {b.getInt64Ty(), ft}, {v});
    out_of_range = b.CreateSelect(fits, usat, out_of_range);
  }
  return wrap_int(b, b.CreateSelect(big, out_of_range, sat), t);
}

}  // namespace

llvm::Type* reg_type(llvm::IRBuilder<>& b, DType t) {
  switch (repr(t)) {
    case Repr::F: return t == DType::f64 ? b.getDoubleTy() : b.getFloatTy();
    case Repr::B: return b.getInt1Ty();
    case Repr::I: return b.getInt64Ty();
  }
  return b.getFloatTy();
}

Value* reg_const(llvm::IRBuilder<>& b, DType t, double v) {
  switch (repr(t)) {
    case Repr::F: return llvm::ConstantFP::get(reg_type(b, t), v);
    case Repr::B: return b.getInt1(v != 0);
    case Repr::I: return b.getInt64(float_to_int(v, t));
  }
  return nullptr;
}

Value* bf16_bits(llvm::IRBuilder<>& b, Value* v) {
  Value* u = b.CreateBitCast(v, b.getInt32Ty());
  Value* hi = b.CreateLShr(u, 16);
  Value* nan = b.CreateOr(hi, b.getInt32(0x40));
  Value* lsb = b.CreateAnd(hi, b.getInt32(1));
  Value* rounded = b.CreateLShr(b.CreateAdd(u, b.CreateAdd(b.getInt32(0x7fff), lsb)), 16);
  return b.CreateTrunc(b.CreateSelect(b.CreateFCmpUNO(v, v), nan, rounded), b.getInt16Ty());
}

Value* wrap_int(llvm::IRBuilder<>& b, Value* v, DType t) {
  if (!is_integer(t) || dtype_bits(t) == 64) return v;
  Value* n = b.CreateTrunc(v, b.getIntNTy(dtype_bits(t)));
  return is_unsigned(t) ? b.CreateZExt(n, b.getInt64Ty()) : b.CreateSExt(n, b.getInt64Ty());
}

Value* convert(llvm::IRBuilder<>& b, Value* v, DType from, DType to) {
  if (from == to) return v;
  Repr rf = repr(from), rt = repr(to);
  if (rt == Repr::B) {
    if (rf == Repr::F) return b.CreateFCmpUNE(v, llvm::ConstantFP::get(v->getType(), 0.0));
    return b.CreateICmpNE(v, llvm::ConstantInt::get(v->getType(), 0));
  }
  if (rt == Repr::F) {
    llvm::Type* ft = reg_type(b, to);
    if (rf == Repr::F) {
      // f64 goes to f16/bf16 through f32, as HostTensor::set does.
      if (to == DType::f64) return b.CreateFPExt(v, ft);
      return round_float(b, from == DType::f64 ? b.CreateFPTrunc(v, ft) : v, to);
    }
    Value* f = rf == Repr::B || from == DType::u64 ? b.CreateUIToFP(v, ft) : b.CreateSIToFP(v, ft);
    return round_float(b, f, to);
  }
  if (rf == Repr::F) return float_to_int(b, v, to);
  return wrap_int(b, rf == Repr::B ? b.CreateZExt(v, b.getInt64Ty()) : v, to);
}

Value* load_scalar(llvm::IRBuilder<>& b, Value* ptr, Value* at, DType t) {
  auto load = [&](llvm::Type* ty) { return b.CreateLoad(ty, b.CreateGEP(ty, ptr, at)); };
  switch (t) {
    case DType::f32: return load(b.getFloatTy());
    case DType::f64: return load(b.getDoubleTy());
    case DType::f16: return b.CreateFPExt(load(b.getHalfTy()), b.getFloatTy());
    case DType::bf16: return b.CreateBitCast(b.CreateShl(b.CreateZExt(load(b.getInt16Ty()), b.getInt32Ty()), 16), b.getFloatTy());
    case DType::boolean: return b.CreateICmpNE(load(b.getInt8Ty()), b.getInt8(0));
    default: return wrap_int(b, b.CreateZExtOrTrunc(load(b.getIntNTy(dtype_bits(t))), b.getInt64Ty()), t);
  }
}

void store_scalar(llvm::IRBuilder<>& b, Value* ptr, Value* at, Value* v, DType t) {
  auto store = [&](Value* x) { b.CreateStore(x, b.CreateGEP(x->getType(), ptr, at)); };
  switch (t) {
    case DType::f32: case DType::f64: return store(v);
    case DType::f16: return store(b.CreateFPTrunc(v, b.getHalfTy()));
    case DType::bf16: return store(bf16_bits(b, v));
    case DType::boolean: return store(b.CreateZExt(v, b.getInt8Ty()));
    default: return store(b.CreateTrunc(v, b.getIntNTy(dtype_bits(t))));
  }
}

}  // namespace kiln::cpu
