// f32 math for the CPU emitter as straight-line LLVM IR (range reduction + polynomial),
// so that loops calling exp/log/tanh/erf still vectorize: a libm call would keep them
// scalar. Each function matches the C library within a few ulps (test/cpu checks the
// error bound on a sweep) and handles NaN, infinities, zeros and denormals like it.
#pragma once

#include "llvm/IR/IRBuilder.h"

namespace kiln::cpu {

llvm::Value* emit_exp(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_log(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_tanh(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_erf(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_sigmoid(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_exp2(llvm::IRBuilder<>& b, llvm::Value* x);
llvm::Value* emit_atan(llvm::IRBuilder<>& b, llvm::Value* x);
// x^y. An integral constant y with |y| <= 4 (the squares of norms, gelu's cube) is a few
// products, which vectorize (within 2 ulps of the rounded power; 1 for y = 0, NaN too);
// any other y calls powf (llvm.pow), which keeps the loop scalar.
llvm::Value* emit_pow(llvm::IRBuilder<>& b, llvm::Value* x, llvm::Value* y);

}  // namespace kiln::cpu
