#include "compiler/weights.h"

#include <algorithm>
#include <atomic>
#include <list>
#include <mutex>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "codegen/module.h"
#include "ir/checked.h"
#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

std::atomic<uint64_t> next_store_id{1};

// Where (part of) a parameter's values go in a buffer: `rows` runs of `row_bytes`, the first
// at `offset`, `stride` bytes apart, after casting the values through `casts` in order.
struct Piece {
  int buffer = 0;
  int64_t offset = 0, rows = 1, row_bytes = 0, stride = 0;
  std::vector<DType> casts;
};

struct Buffer {
  std::string recipe;  // what it holds: stores and graphs match their buffers by it
  std::string value;   // the weight-prep result it is (a graph value); empty: a parameter's own memory
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  int64_t bytes = 0;
};

// How a graph's runtime parameters and the weight-prep results made from them alone are held.
struct Layout {
  std::vector<Weights::Parameter> params;    // in signature order
  std::vector<std::vector<Piece>> pieces;    // per parameter: where its values go
  std::vector<int> own;                      // per parameter: the piece that is its own memory; -1: none
  std::vector<Buffer> buffers;
};

int64_t nbytes(DType dtype, const std::vector<int64_t>& shape) {
  int64_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= d;
  return n;
}

bool plain(const Piece& p, int64_t param_bytes) { return p.rows == 1 && p.casts.empty() && p.row_bytes == param_bytes; }

std::string casts_text(const std::vector<DType>& casts) {
  return str_join(casts, "", [](DType d) { return str_cat(" as ", dtype_name(d)); });
}

// A weight-prep result held in its final form: out = [casts](concat(parts, axis)) or
// [casts](part), each part a parameter through casts. Anything else prep computes stays a
// prep step, run from the store's parameters.
struct LaidOut {
  Value* out = nullptr;
  int64_t axis = -1;  // the concat's axis; -1: one part, the whole result
  std::vector<std::pair<int, std::vector<DType>>> parts;  // parameter index, casts in order
};

std::optional<LaidOut> laid_out(const KernelGroup& grp, const absl::flat_hash_map<const Value*, int>& param_index) {
  if (grp.outputs.size() != 1 || !grp.prologue.empty()) return std::nullopt;
  absl::flat_hash_set<const Node*> in(grp.nodes.begin(), grp.nodes.end()), seen;
  auto producer_in = [&](const Value* v, Op op) {
    const Node* n = v->producer();
    return n && n->op() == op && in.contains(n) ? n : nullptr;
  };
  // A parameter through casts, the casts in the order they apply.
  auto part = [&](Value* v) -> std::optional<std::pair<int, std::vector<DType>>> {
    std::vector<DType> casts;
    while (const Node* c = producer_in(v, Op::Cast)) {
      casts.insert(casts.begin(), v->dtype());
      seen.insert(c);
      v = c->operand(0);
    }
    auto it = param_index.find(v);
    if (it == param_index.end()) return std::nullopt;
    return std::pair{it->second, casts};
  };
  LaidOut r;
  r.out = grp.outputs[0];
  Value* v = r.out;
  std::vector<DType> outer;  // casts of the whole result: they apply to each part after its own
  while (const Node* c = producer_in(v, Op::Cast)) {
    outer.insert(outer.begin(), v->dtype());
    seen.insert(c);
    v = c->operand(0);
  }
  if (const Node* cat = producer_in(v, Op::Concat)) {
    seen.insert(cat);
    int64_t rank = static_cast<int64_t>(v->shape().size());
    r.axis = ConcatAttrs(*cat).axis() < 0 ? ConcatAttrs(*cat).axis() + rank : ConcatAttrs(*cat).axis();
    for (Value* o : cat->operands()) {
      std::optional<std::pair<int, std::vector<DType>>> p = part(o);
      if (!p) return std::nullopt;
      p->second.insert(p->second.end(), outer.begin(), outer.end());
      r.parts.push_back(*std::move(p));
    }
  } else {
    auto it = param_index.find(v);
    if (it == param_index.end()) return std::nullopt;
    r.parts.push_back({it->second, outer});
  }
  if (seen.size() != grp.nodes.size()) return std::nullopt;  // the group computes more than that
  return r;
}

absl::StatusOr<Layout> analyze(const CompiledModule& m) {
  Layout l;
  const Graph& g = m.state.graph;
  absl::flat_hash_map<const Value*, int> param_index;
  for (const Value* a : m.args) {
    if (!a->is_param()) continue;
    Weights::Parameter p{a->name(), a->dtype(), {}};
    for (const SymExpr& d : a->shape()) {
      std::optional<int64_t> c = d.constant();
      if (!c) return invalid_argument("weight store for graph ", g.name(), ": parameter %", a->name(), " has a symbolic shape ",
                                      shape_to_string(a->shape()), "; a store holds parameters of static shapes");
      p.shape.push_back(*c);
    }
    KILN_RETURN_IF_ERROR(checked_nbytes(p.dtype, p.shape, str_cat("parameter %", p.name)).status());
    param_index[a] = static_cast<int>(l.params.size());
    l.params.push_back(std::move(p));
  }
  l.pieces.resize(l.params.size());
  l.own.assign(l.params.size(), -1);

  absl::flat_hash_map<const Node*, int> group_of;
  absl::flat_hash_set<int> held_groups;
  for (const KernelGroup& grp : m.state.schedule.groups) {
    for (const Node* n : grp.nodes) group_of[n] = grp.id;
    for (const Node* n : grp.prologue) group_of[n] = grp.id;
    if (!grp.weight_prep) continue;
    std::optional<LaidOut> lo = laid_out(grp, param_index);
    if (!lo) continue;
    held_groups.insert(grp.id);
    Buffer b;
    b.value = lo->out->name();
    b.dtype = lo->out->dtype();
    for (const SymExpr& d : lo->out->shape()) b.shape.push_back(*d.constant());  // weight prep: static (fuse_elementwise)
    b.bytes = nbytes(b.dtype, b.shape);
    int index = static_cast<int>(l.buffers.size());
    int64_t elem = dtype_size(b.dtype), inner = 1, outer = 1, start = 0;
    if (lo->axis >= 0) {
      for (int64_t d = 0; d < lo->axis; ++d) outer *= b.shape[d];
      for (size_t d = lo->axis + 1; d < b.shape.size(); ++d) inner *= b.shape[d];
    }
    std::vector<std::string> parts;
    for (const auto& [p, casts] : lo->parts) {
      const Weights::Parameter& param = l.params[p];
      Piece piece{index, 0, 1, b.bytes, b.bytes, casts};
      if (lo->axis >= 0) {
        int64_t size = param.shape[lo->axis];
        piece = Piece{index, start * inner * elem, outer, size * inner * elem, b.shape[lo->axis] * inner * elem, casts};
        start += size;
      }
      l.pieces[p].push_back(piece);
      parts.push_back(str_cat("%", param.name, " ", dtype_name(param.dtype), fmt::format("{}", param.shape), casts_text(casts)));
    }
    b.recipe = str_cat(dtype_name(b.dtype), fmt::format("{}", b.shape), " = ",
                       lo->axis >= 0 ? str_cat("concat(axis ", lo->axis, ": ") : std::string("("),
                       str_join(parts, ", ", [](const std::string& s) { return s; }), ")");
    l.buffers.push_back(std::move(b));
  }

  // A parameter that something besides the results laid out reads needs memory of its own:
  // a plain view of its part of a buffer where it has one, else a buffer of its own.
  absl::flat_hash_map<const Value*, std::vector<Node*>> uses = g.uses();
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  for (const Value* a : m.args) {
    auto pi = param_index.find(a);
    if (pi == param_index.end()) continue;
    int p = pi->second;
    bool other_reader = returned.contains(a);
    if (auto it = uses.find(a); it != uses.end())
      for (const Node* n : it->second) {
        auto gi = group_of.find(n);
        other_reader = other_reader || gi == group_of.end() || !held_groups.contains(gi->second);
      }
    if (!other_reader) continue;
    int64_t bytes = nbytes(l.params[p].dtype, l.params[p].shape);
    for (size_t k = 0; k < l.pieces[p].size() && l.own[p] < 0; ++k)
      if (plain(l.pieces[p][k], bytes)) l.own[p] = static_cast<int>(k);
    if (l.own[p] >= 0) continue;
    Buffer b{str_cat("%", l.params[p].name, " ", dtype_name(l.params[p].dtype), fmt::format("{}", l.params[p].shape)), "",
             l.params[p].dtype, l.params[p].shape, bytes};
    l.pieces[p].push_back(Piece{static_cast<int>(l.buffers.size()), 0, 1, bytes, bytes, {}});
    l.own[p] = static_cast<int>(l.pieces[p].size()) - 1;
    l.buffers.push_back(std::move(b));
  }
  return l;
}

// `t` cast through `casts` in order, each rounding as a store to that dtype does.
HostTensor cast_through(const HostTensor& t, const std::vector<DType>& casts) {
  HostTensor cur = t;
  for (DType d : casts) {
    HostTensor next(d, cur.shape());
    for (int64_t i = 0; i < cur.numel(); ++i) {
      if (is_integer(d) && is_integer(cur.dtype())) next.set_int(i, cur.get_int(i));
      else next.set(i, cur.get(i));
    }
    cur = std::move(next);
  }
  return cur;
}

// The resolution of one graph's parameters and results against a store.
struct Resolved {
  std::weak_ptr<const CompiledModule> module;
  std::vector<DevicePtr> params;
  std::map<std::string, DevicePtr, std::less<>> prepared;
};

}  // namespace

struct Weights::State {
  CompiledGraph graph;  // keeps the device adapter (and the module) alive
  std::string graph_name;
  uint64_t id = 0;
  Layout layout;
  std::vector<DeviceMemory> memory;  // per buffer
  std::vector<bool> loaded;          // per parameter
  bool complete = false;             // every parameter loaded
  std::atomic<uint64_t> generation{0};
  mutable std::mutex mu;             // loads and resolutions
  mutable std::list<Resolved> resolved;

  DevicePtr address(const Piece& p) const { return memory[p.buffer].ptr() + p.offset; }
  int param(std::string_view name) const {
    for (size_t i = 0; i < layout.params.size(); ++i)
      if (layout.params[i].name == name) return static_cast<int>(i);
    return -1;
  }
  absl::StatusOr<int> checked_param(std::string_view name, DType dtype, const std::vector<int64_t>& shape) const {
    int p = param(name);
    if (p < 0)
      return invalid_argument("weight store for graph ", graph_name, ": no runtime parameter %", name, " (it has ",
                              str_join(layout.params, ", ", [](const Parameter& q) { return str_cat("%", q.name); }), ")");
    const Parameter& want = layout.params[p];
    if (dtype != want.dtype || shape != want.shape)
      return invalid_argument("weight store for graph ", graph_name, ": parameter %", name, " expects ",
                              dtype_name(want.dtype), fmt::format("{}", want.shape), ", got ", dtype_name(dtype),
                              fmt::format("{}", shape));
    return p;
  }

  // Host bytes `src` (the piece's values, in its final dtype, dense) into the piece's place.
  absl::Status put_host(const Piece& piece, const HostTensor& src) {
    DeviceAdapter& dev = graph.device_adapter();
    if (piece.rows == 1) {
      KILN_ASSIGN_OR_RETURN(Tensor dst, Tensor::wrap(reinterpret_cast<void*>(address(piece)), src.dtype(), src.shape(),
                                                     {}, dev.device()));
      return dst.copy_from_host(src);
    }
    // Interleaved with other parameters (a concat along a later axis): through one device copy.
    KILN_ASSIGN_OR_RETURN(Tensor staged, Tensor::from_host(src, dev.device()));
    return put_device(piece, reinterpret_cast<DevicePtr>(staged.data()));
  }
  absl::Status put_device(const Piece& piece, DevicePtr src) {
    DeviceAdapter& dev = graph.device_adapter();
    for (int64_t r = 0; r < piece.rows; ++r)
      KILN_RETURN_IF_ERROR(dev.copy(address(piece) + r * piece.stride, src + r * piece.row_bytes, piece.row_bytes, {}));
    return dev.synchronize(nullptr);
  }

  absl::Status load_host(int p, const HostTensor& value) {
    for (const Piece& piece : layout.pieces[p])
      KILN_RETURN_IF_ERROR(put_host(piece, piece.casts.empty() ? value : cast_through(value, piece.casts)));
    mark_loaded(p);
    return absl::OkStatus();
  }
  void mark_loaded(int p) {
    loaded[p] = true;
    complete = std::all_of(loaded.begin(), loaded.end(), [](bool b) { return b; });
  }
  absl::Status load_tensor(int p, const Tensor& value) {
    if (!value.is_contiguous()) return invalid_argument("weight store: parameter %", layout.params[p].name, " is not contiguous");
    if (value.numel() > 0 && !value.data()) return invalid_argument("weight store: parameter %", layout.params[p].name, " has no data");
    DeviceAdapter& dev = graph.device_adapter();
    const std::vector<Piece>& pieces = layout.pieces[p];
    bool casts = std::any_of(pieces.begin(), pieces.end(), [](const Piece& q) { return !q.casts.empty(); });
    if (value.device() != dev.device() || casts) {  // another device's, or cast on the host
      KILN_ASSIGN_OR_RETURN(HostTensor host, value.to_host());
      return load_host(p, host);
    }
    for (const Piece& piece : pieces) KILN_RETURN_IF_ERROR(put_device(piece, reinterpret_cast<DevicePtr>(value.data())));
    mark_loaded(p);
    return absl::OkStatus();
  }
};

absl::StatusOr<Weights> Weights::create(const CompiledGraph& cg) {
  auto s = std::make_shared<State>();
  s->graph = cg;
  s->graph_name = cg.graph().name();
  s->id = next_store_id++;
  KILN_ASSIGN_OR_RETURN(s->layout, analyze(cg.module()));
  s->loaded.assign(s->layout.params.size(), false);
  DeviceAdapter& dev = cg.device_adapter();
  KILN_RETURN_IF_ERROR(dev.activate());
  for (const Buffer& b : s->layout.buffers) {
    KILN_RETURN_IF_ERROR(check_allocation(b.bytes, dev.allocation_limit(), str_cat("weight buffer ", b.recipe)));
    KILN_ASSIGN_OR_RETURN(DeviceMemory m, dev.allocate(std::max<int64_t>(b.bytes, 1)));
    s->memory.push_back(std::move(m));
  }
  // A parameter nothing reads has no place: it is loaded by being checked.
  for (size_t p = 0; p < s->layout.params.size(); ++p)
    if (s->layout.pieces[p].empty()) s->mark_loaded(static_cast<int>(p));
  if (s->layout.params.empty()) s->complete = true;
  Weights w;
  w.s_ = std::move(s);
  return w;
}

const std::vector<Weights::Parameter>& Weights::parameters() const { return s_->layout.params; }

absl::Status Weights::load(std::string_view name, const HostTensor& value) {
  std::lock_guard<std::mutex> lock(s_->mu);
  KILN_ASSIGN_OR_RETURN(int p, s_->checked_param(name, value.dtype(), value.shape()));
  KILN_RETURN_IF_ERROR(s_->graph.device_adapter().activate());
  absl::Status st = s_->load_host(p, value);
  ++s_->generation;
  return st;
}

absl::Status Weights::load(std::string_view name, const Tensor& value) {
  std::lock_guard<std::mutex> lock(s_->mu);
  KILN_ASSIGN_OR_RETURN(int p, s_->checked_param(name, value.dtype(), value.shape()));
  KILN_RETURN_IF_ERROR(s_->graph.device_adapter().activate());
  absl::Status st = s_->load_tensor(p, value);
  ++s_->generation;
  return st;
}

namespace {

// Each parameter's entry in `values`, checked before anything is copied.
template <typename T>
absl::StatusOr<std::vector<const T*>> lookup(const std::vector<Weights::Parameter>& params,
                                             const std::map<std::string, T>& values, std::string_view graph) {
  std::vector<const T*> out;
  for (const Weights::Parameter& p : params) {
    auto it = values.find(p.name);
    if (it == values.end())
      return invalid_argument("weight store for graph ", graph, ": parameter %", p.name, " (", dtype_name(p.dtype),
                              fmt::format("{}", p.shape), ") is missing from the values given");
    out.push_back(&it->second);
  }
  return out;
}

}  // namespace

absl::Status Weights::load(const std::map<std::string, HostTensor>& values) {
  std::lock_guard<std::mutex> lock(s_->mu);
  KILN_ASSIGN_OR_RETURN(std::vector<const HostTensor*> v, lookup(s_->layout.params, values, s_->graph_name));
  for (size_t p = 0; p < v.size(); ++p) KILN_RETURN_IF_ERROR(s_->checked_param(s_->layout.params[p].name, v[p]->dtype(), v[p]->shape()).status());
  KILN_RETURN_IF_ERROR(s_->graph.device_adapter().activate());
  absl::Status st;
  for (size_t p = 0; p < v.size() && st.ok(); ++p) st = s_->load_host(static_cast<int>(p), *v[p]);
  ++s_->generation;
  return st;
}

absl::Status Weights::load(const std::map<std::string, Tensor>& values) {
  std::lock_guard<std::mutex> lock(s_->mu);
  KILN_ASSIGN_OR_RETURN(std::vector<const Tensor*> v, lookup(s_->layout.params, values, s_->graph_name));
  for (size_t p = 0; p < v.size(); ++p) KILN_RETURN_IF_ERROR(s_->checked_param(s_->layout.params[p].name, v[p]->dtype(), v[p]->shape()).status());
  KILN_RETURN_IF_ERROR(s_->graph.device_adapter().activate());
  absl::Status st;
  for (size_t p = 0; p < v.size() && st.ok(); ++p) st = s_->load_tensor(static_cast<int>(p), *v[p]);
  ++s_->generation;
  return st;
}

absl::Status Weights::load(const std::function<absl::StatusOr<HostTensor>(const Parameter&)>& fetch) {
  for (const Parameter& p : s_->layout.params) {
    absl::StatusOr<HostTensor> t = fetch(p);
    if (!t.ok()) return prefix_error(t.status(), "weight store for graph ", s_->graph_name, ": parameter %", p.name, ": ");
    KILN_RETURN_IF_ERROR(load(p.name, *t));
  }
  return absl::OkStatus();
}

std::vector<std::string> Weights::missing() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  std::vector<std::string> out;
  for (size_t p = 0; p < s_->loaded.size(); ++p)
    if (!s_->loaded[p]) out.push_back(s_->layout.params[p].name);
  return out;
}

int64_t Weights::bytes() const {
  int64_t n = 0;
  for (const DeviceMemory& m : s_->memory) n += m.size();
  return n;
}

int64_t Weights::parameter_bytes() const {
  int64_t n = 0;
  for (const Parameter& p : s_->layout.params) n += nbytes(p.dtype, p.shape);
  return n;
}

std::string Weights::layout_text() const {
  const Layout& l = s_->layout;
  std::string out;
  for (size_t b = 0; b < l.buffers.size(); ++b) {
    out += str_cat("buffer ", b, ": ", l.buffers[b].value.empty() ? "" : str_cat("%", l.buffers[b].value, " "),
                   l.buffers[b].recipe, ", ", l.buffers[b].bytes, " bytes");
    for (size_t p = 0; p < l.params.size(); ++p)
      for (size_t k = 0; k < l.pieces[p].size(); ++k) {
        const Piece& q = l.pieces[p][k];
        if (q.buffer != static_cast<int>(b) || !l.buffers[b].value.size()) continue;
        out += str_cat("; %", l.params[p].name, " at ", q.offset,
                       q.rows > 1 ? str_cat(" (", q.rows, " runs of ", q.row_bytes, " bytes, ", q.stride, " apart)") : "",
                       static_cast<int>(k) == l.own[p] ? " (its own memory)" : "");
      }
    out += "\n";
  }
  return out;
}

absl::StatusOr<Tensor> Weights::parameter(std::string_view name) const {
  int p = s_->param(name);
  if (p < 0) return invalid_argument("weight store for graph ", s_->graph_name, ": no runtime parameter %", name);
  const Parameter& q = s_->layout.params[p];
  for (const Piece& piece : s_->layout.pieces[p])
    if (plain(piece, nbytes(q.dtype, q.shape)))
      return Tensor::wrap(reinterpret_cast<void*>(s_->address(piece)), q.dtype, q.shape, {},
                          s_->graph.device_adapter().device(), s_);
  return invalid_argument("weight store for graph ", s_->graph_name, ": parameter %", name,
                          " is held only cast or interleaved with others (", layout_text(), ")");
}

absl::StatusOr<HeldWeights> Weights::held(const std::shared_ptr<const CompiledModule>& module) const {
  const CompiledModule& m = *module;
  State& s = *s_;
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.complete)
    for (size_t p = 0; p < s.loaded.size(); ++p)
      if (!s.loaded[p])
        return absl::FailedPreconditionError(str_cat("weight store for graph ", s.graph_name, ": parameter %",
                                                   s.layout.params[p].name, " was never loaded"));
  const Resolved* r = nullptr;
  for (auto it = s.resolved.begin(); it != s.resolved.end() && !r;) {
    std::shared_ptr<const CompiledModule> alive = it->module.lock();
    if (!alive) {
      it = s.resolved.erase(it);
      continue;
    }
    if (alive.get() == &m) r = &*it;
    ++it;
  }
  if (!r) {
    // The graph's own layout, matched against the store's buffer by buffer.
    KILN_ASSIGN_OR_RETURN(Layout want, analyze(m));
    Resolved res;
    res.module = module;
    res.params.assign(m.args.size(), 0);
    for (const Buffer& b : want.buffers) {
      if (b.value.empty()) continue;
      auto it = std::find_if(s.layout.buffers.begin(), s.layout.buffers.end(),
                             [&](const Buffer& h) { return h.recipe == b.recipe; });
      if (it == s.layout.buffers.end())
        return invalid_argument("graph ", m.state.graph.name(), " needs weights laid out as ", b.recipe,
                                ", which the weight store made for graph ", s.graph_name, " does not hold");
      res.prepared.emplace(b.value, s.memory[it - s.layout.buffers.begin()].ptr());
    }
    int k = 0;
    for (size_t i = 0; i < m.args.size(); ++i) {
      if (!m.args[i]->is_param()) continue;
      const Parameter& q = want.params[k];
      KILN_ASSIGN_OR_RETURN(int p, s.checked_param(q.name, q.dtype, q.shape));
      if (want.own[k] >= 0) {
        if (s.layout.own[p] < 0)
          return invalid_argument("graph ", m.state.graph.name(), " reads parameter %", q.name,
                                  " itself; the weight store made for graph ", s.graph_name, " holds it only merged or cast");
        res.params[i] = s.address(s.layout.pieces[p][s.layout.own[p]]);
      }
      ++k;
    }
    s.resolved.push_back(std::move(res));
    r = &s.resolved.back();
  }
  return HeldWeights{s.id, s.generation.load(), &r->params, &r->prepared};
}

std::weak_ptr<const void> Weights::lifetime() const { return s_; }

}  // namespace kiln
