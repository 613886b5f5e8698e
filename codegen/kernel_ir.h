// Kernel IR: the loop-level form of one fused kernel group, consumed by the CUDA and CPU
// backends and by the host evaluator (kernel_eval.h). Small immutable nodes behind cheap
// handles; printing is deterministic.
//
// Shape of a kernel (what every backend emits):
//
//   for each point of `domain` (outer, parallel loop; vars o0..o{n-1}):
//     for each stage, in order:
//       Reduce stage: acc = identity(combiner)
//                     for each point of stage.extents (inner vars r0..): lets; acc = combine(acc, value)
//                     the result s<k> is readable by every LATER stage of this outer point
//       Map stage:    for each point of stage.extents (may be none: once per outer point):
//                     lets; stores
//
// Softmax over the last axis is domain [rows], stages: reduce max, reduce sum of exp(x - s0),
// map storing exp(x - s0) / s1. A GEMM kernel has `gemm` set: before the stages, the
// accumulator acc(o) = sum_k A*B is computed per outer point and its epilogue (a map stage
// with no extents) reads it through Expr::gemm_acc().
//
// Numerics (DESIGN.md): every scalar node carries the dtype the graph gives that value. A
// node of dtype f16/bf16 computes in f32 and rounds its result to its dtype (backends: a
// convert round trip), exactly like the reference evaluator, so fused == reference up to
// the ulps of transcendental functions. Reductions and GEMMs accumulate in `acc_dtype`
// (f32 for float inputs, i64 for integers); the result is cast to the graph's dtype.
//
// Memory safety: lets are evaluated eagerly (no lazy branches), so every load index is in
// bounds by construction: concat's branches load through clamped indices and a select
// picks the branch; gather clamps its indices into the gathered dim, and reports an index
// outside [-dim, dim) through its IndexCheck, so that the call fails as the reference's does.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/dtype.h"
#include "ir/op.h"
#include "ir/sym.h"

namespace kiln {
class Node;
}

namespace kiln::kir {

struct IndexNode;
struct ExprNode;

// An int64 index expression over loop variables, symbols and constants, with floor
// division / modulo by arbitrary (symbolic) index expressions (reshape of symbolic dims
// needs them) and a conversion from an integer scalar (gather's indices).
enum class IndexKind : uint8_t {
  Const,     // value
  Outer,     // outer loop variable o<var>
  Inner,     // inner loop variable r<var> of the enclosing stage (or k of a GEMM)
  Sym,       // a shape symbol, a scalar parameter of the kernel
  Add,       // a + b
  Mul,       // a * b
  FloorDiv,  // a // b (b > 0)
  Mod,       // a % b  (b > 0, result in [0, b))
  Min,       // min(a, b)
  Max,       // max(a, b)
  Scalar,    // the integer value of scalar expression `expr`
};

class Expr;

class Index {
 public:
  Index() = default;  // null handle; only for default-constructed aggregates
  Index(int64_t value);  // NOLINT: constants convert implicitly
  Index(int value) : Index(static_cast<int64_t>(value)) {}  // NOLINT
  static Index outer(int var);
  static Index inner(int var);
  static Index sym(const std::string& name);
  static Index from_dim(const Dim& d);  // a symbolic shape expression
  static Index scalar(const Expr& e);   // requires an integer dtype

  // Constructors fold constants and the identities x+0, x*1, x*0, x//1, x%1.
  friend Index operator+(const Index& a, const Index& b);
  friend Index operator-(const Index& a, const Index& b);
  friend Index operator*(const Index& a, const Index& b);
  static Index floordiv(const Index& a, const Index& b);
  static Index mod(const Index& a, const Index& b);
  static Index min(const Index& a, const Index& b);
  static Index max(const Index& a, const Index& b);

  bool defined() const { return p_ != nullptr; }
  IndexKind kind() const;
  const IndexNode& node() const { return *p_; }
  std::optional<int64_t> constant() const;
  bool same_as(const Index& o) const;  // structural equality

 private:
  explicit Index(std::shared_ptr<const IndexNode> p) : p_(std::move(p)) {}
  std::shared_ptr<const IndexNode> p_;
};

// Scalar expressions. Lets make sharing explicit: a stage's body is a list of lets, each
// one node over loads, constants and earlier lets (three-address form, easy to emit).
enum class ExprKind : uint8_t {
  Const,        // value, in dtype
  Load,         // buffers[id][index]: index is the flat row-major element offset
  Let,          // the let t<id> of the current stage
  StageResult,  // the result of reduce stage s<id> of the current outer point
  GemmAcc,      // the GEMM accumulator of the current outer point (acc_dtype)
  IndexValue,   // the int64 value of `index` (i64)
  Unary,        // op(a): an elementwise unary op of ops.def (not gelu, cast or constant)
  Binary,       // op(a, b): an elementwise binary op of ops.def; operands share a dtype
  Select,       // a ? b : c (a is bool)
  Cast,         // a converted to dtype (round_to_dtype semantics)
  Intrinsic,    // a fused form (Intrinsic) of operands a, b, c, computed in f32, rounded to dtype
};

// Fused forms that a structural rewrite (codegen/intrinsics.h) puts in place of the kernel-IR
// trees they stand for, so that every backend emits its fast sequence for them from structure.
// Each is computed in f32 from f32 operands and rounded once to the node's dtype.
enum class Intrinsic : uint8_t {
  // gelu's tanh form (0.5 x)(1 + tanh(c (x + k x^3))) as x sigmoid(2u) =
  // x / (1 + 2^(x (k0 + k1 x^2))): a = x; b = k1 and c = k0, f32 constants (k0 =
  // -2 c log2(e), k1 = k0 k).
  GeluTanh,
  // 1 + tanh(a) as 2 sigmoid(2a) = 2 / (1 + 2^(-2 a log2(e))): no cancellation near tanh = -1.
  OnePlusTanh,
  // a / b as a * (1 / b), the reciprocal rounded to f32 once: b is a row statistic (a stage
  // result), so a backend computes its reciprocal once per row. Within 1 ulp of the quotient.
  MulReciprocal,
};
std::string_view intrinsic_name(Intrinsic f);

class Expr {
 public:
  Expr() = default;  // null handle; only for default-constructed aggregates
  // A constant of dtype t: a float dtype holds round_to_dtype(value); an integer or bool
  // dtype holds float_to_int(value, t) (ir/dtype.h) exactly, as int_value.
  static Expr constant(double value, DType t);
  // An integer or bool constant, exact: wrap_int(value, t). (Through a double, i64 values
  // beyond 2^53 would change: INT64_MAX became 0, 2^53 + 1 became 2^53.)
  static Expr constant_int(int64_t value, DType t);
  // The constant a Constant node of the graph produces, exact for every dtype as the
  // reference evaluator computes it (ir/reference.cc `constant`).
  static Expr constant_of(const Node& constant);
  static Expr load(int buffer, const Index& index, DType t);
  static Expr let(int id, DType t);
  static Expr stage_result(int stage, DType t);
  static Expr gemm_acc(DType t);
  static Expr index_value(const Index& index);
  static Expr unary(Op op, const Expr& a, DType t);
  static Expr binary(Op op, const Expr& a, const Expr& b, DType t);
  static Expr select(const Expr& c, const Expr& a, const Expr& b);
  static Expr cast(const Expr& a, DType t);  // returns `a` when it already has dtype t
  static Expr intrinsic(Intrinsic f, DType t, const Expr& a, const Expr& b = {}, const Expr& c = {});

  bool defined() const { return p_ != nullptr; }
  ExprKind kind() const;
  DType dtype() const;
  const ExprNode& node() const { return *p_; }
  bool same_as(const Expr& o) const;  // structural equality

 private:
  explicit Expr(std::shared_ptr<const ExprNode> p) : p_(std::move(p)) {}
  std::shared_ptr<const ExprNode> p_;
};

struct IndexNode {
  IndexKind kind = IndexKind::Const;
  int64_t value = 0;  // Const; the variable number of Outer/Inner
  std::string name;   // Sym
  Index a, b;         // operands of Add..Max
  Expr expr;          // Scalar
};

struct ExprNode {
  ExprKind kind = ExprKind::Const;
  DType dtype = DType::f32;
  Op op = Op::Add;    // Unary, Binary
  Intrinsic intrinsic = Intrinsic::GeluTanh;  // Intrinsic
  double value = 0;   // Const of a float dtype (an integer or bool one: int_value, as a double)
  int64_t int_value = 0;  // Const of an integer or bool dtype: exact, in wrap_int form (u64: its bits)
  int id = 0;         // Load: buffer; Let: let id; StageResult: stage
  Index index;        // Load, IndexValue
  Expr a, b, c;       // operands
};

struct Let {
  int id;  // unique in the kernel
  Expr value;
};

struct Store {
  int buffer;
  Index index;  // flat row-major element offset
  Expr value;   // of the buffer's dtype
  // When defined (a bool let): the store happens only where it is true, and `index` is in
  // bounds there (an in-place write of state: cache_write skips rows outside the cache).
  Expr mask = {};
};

enum class Combiner : uint8_t { Sum, Prod, Max, Min, ArgMax };
std::string_view combiner_name(Combiner c);

struct Stage {
  enum class Kind : uint8_t { Map, Reduce };
  Kind kind = Kind::Map;
  std::vector<Dim> extents;  // inner loop nest (vars r0..); empty: once per outer point
  std::vector<Let> lets;     // evaluated in order at every inner point
  std::vector<Store> stores;  // Map
  // Reduce: folds `value` over the inner points. ArgMax's result is the flat inner
  // position (i64) of the first maximum; a NaN counts as the maximum.
  Combiner combiner = Combiner::Sum;
  DType acc_dtype = DType::f32;
  Expr value;
};

struct Buffer {
  // Check: the kernel's index checks (Kernel::checks), i64[2 * checks], after the outputs.
  enum class Role : uint8_t { Input, Output, Check };
  std::string name;  // the graph value's name
  DType dtype;
  Shape shape;       // dense row-major
  Role role;
};

// C[batch.., m, n] = sum_k A[batch.., m, k] * B[batch.., k, n]: the accumulator of each
// outer point. `index` is where an operand's element lies, as a flat offset over the outer
// vars and inner var r0 = k; it already includes the views of KernelGroup::prologue
// (transposes, slices, broadcast batch dims). When it is affine, `strides` gives it as
// offset + sum_d outer[d] * o_d + k * r0, which is what a GEMM library needs (a transposed
// operand has k-stride != 1); otherwise backends use `index` or copy first. An operand's
// buffer may hold f16/bf16 while the GEMM's output is f32 (a widening cast in the prologue,
// as in decomposed attention): elements convert exactly on load, as a bf16 x bf16 -> f32
// library GEMM does.
struct GemmStrides {
  Dim offset;
  std::vector<Dim> outer;  // one per domain dim (0: not used)
  Dim k;
};

struct GemmOperand {
  int buffer = 0;
  Index index;
  std::optional<GemmStrides> strides;
};

struct GemmSpec {
  GemmOperand a, b;
  std::vector<Dim> batch;  // the leading domain dims that are batch dims
  Dim m, n, k;             // after them, the domain dims flattening to m, then n
  int m_dims = 0, n_dims = 0;  // how many domain dims make m, and n (0: a vector operand)
  DType acc_dtype = DType::f32;
};

// offset + sum of coefficient * variable when `i` is affine in the loop variables with
// coefficients free of variables (vars: outer 0..n_outer-1, then inner 0..n_inner-1).
struct AffineIndex {
  Dim offset;
  std::vector<Dim> outer, inner;
};
std::optional<AffineIndex> affine_index(const Index& i, size_t n_outer, size_t n_inner);

// `e` rebuilt bottom-up: a node for which `rewrite` returns an expression is replaced by it
// (its operands are not visited); unary, binary, select, cast and intrinsic nodes are rebuilt
// from their rewritten operands; other nodes are kept.
Expr map_expr(const Expr& e, const std::function<std::optional<Expr>(const Expr&)>& rewrite);
// For map_expr: a load or index value rebuilt with `f` applied to its index; nullopt for
// every other node.
std::optional<Expr> with_index(const Expr& e, const std::function<Index(const Index&)>& f);

// `i` with every loop variable replaced by var(outer, number) (scalar indices inside it too).
Index substitute_vars(const Index& i, const std::function<Index(bool outer, int var)>& var);
Expr substitute_vars(const Expr& e, const std::function<Index(bool outer, int var)>& var);

// Calls f on every node of `e` in pre-order (a node, the scalars inside its index, then its
// operands); a node shared by several parents is visited at each.
void visit_exprs(const Expr& e, const std::function<void(const Expr&)>& f);
// The loop variables `i` reads, the scalars inside it included.
void collect_vars(const Index& i, std::set<int>& outer, std::set<int>& inner);

// A load or store: the element `index` of buffer `buffer`. Two accesses are the same when
// their buffers are and their indices are structurally equal (Index::same_as).
struct Access {
  int buffer = 0;
  Index index;
  bool same_as(const Access& o) const { return buffer == o.buffer && index.same_as(o.index); }
};

// How a kernel runs on the GPU: the decisions of the CUDA scheduling pass
// (codegen/cuda/schedule.h), which the CUDA printer follows without taking any of its own.
// Every kernel gets a scalar entry point (none of the vector decisions below apply to it);
// where `width` > 1 it also gets a vector entry point, which moves `width` consecutive
// elements of the vector var per access and takes the other decisions.
struct Schedule {
  enum class Launch : uint8_t {
    // One grid-stride loop over `work` points of the outer domain (vector entry: work / width
    // chunks of `width` consecutive points of the last domain dim).
    Elementwise,
    // The domain is empty: one grid-stride loop per map stage, the longest has `work` points.
    Stages,
    // One row per outer point (`work` rows of numel(row) inner points): blockDim.x threads
    // cooperate on a row (a multiple of 32), blockDim.y rows share a block.
    Rows,
  };
  Launch launch = Launch::Elementwise;
  Dim work;
  std::vector<Dim> row;  // Rows: the extents of a row (those of the last stage that has any)

  // ---- the vector entry ----
  int width = 1;
  bool vector_outer = true;  // the vector var: the last outer var (Elementwise) or the last row var (Rows)
  int vector_var = -1;
  // The accesses that move `width` elements at once, in the order the stages first make
  // them. `streamed` ones go under the host's L2 policy (kiln_policy: evict-first where the
  // kernel's data exceed the L2 cache): in a Rows kernel, its stores and the loads whose
  // index takes every outer and row var (each element is read once).
  struct VectorAccess {
    Access access;
    bool streamed = false;
  };
  std::vector<VectorAccess> vector;
  // The vector entry is valid when every `divisible` dim is a multiple of `width` and every
  // buffer in `aligned` (ascending) starts at a 16-byte aligned address.
  std::vector<Dim> divisible;
  std::vector<int> aligned;
  bool streams_l2 = false;  // the vector entry takes the L2 policy (a Rows kernel's)
  // Rows: the row cache. The vector loads that several stages read (positions in `vector`),
  // loaded once per row into registers, row_cache_chunks chunks of `width` per thread; with
  // row_threads > 0 the entry is written for exactly that blockDim.x (no guard at the row's end).
  std::vector<int> row_cache;
  int row_cache_chunks = 0;
  int row_threads = 0;
  // Rows with a row cache: the value cache. The value of let `let` is kept in registers
  // (array ec<position>) by the stage computing it and read there by the lets `readers` of
  // later stages, which recompute it (recomputed_lets).
  struct CachedValue {
    int let = 0;
    std::vector<int> readers;
  };
  std::vector<CachedValue> value_cache;
  // Per stage, where the vector entry goes two lanes at a time (bf16 pairs): the lets that
  // one packed bf16x2 instruction computes, and every let (those and their operands, and
  // lets stored as pairs) whose pair of lanes is kept as one 32-bit word. Empty: lane by lane.
  struct Pairs {
    std::vector<int> packed;
    std::vector<int> paired;
  };
  std::vector<Pairs> pairs;  // one per stage, or none
};
std::string_view launch_name(Schedule::Launch l);

// A gather's index check. Where the index the kernel reads lies outside [-dim, dim) (the
// reference's error), a masked store writes word 2c of the kernel's Check buffer with dim + 1
// (nonzero: it fired, and the range without the call's bindings) and word 2c + 1 with the
// index. Plain stores: any offending index is a correct report, so racing writers need no
// atomics. The kernel runs on with the index clamped; the executor reports the error
// (runtime/executor.h, RELIABILITY.md "Index checks").
struct IndexCheck {
  std::string node;  // the gather's result, as the reference names it ("g" of "gather %g")
  int axis = 0;
  Dim dim;  // the gathered dim
};

// The error of a check whose two words are `words` (the reference's, "gather %g: index 7 out
// of range [-5, 5) on axis 0"); OK while they are zero.
absl::Status index_check_error(const IndexCheck& c, const int64_t* words);

struct Kernel {
  std::string name;                  // deterministic: "k<group id>_<op>"
  std::vector<Buffer> buffers;       // inputs then outputs
  std::vector<std::string> symbols;  // sorted; scalar int64 parameters
  std::vector<Dim> domain;           // outer loop nest (vars o0..)
  std::optional<GemmSpec> gemm;
  std::vector<Stage> stages;
  std::optional<Schedule> schedule;  // set by a scheduling pass (codegen/cuda/schedule.h)
  std::vector<IndexCheck> checks;    // check c writes words 2c, 2c + 1 of the Check buffer
};

// Readable, deterministic text of a kernel (its schedule last, when it has one): what `kiln
// compile --dump-dir` writes.
std::string print_kernel(const Kernel& k);
std::string print_index(const Index& i, const Kernel* k = nullptr);
std::string print_expr(const Expr& e, const Kernel* k = nullptr);  // names buffers when k is given

// Lets of `k` that recompute a costly float value (exp, log, tanh, erf, sin, cos, sigmoid,
// silu, pow) which a let of an earlier stage over the same extents already computed at the
// same inner point, as softmax's output recomputes the exp(x - max) of its sum: each such
// let's id mapped to the id of the first let computing the value. A backend that keeps the
// first let's values of a row can read them instead.
std::map<int, int> recomputed_lets(const Kernel& k);

// The value of let t<id> of `k`, wherever it is; null if there is none.
const Expr* let_value(const Kernel& k, int id);

}  // namespace kiln::kir
