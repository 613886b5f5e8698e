// How kiln's dtypes live in LLVM registers on the CPU, and the loads, stores and conversions
// between them (ir/dtype.h's round_to_dtype semantics), for the CPU emitter (llvm_emit.cc).
#pragma once

#include "ir/dtype.h"
#include "llvm/IR/IRBuilder.h"

namespace kiln::cpu {

// f32, f16 and bf16 as an f32 value already rounded to its dtype; f64 as a double;
// integers as i64 (sign- or zero-extended by the type's signedness, a u64 as its bits);
// bool as i1.
enum class Repr { F, I, B };
inline Repr repr(DType t) { return is_float(t) ? Repr::F : t == DType::boolean ? Repr::B : Repr::I; }
// The register type of dtype t, and a constant of it (a float one rounded to f32 or f64
// only: kernel IR constants of f16/bf16 hold values of their type already).
llvm::Type* reg_type(llvm::IRBuilder<>& b, DType t);
llvm::Value* reg_const(llvm::IRBuilder<>& b, DType t, double v);

// Round-to-nearest-even f32 -> bf16 bits (NaN kept quiet), as ir/dtype.cc does.
llvm::Value* bf16_bits(llvm::IRBuilder<>& b, llvm::Value* v);
// An i64 value wrapped to integer dtype t.
llvm::Value* wrap_int(llvm::IRBuilder<>& b, llvm::Value* v, DType t);
// A register value of dtype `from` as one of dtype `to`.
llvm::Value* convert(llvm::IRBuilder<>& b, llvm::Value* v, DType from, DType to);
// Element `at` of the array of dtype t at `ptr`, as a register value, and the store back.
llvm::Value* load_scalar(llvm::IRBuilder<>& b, llvm::Value* ptr, llvm::Value* at, DType t);
void store_scalar(llvm::IRBuilder<>& b, llvm::Value* ptr, llvm::Value* at, llvm::Value* v, DType t);

}  // namespace kiln::cpu
