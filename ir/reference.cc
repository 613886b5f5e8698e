// The reference evaluator. Its numeric decisions are final; every later test relies on them:
//
// - Elementwise float ops on f32/f16/bf16 compute in f32 (float, not double, so a float
//   kernel matches) and round to the storage dtype on every op's output; on f64 in double.
// - Reductions (sum mean prod max min), matmul and linear accumulate in f64 and round once on
//   output. Composites (softmax, log_softmax, layer_norm, rms_norm, scaled_dot_product_attention)
//   are one op: computed in f64 throughout, rounded once on output. "Once" is exact: an f64
//   value goes to f16/bf16 through float with round-to-odd (store_f64), so no double rounding.
// - Broadcasting follows NumPy. Comparisons give bool; NaN compares false (ne: true).
// - Integers (i8 i16 i32 i64 u8 u16 u32 u64): add/sub/mul/neg wrap as two's complement in
//   the dtype's width, as numpy and torch; div truncates toward zero and x / 0 is 0 (no trap);
//   abs(INT_MIN) is INT_MIN; sum and prod accumulate in int64 and wrap to the dtype. On the
//   unsigned types div, maximum/minimum, the comparisons and max/min/argmax are unsigned
//   (abs and relu are the identity). pow and mean are float-only (the op rules reject integers).
// - maximum/minimum and the max/min reductions propagate NaN (as torch). argmax returns the
//   index of the first maximum, NaN counting as the maximum (the first NaN wins), as i64.
//   max/min/argmax over an empty axis are errors; sum is 0, prod 1, mean NaN there.
// - gelu "none": 0.5x(1+erf(x/sqrt2)); "tanh": 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))).
//   silu: x*sigmoid(x); sigmoid: 1/(1+exp(-x)); rsqrt: 1/sqrt(x); relu keeps NaN.
// - cast: float->int truncates toward zero, NaN/inf -> 0, wrapping as kiln::float_to_int
//   says; int->int wraps to the target's width (sign- or zero-extending by the source's
//   type); anything->bool is != 0 (NaN -> true); bool->number 0/1; int->f64 is a C++ cast,
//   int->float rounds like a C++ cast to float, then to f16/bf16 with round-to-nearest-even.
// - layer_norm: biased variance, (x-mean)/sqrt(var+eps)*w+b; rms_norm: x/sqrt(mean(x^2)+eps)*w.
//   softmax/log_softmax subtract the row max first.
// - scaled_dot_product_attention: scores = q @ k^T * scale (default 1/sqrt(E)); causal masks
//   j > i (top-left aligned, as torch's is_causal); a bool mask keeps positions where true; a
//   float mask is added; softmax over the last axis; @ v. A row with every position masked is
//   NaN (as torch's math backend). attention (ops.def) likewise, and a query that sees no key
//   (every one masked, past kv_lens, outside the causal window) is NaN.
// - cache_write copies rows exactly; a row outside the cache, a block table entry outside it,
//   or one row written twice by one call is an error naming the sequence and token.
// - matmul: NumPy rules (1-D operands promoted, the dim removed after; batch dims broadcast).
//   linear(x, w[out, in], bias?) = x @ w^T + bias, the bias added in f64 before rounding.
// - Views copy elements exactly. slice follows Python (negative start/end/step, clamped);
//   gather wraps a negative index once (i + dim), and an index still out of range is an error
//   naming the node and the index (an empty result reads no index and checks none). squeeze without axes removes the
//   dims that are 1 in the graph's (symbolic) type, so a symbol bound to 1 stays.
// - conv, conv_transpose: direct loops over the window in f64, the bias added before the single
//   rounding (as linear). max_pool: the window's maximum, NaN propagating, -inf where the window
//   holds padding only; avg_pool: the f64 mean of the window's elements inside x (with
//   count_include_pad: their sum over the count of its positions inside the padded extent).
//   window copies exactly, pad_value outside x.
// - Collectives (evaluate_ranks: one graph as N ranks, node by node in lockstep): all_reduce
//   sums the ranks' operands in rank order in f64 (integers in int64, wrapping) and rounds
//   once; all_gather concatenates them along its axis in rank order; reduce_scatter is
//   all_reduce's sum of which rank r keeps chunk r along its axis. The ranks' operands must
//   have one shape, and the op's `ranks` must be the number of ranks evaluated.
// - Each node's results must have the shapes its symbolic types evaluate to under the
//   argument bindings; a disagreement (e.g. a symbolic slice whose bounds clamp) is an error.
#include "ir/reference.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "ir/checked.h"
#include "ir/extern_op.h"
#include "ir/index_error.h"
#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/ops_collective.h"
#include "ir/scalar_ops.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

static_assert(std::endian::native == std::endian::little, "HostTensor bytes are little-endian");

using Dims = std::vector<int64_t>;
using Tensors = std::vector<HostTensor>;
using Result = absl::StatusOr<Tensors>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int64_t count(const Dims& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string dims_str(const Dims& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

Dims strides_of(const Dims& s) {
  Dims st(s.size(), 1);
  for (size_t i = s.size(); i-- > 1;) st[i - 1] = st[i] * s[i];
  return st;
}

// Row-major strides of `shape`'s leading (rank - inner) dims, right-aligned to `batch_rank`
// dims and 0 where a dim is 1, so that walking a broadcast batch reads the right element.
Dims batch_strides(const Dims& shape, size_t inner, size_t batch_rank) {
  Dims st = strides_of(shape), out(batch_rank, 0);
  size_t nb = shape.size() - inner, off = batch_rank - nb;
  for (size_t i = 0; i < nb; ++i) out[off + i] = shape[i] == 1 ? 0 : st[i];
  return out;
}

Dims broadcast_strides(const Dims& shape, size_t rank) { return batch_strides(shape, 0, rank); }

absl::StatusOr<Dims> broadcast(const Dims& a, const Dims& b) {
  size_t n = std::max(a.size(), b.size());
  Dims out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      return invalid_argument("cannot broadcast ", dims_str(a), " with ", dims_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Calls f(i, offsets) for every element of `shape` in row-major order i, where
// offsets[k] = base[k] + sum over d of index[d] * strides[k][d].
template <size_t N, typename F>
void walk(const Dims& shape, const std::array<Dims, N>& strides, std::array<int64_t, N> off, F&& f) {
  int64_t n = count(shape);
  size_t r = shape.size();
  Dims idx(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    f(i, off);
    // Wrapping (unsigned) steps: after the last element the offsets run one step past the
    // tensor, which may leave int64 for a negative stride; they are never used there.
    for (size_t d = r; d-- > 0;) {
      for (size_t k = 0; k < N; ++k) off[k] = static_cast<int64_t>(static_cast<uint64_t>(off[k]) + static_cast<uint64_t>(strides[k][d]));
      if (++idx[d] < shape[d]) break;
      for (size_t k = 0; k < N; ++k)
        off[k] = static_cast<int64_t>(static_cast<uint64_t>(off[k]) - static_cast<uint64_t>(strides[k][d]) * static_cast<uint64_t>(shape[d]));
      idx[d] = 0;
    }
  }
}

std::vector<double> doubles(const HostTensor& t) {
  std::vector<double> v(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.get(i);
  return v;
}

std::vector<int64_t> ints(const HostTensor& t) {
  std::vector<int64_t> v(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.get_int(i);
  return v;
}

// Stores an f64 result with a single rounding to t's float dtype. HostTensor::set goes
// through float, which would round twice for f16/bf16; rounding to float with
// round-to-odd first keeps the final round-to-nearest-even exact (float carries more than
// two extra bits beyond either 16-bit format).
void store_f64(HostTensor& t, int64_t i, double v) {
  if (t.dtype() == DType::f32 || t.dtype() == DType::f64 || !is_float(t.dtype()) || std::isnan(v)) {
    t.set(i, v);
    return;
  }
  float f = static_cast<float>(v);
  if (std::isinf(f) && !std::isinf(v)) f = std::copysign(std::numeric_limits<float>::max(), static_cast<float>(v));
  else if (std::fabs(static_cast<double>(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
  if (static_cast<double>(f) != v) f = std::bit_cast<float>(std::bit_cast<uint32_t>(f) | 1u);
  t.set(i, f);
}

// Flat indices of `shape`'s elements with the (sorted) `axes` varying fastest: each run of
// prod(shape[axes]) entries is one group, and groups follow the row-major order of the other
// axes, which is the row-major order of a reduction's output.
std::vector<int64_t> grouped_order(const Dims& shape, const std::vector<int64_t>& axes) {
  Dims st = strides_of(shape), pshape, pstrides;
  for (size_t i = 0; i < shape.size(); ++i)
    if (std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) == axes.end()) {
      pshape.push_back(shape[i]);
      pstrides.push_back(st[i]);
    }
  for (int64_t a : axes) {
    pshape.push_back(shape[a]);
    pstrides.push_back(st[a]);
  }
  std::vector<int64_t> order(count(shape));
  walk<1>(pshape, {pstrides}, {0}, [&](int64_t i, const auto& off) { order[i] = off[0]; });
  return order;
}

// Copies raw elements: dst[dst_off + idx . dst_strides] = src[src_off + idx . src_strides]
// for every index of `shape`. Exact for every dtype.
void copy_strided(const HostTensor& src, const Dims& src_strides, int64_t src_off, HostTensor& dst,
                  const Dims& dst_strides, int64_t dst_off, const Dims& shape) {
  int64_t size = dtype_size(src.dtype());
  const uint8_t* s = src.data();
  uint8_t* d = dst.data();
  walk<2>(shape, {src_strides, dst_strides}, {src_off, dst_off}, [&](int64_t, const auto& off) {
    std::memcpy(d + off[1] * size, s + off[0] * size, size);
  });
}

// The elements of `src` in a tensor of another shape with the same count.
HostTensor reshaped(const HostTensor& src, Dims shape) {
  HostTensor out(src.dtype(), std::move(shape));
  if (src.nbytes() > 0) std::memcpy(out.data(), src.data(), src.nbytes());
  return out;
}

// Whether `r` has a representable byte size under `b` that is within the allocation limit.
absl::Status result_fits(const Value& r, const Bindings& b) {
  std::string what = str_cat("%", r.name());
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> dims, evaluate_shape(r.shape(), b));
  KILN_ASSIGN_OR_RETURN(int64_t bytes, checked_nbytes(r.dtype(), dims, what));
  return check_allocation(bytes, host_allocation_limit(), what);
}

// ---- one node ---------------------------------------------------------------------

struct Ctx {
  const Node& node;
  const Bindings& bindings;
  std::vector<const HostTensor*> in;
  const HostTensor& x(size_t i = 0) const { return *in[i]; }
};

absl::StatusOr<std::vector<int64_t>> axes_of(const std::vector<int64_t>& axes, int64_t rank) {
  absl::StatusOr<std::vector<int64_t>> ax = normalize_axes(axes, rank);
  if (ax.ok()) std::sort(ax->begin(), ax->end());
  return ax;
}

absl::StatusOr<Dims> eval_dims(const std::vector<SymExpr>& dims, const Bindings& b) {
  Dims out;
  for (const SymExpr& d : dims) {
    KILN_ASSIGN_OR_RETURN(int64_t v, d.evaluate(b));
    out.push_back(v);
  }
  return out;
}

Result unary(const Ctx& c) {
  const HostTensor& x = c.x();
  HostTensor out(x.dtype(), x.shape());
  Op op = c.node.op();
  if (op == Op::Not) {
    for (int64_t i = 0; i < x.numel(); ++i) out.set_int(i, !x.get_int(i));
  } else if (x.dtype() == DType::f64) {
    bool tanh_gelu = op == Op::Gelu && GeluAttrs(c.node).approximate() == "tanh";
    for (int64_t i = 0; i < x.numel(); ++i) out.set(i, unary_float(op, x.get(i), tanh_gelu));
  } else if (is_float(x.dtype())) {
    bool tanh_gelu = op == Op::Gelu && GeluAttrs(c.node).approximate() == "tanh";
    for (int64_t i = 0; i < x.numel(); ++i)
      out.set(i, unary_float(op, static_cast<float>(x.get(i)), tanh_gelu));
  } else {
    // Integers: two's complement in int64; set_int wraps the result to the dtype's width.
    for (int64_t i = 0; i < x.numel(); ++i) {
      std::optional<int64_t> v = unary_int(op, x.get_int(i), is_unsigned(x.dtype()));
      if (!v) return invalid_argument(op_name(op), " is not defined on ", x.type_string());
      out.set_int(i, *v);
    }
  }
  return Tensors{std::move(out)};
}

Result cast(const Ctx& c) {
  const HostTensor& x = c.x();
  DType to = CastAttrs(c.node).dtype();
  HostTensor out(to, x.shape());
  bool from_u64 = x.dtype() == DType::u64;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (to == DType::boolean) out.set_int(i, x.get(i) != 0);
    else if (is_float(x.dtype())) out.set(i, x.get(i));  // HostTensor::set rounds, or truncates and wraps
    else if (to == DType::f64) out.set(i, from_u64 ? static_cast<double>(static_cast<uint64_t>(x.get_int(i)))
                                                   : static_cast<double>(x.get_int(i)));
    else if (is_float(to)) out.set(i, from_u64 ? static_cast<float>(static_cast<uint64_t>(x.get_int(i)))
                                               : static_cast<float>(x.get_int(i)));
    else out.set_int(i, x.get_int(i));  // set_int wraps to the target's width
  }
  return Tensors{std::move(out)};
}

// Read from the attribute rather than through constant_value (ir/op_attrs.h), whose double
// cannot hold every i64.
Result constant(const Ctx& c) {
  HostTensor out(ConstantAttrs(c.node).dtype(), {});
  const AttrValue& v = ConstantAttrs(c.node).value();
  if (const double* d = std::get_if<double>(&v)) out.set(0, *d);
  else if (const bool* b = std::get_if<bool>(&v)) out.set_int(0, *b);
  else if (out.dtype() == DType::f64) out.set(0, static_cast<double>(std::get<int64_t>(v)));
  else if (is_float(out.dtype())) out.set(0, static_cast<float>(std::get<int64_t>(v)));
  else out.set_int(0, std::get<int64_t>(v));
  return Tensors{std::move(out)};
}

Result iota(const Ctx& c) {
  IotaAttrs a(c.node);
  KILN_ASSIGN_OR_RETURN(Dims shape, eval_dims(a.shape(), c.bindings));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({a.axis()}, shape.size()));
  HostTensor out(a.dtype(), shape);
  int64_t inner = 1;
  for (size_t i = ax[0] + 1; i < shape.size(); ++i) inner *= shape[i];
  int64_t n = shape[ax[0]];
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t v = (i / inner) % n;
    if (is_float(out.dtype())) out.set(i, static_cast<double>(v));
    else out.set_int(i, v);
  }
  return Tensors{std::move(out)};
}

Result binary(const Ctx& c) {
  const HostTensor &a = c.x(0), &b = c.x(1);
  KILN_ASSIGN_OR_RETURN(Dims shape, broadcast(a.shape(), b.shape()));
  DType out_t = c.node.result()->dtype();
  HostTensor out(out_t, shape);
  Op op = c.node.op();
  std::array<Dims, 2> st{broadcast_strides(a.shape(), shape.size()), broadcast_strides(b.shape(), shape.size())};
  if (a.dtype() == DType::f64) {
    std::vector<double> av = doubles(a), bv = doubles(b);
    walk<2>(shape, st, {0, 0}, [&](int64_t i, const auto& o) { out.set(i, binary_float(op, av[o[0]], bv[o[1]])); });
  } else if (is_float(a.dtype())) {
    std::vector<double> av = doubles(a), bv = doubles(b);
    walk<2>(shape, st, {0, 0}, [&](int64_t i, const auto& o) {
      out.set(i, binary_float(op, static_cast<float>(av[o[0]]), static_cast<float>(bv[o[1]])));
    });
  } else {
    std::vector<int64_t> av = ints(a), bv = ints(b);
    bool u = is_unsigned(a.dtype());
    walk<2>(shape, st, {0, 0}, [&](int64_t i, const auto& o) { out.set_int(i, binary_int(op, av[o[0]], bv[o[1]], u)); });
  }
  return Tensors{std::move(out)};
}

Result where(const Ctx& c) {
  const HostTensor &cond = c.x(0), &a = c.x(1), &b = c.x(2);
  KILN_ASSIGN_OR_RETURN(Dims ab, broadcast(a.shape(), b.shape()));
  KILN_ASSIGN_OR_RETURN(Dims shape, broadcast(cond.shape(), ab));
  HostTensor out(a.dtype(), shape);
  size_t r = shape.size();
  int64_t size = dtype_size(a.dtype());
  walk<3>(shape, {broadcast_strides(cond.shape(), r), broadcast_strides(a.shape(), r), broadcast_strides(b.shape(), r)},
          {0, 0, 0}, [&](int64_t i, const auto& o) {
            const uint8_t* src = cond.data()[o[0]] ? a.data() + o[1] * size : b.data() + o[2] * size;
            std::memcpy(out.data() + i * size, src, size);
          });
  return Tensors{std::move(out)};
}

Result reduce(const Ctx& c) {
  const HostTensor& x = c.x();
  Op op = c.node.op();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, reduction_axes(c.node));
  bool keepdim = reduction_keepdim(c.node);
  Dims shape;
  int64_t group = 1;
  for (int64_t i = 0; i < x.rank(); ++i) {
    bool reduced = std::binary_search(ax.begin(), ax.end(), i);
    if (reduced) group *= x.shape()[i];
    if (!reduced) shape.push_back(x.shape()[i]);
    else if (keepdim) shape.push_back(1);
  }
  HostTensor out(op == Op::ArgMax ? DType::i64 : x.dtype(), shape);
  if (group == 0 && out.numel() > 0 && (op == Op::Max || op == Op::Min || op == Op::ArgMax))
    return invalid_argument(op_name(op), " over an empty axis of ", x.type_string());
  std::vector<int64_t> order = grouped_order(x.shape(), ax);
  if (is_float(x.dtype())) {
    std::vector<double> v = doubles(x);
    for (int64_t g = 0; g < out.numel(); ++g) {
      const int64_t* idx = order.data() + g * group;
      double acc = op == Op::Prod ? 1 : op == Op::Max ? -kInf : op == Op::Min ? kInf : 0;
      int64_t best = 0;
      for (int64_t j = 0; j < group; ++j) {
        double e = v[idx[j]];
        switch (op) {
          case Op::Sum: case Op::Mean: acc += e; break;
          case Op::Prod: acc *= e; break;
          case Op::Max: acc = std::isnan(acc) || std::isnan(e) ? kNaN : std::max(acc, e); break;
          case Op::Min: acc = std::isnan(acc) || std::isnan(e) ? kNaN : std::min(acc, e); break;
          default:  // ArgMax: the first NaN, else the first strict maximum
            if (std::isnan(v[idx[best]])) break;
            if (std::isnan(e) || e > v[idx[best]]) best = j;
        }
      }
      if (op == Op::ArgMax) out.set_int(g, best);
      else store_f64(out, g, op == Op::Mean ? acc / static_cast<double>(group) : acc);
    }
  } else {
    std::vector<int64_t> v = ints(x);
    bool u = is_unsigned(x.dtype());
    auto less = [u](int64_t a, int64_t b) { return u ? static_cast<uint64_t>(a) < static_cast<uint64_t>(b) : a < b; };
    for (int64_t g = 0; g < out.numel(); ++g) {
      const int64_t* idx = order.data() + g * group;
      uint64_t acc = op == Op::Prod ? 1 : 0;  // Sum/Prod wrap in int64, then in the dtype
      int64_t best = 0, m = group > 0 ? v[idx[0]] : 0;
      for (int64_t j = 0; j < group; ++j) {
        int64_t e = v[idx[j]];
        switch (op) {
          case Op::Sum: acc += static_cast<uint64_t>(e); break;
          case Op::Prod: acc *= static_cast<uint64_t>(e); break;
          case Op::Max: m = less(m, e) ? e : m; break;
          case Op::Min: m = less(e, m) ? e : m; break;
          case Op::ArgMax: if (less(v[idx[best]], e)) best = j; break;
          default: return invalid_argument(op_name(op), " is not defined on ", x.type_string());
        }
      }
      out.set_int(g, op == Op::ArgMax ? best : op == Op::Max || op == Op::Min ? m : static_cast<int64_t>(acc));
    }
  }
  return Tensors{std::move(out)};
}

Result softmax(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({SoftmaxAttrs(c.node).axis()}, x.rank()));
  int64_t n = x.shape()[ax[0]];
  HostTensor out(x.dtype(), x.shape());
  if (n == 0) return Tensors{std::move(out)};
  std::vector<double> v = doubles(x);
  std::vector<int64_t> order = grouped_order(x.shape(), ax);
  bool log = c.node.op() == Op::LogSoftmax;
  for (int64_t g = 0; g < x.numel() / n; ++g) {
    const int64_t* idx = order.data() + g * n;
    double m = -kInf, sum = 0;
    for (int64_t j = 0; j < n; ++j) m = std::isnan(m) || std::isnan(v[idx[j]]) ? kNaN : std::max(m, v[idx[j]]);
    for (int64_t j = 0; j < n; ++j) sum += std::exp(v[idx[j]] - m);
    for (int64_t j = 0; j < n; ++j)
      store_f64(out, idx[j], log ? v[idx[j]] - m - std::log(sum) : std::exp(v[idx[j]] - m) / sum);
  }
  return Tensors{std::move(out)};
}

// layer_norm(x, w?, b?) and rms_norm(x, w?) over trailing axes, whose elements are
// contiguous and laid out like the weight's.
Result norm(const Ctx& c) {
  const HostTensor& x = c.x();
  bool layer = c.node.op() == Op::LayerNorm;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax,
                        axes_of(layer ? LayerNormAttrs(c.node).axes() : RmsNormAttrs(c.node).axes(), x.rank()));
  double eps = layer ? LayerNormAttrs(c.node).eps() : RmsNormAttrs(c.node).eps();
  int64_t n = 1;
  for (int64_t a : ax) n *= x.shape()[a];
  HostTensor out(x.dtype(), x.shape());
  if (n == 0) return Tensors{std::move(out)};
  std::vector<double> v = doubles(x);
  std::vector<double> w = c.in.size() > 1 ? doubles(c.x(1)) : std::vector<double>(n, 1.0);
  std::vector<double> b = c.in.size() > 2 ? doubles(c.x(2)) : std::vector<double>(n, 0.0);
  for (int64_t g = 0; g < x.numel() / n; ++g) {
    const double* row = v.data() + g * n;
    double mean = 0, var = 0;
    if (layer) {
      for (int64_t j = 0; j < n; ++j) mean += row[j];
      mean /= static_cast<double>(n);
    }
    for (int64_t j = 0; j < n; ++j) var += (row[j] - mean) * (row[j] - mean);
    double inv = 1.0 / std::sqrt(var / static_cast<double>(n) + eps);
    for (int64_t j = 0; j < n; ++j) store_f64(out, g * n + j, (row[j] - mean) * inv * w[j] + b[j]);
  }
  return Tensors{std::move(out)};
}

Result sdpa(const Ctx& c) {
  const HostTensor &q = c.x(0), &k = c.x(1), &v = c.x(2);
  const HostTensor* mask = c.in.size() > 3 ? c.in[3] : nullptr;
  size_t r = q.shape().size();
  int64_t lq = q.shape()[r - 2], e = q.shape()[r - 1], lk = k.shape()[r - 2], ev = v.shape()[r - 1];
  if (k.shape()[r - 1] != e || v.shape()[r - 2] != lk)
    return invalid_argument("q ", q.type_string(), ", k ", k.type_string(), ", v ", v.type_string(), " do not fit");
  auto batch_of = [&](const HostTensor& t) { return Dims(t.shape().begin(), t.shape().end() - 2); };
  KILN_ASSIGN_OR_RETURN(Dims batch, broadcast(batch_of(q), batch_of(k)));
  KILN_ASSIGN_OR_RETURN(batch, broadcast(batch, batch_of(v)));
  size_t nb = batch.size();
  Dims scores_shape = batch, out_shape = batch;
  scores_shape.insert(scores_shape.end(), {lq, lk});
  out_shape.insert(out_shape.end(), {lq, ev});
  Dims mask_st(r, 0);
  if (mask) {
    absl::StatusOr<Dims> ms = broadcast(scores_shape, mask->shape());
    if (!ms.ok() || *ms != scores_shape)
      return invalid_argument("mask ", mask->type_string(), " does not broadcast to ", dims_str(scores_shape));
    mask_st = broadcast_strides(mask->shape(), r);
  }
  double scale = SdpaAttrs(c.node).scale().value_or(1.0 / std::sqrt(static_cast<double>(e)));
  bool causal = SdpaAttrs(c.node).causal();
  std::vector<double> qd = doubles(q), kd = doubles(k), vd = doubles(v), md;
  bool bool_mask = mask && mask->dtype() == DType::boolean;
  if (mask) md = doubles(*mask);
  HostTensor out(q.dtype(), out_shape);
  std::vector<double> s(lk), acc(ev);
  Dims mask_batch(mask_st.begin(), mask_st.begin() + nb);
  walk<4>(batch, {batch_strides(q.shape(), 2, nb), batch_strides(k.shape(), 2, nb), batch_strides(v.shape(), 2, nb), mask_batch},
          {0, 0, 0, 0}, [&](int64_t bi, const auto& o) {
    for (int64_t i = 0; i < lq; ++i) {
      double m = -kInf;
      for (int64_t j = 0; j < lk; ++j) {
        double dot = 0;
        for (int64_t t = 0; t < e; ++t) dot += qd[o[0] + i * e + t] * kd[o[1] + j * e + t];
        s[j] = dot * scale;
        if (causal && j > i) s[j] = -kInf;
        if (mask) {
          double mv = md[o[3] + i * mask_st[r - 2] + j * mask_st[r - 1]];
          if (bool_mask) s[j] = mv != 0 ? s[j] : -kInf;
          else s[j] += mv;
        }
        m = std::isnan(m) || std::isnan(s[j]) ? kNaN : std::max(m, s[j]);
      }
      double sum = 0;  // all positions masked: m = -inf, exp(NaN) makes the row NaN
      for (int64_t j = 0; j < lk; ++j) sum += s[j] = std::exp(s[j] - m);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < lk; ++j)
        for (int64_t t = 0; t < ev; ++t) acc[t] += s[j] / sum * vd[o[2] + j * ev + t];
      for (int64_t t = 0; t < ev; ++t) store_f64(out, (bi * lq + i) * ev + t, acc[t]);
    }
  });
  return Tensors{std::move(out)};
}

// attention (ops.def): GQA query head h reads kv head h / (H / KVH); a paged k/v row j of
// sequence b lives in block block_table[b, j / block_size], read only for j < kv_lens[b].
Result attention(const Ctx& c) {
  AttentionOperands ops = attention_operands(c.node);
  AttentionAttrs at(c.node);
  const HostTensor &q = c.x(0), &k = c.x(1), &v = c.x(2);
  const HostTensor* mask = ops.mask ? c.in[*ops.mask] : nullptr;
  const HostTensor* table = ops.block_table ? c.in[*ops.block_table] : nullptr;
  const Dims& qs = q.shape();
  int64_t nb = qs[0], h = qs[1], tq = qs[2], d = qs[3], dv = v.shape()[3];
  int64_t kvh = table ? k.shape()[2] : k.shape()[1], bs = table ? k.shape()[1] : 0;
  int64_t mb = table ? table->shape()[1] : 0, tk = table ? mb * bs : k.shape()[2];
  std::vector<int64_t> lens(nb, tk);
  if (ops.kv_lens)
    for (int64_t b = 0; b < nb; ++b) {
      lens[b] = c.x(*ops.kv_lens).get_int(b);
      if (lens[b] < 0 || lens[b] > tk)
        return invalid_argument("kv_lens[", b, "] = ", lens[b], " is outside [0, ", tk, "]");
    }
  // Element offset of key/value row j of sequence b, kv head g (times the row's width).
  auto row = [&](int64_t b, int64_t g, int64_t j) -> absl::StatusOr<int64_t> {
    if (!table) return (b * kvh + g) * tk + j;
    int64_t blk = table->get_int(b * mb + j / bs);
    if (blk < 0 || blk >= k.shape()[0])
      return invalid_argument("block_table[", b, ", ", j / bs, "] = ", blk, " is outside [0, ", k.shape()[0], ")");
    return (blk * bs + j % bs) * kvh + g;
  };
  Dims mask_st = mask ? broadcast_strides(mask->shape(), 4) : Dims(4, 0);
  std::vector<double> qd = doubles(q), kd = doubles(k), vd = doubles(v), md = mask ? doubles(*mask) : std::vector<double>{};
  double scale = at.scale().value_or(1.0 / std::sqrt(static_cast<double>(d))), cap = at.softcap();
  HostTensor out(q.dtype(), {nb, h, tq, dv});
  std::vector<double> s(tk), acc(dv);
  std::vector<int64_t> rows(tk);
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t hh = 0; hh < h; ++hh) {
      int64_t g = hh / (h / kvh), len = lens[b];
      for (int64_t j = 0; j < len; ++j) {
        KILN_ASSIGN_OR_RETURN(rows[j], row(b, g, j));
      }
      for (int64_t i = 0; i < tq; ++i) {
        const double* qi = &qd[((b * h + hh) * tq + i) * d];
        double m = -kInf;
        for (int64_t j = 0; j < tk; ++j) {
          int64_t last = i + len - tq;  // the last key a causal query sees
          bool seen = j < len && (!at.causal() || j <= last) && (at.window() == 0 || j > last - at.window());
          double dot = 0;
          for (int64_t t = 0; seen && t < d; ++t) dot += qi[t] * kd[rows[j] * d + t];
          s[j] = dot * scale;
          if (cap > 0) s[j] = cap * std::tanh(s[j] / cap);
          if (mask) {
            double mv = md[b * mask_st[0] + hh * mask_st[1] + i * mask_st[2] + j * mask_st[3]];
            if (mask->dtype() == DType::boolean) seen = seen && mv != 0;
            else s[j] += mv;
          }
          if (!seen) s[j] = -kInf;
          m = std::isnan(m) || std::isnan(s[j]) ? kNaN : std::max(m, s[j]);
        }
        double sum = 0;  // no key seen: m = -inf and exp(NaN) makes the row NaN
        for (int64_t j = 0; j < tk; ++j) sum += s[j] = std::exp(s[j] - m);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < len; ++j)
          for (int64_t t = 0; t < dv; ++t) acc[t] += s[j] / sum * vd[rows[j] * dv + t];
        for (int64_t t = 0; t < dv; ++t) store_f64(out, ((b * h + hh) * tq + i) * dv + t, sum > 0 ? acc[t] : kNaN);
      }
    }
  return Tensors{std::move(out)};
}

// cache_write (ops.def): the cache with rows replaced; a row outside the cache, a block id
// outside it, or a row written twice in one call is an error naming sequence and token.
Result cache_write(const Ctx& c) {
  const HostTensor &cache = c.x(0), &x = c.x(1), &pos = c.x(2);
  const HostTensor* table = c.in.size() > 3 ? c.in[3] : nullptr;
  const Dims& xs = x.shape();
  int64_t nb = xs[0], kvh = xs[1], t = xs[2], d = xs[3], size = dtype_size(x.dtype());
  int64_t rows = table ? table->shape()[1] * cache.shape()[1] : cache.shape()[2];
  HostTensor out = cache;
  absl::flat_hash_map<int64_t, std::pair<int64_t, int64_t>> writer;  // physical row -> (sequence, token)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t i = 0; i < t; ++i) {
      int64_t p = pos.rank() == 2 ? pos.get_int(b * t + i) : pos.get_int(b) + i, phys = b * rows + p;
      std::string who = str_cat("sequence ", b, ", token ", i, ": row ", p);
      if (p < 0 || p >= rows) return invalid_argument(who, " is outside the cache's ", rows, " rows");
      if (table) {
        int64_t bs = cache.shape()[1], blk = table->get_int(b * table->shape()[1] + p / bs);
        if (blk < 0 || blk >= cache.shape()[0])
          return invalid_argument(who, ": block_table[", b, ", ", p / bs, "] = ", blk, " is outside the cache's ",
                                  cache.shape()[0], " blocks");
        phys = blk * bs + p % bs;
      }
      if (auto [it, fresh] = writer.try_emplace(phys, b, i); !fresh)
        return invalid_argument(who, " is also written by sequence ", it->second.first, ", token ", it->second.second);
      for (int64_t g = 0; g < kvh; ++g) {
        int64_t dst = table ? (phys * kvh + g) * d : ((b * kvh + g) * rows + p) * d;
        std::memcpy(out.data() + dst * size, x.data() + ((b * kvh + g) * t + i) * d * size, d * size);
      }
    }
  return Tensors{std::move(out)};
}

Result matmul(const Ctx& c) {
  const HostTensor &a = c.x(0), &b = c.x(1);
  Dims as = a.shape(), bs = b.shape();
  bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
  if (a_vec) as.insert(as.begin(), 1);
  if (b_vec) bs.push_back(1);
  int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  if (bs[bs.size() - 2] != k) return invalid_argument("inner dims differ: ", dims_str(a.shape()), " @ ", dims_str(b.shape()));
  KILN_ASSIGN_OR_RETURN(Dims batch, broadcast(Dims(as.begin(), as.end() - 2), Dims(bs.begin(), bs.end() - 2)));
  Dims shape = batch;
  if (!a_vec) shape.push_back(m);
  if (!b_vec) shape.push_back(n);
  HostTensor out(a.dtype(), shape);
  std::vector<double> ad = doubles(a), bd = doubles(b), acc(n);
  size_t nb = batch.size();
  walk<2>(batch, {batch_strides(as, 2, nb), batch_strides(bs, 2, nb)}, {0, 0}, [&](int64_t bi, const auto& o) {
    for (int64_t i = 0; i < m; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t t = 0; t < k; ++t) {
        double x = ad[o[0] + i * k + t];
        const double* brow = bd.data() + o[1] + t * n;
        for (int64_t j = 0; j < n; ++j) acc[j] += x * brow[j];
      }
      for (int64_t j = 0; j < n; ++j) store_f64(out, (bi * m + i) * n + j, acc[j]);
    }
  });
  return Tensors{std::move(out)};
}

Result linear(const Ctx& c) {
  const HostTensor &x = c.x(0), &w = c.x(1);
  int64_t k = x.shape().back(), n = w.shape()[0];
  if (w.shape()[1] != k) return invalid_argument("x ", x.type_string(), " does not fit w ", w.type_string());
  Dims shape = x.shape();
  shape.back() = n;
  HostTensor out(x.dtype(), shape);
  int64_t rows = count(Dims(x.shape().begin(), x.shape().end() - 1));
  std::vector<double> xd = doubles(x), wd = doubles(w);
  std::vector<double> bias = c.in.size() > 2 ? doubles(c.x(2)) : std::vector<double>(n, 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double *xr = xd.data() + i * k, *wr = wd.data() + j * k;
      double acc = 0;
      for (int64_t t = 0; t < k; ++t) acc += xr[t] * wr[t];
      store_f64(out, i * n + j, acc + bias[j]);
    }
  return Tensors{std::move(out)};
}

// ---- convolution and pooling ------------------------------------------------------
// Spatial dims are padded to 3 (size 1, kernel 1) so that one loop nest serves 1-D to 3-D.

struct Geo3 {
  std::array<int64_t, 3> in{1, 1, 1}, out{1, 1, 1}, k{1, 1, 1}, s{1, 1, 1}, d{1, 1, 1}, pb{0, 0, 0}, pe{0, 0, 0};
  int64_t in_n() const { return in[0] * in[1] * in[2]; }
  int64_t out_n() const { return out[0] * out[1] * out[2]; }
  int64_t k_n() const { return k[0] * k[1] * k[2]; }
};

// The geometry of node n over the trailing spatial dims of `x` and `y` (its input and output).
absl::StatusOr<Geo3> geo3(const Node& n, const Dims& x, const Dims& y) {
  KILN_ASSIGN_OR_RETURN(WindowDims w, window_dims(n));
  Geo3 g;
  size_t r = w.rank(), off = 3 - r;
  for (size_t i = 0; i < r; ++i) {
    g.in[off + i] = x[x.size() - r + i];
    g.out[off + i] = y[y.size() - r + i];
    g.k[off + i] = w.kernel[i];
    g.s[off + i] = w.strides[i];
    g.d[off + i] = w.dilations[i];
    g.pb[off + i] = w.pads_begin[i];
    g.pe[off + i] = w.pads_end[i];
  }
  return g;
}

// Calls f(output offset, kernel offset, input offset or -1 outside x, inside the padded
// extent [-pb, in + pe)) for every output position and kernel position of the window.
template <typename F>
void each_window(const Geo3& g, F&& f) {
  for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
    for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
      for (int64_t o2 = 0; o2 < g.out[2]; ++o2)
        for (int64_t k0 = 0; k0 < g.k[0]; ++k0)
          for (int64_t k1 = 0; k1 < g.k[1]; ++k1)
            for (int64_t k2 = 0; k2 < g.k[2]; ++k2) {
              std::array<int64_t, 3> o{o0, o1, o2}, k{k0, k1, k2};
              int64_t at = 0;
              bool inside = true, padded = true;
              for (int i = 0; i < 3; ++i) {
                int64_t p = o[i] * g.s[i] + k[i] * g.d[i] - g.pb[i];
                inside = inside && p >= 0 && p < g.in[i];
                padded = padded && p >= -g.pb[i] && p < g.in[i] + g.pe[i];
                at = at * g.in[i] + p;
              }
              f((o0 * g.out[1] + o1) * g.out[2] + o2, (k0 * g.k[1] + k1) * g.k[2] + k2, inside ? at : -1, padded);
            }
}

// The result of node n (conv, conv_transpose, pools) for input x: [N, C', spatial per the
// node's type under the bindings].
absl::StatusOr<HostTensor> window_result(const Ctx& c) {
  KILN_ASSIGN_OR_RETURN(Dims shape, eval_dims(c.node.result()->shape(), c.bindings));
  return HostTensor(c.x().dtype(), shape);
}

// conv: sum over the group's input channels and the window of x * w, in f64, plus bias.
Result conv(const Ctx& c) {
  const HostTensor &x = c.x(0), &w = c.x(1);
  KILN_ASSIGN_OR_RETURN(HostTensor out, window_result(c));
  KILN_ASSIGN_OR_RETURN(Geo3 g, geo3(c.node, x.shape(), out.shape()));
  int64_t groups = ConvAttrs(c.node).groups(), n = x.shape()[0], cout = w.shape()[0], cg = w.shape()[1];
  int64_t cog = cout / groups;
  std::vector<double> xd = doubles(x), wd = doubles(w), acc(g.out_n());
  std::vector<double> bias = c.in.size() > 2 ? doubles(c.x(2)) : std::vector<double>(cout, 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co) {
      std::fill(acc.begin(), acc.end(), bias[co]);
      for (int64_t ci = 0; ci < cg; ++ci) {
        const double* xc = xd.data() + (b * cg * groups + co / cog * cg + ci) * g.in_n();
        const double* wc = wd.data() + (co * cg + ci) * g.k_n();
        each_window(g, [&](int64_t o, int64_t k, int64_t at, bool) {
          if (at >= 0) acc[o] += xc[at] * wc[k];
        });
      }
      for (int64_t o = 0; o < g.out_n(); ++o) store_f64(out, (b * cout + co) * g.out_n() + o, acc[o]);
    }
  return Tensors{std::move(out)};
}

// conv_transpose: each x element scattered through the window of w into the output, which
// plays the role of conv's input: out[o*s + k*d - pb] += x[o] * w[k].
Result conv_transpose(const Ctx& c) {
  const HostTensor &x = c.x(0), &w = c.x(1);
  KILN_ASSIGN_OR_RETURN(HostTensor out, window_result(c));
  // The window runs over x's positions (as conv's output) into out's (as conv's input).
  KILN_ASSIGN_OR_RETURN(Geo3 g, geo3(c.node, out.shape(), x.shape()));
  int64_t groups = ConvTransposeAttrs(c.node).groups(), n = x.shape()[0], cin = w.shape()[0], cog = w.shape()[1];
  int64_t cout = cog * groups, cig = cin / groups;
  std::vector<double> xd = doubles(x), wd = doubles(w), acc(g.in_n());
  std::vector<double> bias = c.in.size() > 2 ? doubles(c.x(2)) : std::vector<double>(cout, 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co) {
      std::fill(acc.begin(), acc.end(), bias[co]);
      int64_t grp = co / cog;
      for (int64_t ci = grp * cig; ci < (grp + 1) * cig; ++ci) {
        const double* xc = xd.data() + (b * cin + ci) * g.out_n();
        const double* wc = wd.data() + (ci * cog + co % cog) * g.k_n();
        each_window(g, [&](int64_t o, int64_t k, int64_t at, bool) {
          if (at >= 0) acc[at] += xc[o] * wc[k];
        });
      }
      for (int64_t i = 0; i < g.in_n(); ++i) store_f64(out, (b * cout + co) * g.in_n() + i, acc[i]);
    }
  return Tensors{std::move(out)};
}

// max_pool: the window's maximum (NaN propagates; -inf for a window of padding only);
// avg_pool: the sum over the window's elements in x divided by their count, or with
// count_include_pad by the count of its positions in [-pb, in + pe), in f64.
Result pool(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(HostTensor out, window_result(c));
  KILN_ASSIGN_OR_RETURN(Geo3 g, geo3(c.node, x.shape(), out.shape()));
  bool max = c.node.op() == Op::MaxPool, include_pad = PoolAttrs(c.node).count_include_pad();
  std::vector<double> xd = doubles(x), acc(g.out_n()), cnt(g.out_n());
  for (int64_t plane = 0; plane < x.shape()[0] * x.shape()[1]; ++plane) {
    std::fill(acc.begin(), acc.end(), max ? -kInf : 0.0);
    std::fill(cnt.begin(), cnt.end(), 0.0);
    const double* xp = xd.data() + plane * g.in_n();
    each_window(g, [&](int64_t o, int64_t, int64_t at, bool padded) {
      if (at >= 0) {
        acc[o] = !max ? acc[o] + xp[at] : std::isnan(acc[o]) || std::isnan(xp[at]) ? kNaN : std::max(acc[o], xp[at]);
        cnt[o] += 1;
      } else if (padded && include_pad) {
        cnt[o] += 1;
      }
    });
    for (int64_t o = 0; o < g.out_n(); ++o) store_f64(out, plane * g.out_n() + o, max ? acc[o] : acc[o] / cnt[o]);
  }
  return Tensors{std::move(out)};
}

// window: element [lead, k, o] is x[lead, o*s + k*d - pb], or pad_value outside x; exact.
Result window(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(Dims shape, eval_dims(c.node.result()->shape(), c.bindings));
  HostTensor out(x.dtype(), shape);
  size_t r = WindowAttrs(c.node).kernel().size();
  Dims spatial_out(shape.end() - r, shape.end());
  KILN_ASSIGN_OR_RETURN(Geo3 g, geo3(c.node, x.shape(), spatial_out));
  int64_t planes = count(Dims(x.shape().begin(), x.shape().end() - r)), size = dtype_size(x.dtype());
  HostTensor pad(x.dtype(), {});
  if (is_float(x.dtype())) pad.set(0, WindowAttrs(c.node).pad_value());
  else pad.set_int(0, static_cast<int64_t>(WindowAttrs(c.node).pad_value()));
  for (int64_t plane = 0; plane < planes; ++plane)
    each_window(g, [&](int64_t o, int64_t k, int64_t at, bool) {
      const uint8_t* src = at >= 0 ? x.data() + (plane * g.in_n() + at) * size : pad.data();
      std::memcpy(out.data() + ((plane * g.k_n() + k) * g.out_n() + o) * size, src, size);
    });
  return Tensors{std::move(out)};
}

Result reshape(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(Dims shape, eval_dims(ReshapeAttrs(c.node).shape(), c.bindings));
  auto infer = std::find(shape.begin(), shape.end(), -1);
  if (infer != shape.end()) {
    *infer = 1;
    int64_t known = count(shape);
    *infer = known == 0 ? 0 : x.numel() / known;
  }
  if (count(shape) != x.numel())
    return invalid_argument("cannot reshape ", x.type_string(), " to ", dims_str(shape));
  return Tensors{reshaped(x, shape)};
}

Result permute(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> dims, normalize_axes(PermuteAttrs(c.node).dims(), x.rank()));
  Dims st = strides_of(x.shape()), shape, src;
  for (int64_t d : dims) {
    shape.push_back(x.shape()[d]);
    src.push_back(st[d]);
  }
  HostTensor out(x.dtype(), shape);
  copy_strided(x, src, 0, out, strides_of(shape), 0, shape);
  return Tensors{std::move(out)};
}

Result expand(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(Dims shape, eval_dims(ExpandAttrs(c.node).shape(), c.bindings));
  if (shape.size() < x.shape().size()) return invalid_argument("cannot expand ", x.type_string(), " to ", dims_str(shape));
  size_t off = shape.size() - x.shape().size();
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i >= off && shape[i] == -1) shape[i] = x.shape()[i - off];
    if (i >= off && x.shape()[i - off] != 1 && x.shape()[i - off] != shape[i])
      return invalid_argument("cannot expand ", x.type_string(), " to ", dims_str(shape));
  }
  HostTensor out(x.dtype(), shape);
  copy_strided(x, broadcast_strides(x.shape(), shape.size()), 0, out, strides_of(shape), 0, shape);
  return Tensors{std::move(out)};
}

Result squeeze(const Ctx& c) {
  const HostTensor& x = c.x();
  std::vector<int64_t> axes;
  if (std::optional<std::vector<int64_t>> given = SqueezeAttrs(c.node).axes()) {
    KILN_ASSIGN_OR_RETURN(axes, axes_of(*given, x.rank()));
  } else {
    const Shape& sym = c.node.operand(0)->shape();
    for (int64_t i = 0; i < x.rank(); ++i)
      if (sym[i] == SymExpr(1)) axes.push_back(i);
  }
  Dims shape;
  for (int64_t i = 0; i < x.rank(); ++i) {
    bool drop = std::binary_search(axes.begin(), axes.end(), i);
    if (drop && x.shape()[i] != 1)
      return invalid_argument("cannot squeeze axis ", i, " of ", x.type_string(), ": its size is not 1");
    if (!drop) shape.push_back(x.shape()[i]);
  }
  return Tensors{reshaped(x, shape)};
}

Result unsqueeze(const Ctx& c) {
  const HostTensor& x = c.x();
  const std::vector<int64_t>& axes = UnsqueezeAttrs(c.node).axes();
  int64_t rank = x.rank() + static_cast<int64_t>(axes.size());
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of(axes, rank));
  Dims shape;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i)
    shape.push_back(std::binary_search(ax.begin(), ax.end(), i) ? 1 : x.shape()[next++]);
  return Tensors{reshaped(x, shape)};
}

Result slice(const Ctx& c) {
  const HostTensor& x = c.x();
  SliceAttrs a(c.node);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({a.axis()}, x.rank()));
  int64_t axis = ax[0], step = a.step();
  // Constant bounds on a static dim are clamped; other bounds are evaluated for this call
  // and must lie in the dim.
  SliceBounds b = slice_bounds(c.node);
  KILN_ASSIGN_OR_RETURN(int64_t first, b.start.evaluate(c.bindings));
  KILN_ASSIGN_OR_RETURN(int64_t last, b.end.evaluate(c.bindings));
  KILN_ASSIGN_OR_RETURN(int64_t len, b.length.evaluate(c.bindings));
  if (!b.clamped && (first < 0 || last > x.shape()[axis] || first > last))
    return invalid_argument("slice [", first, ", ", last, ") is outside dim ", axis, " of ", x.type_string(),
                            " (start ", a.start().to_string(), ", end ", a.end().to_string(), ")");
  Dims shape = x.shape(), st = strides_of(x.shape());
  shape[axis] = len;
  int64_t base = len > 0 ? first * st[axis] : 0;
  st[axis] *= step;
  HostTensor out(x.dtype(), shape);
  copy_strided(x, st, base, out, strides_of(shape), 0, shape);
  return Tensors{std::move(out)};
}

// `parts` (one dtype, equal shapes outside `axis`) one after another along `axis`.
HostTensor concatenated(const std::vector<const HostTensor*>& parts, int64_t axis) {
  Dims shape = parts[0]->shape();
  shape[axis] = 0;
  for (const HostTensor* t : parts) shape[axis] += t->shape()[axis];
  HostTensor out(parts[0]->dtype(), shape);
  Dims ost = strides_of(shape);
  int64_t at = 0;
  for (const HostTensor* t : parts) {
    copy_strided(*t, strides_of(t->shape()), 0, out, ost, at * ost[axis], t->shape());
    at += t->shape()[axis];
  }
  return out;
}

Result concat(const Ctx& c) {
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({ConcatAttrs(c.node).axis()}, c.x().rank()));
  int64_t axis = ax[0];
  for (const HostTensor* t : c.in) {
    bool fits = t->rank() == c.x().rank();
    for (int64_t d = 0; fits && d < t->rank(); ++d) fits = d == axis || t->shape()[d] == c.x().shape()[d];
    if (!fits) return invalid_argument("operand ", t->type_string(), " differs from ", c.x().type_string(), " outside axis ", axis);
  }
  return Tensors{concatenated(c.in, axis)};
}

Result split(const Ctx& c) {
  const HostTensor& x = c.x();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({SplitAttrs(c.node).axis()}, x.rank()));
  int64_t axis = ax[0];
  KILN_ASSIGN_OR_RETURN(Dims sizes, eval_dims(SplitAttrs(c.node).sizes(), c.bindings));
  if (std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s < 0; }) ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != x.shape()[axis])
    return invalid_argument("sizes ", dims_str(sizes), " do not split axis ", axis, " of ", x.type_string());
  Dims st = strides_of(x.shape());
  Tensors outs;
  int64_t at = 0;
  for (int64_t s : sizes) {
    Dims shape = x.shape();
    shape[axis] = s;
    HostTensor out(x.dtype(), shape);
    copy_strided(x, st, at * st[axis], out, strides_of(shape), 0, shape);
    outs.push_back(std::move(out));
    at += s;
  }
  return outs;
}

Result gather(const Ctx& c) {
  const HostTensor &data = c.x(0), &idx = c.x(1);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({GatherAttrs(c.node).axis()}, data.rank()));
  int64_t axis = ax[0], dim = data.shape()[axis];
  Dims shape(data.shape().begin(), data.shape().begin() + axis);
  shape.insert(shape.end(), idx.shape().begin(), idx.shape().end());
  shape.insert(shape.end(), data.shape().begin() + axis + 1, data.shape().end());
  HostTensor out(data.dtype(), shape);
  int64_t outer = count(Dims(data.shape().begin(), data.shape().begin() + axis));
  int64_t inner = count(Dims(data.shape().begin() + axis + 1, data.shape().end()));
  int64_t bytes = inner * dtype_size(data.dtype());
  // An empty result reads no index, so none is checked (a compiled device launches nothing
  // for it): RELIABILITY.md, "Index checks".
  if (out.numel() == 0) return Tensors{std::move(out)};
  for (int64_t j = 0; j < idx.numel(); ++j) {
    int64_t i = idx.get_int(j), at = i < 0 ? i + dim : i;
    if (at < 0 || at >= dim) {
      Dims coords(idx.rank());
      for (int64_t d = idx.rank(), rest = j; d-- > 0; rest /= idx.shape()[d]) coords[d] = rest % idx.shape()[d];
      return gather_index_error(c.node.result()->name(), i, dim, axis,
                                str_cat(", at ", dims_str(coords), " of the indices (", data.type_string(), ")"));
    }
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(out.data() + ((o * idx.numel() + j) * bytes), data.data() + (o * dim + at) * bytes, bytes);
  }
  return Tensors{std::move(out)};
}

// extern_call: the registered op's reference implementation (its cpu one by default) over
// the dense host tensors the evaluator keeps.
Result extern_call(const Ctx& c) {
  const std::string& name = ExternAttrs(c.node).name();
  const ExternOp* op = find_extern_op(name);
  if (!op) return invalid_argument("no extern op \"", name, "\" is registered (register_extern_op)");
  const ExternHostFn& fn = op->reference ? op->reference : op->cpu;
  if (!fn) return invalid_argument("extern op \"", name, "\" has no reference or cpu implementation");
  std::vector<ExternTensor> in, out;
  for (const HostTensor* t : c.in) in.push_back({const_cast<uint8_t*>(t->data()), t->dtype(), t->shape()});
  Tensors res;
  for (const Value* r : c.node.results()) {
    KILN_ASSIGN_OR_RETURN(Dims shape, evaluate_shape(r->shape(), c.bindings));
    res.emplace_back(r->dtype(), std::move(shape));
  }
  for (HostTensor& t : res) out.push_back({t.data(), t.dtype(), t.shape()});
  KILN_RETURN_IF_ERROR(fn(in, out));
  return res;
}

// A collective over every rank's operand (`in[r]`, rank r's), giving each rank's result.
absl::StatusOr<std::vector<HostTensor>> collective(const Node& n, const std::vector<const HostTensor*>& in) {
  const int64_t ranks = static_cast<int64_t>(in.size());
  const int64_t want = collective_ranks(n);
  if (want != ranks)
    return invalid_argument("a collective over ", want, " ranks, evaluated as ", ranks, " rank", ranks == 1 ? "" : "s",
                            " (evaluate_ranks takes one argument set per rank)");
  for (int64_t r = 1; r < ranks; ++r)
    if (in[r]->shape() != in[0]->shape())
      return invalid_argument("rank ", r, "'s operand ", in[r]->type_string(), " differs from rank 0's ",
                              in[0]->type_string());
  const HostTensor& x = *in[0];
  if (n.op() == Op::AllGather) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({CollectiveAttrs(n).axis()}, x.rank()));
    return std::vector<HostTensor>(static_cast<size_t>(ranks), concatenated(in, ax[0]));
  }
  HostTensor sum = sum_over_ranks(in);
  if (n.op() == Op::AllReduce) return std::vector<HostTensor>(static_cast<size_t>(ranks), sum);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, axes_of({CollectiveAttrs(n).axis()}, x.rank()));
  const int64_t a = ax[0];
  if (x.shape()[a] % ranks != 0)
    return invalid_argument("axis ", a, " of ", x.type_string(), " does not divide into ", ranks, " equal chunks");
  std::vector<HostTensor> outs;
  for (int64_t r = 0; r < ranks; ++r) outs.push_back(sum.chunk(a, r, ranks));
  return outs;
}

Result eval_node(const Ctx& c) {
  switch (c.node.op()) {
    case Op::Neg: case Op::Abs: case Op::Exp: case Op::Log: case Op::Sqrt: case Op::Rsqrt:
    case Op::Sin: case Op::Cos: case Op::Tanh: case Op::Sigmoid: case Op::Relu: case Op::Gelu:
    case Op::Silu: case Op::Erf: case Op::Atan: case Op::Reciprocal: case Op::Floor: case Op::Ceil: case Op::Not:
      return unary(c);
    case Op::Cast: return cast(c);
    case Op::Constant: return constant(c);
    case Op::Iota: return iota(c);
    case Op::Add: case Op::Sub: case Op::Mul: case Op::Div: case Op::Pow: case Op::Fmod: case Op::Maximum:
    case Op::Minimum: case Op::Eq: case Op::Ne: case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge:
    case Op::And: case Op::Or:
      return binary(c);
    case Op::Where: return where(c);
    case Op::Sum: case Op::Mean: case Op::Max: case Op::Min: case Op::Prod: case Op::ArgMax:
      return reduce(c);
    case Op::Softmax: case Op::LogSoftmax: return softmax(c);
    case Op::LayerNorm: case Op::RmsNorm: return norm(c);
    case Op::Sdpa: return sdpa(c);
    case Op::Attention: return attention(c);
    case Op::CacheWrite: return cache_write(c);
    case Op::ExternCall: return extern_call(c);
    case Op::MatMul: return matmul(c);
    case Op::Linear: return linear(c);
    case Op::Reshape: return reshape(c);
    case Op::Permute: return permute(c);
    case Op::Expand: return expand(c);
    case Op::Squeeze: return squeeze(c);
    case Op::Unsqueeze: return unsqueeze(c);
    case Op::Slice: return slice(c);
    case Op::Concat: return concat(c);
    case Op::Split: return split(c);
    case Op::Gather: return gather(c);
    case Op::Window: return window(c);
    case Op::Conv: return conv(c);
    case Op::ConvTranspose: return conv_transpose(c);
    case Op::MaxPool: case Op::AvgPool: return pool(c);
    case Op::AllReduce:
    case Op::AllGather:
    case Op::ReduceScatter: break;  // collective(), over every rank
  }
  return invalid_argument("the reference evaluator does not know op ", op_name(c.node.op()));
}

}  // namespace

HostTensor sum_over_ranks(std::span<const HostTensor* const> in) {
  const HostTensor& x = *in[0];
  HostTensor sum(x.dtype(), x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (is_float(x.dtype())) {
      double acc = 0;
      for (const HostTensor* t : in) acc += t->get(i);
      store_f64(sum, i, acc);
    } else {
      uint64_t acc = 0;  // two's complement wrapping, as the reductions' int64 sums
      for (const HostTensor* t : in) acc += static_cast<uint64_t>(t->get_int(i));
      sum.set_int(i, static_cast<int64_t>(acc));
    }
  }
  return sum;
}

absl::StatusOr<std::vector<std::vector<HostTensor>>> evaluate_ranks(const Graph& g, std::span<const TensorMap> args) {
  if (args.empty()) return invalid_argument("evaluate_ranks: no argument set, so no rank to evaluate");
  // Errors name the rank where there are several.
  auto at = [&](size_t r) { return args.size() > 1 ? str_cat("rank ", r, ": ") : std::string(); };
  struct Rank {
    absl::flat_hash_map<const Value*, const HostTensor*> env;
    Bindings bindings;
    std::deque<HostTensor> results;  // deque: pointers to elements stay valid as it grows
  };
  std::vector<Rank> ranks(args.size());
  for (size_t r = 0; r < args.size(); ++r) {
    for (const auto& [name, t] : args[r]) {
      const Value* v = g.find(name);
      if (!v || !(v->is_input() || v->is_param()))
        return invalid_argument(at(r), "unknown argument '", name, "': graph ", g.name(),
                                " has no input or parameter %", name);
      if (v->data())
        return invalid_argument(at(r), "argument '", name, "': parameter %", name, " already has data in graph ",
                                g.name());
    }
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const Value* v : g.args()) {
      const HostTensor* t = v->data().get();
      if (!t) {
        auto it = args[r].find(v->name());
        if (it == args[r].end())
          return invalid_argument(at(r), "missing argument %", v->name(), " (", v->type().to_string(), ")");
        t = &it->second;
      }
      if (t->dtype() != v->dtype())
        return invalid_argument(at(r), "argument %", v->name(), ": expected ", v->type().to_string(), ", got ",
                                t->type_string());
      shapes[v->name()] = t->shape();
      ranks[r].env[v] = t;
    }
    absl::StatusOr<Bindings> bindings = bind_symbols(g, shapes);
    if (!bindings.ok()) return invalid_argument(at(r), "arguments: ", bindings.status().message());
    ranks[r].bindings = *std::move(bindings);
  }

  for (const auto& node : g.nodes()) {
    std::vector<Ctx> ctx;
    for (size_t r = 0; r < ranks.size(); ++r) {
      Ctx& c = ctx.emplace_back(Ctx{*node, ranks[r].bindings, {}});
      for (const Value* v : node->operands()) {
        auto it = ranks[r].env.find(v);
        if (it == ranks[r].env.end())
          return invalid_argument(node->describe(), ": operand %", v->name(), " is not computed before this node");
        c.in.push_back(it->second);
      }
      for (const Value* res : node->results()) {  // sizes first: a result that cannot be allocated is an error
        absl::Status s = result_fits(*res, ranks[r].bindings);
        if (!s.ok()) return prefix_error(s, at(r), node->describe(), ": ");
      }
    }
    std::vector<Tensors> out(ranks.size());
    if (is_collective(node->op())) {
      std::vector<const HostTensor*> in;
      for (const Ctx& c : ctx) in.push_back(c.in[0]);
      absl::StatusOr<std::vector<HostTensor>> each = collective(*node, in);
      if (!each.ok()) return prefix_error(each.status(), node->describe(), ": ");
      for (size_t r = 0; r < ranks.size(); ++r) out[r].push_back(std::move((*each)[r]));
    } else {
      for (size_t r = 0; r < ranks.size(); ++r) {
        Result o = eval_node(ctx[r]);
        if (!o.ok()) return prefix_error(o.status(), at(r), node->describe(), ": ");
        out[r] = *std::move(o);
      }
    }
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (out[r].size() != node->results().size())
        return invalid_argument(node->describe(), ": computed ", out[r].size(), " results for ",
                                node->results().size());
      for (size_t i = 0; i < out[r].size(); ++i) {
        const Value* res = node->result(i);
        HostTensor& t = out[r][i];
        absl::StatusOr<std::vector<int64_t>> want = evaluate_shape(res->shape(), ranks[r].bindings);
        if (!want.ok())
          return invalid_argument(at(r), node->describe(), ": result %", res->name(), ": ", want.status().message());
        if (*want != t.shape() || t.dtype() != res->dtype())
          return invalid_argument(at(r), node->describe(), ": result %", res->name(), " of type ",
                                  res->type().to_string(), " should be ", dtype_name(res->dtype()), dims_str(*want),
                                  " under the bindings, but the op gives ", t.type_string());
        ranks[r].results.push_back(std::move(t));
        ranks[r].env[res] = &ranks[r].results.back();
      }
    }
  }
  std::vector<std::vector<HostTensor>> outs(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r)
    for (const Value* v : g.outputs()) {
      auto it = ranks[r].env.find(v);
      if (it == ranks[r].env.end()) return invalid_argument("output %", v->name(), " is not computed");
      outs[r].push_back(*it->second);
    }
  return outs;
}

absl::StatusOr<std::vector<HostTensor>> evaluate(const Graph& g, const TensorMap& args) {
  KILN_ASSIGN_OR_RETURN(std::vector<std::vector<HostTensor>> one, evaluate_ranks(g, std::span(&args, 1)));
  return std::move(one[0]);
}

TensorMap random_args(const Graph& g, const Bindings& b, uint64_t seed, int64_t int_high) {
  std::mt19937_64 rng(seed);
  TensorMap out;
  for (const Value* v : g.args()) {
    if (v->data()) continue;
    absl::StatusOr<std::vector<int64_t>> shape = evaluate_shape(v->shape(), b);
    // Left out when unbound or too large: evaluate() then reports the argument missing.
    if (!shape.ok() || !result_fits(*v, b).ok()) continue;
    HostTensor t(v->dtype(), *shape);
    if (is_integer(v->dtype())) t.fill_random(rng, 0, static_cast<double>(int_high));
    else t.fill_random(rng);
    out.emplace(v->name(), std::move(t));
  }
  return out;
}

void scale_weights_by_fan_in(const Graph& g, TensorMap& args) {
  for (auto& [name, t] : args) {
    const Value* v = g.find(name);
    if (v == nullptr || !v->is_param() || t.rank() < 2) continue;
    int64_t fan_in = t.numel() / std::max<int64_t>(t.shape()[0], 1);
    if (fan_in == 0) continue;
    double scale = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, t.get(i) * scale);
  }
}

}  // namespace kiln
