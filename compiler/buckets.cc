#include "compiler/buckets.h"

#include <algorithm>
#include <set>

#include "ir/graph.h"
#include "ir/host_tensor.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

DevicePtr address(const Tensor& t) { return reinterpret_cast<DevicePtr>(t.data()); }
int64_t nbytes(const Tensor& t) { return t.numel() * dtype_size(t.dtype()); }

// Whether `shape` mentions `symbol`, and whether only as its leading dim, exactly.
struct Use {
  bool any = false, leading_only = true;
};
Use use_of(const Shape& shape, const std::string& symbol) {
  Use u;
  for (size_t d = 0; d < shape.size(); ++d) {
    std::set<std::string> syms;
    shape[d].collect_symbols(syms);
    if (!syms.count(symbol)) continue;
    u.any = true;
    if (d != 0 || !shape[d].is_symbol()) u.leading_only = false;
  }
  return u;
}

// The view of the first `rows` rows of a contiguous tensor.
absl::StatusOr<Tensor> first_rows(const Tensor& t, int64_t rows) {
  std::vector<int64_t> shape = t.shape();
  shape[0] = rows;
  return Tensor::wrap(t.data(), t.dtype(), std::move(shape), {}, t.device());
}

}  // namespace

absl::StatusOr<Bucketing> Bucketing::make(const BucketOptions& o, const CompiledModule& m,
                                          const std::vector<SymbolInfo>& slot_bounds) {
  Bucketing bk;
  bk.module_ = &m;
  bk.symbol_ = o.symbol;
  const std::string& g = m.state.graph.name();
  auto it = std::find(m.symbols.begin(), m.symbols.end(), o.symbol);
  if (it == m.symbols.end())
    return invalid_argument("buckets: graph ", g, " has no symbol ", o.symbol, " in its arguments (symbols: ",
                            str_join(m.symbols, ", ", [](const std::string& s) { return s; }), ")");
  bk.slot_ = static_cast<int>(it - m.symbols.begin());
  const SymbolInfo& bounds = slot_bounds[bk.slot_];
  if (o.sizes.empty()) return invalid_argument("buckets: no sizes for ", o.symbol);
  for (size_t k = 0; k < o.sizes.size(); ++k) {
    int64_t s = o.sizes[k];
    if (k > 0 && s <= o.sizes[k - 1])
      return invalid_argument("buckets: sizes of ", o.symbol, " must be ascending, got ", o.sizes[k - 1], " then ", s);
    if (s < bounds.min || (bounds.max && s > *bounds.max))
      return invalid_argument("buckets: size ", s, " of ", o.symbol, " is outside its bounds [", bounds.min, ", ",
                              bounds.max ? std::to_string(*bounds.max) : std::string("inf"), "]");
  }
  bk.sizes_ = o.sizes;
  bool padded = false;
  for (const Value* a : m.args) {
    Use u = use_of(a->shape(), o.symbol);
    if (u.any && (a->is_param() || !u.leading_only))
      return invalid_argument("buckets: ", a->is_param() ? "parameter" : "argument", " %", a->name(), " ",
                              a->type().to_string(), " has ", o.symbol,
                              a->is_param() ? "" : " outside its leading dim", ": a bucketed symbol must be the "
                              "leading dim of the arguments and outputs it appears in, and only there");
    Arg arg{u.any, a->is_state(), a->dtype(), 0, {}};
    if (auto p = o.pad.find(a->name()); p != o.pad.end()) {
      if (!u.any || a->is_state())
        return invalid_argument("buckets: a pad value for %", a->name(), ", which ",
                                u.any ? "is state (never copied, so never padded)" : str_cat("has no ", o.symbol, " dim"));
      arg.pad = p->second;
    }
    padded = padded || (u.any && !a->is_state());
    bk.args_.push_back(std::move(arg));
  }
  for (const auto& pad : o.pad) {
    const std::string& name = pad.first;  // not a structured binding: clang 14 cannot capture one
    if (std::none_of(m.args.begin(), m.args.end(), [&](const Value* a) { return a->name() == name; }))
      return invalid_argument("buckets: a pad value for %", name, ", which is no argument of ", g);
  }
  if (!padded)
    return invalid_argument("buckets: no argument of ", g, " but state has ", o.symbol, ", so no call gives its batch");
  for (const Value* out : m.state.graph.outputs()) {
    Use u = use_of(out->shape(), o.symbol);
    if (u.any && !u.leading_only)
      return invalid_argument("buckets: output %", out->name(), " ", out->type().to_string(), " has ", o.symbol,
                              " outside its leading dim: a bucketed symbol must be the leading dim of the "
                              "arguments and outputs it appears in, and only there");
    Out r{u.any, -1, out->dtype()};
    const Value* storage = state_storage(out);
    for (size_t i = 0; storage && i < m.args.size(); ++i)
      if (m.args[i] == storage) r.state_arg = static_cast<int>(i);
    bk.outs_.push_back(r);
  }
  return bk;
}

absl::StatusOr<size_t> Bucketing::bucket_of(int64_t rows) const {
  auto it = std::lower_bound(sizes_.begin(), sizes_.end(), rows);
  if (it == sizes_.end())
    return invalid_argument("buckets: ", symbol_, " = ", rows, " is beyond the largest bucket (",
                            str_join(sizes_, ", ", [](int64_t s) { return std::to_string(s); }),
                            "): split the batch, or compile with a larger bucket");
  return static_cast<size_t>(it - sizes_.begin());
}

absl::StatusOr<int64_t> Bucketing::rows(std::span<const Tensor> args) const {
  if (args.size() != args_.size())
    return invalid_argument("graph ", module_->state.graph.name(), " takes ", args_.size(), " arguments, got ",
                            args.size());
  for (size_t i = 0; i < args.size(); ++i)
    if (args_[i].bucketed && !args_[i].state) {
      if (args[i].rank() < 1)
        return invalid_argument("argument ", i, " (%", module_->args[i]->name(), ") expects ",
                                module_->args[i]->type().to_string(), ", got ", args[i].type_string());
      return args[i].shape()[0];
    }
  return absl::InternalError("buckets: no bucketed argument");  // make() saw one
}

absl::StatusOr<Bucketing::Staging*> Bucketing::staging(std::span<const int64_t> syms, Executor& exe,
                                                       DeviceAdapter& device) {
  std::vector<int64_t> key(syms.begin(), syms.end());
  if (auto it = staging_.find(key); it != staging_.end()) return &it->second;
  Staging st;
  Bindings b = module_->bindings(syms);
  for (const Value* v : module_->state.graph.outputs()) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(v->shape(), b));
    st.out_shapes.push_back(std::move(shape));
  }
  absl::StatusOr<StaticSlots> slots = exe.static_slots(syms);
  const bool captures = slots.ok();
  for (size_t i = 0; i < args_.size(); ++i) {
    st.inputs.emplace_back();
    st.pad_from.push_back(syms[slot_]);  // nothing written yet: every row needs its pad value
    if (!args_[i].bucketed || args_[i].state) continue;
    if (captures) {
      st.inputs.back() = slots->inputs[i];
    } else {
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> shape, evaluate_shape(module_->args[i]->shape(), b));
      KILN_ASSIGN_OR_RETURN(st.inputs.back(), device.empty(args_[i].dtype, shape));
    }
  }
  for (size_t j = 0; j < outs_.size(); ++j) {
    st.outputs.emplace_back();
    if (!outs_[j].bucketed || outs_[j].state_arg >= 0) continue;
    if (captures) {
      st.outputs.back() = slots->outputs[j];
    } else {
      KILN_ASSIGN_OR_RETURN(st.outputs.back(), device.empty(outs_[j].dtype, st.out_shapes[j]));
    }
  }
  return &staging_.emplace(std::move(key), std::move(st)).first->second;
}

absl::StatusOr<StaticSlots> Bucketing::slot_views(std::span<const int64_t> syms, int64_t rows, Executor& exe,
                                                  DeviceAdapter& device) {
  KILN_ASSIGN_OR_RETURN(StaticSlots slots, exe.static_slots(syms));  // an error where there are none
  KILN_ASSIGN_OR_RETURN(Staging * st, staging(syms, exe, device));
  for (size_t i = 0; i < args_.size(); ++i)
    if (args_[i].bucketed && !args_[i].state) {
      KILN_ASSIGN_OR_RETURN(slots.inputs[i], first_rows(st->inputs[i], rows));
      // The caller may write every row handed out: they need padding again before a smaller batch.
      st->pad_from[i] = std::max(st->pad_from[i], rows);
    }
  for (size_t j = 0; j < outs_.size(); ++j)
    if (outs_[j].bucketed && outs_[j].state_arg < 0) {
      KILN_ASSIGN_OR_RETURN(slots.outputs[j], first_rows(st->outputs[j], rows));
    }
  return slots;
}

absl::Status Bucketing::pad(std::span<const Tensor> args, int64_t rows, int64_t size, Staging& st,
                            DeviceAdapter& device, void* stream, std::vector<Tensor>& padded) {
  padded.assign(args.begin(), args.end());
  CallContext c{stream, 0};
  for (size_t i = 0; i < args.size(); ++i) {
    Arg& a = args_[i];
    if (!a.bucketed) continue;
    const Tensor& t = args[i];
    if (a.state) {
      if (t.shape()[0] != size) {
        KILN_ASSIGN_OR_RETURN(padded[i], first_rows(t, size));
      }
      continue;
    }
    if (rows == size && t.shape()[0] == size) continue;  // nothing to pad
    Tensor& dst = st.inputs[i];
    const int64_t row_bytes = nbytes(dst) / size;
    if (rows > 0 && address(t) != address(dst))
      KILN_RETURN_IF_ERROR(device.copy(address(dst), address(t), rows * row_bytes, c));
    if (st.pad_from[i] > rows) {
      if (a.pad_rows.data() == nullptr) {
        std::vector<int64_t> shape = dst.shape();
        shape[0] = sizes_.back();
        HostTensor h(a.dtype, shape);
        for (int64_t e = 0; e < h.numel(); ++e) h.set(e, a.pad);
        KILN_ASSIGN_OR_RETURN(a.pad_rows, Tensor::from_host(h, device.device(), stream));
      }
      KILN_RETURN_IF_ERROR(device.copy(address(dst) + rows * row_bytes, address(a.pad_rows),
                                       (st.pad_from[i] - rows) * row_bytes, c));
    }
    st.pad_from[i] = rows;
    padded[i] = dst;
  }
  return absl::OkStatus();
}

absl::Status Bucketing::out_slots(const std::vector<Tensor>& outputs, int64_t rows, int64_t size, const Staging& st,
                                  DeviceId device, std::vector<Tensor>& slots) const {
  slots.assign(outputs.size(), Tensor());
  const std::vector<Value*>& outs = module_->state.graph.outputs();
  for (size_t j = 0; j < outputs.size(); ++j) {
    const Tensor& o = outputs[j];
    const Out& r = outs_[j];
    if (o.data() != nullptr) {
      std::vector<int64_t> shape = st.out_shapes[j];
      if (r.bucketed) shape[0] = rows;
      if (r.state_arg < 0 &&
          (o.dtype() != r.dtype || o.shape() != shape || o.device() != device || !o.is_contiguous()))
        return invalid_argument("output ", j, " (%", outs[j]->name(), ") expects a contiguous ", dtype_name(r.dtype),
                                fmt::format("{}", shape), " on ", device_name(device), ", got ", o.type_string());
    }
    if (r.state_arg >= 0) continue;  // the executor sets it to the (viewed) state argument
    slots[j] = r.bucketed && !(rows == size && o.data() != nullptr) ? st.outputs[j] : o;
  }
  return absl::OkStatus();
}

absl::Status Bucketing::finish(std::span<const Tensor> args, int64_t rows, const std::vector<Tensor>& slots,
                               DeviceAdapter& device, void* stream, std::vector<Tensor>& outputs) const {
  CallContext c{stream, 0};
  for (size_t j = 0; j < outputs.size(); ++j) {
    const Out& r = outs_[j];
    if (r.state_arg >= 0) {
      outputs[j] = args[r.state_arg];
      continue;
    }
    const Tensor& s = slots[j];
    if (!r.bucketed) {
      outputs[j] = s;  // the caller's own, or allocated by the executor
      continue;
    }
    if (address(outputs[j]) == address(s)) continue;  // written in place: the caller's, or the staging's view
    if (outputs[j].data() == nullptr) {
      std::vector<int64_t> shape = s.shape();
      shape[0] = rows;
      KILN_ASSIGN_OR_RETURN(outputs[j], device.empty(r.dtype, shape));
    }
    const int64_t bytes = s.shape()[0] == 0 ? 0 : nbytes(s) / s.shape()[0] * rows;
    if (bytes > 0) KILN_RETURN_IF_ERROR(device.copy(address(outputs[j]), address(s), bytes, c));
  }
  return absl::OkStatus();
}

}  // namespace kiln
