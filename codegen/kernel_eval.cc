#include "codegen/kernel_eval.h"

#include <cmath>
#include <deque>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "ir/scalar_ops.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using kir::Expr;
using kir::ExprKind;
using kir::Index;
using kir::IndexKind;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Every scalar is held as a Num: a float value exactly (it is a double), and an integer
// value exactly too, which a double cannot do beyond 2^53 (INT64_MAX, 2^53 + 1): long
// double has a 64-bit significand on x86-64 (113 bits on aarch64).
using Num = long double;
static_assert(std::numeric_limits<Num>::digits >= 64, "kernel_eval holds int64 and uint64 values as long double");

// An integer value of dtype t held as a Num, in scalar_ops' int64 form (u64: its bits).
int64_t as_int(Num v, DType t) {
  return t == DType::u64 && v >= 0x1p63L ? static_cast<int64_t>(static_cast<uint64_t>(v)) : static_cast<int64_t>(v);
}

// The Num of an integer (or bool) value of dtype t, from scalar_ops' int64 form: wrapped to t.
Num from_int(int64_t v, DType t) {
  int64_t w = wrap_int(v, t);
  return t == DType::u64 ? static_cast<Num>(static_cast<uint64_t>(w)) : static_cast<Num>(w);
}

// Calls f(point) for every point of `extents` in row-major order.
template <typename F>
void for_each_point(const std::vector<int64_t>& extents, std::vector<int64_t>& point, F f) {
  point.assign(extents.size(), 0);
  for (int64_t e : extents)
    if (e <= 0) return;
  while (true) {
    f();
    size_t d = extents.size();
    while (d > 0) {
      if (++point[d - 1] < extents[d - 1]) break;
      point[d - 1] = 0;
      --d;
    }
    if (d == 0) return;
  }
}

class Runner {
 public:
  Runner(const kir::Kernel& k, std::vector<HostTensor*> buffers, const Bindings& b)
      : k_(k), buffers_(std::move(buffers)), b_(b) {}

  absl::Status run() {
    int lets = 0;
    for (const kir::Stage& st : k_.stages)
      for (const kir::Let& l : st.lets) lets = std::max(lets, l.id + 1);
    lets_.assign(lets, 0);
    stage_results_.assign(k_.stages.size(), 0);
    absl::StatusOr<std::vector<int64_t>> domain = evaluate_shape(k_.domain, b_);
    if (!domain.ok()) return err(domain.status().message());
    std::vector<std::vector<int64_t>> extents;
    for (const kir::Stage& st : k_.stages) {
      absl::StatusOr<std::vector<int64_t>> e = evaluate_shape(st.extents, b_);
      if (!e.ok()) return err(e.status().message());
      extents.push_back(*e);
    }
    std::vector<int64_t> gemm_k;
    if (k_.gemm) {
      absl::StatusOr<int64_t> kk = k_.gemm->k.evaluate(b_);
      if (!kk.ok()) return err(kk.status().message());
      gemm_k = {*kk};
    }
    for_each_point(*domain, outer_, [&] {
      if (!error_.ok()) return;
      if (k_.gemm) run_gemm(gemm_k);
      for (size_t s = 0; s < k_.stages.size(); ++s) run_stage(s, extents[s]);
    });
    return error_;
  }

 private:
  template <typename... A>
  absl::Status err(const A&... parts) const {
    return invalid_argument("kernel ", k_.name, ": ", parts...);
  }

  void fail(absl::Status s) {
    if (error_.ok()) error_ = std::move(s);
  }

  void run_gemm(const std::vector<int64_t>& k) {
    const kir::GemmSpec& g = *k_.gemm;
    float acc = 0;
    DType at = k_.buffers[g.a.buffer].dtype, bt = k_.buffers[g.b.buffer].dtype;
    for_each_point(k, inner_, [&] {
      acc += static_cast<float>(load(g.a.buffer, g.a.index, at)) * static_cast<float>(load(g.b.buffer, g.b.index, bt));
    });
    acc_ = acc;
  }

  void run_stage(size_t s, const std::vector<int64_t>& extents) {
    const kir::Stage& st = k_.stages[s];
    bool is_float_acc = is_float(st.acc_dtype);
    Num acc = 0, best = 0;
    int64_t pos = 0, best_pos = 0;
    switch (st.combiner) {
      case kir::Combiner::Sum: acc = 0; break;
      case kir::Combiner::Prod: acc = 1; break;
      case kir::Combiner::Max: acc = is_float_acc ? -kInf : static_cast<Num>(std::numeric_limits<int64_t>::min()); break;
      case kir::Combiner::Min: acc = is_float_acc ? kInf : static_cast<Num>(std::numeric_limits<int64_t>::max()); break;
      case kir::Combiner::ArgMax: break;
    }
    for_each_point(extents, inner_, [&] {
      if (!error_.ok()) return;
      for (const kir::Let& l : st.lets) lets_[l.id] = eval(l.value);
      for (const kir::Store& store : st.stores) write(store);  // a reduce stage's: index checks
      if (st.kind == kir::Stage::Kind::Map) return;
      Num v = eval(st.value);
      switch (st.combiner) {
        case kir::Combiner::Sum:
          acc = is_float_acc ? static_cast<Num>(static_cast<float>(acc) + static_cast<float>(v))
                             : from_int(binary_int(Op::Add, as_int(acc, st.acc_dtype), as_int(v, st.acc_dtype)), st.acc_dtype);
          break;
        case kir::Combiner::Prod:
          acc = is_float_acc ? static_cast<Num>(static_cast<float>(acc) * static_cast<float>(v))
                             : from_int(binary_int(Op::Mul, as_int(acc, st.acc_dtype), as_int(v, st.acc_dtype)), st.acc_dtype);
          break;
        case kir::Combiner::Max: acc = std::isnan(acc) || std::isnan(v) ? kNaN : std::max(acc, v); break;
        case kir::Combiner::Min: acc = std::isnan(acc) || std::isnan(v) ? kNaN : std::min(acc, v); break;
        case kir::Combiner::ArgMax:
          // The first NaN, else the first strict maximum.
          if (pos == 0 || (!std::isnan(best) && (std::isnan(v) || v > best))) {
            best = v;
            best_pos = pos;
          }
          break;
      }
      ++pos;
    });
    if (st.kind == kir::Stage::Kind::Reduce)
      stage_results_[s] = st.combiner == kir::Combiner::ArgMax ? static_cast<Num>(best_pos) : acc;
  }

  int64_t index(const Index& i) {
    const kir::IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Const: return n.value;
      case IndexKind::Outer: return outer_[n.value];
      case IndexKind::Inner: return inner_[n.value];
      case IndexKind::Sym: {
        auto it = b_.find(n.name);
        if (it == b_.end()) {
          fail(err("symbol ", n.name, " is not bound"));
          return 0;
        }
        return it->second;
      }
      case IndexKind::Add: return index(n.a) + index(n.b);
      case IndexKind::Mul: return index(n.a) * index(n.b);
      case IndexKind::FloorDiv:
      case IndexKind::Mod: {
        int64_t a = index(n.a), b = index(n.b);
        if (b <= 0) {
          fail(err("division of an index by ", b, " in ", kir::print_index(i, &k_)));
          return 0;
        }
        return n.kind == IndexKind::FloorDiv ? floor_div(a, b) : a - floor_div(a, b) * b;
      }
      case IndexKind::Min: return std::min(index(n.a), index(n.b));
      case IndexKind::Max: return std::max(index(n.a), index(n.b));
      case IndexKind::Scalar: return as_int(eval(n.expr), n.expr.dtype());
    }
    return 0;
  }

  bool in_bounds(int buffer, int64_t at, const Index& i) {
    if (at >= 0 && at < buffers_[buffer]->numel()) return true;
    fail(err("element ", at, " of ", k_.buffers[buffer].name, " (", buffers_[buffer]->type_string(),
             ") is out of bounds at ", kir::print_index(i, &k_)));
    return false;
  }

  Num load(int buffer, const Index& i, DType t) {
    int64_t at = index(i);
    if (!in_bounds(buffer, at, i)) return 0;
    const HostTensor& h = *buffers_[buffer];
    return is_float(t) ? static_cast<Num>(h.get(at)) : from_int(h.get_int(at), t);
  }

  void write(const kir::Store& s) {
    if (s.mask.defined() && eval(s.mask) == 0) return;
    Num v = eval(s.value);
    int64_t at = index(s.index);
    if (!in_bounds(s.buffer, at, s.index)) return;
    HostTensor& h = *buffers_[s.buffer];
    if (is_float(h.dtype())) h.set(at, static_cast<double>(v));
    else h.set_int(at, as_int(v, h.dtype()));
  }

  Num eval(const Expr& e) {
    const kir::ExprNode& n = e.node();
    switch (n.kind) {
      case ExprKind::Const: return is_float(n.dtype) ? static_cast<Num>(n.value) : from_int(n.int_value, n.dtype);
      case ExprKind::Load: return load(n.id, n.index, n.dtype);
      case ExprKind::Let: return lets_[n.id];
      case ExprKind::StageResult: return stage_results_[n.id];
      case ExprKind::GemmAcc: return acc_;
      case ExprKind::IndexValue: return static_cast<Num>(index(n.index));
      case ExprKind::Select: return eval(n.a) != 0 ? eval(n.b) : eval(n.c);
      case ExprKind::Cast: {
        Num v = eval(n.a);
        if (is_float(n.dtype) && !is_float(n.a.dtype())) return round_to_dtype(static_cast<float>(v), n.dtype);
        if (!is_float(n.dtype) && !is_float(n.a.dtype())) return from_int(as_int(v, n.a.dtype()), n.dtype);
        if (!is_float(n.dtype)) return from_int(n.dtype == DType::boolean ? v != 0 : float_to_int(static_cast<double>(v), n.dtype), n.dtype);
        return round_to_dtype(static_cast<double>(v), n.dtype);
      }
      case ExprKind::Unary: {
        Num a = eval(n.a);
        DType in = n.a.dtype();
        if (in == DType::f64) return round_to_dtype(unary_float(n.op, static_cast<double>(a)), n.dtype);
        if (is_float(in)) return round_to_dtype(unary_float(n.op, static_cast<float>(a)), n.dtype);
        return from_int(unary_int(n.op, as_int(a, in), is_unsigned(in)).value_or(0), n.dtype);
      }
      case ExprKind::Intrinsic: return round_to_dtype(intrinsic(n), n.dtype);
      case ExprKind::Binary: {
        Num a = eval(n.a), b = eval(n.b);
        DType in = n.a.dtype();
        if (in == DType::f64) return round_to_dtype(binary_float(n.op, static_cast<double>(a), static_cast<double>(b)), n.dtype);
        if (is_float(in)) return round_to_dtype(binary_float(n.op, static_cast<float>(a), static_cast<float>(b)), n.dtype);
        return from_int(binary_int(n.op, as_int(a, in), as_int(b, in), is_unsigned(in)), n.dtype);
      }
    }
    return 0;
  }

  // The value each fused form stands for (kir::Intrinsic), from f32 operands, before its
  // rounding to the node's dtype.
  double intrinsic(const kir::ExprNode& n) {
    double a = static_cast<float>(eval(n.a));
    switch (n.intrinsic) {
      case kir::Intrinsic::GeluTanh: {
        double k1 = static_cast<float>(eval(n.b)), k0 = static_cast<float>(eval(n.c));
        return a / (1.0 + std::exp2(a * (k0 + k1 * a * a)));
      }
      case kir::Intrinsic::OnePlusTanh: return 1.0 + std::tanh(a);
      case kir::Intrinsic::MulReciprocal: return static_cast<float>(a) * (1.0f / static_cast<float>(eval(n.b)));
    }
    return kNaN;
  }

  const kir::Kernel& k_;
  std::vector<HostTensor*> buffers_;
  const Bindings& b_;
  std::vector<int64_t> outer_, inner_;
  std::vector<Num> lets_, stage_results_;
  Num acc_ = 0;
  absl::Status error_;
};

}  // namespace

absl::Status run_kernel(const kir::Kernel& k, const std::vector<const HostTensor*>& inputs,
                        const std::vector<HostTensor*>& outputs, const Bindings& b) {
  std::vector<HostTensor*> all;
  size_t in = 0, out = 0;
  for (const kir::Buffer& buf : k.buffers) {
    bool is_in = buf.role == kir::Buffer::Role::Input;
    if ((is_in && in >= inputs.size()) || (!is_in && out >= outputs.size()))
      return invalid_argument("kernel ", k.name, ": no tensor for buffer ", buf.name);
    // Inputs are only read; the runner keeps one pointer type for both roles.
    HostTensor* t = is_in ? const_cast<HostTensor*>(inputs[in++]) : outputs[out++];
    absl::StatusOr<std::vector<int64_t>> shape = evaluate_shape(buf.shape, b);
    if (!shape.ok()) return invalid_argument("kernel ", k.name, ": buffer ", buf.name, ": ", shape.status().message());
    if (t->dtype() != buf.dtype || t->shape() != *shape)
      return invalid_argument("kernel ", k.name, ": buffer ", buf.name, " expects ", dtype_name(buf.dtype),
                              fmt::format("{}", *shape), ", got ", t->type_string());
    all.push_back(t);
  }
  return Runner(k, std::move(all), b).run();
}

absl::StatusOr<std::vector<HostTensor>> evaluate_kernels(const Graph& g, const Schedule& s,
                                                         const std::vector<kir::Kernel>& kernels,
                                                         const TensorMap& args, const MemoryPlan* plan) {
  if (kernels.size() != s.groups.size())
    return invalid_argument(kernels.size(), " kernels for a schedule of ", s.groups.size(), " groups");
  absl::flat_hash_map<const Value*, const HostTensor*> env;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const Value* a : g.args()) {
    if (a->is_param() && a->data()) {
      env[a] = a->data().get();
      continue;
    }
    auto it = args.find(a->name());
    if (it == args.end()) return invalid_argument("missing argument %", a->name(), ": ", a->type().to_string());
    if (it->second.dtype() != a->dtype())
      return invalid_argument("argument %", a->name(), " expects ", a->type().to_string(), ", got ",
                              it->second.type_string());
    env[a] = &it->second;
    shapes[a->name()] = it->second.shape();
  }
  KILN_ASSIGN_OR_RETURN(Bindings b, bind_symbols(g, shapes));

  absl::flat_hash_map<const Value*, const Value*> in_place;  // buffer -> the dead input it overwrites
  if (plan)
    for (const PlannedBuffer& pb : plan->buffers)
      if (pb.reuses) in_place[pb.value] = pb.reuses;
  std::deque<HostTensor> storage;
  for (size_t i = 0; i < kernels.size(); ++i) {
    const kir::Kernel& k = kernels[i];
    std::vector<const HostTensor*> in;
    std::vector<HostTensor*> out;
    std::vector<const Value*> out_values;
    HostTensor* checks = nullptr;  // the Check buffer, after the outputs
    for (const kir::Buffer& buf : k.buffers) {
      if (buf.role == kir::Buffer::Role::Check) {
        out.push_back(checks = &storage.emplace_back(DType::i64, std::vector<int64_t>{2 * static_cast<int64_t>(k.checks.size())}));
        continue;
      }
      const Value* v = g.find(buf.name);
      if (!v) return invalid_argument("kernel ", k.name, ": buffer ", buf.name, " names no value of the graph");
      if (buf.role == kir::Buffer::Role::Input) {
        auto it = env.find(v);
        if (it == env.end())
          return invalid_argument("kernel ", k.name, " reads %", buf.name, " before any earlier group computes it");
        in.push_back(it->second);
        continue;
      }
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(buf.shape, b));
      if (auto donor = in_place.find(v); donor != in_place.end()) {
        auto it = env.find(donor->second);
        if (it == env.end() || it->second->dtype() != buf.dtype || it->second->shape() != shape)
          return invalid_argument("kernel ", k.name, ": %", buf.name, " goes in place over %", donor->second->name(),
                                  ", which is not a live buffer of its type");
        // The donor is dead after this kernel, so its buffer is this one's.
        out.push_back(const_cast<HostTensor*>(it->second));
      } else if (const Value* state = state_storage(v); state && env.contains(state)) {
        // A state write stores some rows only: the rest is the state as it was (a copy
        // here, since `args` stay the caller's; devices write the state itself).
        out.push_back(&storage.emplace_back(*env.at(state)));
      } else {
        out.push_back(&storage.emplace_back(buf.dtype, shape));
      }
      out_values.push_back(v);
    }
    KILN_RETURN_IF_ERROR(run_kernel(k, in, out, b));
    for (size_t c = 0; checks && c < k.checks.size(); ++c) {
      const int64_t words[2] = {checks->get_int(2 * c), checks->get_int(2 * c + 1)};
      KILN_RETURN_IF_ERROR(kir::index_check_error(k.checks[c], words));
    }
    for (size_t j = 0; j < out_values.size(); ++j) env[out_values[j]] = out[j];
  }
  std::vector<HostTensor> results;
  for (const Value* v : g.outputs()) {
    auto it = env.find(v);
    if (it == env.end()) return invalid_argument("output %", v->name(), " is computed by no group of the schedule");
    results.push_back(*it->second);
  }
  return results;
}

}  // namespace kiln
