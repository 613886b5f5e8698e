// The CUDA printer's internals: one entry point of a scheduled kernel as CUDA C. It takes
// no decision: what to vectorize, cache, pair or stream is the kernel's kir::Schedule.
// print_scalar.cc prints types, literals, indices and expressions; print_body.cc a stage's
// lets and stores (lane by lane or in bf16 pairs); emit.cc the entry forms.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "codegen/cuda/code_writer.h"
#include "codegen/kernel_ir.h"
#include "ir/sym.h"

namespace kiln::cuda {

std::string value_type(DType t);    // the register type of a value of dtype t
std::string storage_type(DType t);  // the element type of a buffer of dtype t
std::string float_literal(double v);
std::string int_literal(int64_t v);
// `v` (a value of dtype t) in the storage representation, and back.
std::string to_storage(const std::string& v, DType t);
std::string from_storage(const std::string& v, DType t);
std::string round_float(const std::string& v, DType t);  // a float rounded to t's precision
std::string cast(const std::string& a, DType from, DType to);

// Registers holding `width` loaded elements of dtype t: bf16 pairs as 32-bit words, read by
// kiln_bf2f_at (one instruction per element where a 16-bit element takes two).
struct VecArray {
  std::string type;
  int count;
};
VecArray vec_array(DType t, int width);
// The declaration of `array` for `width` elements of dtype t.
std::string vec_decl(DType t, int width, const std::string& array);
// The load of `width` elements of dtype t at `ptr` into `array`; with `once` (a streamed
// access) under the L2 policy kpol (kiln_policy).
std::string vec_load(DType t, int width, const std::string& ptr, const std::string& array, bool once);

// The vector loads of a stage body held in registers: Load node -> the array holding them.
using Hoisted = absl::flat_hash_map<const kir::ExprNode*, std::string>;

// Which element of a vector chunk an expression is printed for.
struct At {
  const Hoisted* hoisted = nullptr;  // the current body's vector loads, if any
  bool first = false;  // the chunk's first element: the vector var reads <var>_0 (vector addresses)
  int pair = -1;       // in a pair loop, lane 0 or 1: the vector var reads <var>_l<pair>, lets t<id>_<pair>
};

class EntryPrinter {
 public:
  // The scalar entry point of scheduled kernel `k`, or (`vector`) its vector entry point.
  EntryPrinter(const kir::Kernel& k, const Bindings& baked, bool vector);

  std::string print();  // the entry's definition, after a comment naming its buffers

 private:
  // ---- print_scalar.cc: names, indices, expressions ----
  bool is_vector_var(bool outer, int64_t var) const;
  std::string var(bool outer, int64_t v, const At& at) const;
  std::string sym(const std::string& name) const;
  std::string index(const kir::Index& i, const At& at) const;
  std::string dim(const Dim& d) const;
  std::string expr(const kir::Expr& e, const At& at) const;
  std::string intrinsic(const kir::ExprNode& n, DType t, const At& at) const;
  std::string let_name(int id, const At& at) const;
  std::string lane_pos(const At& at) const;
  // The f32 value that a store of `e` into a buffer of dtype t rounds (see print_scalar.cc).
  std::string unrounded(const kir::Stage& st, const kir::Expr& e, DType t, const At& at) const;

  // ---- print_body.cc: a stage's lets and stores ----
  using Fold = std::function<void(const std::string& value, const std::string& lane_pos)>;
  void body(const kir::Stage& st, size_t si, int width, const Fold& fold);
  std::string pair_of(const kir::Stage& st, const kir::Expr& e, const std::set<int>& paired, const Hoisted& h) const;
  std::string new_pair(const kir::Stage& st, const kir::Expr& e, const Hoisted& h) const;
  int vector_position(int buffer, const kir::Index& i) const;  // in the schedule's vector accesses, or -1

  // ---- emit.cc: the entry forms ----
  std::string entry_name() const;
  void signature(int max_threads);
  void decompose(const std::string& flat, const std::vector<Dim>& extents, bool outer, const std::set<int>& used);
  void elementwise();
  void naive_gemm();
  void warp_gemm();
  void stages();
  void rows();
  void cached_chunk_loop(const std::string& chunks);
  void row_cache_preload();

  const kir::Kernel& k_;
  const kir::Schedule& s_;
  const Bindings& baked_;
  const int width_;               // 1 in the scalar entry
  const bool streamed_;           // the entry takes the L2 policy kpol
  const int row_cache_chunks_;    // 0: no row cache in this entry
  const bool warp_gemm_;          // a GEMM kernel computed one warp per output (warp_gemm_form)
  std::map<int, std::string> cache_store_, cache_read_;  // the value cache: let id -> array
  CodeWriter w_;
};

}  // namespace kiln::cuda
