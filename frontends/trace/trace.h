// The tracing frontend: records a kiln::Graph by running ordinary C++ on proxy tensors.
// Every op of ir/ops.def has a free function here; a misuse throws TraceError naming the
// op, the operand types and the C++ call site.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "ir/graph.h"

namespace kiln::trace {

using Loc = std::source_location;

// Thrown for every misuse at trace time; the message starts with "file.cc:LINE: op(...)".
class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tracer;

// One dimension as user code writes it: 4096, "B", or a Dim expression (x.dim(0) * 2).
struct DimArg {
  Dim dim;
  DimArg(int v) : dim(v) {}                                  // NOLINT
  DimArg(int64_t v) : dim(v) {}                              // NOLINT
  DimArg(const char* symbol) : dim(Dim::symbol(symbol)) {}   // NOLINT
  DimArg(const std::string& symbol) : dim(Dim::symbol(symbol)) {}  // NOLINT
  DimArg(Dim d) : dim(std::move(d)) {}                       // NOLINT
};

// A shape as user code writes it: {"B", 4096}, or an existing Shape.
class Dims {
 public:
  Dims(std::initializer_list<DimArg> dims) {  // NOLINT
    for (const DimArg& d : dims) shape_.push_back(d.dim);
  }
  Dims(Shape shape) : shape_(std::move(shape)) {}  // NOLINT
  const Shape& shape() const { return shape_; }

 private:
  Shape shape_;
};

// A C++ number or bool where a tensor is expected: it becomes a rank-0 constant node of
// the dtype of the tensor it meets (x + 1.0f adds a bf16 constant when x is bf16).
struct Scalar {
  std::variant<double, int64_t, bool> value;
  template <typename S>
    requires std::is_arithmetic_v<S>
  Scalar(S s) {  // NOLINT
    if constexpr (std::is_same_v<S, bool>) value = s;
    else if constexpr (std::is_floating_point_v<S>) value = static_cast<double>(s);
    else value = static_cast<int64_t>(s);
  }
};

// A handle to one value of a graph being traced. Cheap to copy; valid while its Tracer
// lives.
class Tensor {
 public:
  Tensor() = default;  // empty: using it as an operand is a TraceError

  DType dtype() const { return value_->dtype(); }
  const Shape& shape() const { return value_->shape(); }
  const TensorType& type() const { return value_->type(); }
  int64_t rank() const { return static_cast<int64_t>(value_->shape().size()); }
  // Size of `axis` (negative counts from the end).
  Dim dim(int64_t axis, Loc loc = Loc::current()) const;
  const std::string& name() const { return value_->name(); }
  bool defined() const { return value_ != nullptr; }
  Value* value() const { return value_; }
  Tracer* tracer() const { return tracer_; }

 private:
  friend class Tracer;
  Tensor(Tracer* t, Value* v) : tracer_(t), value_(v) {}
  Tracer* tracer_ = nullptr;
  Value* value_ = nullptr;
};

// An operand of a free function: a tensor or a scalar.
struct Operand {
  std::variant<Tensor, Scalar> v;
  Operand(const Tensor& t) : v(t) {}  // NOLINT
  Operand(const Scalar& s) : v(s) {}  // NOLINT
  template <typename S>
    requires std::is_arithmetic_v<S>
  Operand(S s) : v(Scalar(s)) {}  // NOLINT
};

// Records a graph. Not copyable or movable: tensors point at it. finish() hands the graph
// over once; afterwards the tracer and its tensors refuse new ops. Nodes appear in the order
// C++ evaluates the calls, and C++ leaves the order of one call's operands open (in
// f(a(), b()) or a() * b()): where the IR's exact order matters, as in a checked-in .kiln
// file, give each such operand its own statement.
class Tracer {
 public:
  explicit Tracer(std::string graph_name = "main");
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Arguments, in signature order. Dims are ints, symbol names or Dim expressions.
  Tensor input(const std::string& name, DType dtype, Dims shape, Loc loc = Loc::current());
  // A state input: a caller-owned buffer (a KV cache) that cache_write updates in place.
  Tensor state(const std::string& name, DType dtype, Dims shape, Loc loc = Loc::current());
  // A parameter without data: bound at run time like an input.
  Tensor param(const std::string& name, DType dtype, Dims shape, Loc loc = Loc::current());
  // A parameter with host data; its type is the data's.
  Tensor param(const std::string& name, std::shared_ptr<const HostTensor> data,
               Loc loc = Loc::current());
  Tensor param(const std::string& name, HostTensor data, Loc loc = Loc::current());
  Tensor constant(Scalar value, DType dtype, Loc loc = Loc::current());
  // A tensor of `shape` holding each element's index along `axis`.
  Tensor iota(Dims shape, int64_t axis, DType dtype = kiln::i64, Loc loc = Loc::current());
  void set_symbol_bounds(const std::string& symbol, int64_t min,
                         std::optional<int64_t> max = std::nullopt, Loc loc = Loc::current());

  // Names an op's result in the IR (values are named after their op by default); returns x.
  Tensor name(const Tensor& x, const std::string& name, Loc loc = Loc::current());
  // Appends x to the graph's outputs, naming it first when `name` is given.
  void output(const Tensor& x, const std::string& name = "", Loc loc = Loc::current());
  // The finished graph, verified. Throws if there are no outputs.
  Graph finish(Loc loc = Loc::current());

  // The graph recorded so far.
  const Graph& graph() const { return graph_; }

  // Appends one node of `op`; what every free function calls. Scalars become constants
  // of the dtype of operand `like` (the first tensor operand when -1).
  std::vector<Tensor> record(Op op, const std::vector<Operand>& operands, Attrs attrs, Loc loc,
                             int like = -1);

 private:
  void check_open(Loc loc, std::string_view what) const;

  Graph graph_;
  bool finished_ = false;
};

// Records `op` on operands that must come from one tracer (at least one a tensor).
std::vector<Tensor> record(Op op, const std::vector<Operand>& operands, Attrs attrs, Loc loc,
                           int like = -1);

// ---- elementwise unary ----------------------------------------------------------------
Tensor neg(const Tensor& x, Loc loc = Loc::current());
Tensor abs(const Tensor& x, Loc loc = Loc::current());
Tensor exp(const Tensor& x, Loc loc = Loc::current());
Tensor log(const Tensor& x, Loc loc = Loc::current());
Tensor sqrt(const Tensor& x, Loc loc = Loc::current());
Tensor rsqrt(const Tensor& x, Loc loc = Loc::current());
Tensor sin(const Tensor& x, Loc loc = Loc::current());
Tensor cos(const Tensor& x, Loc loc = Loc::current());
Tensor tanh(const Tensor& x, Loc loc = Loc::current());
Tensor sigmoid(const Tensor& x, Loc loc = Loc::current());
Tensor relu(const Tensor& x, Loc loc = Loc::current());
Tensor silu(const Tensor& x, Loc loc = Loc::current());
Tensor erf(const Tensor& x, Loc loc = Loc::current());
Tensor atan(const Tensor& x, Loc loc = Loc::current());
Tensor reciprocal(const Tensor& x, Loc loc = Loc::current());
Tensor floor(const Tensor& x, Loc loc = Loc::current());
Tensor ceil(const Tensor& x, Loc loc = Loc::current());
Tensor logical_not(const Tensor& x, Loc loc = Loc::current());  // the IR's `not`
// approximate: "none" or "tanh".
Tensor gelu(const Tensor& x, const std::string& approximate = "none", Loc loc = Loc::current());
Tensor cast(const Tensor& x, DType dtype, Loc loc = Loc::current());

// ---- elementwise binary and where, NumPy broadcasting -----------------------------------
Tensor add(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor sub(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor mul(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor div(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor pow(const Operand& a, const Operand& b, Loc loc = Loc::current());
// C's fmod (the sign of a), floats only: torch.fmod.
Tensor fmod(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor maximum(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor minimum(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor eq(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor ne(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor lt(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor le(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor gt(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor ge(const Operand& a, const Operand& b, Loc loc = Loc::current());
Tensor logical_and(const Operand& a, const Operand& b, Loc loc = Loc::current());  // `and`
Tensor logical_or(const Operand& a, const Operand& b, Loc loc = Loc::current());   // `or`
// Data-dependent choice, elementwise: cond ? a : b. A scalar branch takes the other's dtype.
Tensor where(const Tensor& cond, const Operand& a, const Operand& b, Loc loc = Loc::current());

// ---- reductions (all axes when `axes` is absent) ----------------------------------------
using Axes = std::vector<int64_t>;
Tensor sum(const Tensor& x, std::optional<Axes> axes = std::nullopt, bool keepdim = false,
           Loc loc = Loc::current());
Tensor mean(const Tensor& x, std::optional<Axes> axes = std::nullopt, bool keepdim = false,
            Loc loc = Loc::current());
Tensor max(const Tensor& x, std::optional<Axes> axes = std::nullopt, bool keepdim = false,
           Loc loc = Loc::current());
Tensor min(const Tensor& x, std::optional<Axes> axes = std::nullopt, bool keepdim = false,
           Loc loc = Loc::current());
Tensor prod(const Tensor& x, std::optional<Axes> axes = std::nullopt, bool keepdim = false,
            Loc loc = Loc::current());
Tensor argmax(const Tensor& x, int64_t axis = -1, bool keepdim = false, Loc loc = Loc::current());

// ---- composites -------------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t axis = -1, Loc loc = Loc::current());
Tensor log_softmax(const Tensor& x, int64_t axis = -1, Loc loc = Loc::current());
// Normalizes over `axes` (trailing dims); weight and bias have those dims' shape.
Tensor layer_norm(const Tensor& x, std::optional<Tensor> weight = std::nullopt,
                  std::optional<Tensor> bias = std::nullopt, Axes axes = {-1}, double eps = 1e-5,
                  Loc loc = Loc::current());
Tensor rms_norm(const Tensor& x, std::optional<Tensor> weight = std::nullopt, Axes axes = {-1},
                double eps = 1e-6, Loc loc = Loc::current());
// q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev]; mask (bool or q's dtype) broadcasts to
// [..., Lq, Lk]; scale defaults to 1/sqrt(E).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    std::optional<Tensor> mask = std::nullopt, bool causal = false,
                                    std::optional<double> scale = std::nullopt,
                                    Loc loc = Loc::current());

// The attention op (ops.def): q [B, H, Tq, D], k/v [B, KVH, Tk, D], or paged
// [num_blocks, block_size, KVH, D] with a block_table [B, max_blocks] (then kv_lens is needed).
struct AttentionOptions {
  std::optional<Tensor> mask, kv_lens, block_table;
  bool causal = false;
  std::optional<double> scale;
  int64_t window = 0;    // sliding window (0: none)
  double softcap = 0;    // logit soft-capping (0: none)
};
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts = {},
                 Loc loc = Loc::current());
// Writes new [B, KVH, T, D] into the state `cache` at rows positions[b] + t (through
// block_table for a paged cache); returns the updated cache, which the graph must output.
Tensor cache_write(const Tensor& cache, const Tensor& x, const Tensor& positions,
                   std::optional<Tensor> block_table = std::nullopt, Loc loc = Loc::current());

// Collectives over the `ranks` ranks of a tensor-parallel group (ir/ops_collective.h):
// the sum over the ranks; the ranks' values concatenated along `axis`; the sum, of which
// each rank keeps its chunk along `axis`. passes/shard.h inserts them into a whole graph.
Tensor all_reduce(const Tensor& x, int64_t ranks, Loc loc = Loc::current());
Tensor all_gather(const Tensor& x, int64_t axis, int64_t ranks, Loc loc = Loc::current());
Tensor reduce_scatter(const Tensor& x, int64_t axis, int64_t ranks, Loc loc = Loc::current());

// A call of the extern op registered as `name` (ir/extern_op.h, register_extern_op): its
// results, typed by the registered shape rule. An unknown name or operands the rule rejects
// are TraceErrors.
std::vector<Tensor> extern_call(const std::string& name, const std::vector<Tensor>& inputs, Loc loc = Loc::current());

// ---- linear algebra ---------------------------------------------------------------------
Tensor matmul(const Tensor& a, const Tensor& b, Loc loc = Loc::current());
// x [..., in] times w [out, in] transposed, plus bias [out].
Tensor linear(const Tensor& x, const Tensor& w, std::optional<Tensor> bias = std::nullopt,
              Loc loc = Loc::current());

// ---- convolution and pooling (x [N, C, spatial...]; an empty list: the op's default) ------
// w [Cout, C/groups, k...]; pads [begin..., end...].
Tensor conv(const Tensor& x, const Tensor& w, std::optional<Tensor> bias = std::nullopt, Axes strides = {},
            Axes pads = {}, Axes dilations = {}, int64_t groups = 1, Loc loc = Loc::current());
// w [C, Cout/groups, k...].
Tensor conv_transpose(const Tensor& x, const Tensor& w, std::optional<Tensor> bias = std::nullopt, Axes strides = {},
                      Axes pads = {}, Axes output_padding = {}, int64_t groups = 1, Loc loc = Loc::current());
Tensor max_pool(const Tensor& x, Axes kernel, Axes strides = {}, Axes pads = {}, bool ceil_mode = false,
                Loc loc = Loc::current());
Tensor avg_pool(const Tensor& x, Axes kernel, Axes strides = {}, Axes pads = {}, bool ceil_mode = false,
                bool count_include_pad = false, Loc loc = Loc::current());
// [lead..., s...] -> [lead..., k..., o...] (im2col), pad_value outside x.
Tensor window(const Tensor& x, Axes kernel, Axes strides = {}, Axes pads = {}, double pad_value = 0,
              Loc loc = Loc::current());

// ---- shape and data movement ------------------------------------------------------------
inline constexpr int64_t kToEnd = std::numeric_limits<int64_t>::max();
Tensor reshape(const Tensor& x, Dims shape, Loc loc = Loc::current());  // one dim may be -1
Tensor permute(const Tensor& x, Axes dims, Loc loc = Loc::current());
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1, Loc loc = Loc::current());
Tensor expand(const Tensor& x, Dims shape, Loc loc = Loc::current());
Tensor squeeze(const Tensor& x, std::optional<Axes> axes = std::nullopt, Loc loc = Loc::current());
Tensor unsqueeze(const Tensor& x, Axes axes, Loc loc = Loc::current());  // output positions
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end = kToEnd, int64_t step = 1,
             Loc loc = Loc::current());
Tensor concat(const std::vector<Tensor>& xs, int64_t axis, Loc loc = Loc::current());
std::vector<Tensor> split(const Tensor& x, Dims sizes, int64_t axis, Loc loc = Loc::current());
// index_select: x's `axis` replaced by the shape of the integer `indices`.
Tensor gather(const Tensor& x, const Tensor& indices, int64_t axis = 0, Loc loc = Loc::current());

// ---- operators --------------------------------------------------------------------------
// An operator's tensor operand with its call site: operator functions cannot take a
// defaulted location argument, but a converting constructor can.
struct At {
  const Tensor& t;
  Loc loc;
  At(const Tensor& t, Loc loc = Loc::current()) : t(t), loc(loc) {}  // NOLINT
};

#define KILN_TRACE_BINARY_OPERATOR(sym, fn)                                              \
  inline Tensor operator sym(At a, At b) { return fn(a.t, b.t, a.loc); }                 \
  inline Tensor operator sym(At a, const Scalar& b) { return fn(a.t, b, a.loc); }        \
  inline Tensor operator sym(const Scalar& a, At b) { return fn(a, b.t, b.loc); }
KILN_TRACE_BINARY_OPERATOR(+, add)
KILN_TRACE_BINARY_OPERATOR(-, sub)
KILN_TRACE_BINARY_OPERATOR(*, mul)
KILN_TRACE_BINARY_OPERATOR(/, div)
KILN_TRACE_BINARY_OPERATOR(<, lt)
KILN_TRACE_BINARY_OPERATOR(<=, le)
KILN_TRACE_BINARY_OPERATOR(>, gt)
KILN_TRACE_BINARY_OPERATOR(>=, ge)
KILN_TRACE_BINARY_OPERATOR(==, eq)
KILN_TRACE_BINARY_OPERATOR(!=, ne)
KILN_TRACE_BINARY_OPERATOR(&, logical_and)
KILN_TRACE_BINARY_OPERATOR(|, logical_or)
#undef KILN_TRACE_BINARY_OPERATOR
inline Tensor operator-(At a) { return neg(a.t, a.loc); }
inline Tensor operator!(At a) { return logical_not(a.t, a.loc); }

}  // namespace kiln::trace
