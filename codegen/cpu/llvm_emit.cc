#include "codegen/cpu/llvm_emit.h"

#include <functional>
#include <limits>
#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "codegen/cpu/collapse.h"
#include "codegen/cpu/llvm_math.h"
#include "codegen/cpu/llvm_types.h"
#include "codegen/intrinsics.h"
#include "ir/str.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

namespace kiln::cpu {
namespace {

using kir::Expr;
using kir::ExprKind;
using kir::Index;
using kir::IndexKind;
using llvm::Value;

class Emitter {
 public:
  Emitter(const RowForm& form, const EmitOptions& opts, llvm::LLVMContext& ctx)
      : k_(form.kernel), form_(form), opts_(opts), baked_(opts.baked), ctx_(ctx), b_(ctx) {}

  absl::StatusOr<std::unique_ptr<llvm::Module>> emit(const std::string& entry_name) {
    mod_ = std::make_unique<llvm::Module>(entry_name, ctx_);
    f32_ = b_.getFloatTy();
    i64_ = b_.getInt64Ty();
    llvm::Function* impl = emit_impl(entry_name + "_impl");
    if (!error_.ok()) return error_;
    emit_entry(entry_name, impl);
    std::string msg;
    llvm::raw_string_ostream os(msg);
    if (llvm::verifyModule(*mod_, &os))
      return absl::InternalError(str_cat("kernel ", k_.name, ": emitted LLVM IR is invalid: ", os.str()));
    return std::move(mod_);
  }

 private:
  template <typename... A>
  void fail(const A&... parts) {
    if (error_.ok()) error_ = invalid_argument("kernel ", k_.name, ": ", parts...);
  }

  // The buffer whose pointer buffer `i` uses (EmitOptions::storage).
  size_t storage_of(size_t i) const {
    return opts_.storage.empty() ? i : static_cast<size_t>(opts_.storage[i]);
  }

  size_t pointer_count() const { return k_.buffers.size() + (opts_.gemm_acc_buffer ? 1 : 0); }

  // The kernel proper, with noalias buffer pointers so that loops vectorize; the entry
  // unpacks the argument arrays and calls it (the inliner keeps the noalias facts).
  llvm::Function* emit_impl(const std::string& name) {
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      size_t s = storage_of(i);
      if (s >= k_.buffers.size() || storage_of(s) != s) {
        fail("buffer ", k_.buffers[i].name, " shares the storage of buffer ", s, ", which is not its own storage");
        return nullptr;
      }
    }
    if (opts_.gemm_acc_buffer && !k_.gemm) {
      fail("an accumulator buffer was asked for, but the kernel has no GEMM");
      return nullptr;
    }
    std::vector<llvm::Type*> params(pointer_count(), b_.getPtrTy());
    dyn_syms_ = dynamic_symbols(k_, baked_);
    for (size_t i = 0; i < dyn_syms_.size() + 2; ++i) params.push_back(i64_);
    auto* fty = llvm::FunctionType::get(b_.getVoidTy(), params, false);
    auto* f = llvm::Function::Create(fty, llvm::Function::InternalLinkage, name, *mod_);
    std::vector<bool> written(pointer_count(), false);
    for (size_t i = 0; i < k_.buffers.size(); ++i)
      if (k_.buffers[i].role != kir::Buffer::Role::Input) written[storage_of(i)] = true;
    for (size_t i = 0; i < pointer_count(); ++i) {
      f->addParamAttr(i, llvm::Attribute::NoAlias);
      f->addParamAttr(i, llvm::Attribute::NoCapture);
      if (!written[i]) f->addParamAttr(i, llvm::Attribute::ReadOnly);
    }
    for (size_t i = 0; i < k_.buffers.size(); ++i) bufs_.push_back(f->getArg(storage_of(i)));
    if (opts_.gemm_acc_buffer) acc_buf_ = f->getArg(k_.buffers.size());
    for (size_t i = 0; i < dyn_syms_.size(); ++i) syms_[dyn_syms_[i]] = f->getArg(pointer_count() + i);
    Value* begin = f->getArg(pointer_count() + dyn_syms_.size());
    Value* end = f->getArg(pointer_count() + dyn_syms_.size() + 1);
    fn_ = f;
    entry_ = llvm::BasicBlock::Create(ctx_, "entry", f);
    b_.SetInsertPoint(entry_);
    plan_value_cache();
    // Index checks: the range runs once with each check's condition or-ed into `bad_` (a
    // reduction, which keeps the loops vectorizable; a store under a branch would not), and
    // only where one failed once more, scalar, writing the check words and nothing else.
    if (has_masked_checks()) {
      bad_ = local(b_.getInt8Ty());
      b_.CreateStore(b_.getInt8(0), bad_);
    }
    auto range = [&] {
      outer_.assign(k_.domain.size(), nullptr);
      if (k_.domain.empty()) {
        flat_ = b_.getInt64(0);
        if_then(b_.CreateICmpSLT(begin, end), [&] { emit_point(); });
      } else {
        emit_outer(begin, end);
      }
    };
    range();
    if (bad_) {
      if_then(b_.CreateICmpNE(b_.CreateLoad(b_.getInt8Ty(), bad_), b_.getInt8(0)), [&] {
        recording_checks_ = true;
        range();
        recording_checks_ = false;
      });
    }
    b_.CreateRetVoid();
    return f;
  }

  void emit_entry(const std::string& name, llvm::Function* impl) {
    auto* fty = llvm::FunctionType::get(b_.getVoidTy(), {b_.getPtrTy(), b_.getPtrTy(), i64_, i64_}, false);
    auto* f = llvm::Function::Create(fty, llvm::Function::ExternalLinkage, name, *mod_);
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", f));
    std::vector<Value*> args;
    for (size_t i = 0; i < pointer_count(); ++i)
      args.push_back(b_.CreateLoad(b_.getPtrTy(), b_.CreateConstGEP1_64(b_.getPtrTy(), f->getArg(0), i)));
    for (size_t i = 0; i < dyn_syms_.size(); ++i)
      args.push_back(b_.CreateLoad(i64_, b_.CreateConstGEP1_64(i64_, f->getArg(1), i)));
    for (int i : {2, 3})  // a range of the original's points: the outer points covering them (row_form)
      args.push_back(b_.CreateSDiv(b_.CreateAdd(f->getArg(i), b_.getInt64(form_.split - 1)), b_.getInt64(form_.split)));
    b_.CreateCall(impl, args);
    b_.CreateRetVoid();
  }

  // ---- control flow -------------------------------------------------------------

  // for (iv = lo; iv < hi; ++iv) body(iv)
  void loop(Value* lo, Value* hi, const std::function<void(Value*)>& body, bool fold_tail = false) {
    llvm::BasicBlock* pre = b_.GetInsertBlock();
    auto* header = llvm::BasicBlock::Create(ctx_, "loop", fn_);
    auto* bodyb = llvm::BasicBlock::Create(ctx_, "body", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, "exit", fn_);
    b_.CreateBr(header);
    b_.SetInsertPoint(header);
    llvm::PHINode* iv = b_.CreatePHI(i64_, 2);
    iv->addIncoming(lo, pre);
    b_.CreateCondBr(b_.CreateICmpSLT(iv, hi), bodyb, exit);
    b_.SetInsertPoint(bodyb);
    body(iv);
    Value* next = b_.CreateAdd(iv, b_.getInt64(1), "", /*HasNUW=*/false, /*HasNSW=*/true);
    iv->addIncoming(next, b_.GetInsertBlock());
    llvm::BranchInst* back = b_.CreateBr(header);
    if (fold_tail) {  // the vectorizer's hint: the remainder as masked vector iterations
      llvm::Metadata* hint[] = {llvm::MDString::get(ctx_, "llvm.loop.vectorize.predicate.enable"),
                                llvm::ConstantAsMetadata::get(b_.getTrue())};
      auto* md = llvm::MDNode::getDistinct(ctx_, {nullptr, llvm::MDNode::get(ctx_, hint)});
      md->replaceOperandWith(0, md);
      back->setMetadata(llvm::LLVMContext::MD_loop, md);
    }
    b_.SetInsertPoint(exit);
  }

  void if_then(Value* cond, const std::function<void()>& body) {
    auto* then = llvm::BasicBlock::Create(ctx_, "then", fn_);
    auto* done = llvm::BasicBlock::Create(ctx_, "done", fn_);
    b_.CreateCondBr(cond, then, done);
    b_.SetInsertPoint(then);
    body();
    b_.CreateBr(done);
    b_.SetInsertPoint(done);
  }

  llvm::AllocaInst* local(llvm::Type* t) {
    llvm::IRBuilder<> eb(entry_, entry_->begin());
    return eb.CreateAlloca(t);
  }

  // The flat range [begin, end) of the outer domain, walked as row segments so that the
  // innermost domain dim is a plain counted loop (the one the vectorizer sees). The first
  // row's index is divided out once; later rows carry it forward (64-bit divisions by
  // symbolic extents per row cost kernels with short rows, e.g. convs of small maps).
  void emit_outer(Value* begin, Value* end) {
    size_t n = k_.domain.size();
    Value* last = dim(k_.domain[n - 1]);
    llvm::AllocaInst* pos = local(i64_);
    llvm::AllocaInst* first_col = local(i64_);
    std::vector<llvm::AllocaInst*> idx(n - 1);
    {
      Value* row = b_.CreateSDiv(begin, last);
      b_.CreateStore(b_.CreateSub(begin, b_.CreateMul(row, last)), first_col);
      for (size_t d = n - 1; d-- > 0;) {
        Value* e = dim(k_.domain[d]);
        Value* q = b_.CreateSDiv(row, e);
        idx[d] = local(i64_);
        b_.CreateStore(b_.CreateSub(row, b_.CreateMul(q, e)), idx[d]);
        row = q;
      }
    }
    b_.CreateStore(begin, pos);
    auto* header = llvm::BasicBlock::Create(ctx_, "rows", fn_);
    auto* bodyb = llvm::BasicBlock::Create(ctx_, "row", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, "rows_done", fn_);
    b_.CreateBr(header);
    b_.SetInsertPoint(header);
    Value* f = b_.CreateLoad(i64_, pos);
    b_.CreateCondBr(b_.CreateICmpSLT(f, end), bodyb, exit);
    b_.SetInsertPoint(bodyb);
    Value* col = b_.CreateLoad(i64_, first_col);
    for (size_t d = 0; d + 1 < n; ++d) outer_[d] = b_.CreateLoad(i64_, idx[d]);
    Value* len = b_.CreateSub(last, col);
    Value* rest = b_.CreateSub(end, f);
    len = b_.CreateSelect(b_.CreateICmpSLT(rest, len), rest, len);
    Value* row_start = b_.CreateSub(f, col);  // flat index of (row, 0)
    auto point = [&](Value* iv) {
      outer_[n - 1] = iv;
      flat_ = b_.CreateAdd(row_start, iv);
      emit_point();
    };
    Value* hi = b_.CreateAdd(col, len);
    if (form_.fold_rows_below == 0) {
      loop(col, hi, point);
    } else {  // short rows folded, long ones not (RowForm::fold_rows_below)
      Value* fold = b_.CreateICmpSLT(len, b_.getInt64(form_.fold_rows_below));
      if_then(fold, [&] { loop(col, hi, point, /*fold_tail=*/true); });
      if_then(b_.CreateNot(fold), [&] { loop(col, hi, point); });
    }
    b_.CreateStore(b_.CreateAdd(f, len), pos);
    b_.CreateStore(b_.getInt64(0), first_col);
    // The next row: the index plus one, carried (branch-free) from the innermost outer dim.
    Value* carry = b_.getInt64(1);
    for (size_t d = n - 1; d-- > 0;) {
      Value* v = b_.CreateAdd(b_.CreateLoad(i64_, idx[d]), carry);
      Value* wrap = b_.CreateICmpSGE(v, dim(k_.domain[d]));
      b_.CreateStore(b_.CreateSelect(wrap, b_.getInt64(0), v), idx[d]);
      carry = b_.CreateZExt(wrap, i64_);
    }
    b_.CreateBr(header);
    b_.SetInsertPoint(exit);
  }

  // Everything one outer point does: the GEMM accumulator, then the stages in order.
  void emit_point() {
    stage_results_.assign(k_.stages.size(), nullptr);
    gemm_acc_ = nullptr;
    if (k_.gemm) emit_gemm(*k_.gemm);
    for (size_t s = 0; s < k_.stages.size(); ++s) emit_stage(s);
  }

  // Nested loops over `extents` (inner vars r0..), body at the innermost point.
  void inner_loops(const std::vector<Dim>& extents, size_t d, const std::function<void()>& body) {
    if (d == extents.size()) {
      cache_.clear();
      body();
      return;
    }
    loop(b_.getInt64(0), dim(extents[d]), [&](Value* iv) {
      inner_[d] = iv;
      inner_loops(extents, d + 1, body);
    });
  }

  // The accumulator of the current outer point: read from the precomputed buffer, or the
  // dot product over k (reassociable, like a reduction).
  void emit_gemm(const kir::GemmSpec& g) {
    if (opts_.gemm_acc_buffer) {
      gemm_acc_ = b_.CreateLoad(f32_, b_.CreateGEP(f32_, acc_buf_, flat_));
      return;
    }
    bool fl = repr(g.acc_dtype) == Repr::F;
    llvm::Type* t = reg_type(b_, g.acc_dtype);
    llvm::AllocaInst* acc = local(t);
    b_.CreateStore(reg_const(b_, g.acc_dtype, 0), acc);
    inner_.assign(1, nullptr);
    inner_loops({g.k}, 0, [&] {
      Value* a = convert(b_, load(g.a.buffer, g.a.index), k_.buffers[g.a.buffer].dtype, g.acc_dtype);
      Value* bv = convert(b_, load(g.b.buffer, g.b.index), k_.buffers[g.b.buffer].dtype, g.acc_dtype);
      Value* cur = b_.CreateLoad(t, acc);
      b_.CreateStore(fl ? reassoc(b_.CreateFAdd(cur, b_.CreateFMul(a, bv))) : b_.CreateAdd(cur, b_.CreateMul(a, bv)),
                     acc);
    });
    gemm_acc_ = b_.CreateLoad(t, acc);
  }

  void emit_stage(size_t s) {
    const kir::Stage& st = k_.stages[s];
    inner_.assign(st.extents.size(), nullptr);
    if (st.kind == kir::Stage::Kind::Map) {
      inner_loops(st.extents, 0, [&] {
        emit_lets(st);
        emit_stores(st);
      });
      return;
    }
    stage_results_[s] = st.combiner == kir::Combiner::ArgMax ? emit_argmax(st) : emit_fold(st);
  }

  bool has_masked_checks() const {
    for (const kir::Stage& st : k_.stages)
      for (const kir::Store& store : st.stores)
        if (store.mask.defined() && k_.buffers[store.buffer].role == kir::Buffer::Role::Check) return true;
    return false;
  }

  // A map stage's stores, or a reduce stage's (only the masked stores of index checks). A
  // masked check store is its condition or-ed into bad_, or, on the pass that records the
  // checks (recording_checks_), the only kind of store written.
  void emit_stores(const kir::Stage& st) {
    for (const kir::Store& store : st.stores) {
      const bool check = store.mask.defined() && k_.buffers[store.buffer].role == kir::Buffer::Role::Check;
      if (check && bad_ && !recording_checks_) {
        Value* failed = b_.CreateZExt(emit(store.mask), b_.getInt8Ty());
        b_.CreateStore(b_.CreateOr(b_.CreateLoad(b_.getInt8Ty(), bad_), failed), bad_);
        continue;
      }
      if (recording_checks_ && !check) continue;
      auto write = [&] {
        Value* v = emit(store.value);
        Value* at = index(store.index);
        if (error_.ok()) store_value(store.buffer, at, convert(b_, v, store.value.dtype(), k_.buffers[store.buffer].dtype));
      };
      if (store.mask.defined()) if_then(emit(store.mask), write);
      else write();
      if (!error_.ok()) return;
    }
  }

  // The first NaN, else the first strict maximum; its flat inner position.
  Value* emit_argmax(const kir::Stage& st) {
    bool fl = repr(st.acc_dtype) == Repr::F;
    llvm::Type* t = reg_type(b_, st.acc_dtype);
    llvm::AllocaInst* best = local(t);
    llvm::AllocaInst* best_pos = local(i64_);
    llvm::AllocaInst* pos = local(i64_);
    b_.CreateStore(b_.getInt64(0), best_pos);
    b_.CreateStore(b_.getInt64(0), pos);
    b_.CreateStore(reg_const(b_, st.acc_dtype, 0), best);
    inner_loops(st.extents, 0, [&] {
      emit_lets(st);
      emit_stores(st);
      Value* v = convert(b_, emit(st.value), st.value.dtype(), st.acc_dtype);
      if (!error_.ok()) return;
      Value* p = b_.CreateLoad(i64_, pos);
      Value* cur = b_.CreateLoad(t, best);
      Value* better = fl ? b_.CreateAnd(b_.CreateFCmpORD(cur, cur), b_.CreateOr(b_.CreateFCmpUNO(v, v), b_.CreateFCmpOGT(v, cur)))
                         : is_unsigned(st.acc_dtype) ? b_.CreateICmpUGT(v, cur) : b_.CreateICmpSGT(v, cur);
      Value* take = b_.CreateOr(b_.CreateICmpEQ(p, b_.getInt64(0)), better);
      b_.CreateStore(b_.CreateSelect(take, v, cur), best);
      b_.CreateStore(b_.CreateSelect(take, p, b_.CreateLoad(i64_, best_pos)), best_pos);
      b_.CreateStore(b_.CreateAdd(p, b_.getInt64(1)), pos);
    });
    return b_.CreateLoad(i64_, best_pos);
  }

  // Sum, product, max or min. Float max/min are written in the form the loop vectorizer
  // recognizes (compare-select without NaNs) plus a separate "saw a NaN" flag, which gives
  // the NaN-propagating result without keeping the loop scalar.
  Value* emit_fold(const kir::Stage& st) {
    bool fl = repr(st.acc_dtype) == Repr::F, u = is_unsigned(st.acc_dtype);
    llvm::Type* t = reg_type(b_, st.acc_dtype);
    auto c = [&](double v) { return reg_const(b_, st.acc_dtype, v); };
    constexpr double kInf = std::numeric_limits<double>::infinity();
    Value* init = nullptr;
    switch (st.combiner) {
      case kir::Combiner::Sum: init = c(0); break;
      case kir::Combiner::Prod: init = c(1); break;
      case kir::Combiner::Max: init = fl ? c(-kInf) : b_.getInt64(u ? 0 : std::numeric_limits<int64_t>::min()); break;
      case kir::Combiner::Min: init = fl ? c(kInf) : b_.getInt64(u ? -1 : std::numeric_limits<int64_t>::max()); break;
      case kir::Combiner::ArgMax: break;
    }
    bool minmax = st.combiner == kir::Combiner::Max || st.combiner == kir::Combiner::Min;
    llvm::AllocaInst* acc = local(t);
    b_.CreateStore(init, acc);
    llvm::AllocaInst* saw_nan = nullptr;
    if (fl && minmax) {
      saw_nan = local(b_.getInt1Ty());
      b_.CreateStore(b_.getInt1(false), saw_nan);
    }
    inner_loops(st.extents, 0, [&] {
      emit_lets(st);
      emit_stores(st);
      Value* v = convert(b_, emit(st.value), st.value.dtype(), st.acc_dtype);
      if (!error_.ok()) return;
      Value* cur = b_.CreateLoad(t, acc);
      Value* next = nullptr;
      switch (st.combiner) {
        case kir::Combiner::Sum: next = fl ? reassoc(b_.CreateFAdd(cur, v)) : b_.CreateAdd(cur, v); break;
        case kir::Combiner::Prod: next = fl ? reassoc(b_.CreateFMul(cur, v)) : b_.CreateMul(cur, v); break;
        case kir::Combiner::Max:
        case kir::Combiner::Min: {
          bool mx = st.combiner == kir::Combiner::Max;
          if (!fl) {
            Value* take = u ? (mx ? b_.CreateICmpUGT(v, cur) : b_.CreateICmpULT(v, cur))
                            : (mx ? b_.CreateICmpSGT(v, cur) : b_.CreateICmpSLT(v, cur));
            next = b_.CreateSelect(take, v, cur);
            break;
          }
          // NaN inputs make this value poison; the flag then replaces the result.
          Value* take = no_nans(mx ? b_.CreateFCmpOGT(v, cur) : b_.CreateFCmpOLT(v, cur));
          next = no_nans(b_.CreateSelect(take, v, cur));
          b_.CreateStore(b_.CreateOr(b_.CreateLoad(b_.getInt1Ty(), saw_nan), b_.CreateFCmpUNO(v, v)), saw_nan);
          break;
        }
        case kir::Combiner::ArgMax: break;
      }
      b_.CreateStore(next, acc);
    });
    Value* result = b_.CreateLoad(t, acc);
    if (saw_nan)
      result = b_.CreateSelect(b_.CreateLoad(b_.getInt1Ty(), saw_nan),
                               c(std::numeric_limits<double>::quiet_NaN()), result);
    return result;
  }

  Value* reassoc(Value* v) {
    llvm::FastMathFlags f;
    f.setAllowReassoc();
    llvm::cast<llvm::Instruction>(v)->setFastMathFlags(f);
    return v;
  }

  Value* no_nans(Value* v) {
    llvm::FastMathFlags f;
    f.setNoNaNs();
    f.setNoSignedZeros();
    llvm::cast<llvm::Instruction>(v)->setFastMathFlags(f);
    return v;
  }

  void emit_lets(const kir::Stage& st) {
    for (const kir::Let& l : st.lets) {
      if (auto read = cache_read_.find(l.id); read != cache_read_.end()) {
        lets_[l.id] = b_.CreateLoad(f32_, b_.CreateGEP(f32_, read->second, inner_flat(st)));
        continue;
      }
      lets_[l.id] = emit(l.value);
      if (auto store = cache_store_.find(l.id); store != cache_store_.end())
        b_.CreateStore(lets_[l.id], b_.CreateGEP(f32_, store->second, inner_flat(st)));
    }
  }

  // The flat position of the current inner point of stage `st`.
  Value* inner_flat(const kir::Stage& st) {
    Value* f = b_.getInt64(0);
    for (size_t d = 0; d < st.extents.size(); ++d) f = b_.CreateAdd(b_.CreateMul(f, dim(st.extents[d])), inner_[d]);
    return f;
  }

  // The value cache: a costly value that a later stage recomputes (kir::recomputed_lets,
  // softmax's exp(x - max)) is stored per row in a stack array by the first stage computing
  // it and loaded by the later ones; for stages whose extents are static, up to 16384
  // elements (64 KiB, in L1 or L2 when it is read again).
  void plan_value_cache() {
    std::map<int, llvm::AllocaInst*> arrays;
    for (const auto& [later, src] : kir::recomputed_lets(k_)) {
      const kir::Stage* owner = nullptr;
      DType t = DType::f32;
      for (const kir::Stage& st : k_.stages)
        for (const kir::Let& l : st.lets)
          if (l.id == src) owner = &st, t = l.value.dtype();
      std::optional<int64_t> n = owner ? shape_numel(owner->extents).constant() : std::nullopt;
      if (!n || *n <= 0 || *n > 16384 || reg_type(b_, t) != f32_) continue;  // the arrays hold f32
      if (!arrays.contains(src)) {
        llvm::IRBuilder<> eb(entry_, entry_->begin());
        arrays[src] = eb.CreateAlloca(f32_, b_.getInt64(*n));
      }
      cache_store_[src] = cache_read_[later] = arrays[src];
    }
  }

  // ---- scalars ------------------------------------------------------------------

  Value* const_f(double v) { return llvm::ConstantFP::get(f32_, v); }

  Value* dim(const Dim& d) { return index(Index::from_dim(d)); }

  Value* call(llvm::Intrinsic::ID id, std::vector<Value*> args) {
    llvm::Function* f = llvm::Intrinsic::getDeclaration(mod_.get(), id, {args[0]->getType()});
    return b_.CreateCall(f, args);
  }

  // std::max / std::min on floats, except that a NaN operand gives NaN.
  Value* fmax(Value* a, Value* b) {
    Value* m = b_.CreateSelect(b_.CreateFCmpOLT(a, b), b, a);
    return b_.CreateSelect(b_.CreateFCmpUNO(a, b), llvm::ConstantFP::getNaN(a->getType()), m);
  }
  Value* fmin(Value* a, Value* b) {
    Value* m = b_.CreateSelect(b_.CreateFCmpOLT(b, a), b, a);
    return b_.CreateSelect(b_.CreateFCmpUNO(a, b), llvm::ConstantFP::getNaN(a->getType()), m);
  }

  Value* load(int buffer, const Index& i) {
    Value* at = index(i);
    if (buffer < 0 || buffer >= static_cast<int>(bufs_.size())) {
      fail("load from buffer ", buffer, " which does not exist");
      return const_f(0);
    }
    return load_scalar(b_, bufs_[buffer], at, k_.buffers[buffer].dtype);
  }

  void store_value(int buffer, Value* at, Value* v) {
    if (buffer < 0 || buffer >= static_cast<int>(bufs_.size())) return fail("store to buffer ", buffer, " which does not exist");
    store_scalar(b_, bufs_[buffer], at, v, k_.buffers[buffer].dtype);
  }

  // A divisor that is never 0 (the lowering guarantees > 0; this keeps a bad binding from
  // trapping the process).
  Value* safe_divisor(Value* d) { return b_.CreateSelect(b_.CreateICmpSLE(d, b_.getInt64(0)), b_.getInt64(1), d); }

  Value* index(const Index& i) {
    const kir::IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Const: return b_.getInt64(n.value);
      case IndexKind::Outer:
        if (n.value < 0 || n.value >= static_cast<int64_t>(outer_.size()) || !outer_[n.value]) break;
        return outer_[n.value];
      case IndexKind::Inner:
        if (n.value < 0 || n.value >= static_cast<int64_t>(inner_.size()) || !inner_[n.value]) break;
        return inner_[n.value];
      case IndexKind::Sym: {
        if (auto it = baked_.find(n.name); it != baked_.end()) return b_.getInt64(it->second);
        if (auto it = syms_.find(n.name); it != syms_.end()) return it->second;
        fail("symbol ", n.name, " is not a parameter of the kernel");
        return b_.getInt64(0);
      }
      case IndexKind::Add: return b_.CreateAdd(index(n.a), index(n.b));
      case IndexKind::Mul: return b_.CreateMul(index(n.a), index(n.b));
      case IndexKind::FloorDiv:
      case IndexKind::Mod: {
        Value* a = index(n.a);
        Value* d = safe_divisor(index(n.b));
        Value* r = b_.CreateSRem(a, d);
        Value* neg = b_.CreateICmpSLT(r, b_.getInt64(0));  // d > 0: a negative remainder means a < 0
        if (n.kind == IndexKind::Mod) return b_.CreateSelect(neg, b_.CreateAdd(r, d), r);
        Value* q = b_.CreateSDiv(a, d);
        return b_.CreateSub(q, b_.CreateZExt(neg, i64_));
      }
      case IndexKind::Min: {
        Value* a = index(n.a);
        Value* b = index(n.b);
        return b_.CreateSelect(b_.CreateICmpSLT(b, a), b, a);
      }
      case IndexKind::Max: {
        Value* a = index(n.a);
        Value* b = index(n.b);
        return b_.CreateSelect(b_.CreateICmpSLT(a, b), b, a);
      }
      case IndexKind::Scalar: return convert(b_, emit(n.expr), n.expr.dtype(), DType::i64);
    }
    fail("index ", kir::print_index(i, &k_), " uses a loop variable that is not in scope");
    return b_.getInt64(0);
  }

  Value* emit(const Expr& e) {
    auto it = cache_.find(&e.node());
    if (it != cache_.end()) return it->second;
    Value* v = emit_uncached(e);
    cache_[&e.node()] = v;
    return v;
  }

  Value* emit_uncached(const Expr& e) {
    const kir::ExprNode& n = e.node();
    switch (n.kind) {
      case ExprKind::Const:
        switch (repr(n.dtype)) {
          case Repr::F: return reg_const(b_, n.dtype, n.value);
          case Repr::B: return b_.getInt1(n.int_value != 0);
          case Repr::I: return b_.getInt64(n.int_value);
        }
        break;
      case ExprKind::Load: return load(n.id, n.index);
      case ExprKind::Let: {
        auto l = lets_.find(n.id);
        if (l == lets_.end()) break;
        return l->second;
      }
      case ExprKind::StageResult:
        if (n.id < 0 || n.id >= static_cast<int>(stage_results_.size()) || !stage_results_[n.id]) break;
        return stage_results_[n.id];
      case ExprKind::GemmAcc:
        if (!gemm_acc_) break;
        return gemm_acc_;
      case ExprKind::IndexValue: return index(n.index);
      case ExprKind::Select: {
        Value* c = emit(n.a);
        if (repr(n.a.dtype()) != Repr::B) c = convert(b_, c, n.a.dtype(), DType::boolean);
        return b_.CreateSelect(c, emit(n.b), emit(n.c));
      }
      case ExprKind::Cast: return convert(b_, emit(n.a), n.a.dtype(), n.dtype);
      case ExprKind::Unary: return unary(n.op, emit(n.a), n.a.dtype(), n.dtype);
      case ExprKind::Binary: return binary(n.op, emit(n.a), emit(n.b), n.a.dtype(), n.dtype);
      case ExprKind::Intrinsic: return intrinsic(n);
    }
    fail("expression ", kir::print_expr(e, &k_), " reads a value that is not in scope");
    return llvm::UndefValue::get(reg_type(b_, n.dtype));
  }

  // f64 math: the C library's double functions (the f32 forms of llvm_math.cc are f32 only).
  Value* libm(const char* name, Value* x) {
    llvm::Type* d = b_.getDoubleTy();
    return b_.CreateCall(mod_->getOrInsertFunction(name, llvm::FunctionType::get(d, {d}, false)), {x});
  }
  Value* sigmoid(Value* x) {
    if (!x->getType()->isDoubleTy()) return emit_sigmoid(b_, x);
    Value* one = llvm::ConstantFP::get(x->getType(), 1.0);
    return b_.CreateFDiv(one, b_.CreateFAdd(one, libm("exp", b_.CreateFNeg(x))));
  }

  Value* unary(Op op, Value* a, DType in, DType out) {
    if (repr(in) == Repr::F) {
      DType ct = in == DType::f64 ? DType::f64 : DType::f32;  // computed in f32 but for f64
      bool d = ct == DType::f64;
      Value* one = reg_const(b_, ct, 1), *zero = reg_const(b_, ct, 0);
      Value* r = nullptr;
      switch (op) {
        case Op::Neg: r = b_.CreateFNeg(a); break;
        case Op::Abs: r = call(llvm::Intrinsic::fabs, {a}); break;
        case Op::Exp: r = d ? libm("exp", a) : emit_exp(b_, a); break;
        case Op::Log: r = d ? libm("log", a) : emit_log(b_, a); break;
        case Op::Sqrt: r = call(llvm::Intrinsic::sqrt, {a}); break;
        case Op::Rsqrt: r = b_.CreateFDiv(one, call(llvm::Intrinsic::sqrt, {a})); break;
        case Op::Sin: r = call(llvm::Intrinsic::sin, {a}); break;
        case Op::Cos: r = call(llvm::Intrinsic::cos, {a}); break;
        case Op::Tanh: r = d ? libm("tanh", a) : emit_tanh(b_, a); break;
        case Op::Erf: r = d ? libm("erf", a) : emit_erf(b_, a); break;
        case Op::Atan: r = d ? libm("atan", a) : emit_atan(b_, a); break;
        case Op::Sigmoid: r = sigmoid(a); break;
        case Op::Silu: r = b_.CreateFMul(a, sigmoid(a)); break;
        case Op::Relu: r = b_.CreateSelect(b_.CreateFCmpOLT(a, zero), zero, a); break;
        case Op::Reciprocal: r = b_.CreateFDiv(one, a); break;
        case Op::Floor: r = call(llvm::Intrinsic::floor, {a}); break;
        case Op::Ceil: r = call(llvm::Intrinsic::ceil, {a}); break;
        default: fail("unary op ", op_name(op), " on ", dtype_name(in), " has no CPU lowering"); return a;
      }
      return convert(b_, r, ct, out);
    }
    Value* x = convert(b_, a, in, DType::i64);
    Value* zero = b_.getInt64(0);
    Value* r = nullptr;
    bool u = is_unsigned(in);
    switch (op) {
      case Op::Neg: r = b_.CreateSub(zero, x); break;
      case Op::Abs: r = u ? x : b_.CreateSelect(b_.CreateICmpSLT(x, zero), b_.CreateSub(zero, x), x); break;
      case Op::Relu: r = u ? x : b_.CreateSelect(b_.CreateICmpSLT(x, zero), zero, x); break;
      case Op::Not: r = b_.CreateZExt(b_.CreateICmpEQ(x, zero), i64_); break;
      default: fail("unary op ", op_name(op), " on ", dtype_name(in), " has no CPU lowering"); return a;
    }
    return convert(b_, r, DType::i64, out);
  }

  // The fused forms (kir::Intrinsic) with CUDA's math: the tanh forms as sigmoids of 2^x,
  // with a true division (see emit_sigmoid); a division by a row statistic as a product with
  // its reciprocal, which the inner loop computes once: within 1 ulp of the quotient.
  Value* intrinsic(const kir::ExprNode& n) {
    Value* r = nullptr;
    switch (n.intrinsic) {
      case kir::Intrinsic::GeluTanh: {
        Value* x = emit(n.a);
        Value* k1_x2_k0 = call(llvm::Intrinsic::fmuladd, {emit(n.b), b_.CreateFMul(x, x), emit(n.c)});
        r = b_.CreateFDiv(x, b_.CreateFAdd(const_f(1), emit_exp2(b_, b_.CreateFMul(x, k1_x2_k0))));
        break;
      }
      case kir::Intrinsic::OnePlusTanh: {
        Value* e = emit_exp2(b_, b_.CreateFMul(emit(n.a), const_f(-2.0 * M_LOG2E)));
        r = b_.CreateFDiv(const_f(2), b_.CreateFAdd(const_f(1), e));
        break;
      }
      case kir::Intrinsic::MulReciprocal: r = b_.CreateFMul(emit(n.a), b_.CreateFDiv(const_f(1), emit(n.b))); break;
    }
    return convert(b_, r, DType::f32, n.dtype);
  }

  Value* binary(Op op, Value* a, Value* b, DType in, DType out) {
    if (repr(in) == Repr::F) {
      Value* r = nullptr;
      switch (op) {
        case Op::Add: r = b_.CreateFAdd(a, b); break;
        case Op::Sub: r = b_.CreateFSub(a, b); break;
        case Op::Mul: r = b_.CreateFMul(a, b); break;
        case Op::Div: r = b_.CreateFDiv(a, b); break;
        case Op::Pow: r = emit_pow(b_, a, b); break;
        case Op::Fmod: r = b_.CreateFRem(a, b); break;
        case Op::Maximum: r = fmax(a, b); break;
        case Op::Minimum: r = fmin(a, b); break;
        case Op::Eq: return convert(b_, b_.CreateFCmpOEQ(a, b), DType::boolean, out);
        case Op::Ne: return convert(b_, b_.CreateFCmpUNE(a, b), DType::boolean, out);
        case Op::Lt: return convert(b_, b_.CreateFCmpOLT(a, b), DType::boolean, out);
        case Op::Le: return convert(b_, b_.CreateFCmpOLE(a, b), DType::boolean, out);
        case Op::Gt: return convert(b_, b_.CreateFCmpOGT(a, b), DType::boolean, out);
        case Op::Ge: return convert(b_, b_.CreateFCmpOGE(a, b), DType::boolean, out);
        default: fail("binary op ", op_name(op), " on ", dtype_name(in), " has no CPU lowering"); return a;
      }
      return convert(b_, r, in == DType::f64 ? DType::f64 : DType::f32, out);
    }
    Value* x = convert(b_, a, in, DType::i64);
    Value* y = convert(b_, b, in, DType::i64);
    Value* zero = b_.getInt64(0);
    Value* r = nullptr;
    if (is_unsigned(in)) {  // zero-extended (u64: its bits), so unsigned i64 operations are exact
      switch (op) {
        case Op::Div: {
          Value* by0 = b_.CreateICmpEQ(y, zero);
          r = b_.CreateSelect(by0, zero, b_.CreateUDiv(x, b_.CreateSelect(by0, b_.getInt64(1), y)));
          return convert(b_, r, DType::i64, out);
        }
        case Op::Maximum: return convert(b_, b_.CreateSelect(b_.CreateICmpULT(x, y), y, x), DType::i64, out);
        case Op::Minimum: return convert(b_, b_.CreateSelect(b_.CreateICmpULT(y, x), y, x), DType::i64, out);
        case Op::Lt: return convert(b_, b_.CreateICmpULT(x, y), DType::boolean, out);
        case Op::Le: return convert(b_, b_.CreateICmpULE(x, y), DType::boolean, out);
        case Op::Gt: return convert(b_, b_.CreateICmpUGT(x, y), DType::boolean, out);
        case Op::Ge: return convert(b_, b_.CreateICmpUGE(x, y), DType::boolean, out);
        default: break;  // the same bits either way
      }
    }
    switch (op) {
      case Op::Add: r = b_.CreateAdd(x, y); break;
      case Op::Sub: r = b_.CreateSub(x, y); break;
      case Op::Mul: r = b_.CreateMul(x, y); break;
      case Op::Div: {
        // Truncating; x / 0 = 0; x / -1 = -x with wrap-around (no INT64_MIN / -1 trap).
        Value* by0 = b_.CreateICmpEQ(y, zero);
        Value* bym1 = b_.CreateICmpEQ(y, b_.getInt64(-1));
        Value* d = b_.CreateSelect(b_.CreateOr(by0, bym1), b_.getInt64(1), y);
        r = b_.CreateSelect(by0, zero, b_.CreateSelect(bym1, b_.CreateSub(zero, x), b_.CreateSDiv(x, d)));
        break;
      }
      case Op::Maximum: r = b_.CreateSelect(b_.CreateICmpSLT(x, y), y, x); break;
      case Op::Minimum: r = b_.CreateSelect(b_.CreateICmpSLT(y, x), y, x); break;
      case Op::Eq: return convert(b_, b_.CreateICmpEQ(x, y), DType::boolean, out);
      case Op::Ne: return convert(b_, b_.CreateICmpNE(x, y), DType::boolean, out);
      case Op::Lt: return convert(b_, b_.CreateICmpSLT(x, y), DType::boolean, out);
      case Op::Le: return convert(b_, b_.CreateICmpSLE(x, y), DType::boolean, out);
      case Op::Gt: return convert(b_, b_.CreateICmpSGT(x, y), DType::boolean, out);
      case Op::Ge: return convert(b_, b_.CreateICmpSGE(x, y), DType::boolean, out);
      case Op::And:
        return convert(b_, b_.CreateAnd(b_.CreateICmpNE(x, zero), b_.CreateICmpNE(y, zero)), DType::boolean, out);
      case Op::Or:
        return convert(b_, b_.CreateOr(b_.CreateICmpNE(x, zero), b_.CreateICmpNE(y, zero)), DType::boolean, out);
      default: fail("binary op ", op_name(op), " on ", dtype_name(in), " has no CPU lowering"); return a;
    }
    return convert(b_, r, DType::i64, out);
  }

  const kir::Kernel& k_;
  const RowForm& form_;  // k_ is form_.kernel
  const EmitOptions& opts_;
  const Bindings& baked_;
  llvm::LLVMContext& ctx_;
  llvm::IRBuilder<> b_;
  std::unique_ptr<llvm::Module> mod_;
  llvm::Type* f32_ = nullptr;
  llvm::Type* i64_ = nullptr;
  llvm::Function* fn_ = nullptr;
  llvm::BasicBlock* entry_ = nullptr;
  std::vector<std::string> dyn_syms_;
  std::vector<Value*> bufs_;
  absl::flat_hash_map<std::string, Value*> syms_;
  std::vector<Value*> outer_, inner_, stage_results_;
  Value* acc_buf_ = nullptr;  // EmitOptions::gemm_acc_buffer
  Value* flat_ = nullptr;     // flat outer index of the current point
  Value* gemm_acc_ = nullptr;
  absl::flat_hash_map<int, Value*> lets_;
  std::map<int, llvm::AllocaInst*> cache_store_, cache_read_;  // the value cache: let id -> array
  absl::flat_hash_map<const kir::ExprNode*, Value*> cache_;
  llvm::AllocaInst* bad_ = nullptr;  // an index check failed in this range (has_masked_checks)
  bool recording_checks_ = false;    // the second pass: check words only
  absl::Status error_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<llvm::Module>> emit_kernel(const kir::Kernel& k, const std::string& entry_name,
                                                          const EmitOptions& opts, llvm::LLVMContext& ctx) {
  if (!opts.storage.empty() && opts.storage.size() != k.buffers.size())
    return invalid_argument("kernel ", k.name, ": ", opts.storage.size(), " storage entries for ", k.buffers.size(),
                            " buffers");
  RowForm f = row_form(k);
  kir::rewrite_intrinsics(f.kernel);
  return Emitter(f, opts, ctx).emit(entry_name);
}

}  // namespace kiln::cpu
