#include "codegen/program.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "codegen/acc_buffer.h"
#include "codegen/module.h"
#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/ops_collective.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"
#include "passes/strided_view.h"

namespace kiln {
namespace {

// The group as a WindowCopy: a zero-padded window, alone or after reshapes of the kernel's
// one input, written as the kernel's one output.
std::optional<WindowCopy> window_copy_of(const KernelGroup& grp, const kir::Kernel& k) {
  if (grp.kind != KernelGroup::Kind::Elementwise || grp.nodes.empty() || k.buffers.size() != 2 ||
      k.buffers[0].role != kir::Buffer::Role::Input || k.buffers[1].role != kir::Buffer::Role::Output)
    return std::nullopt;
  const Node& w = *grp.nodes.back();
  if (w.op() != Op::Window || WindowAttrs(w).pad_value() != 0 || k.buffers[1].name != w.result()->name())
    return std::nullopt;
  const Value* in = w.operand(0);
  for (size_t i = grp.nodes.size() - 1; i-- > 0;) {
    const Node& r = *grp.nodes[i];
    if (r.op() != Op::Reshape || r.result() != in) return std::nullopt;
    in = r.operand(0);
  }
  if (k.buffers[0].name != in->name()) return std::nullopt;
  absl::StatusOr<WindowDims> wd = window_dims(w);
  if (!wd.ok()) return std::nullopt;
  return WindowCopy{w.operand(0)->shape(), wd->kernel, wd->strides, wd->dilations, wd->pads_begin};
}

// The clamps ending a group at nodes [at, end) after `y` (relu, or maximum / minimum with a
// scalar constant, each of the previous result) as bounds; false where another op is there
// or the order of the clamps would matter.
bool clamp_bounds(const std::vector<Node*>& ns, size_t at, const Value*& y, std::optional<double>& lo,
                  std::optional<double>& hi) {
  for (; at < ns.size(); ++at) {
    const Node& n = *ns[at];
    bool relu = n.op() == Op::Relu;
    if ((!relu && n.op() != Op::Maximum && n.op() != Op::Minimum) || n.operand(0) != y) return false;
    std::optional<double> c = relu ? std::optional<double>(0) : constant_value(n.operand(1));
    if (!c || std::isnan(*c)) return false;
    std::optional<double>& bound = n.op() == Op::Minimum ? hi : lo;
    bound = !bound ? *c : n.op() == Op::Minimum ? std::min(*bound, *c) : std::max(*bound, *c);
    y = n.result();
  }
  return !(lo && hi && *lo > *hi);
}

// The group as a DepthwiseConv (decompose's conv_direct with one output per input channel,
// then what its epilogue may hold natively): [reshapes], window, mul by the weight, sum over
// the kernel dims, [add bias], [relu / maximum / minimum with scalar constants], all f32, the
// last node's result the kernel's one output.
std::optional<DepthwiseConv> depthwise_of(const KernelGroup& grp, const kir::Kernel& k) {
  const std::vector<Node*>& ns = grp.nodes;
  auto buffer = [&](const Value* v) -> int {
    for (size_t i = 0; i < k.buffers.size(); ++i)
      if (k.buffers[i].name == v->name() && k.buffers[i].role == kir::Buffer::Role::Input) return static_cast<int>(i);
    return -1;
  };
  size_t at = 0;
  while (at < ns.size() && ns[at]->op() == Op::Reshape) ++at;
  if (grp.kind != KernelGroup::Kind::Reduction || at + 3 > ns.size() || ns[at]->op() != Op::Window) return std::nullopt;
  const Node &w = *ns[at], &mul = *ns[at + 1], &sum = *ns[at + 2];
  const Value* in = w.operand(0);
  for (size_t i = at; i-- > 0;) {
    if (ns[i]->result() != in) return std::nullopt;
    in = ns[i]->operand(0);
  }
  absl::StatusOr<WindowDims> wd = window_dims(w);
  if (!wd.ok() || WindowAttrs(w).pad_value() != 0 || wd->rank() < 1 || wd->rank() > 2) return std::nullopt;
  size_t r = wd->rank();
  DepthwiseConv d{w.operand(0)->shape(), wd->kernel, wd->strides, wd->dilations, wd->pads_begin};
  d.x = buffer(in);
  // The weight as [C, k..., 1...] (or with a leading 1): C * K values in [C, k...] order.
  Shape weight_shape{w.operand(0)->shape()[1]};
  for (size_t i = 0; i < r; ++i) weight_shape.push_back(wd->kernel[i]);
  for (size_t i = 0; i < r; ++i) weight_shape.push_back(1);
  if (mul.op() != Op::Mul || mul.operand(0) != w.result()) return std::nullopt;
  const Value* wv = mul.operand(1);
  Shape led{1};
  led.insert(led.end(), weight_shape.begin(), weight_shape.end());
  if (wv->shape() != weight_shape && wv->shape() != led) return std::nullopt;
  d.weight = buffer(wv);
  std::vector<int64_t> axes(r);
  for (size_t i = 0; i < r; ++i) axes[i] = static_cast<int64_t>(2 + i);
  absl::StatusOr<std::vector<int64_t>> sum_axes = reduction_axes(sum);
  if (sum.op() != Op::Sum || sum.operand(0) != mul.result() || ReduceAttrs(sum).keepdim() || !sum_axes.ok() ||
      *sum_axes != axes)
    return std::nullopt;
  const Value* y = sum.result();
  at += 3;
  if (at < ns.size() && ns[at]->op() == Op::Add && ns[at]->operand(0) == y) {
    Shape bias_shape{weight_shape[0]};
    for (size_t i = 0; i < r; ++i) bias_shape.push_back(1);
    if (ns[at]->operand(1)->shape() != bias_shape) return std::nullopt;
    d.bias = buffer(ns[at]->operand(1));
    if (d.bias < 0) return std::nullopt;
    y = ns[at++]->result();
  }
  if (!clamp_bounds(ns, at, y, d.lo, d.hi)) return std::nullopt;
  int outputs = 0;
  for (size_t i = 0; i < k.buffers.size(); ++i)
    if (k.buffers[i].role == kir::Buffer::Role::Output) {
      ++outputs;
      d.out = static_cast<int>(i);
    }
  if (outputs != 1 || k.buffers[d.out].name != y->name() || d.x < 0 || d.weight < 0) return std::nullopt;
  for (const kir::Buffer& b : k.buffers)
    if (b.dtype != DType::f32) return std::nullopt;
  return d;
}

// The GEMM group's epilogue as a BiasClamp (see program.h): matmul or linear, [its bias or an
// add of one broadcast along the result's last axis (m one domain dim) or along every other
// axis], [clamps], all f32, n one domain dim, the domain the result's shape, one output.
std::optional<BiasClamp> bias_clamp_of(const KernelGroup& grp, const kir::Kernel& k) {
  const std::vector<Node*>& ns = grp.nodes;
  if (ns.empty() || !k.gemm || k.gemm->n_dims != 1) return std::nullopt;
  const Node& g = *ns[0];
  if (g.op() != Op::MatMul && g.op() != Op::Linear) return std::nullopt;
  const Value* y = g.result();
  const Shape& r = y->shape();
  if (r.size() < 2 || k.domain != r) return std::nullopt;
  BiasClamp e;
  // The bias: a linear's own, or an add's operand of the shape [m, 1] or [n] (leading 1s aside).
  auto take_bias = [&](const Value* bias) {
    Shape b = bias->shape();
    while (b.size() > 1 && b.front() == SymExpr(1)) b.erase(b.begin());
    if (b == Shape{r[r.size() - 2], SymExpr(1)} && k.gemm->m_dims == 1) e.per_row = true;
    else if (b == Shape{r.back()}) e.per_row = false;
    else return false;
    for (size_t i = 0; i < k.buffers.size(); ++i)
      if (k.buffers[i].name == bias->name() && k.buffers[i].role == kir::Buffer::Role::Input)
        e.bias = static_cast<int>(i);
    return e.bias >= 0;
  };
  size_t at = 1;
  if (g.op() == Op::Linear && g.num_operands() > 2) {
    if (!take_bias(g.operand(2))) return std::nullopt;
  } else if (at < ns.size() && ns[at]->op() == Op::Add && (ns[at]->operand(0) == y || ns[at]->operand(1) == y)) {
    if (!take_bias(ns[at]->operand(ns[at]->operand(0) == y ? 1 : 0))) return std::nullopt;
    y = ns[at++]->result();
  }
  if (!clamp_bounds(ns, at, y, e.lo, e.hi)) return std::nullopt;
  int outputs = 0;
  for (size_t i = 0; i < k.buffers.size(); ++i) {
    if (k.buffers[i].dtype != DType::f32) return std::nullopt;
    if (k.buffers[i].role == kir::Buffer::Role::Output) ++outputs, e.out = static_cast<int>(i);
  }
  if (outputs != 1 || k.buffers[e.out].name != y->name() || y->shape() != r || k.buffers[e.out].shape != r)
    return std::nullopt;
  return e;
}

// The group as a RowReduce (see program.h): [reshapes] of a kernel input, then one sum or
// mean of f32 over the trailing axes of its operand, one output.
std::optional<RowReduce> row_reduce_of(const KernelGroup& grp, const kir::Kernel& k) {
  const std::vector<Node*>& ns = grp.nodes;
  if (grp.kind != KernelGroup::Kind::Reduction || ns.empty() || k.buffers.size() != 2) return std::nullopt;
  const Node& n = *ns.back();
  if (n.op() != Op::Sum && n.op() != Op::Mean) return std::nullopt;
  const Value* in = n.operand(0);  // through the reshapes (a dense tensor's reshape moves nothing)
  for (size_t i = ns.size() - 1; i-- > 0;) {
    if (ns[i]->op() != Op::Reshape || ns[i]->result() != in) return std::nullopt;
    in = ns[i]->operand(0);
  }
  absl::StatusOr<std::vector<int64_t>> axes = reduction_axes(n);
  const Shape& shape = n.operand(0)->shape();
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (!axes.ok() || axes->empty()) return std::nullopt;
  for (size_t i = 0; i < axes->size(); ++i)
    if ((*axes)[i] != rank - static_cast<int64_t>(axes->size() - i)) return std::nullopt;  // trailing, in order
  RowReduce r{.in_shape = shape, .axes = static_cast<int>(axes->size()), .mean = n.op() == Op::Mean};
  if (k.buffers[0].role == kir::Buffer::Role::Output) r.in = 1, r.out = 0;
  const kir::Buffer &x = k.buffers[r.in], &out = k.buffers[r.out];
  if (x.role != kir::Buffer::Role::Input || out.role != kir::Buffer::Role::Output || x.name != in->name() ||
      out.name != n.result()->name() || x.dtype != DType::f32 || out.dtype != DType::f32)
    return std::nullopt;
  return r;
}

// Builds the program of one specialization: every graph value a step touches gets its
// buffer (placement decided once, here), every group its steps.
class ProgramBuilder {
 public:
  ProgramBuilder(std::shared_ptr<const CompiledModule> m, const Target& t, const Bindings& baked)
      : m_(std::move(m)), t_(t) {
    p_.target = t.name;
    p_.comm_stream = t.comm_stream;
    p_.graph = m_->state.graph.name();
    p_.symbols = m_->symbols;
    p_.baked = baked;
  }

  absl::StatusOr<Program> build() {
    const Graph& g = m_->state.graph;
    for (const Value* a : m_->args) {
      arg_index_[a] = static_cast<int>(p_.args.size());
      p_.args.push_back({a->name(), a->dtype(), a->shape(), a->is_param(), a->is_state()});
    }
    for (const Value* v : g.outputs()) {
      const Value* s = state_storage(v);
      p_.outputs.push_back({v->name(), v->dtype(), v->shape(), false, false, s ? arg_index_.at(s) : -1});
    }
    for (size_t i = 0; i < m_->state.memory.buffers.size(); ++i)
      planned_[m_->state.memory.buffers[i].value] = static_cast<int>(i);
    for (const KernelGroup& grp : m_->state.schedule.groups)
      if (grp.weight_prep)
        for (const Value* v : grp.stored()) prep_slot_.emplace(v, static_cast<int>(prep_slot_.size()));
    const Schedule& s = m_->state.schedule;
    if (m_->kernels.size() != s.groups.size())
      return absl::InternalError(str_cat("program of ", p_.graph, ": ", m_->kernels.size(), " kernels for ",
                                         s.groups.size(), " groups"));
    for (size_t i = 0; i < s.groups.size(); ++i) KILN_RETURN_IF_ERROR(add_group(s.groups[i], m_->kernels[i]));
    KILN_RETURN_IF_ERROR(add_output_copies());
    mark_overlaps();
    return std::move(p_);
  }

 private:
  // The buffer holding graph value `v`, made on first use. `written`: a kernel stores it.
  absl::StatusOr<int> buffer_of(const Value* v, bool written) {
    if (auto it = buffer_.find(v); it != buffer_.end()) return it->second;
    ProgramBuffer b{v->name(), v->dtype(), v->shape()};
    const std::vector<Value*>& outs = m_->state.graph.outputs();
    auto out = std::find(outs.begin(), outs.end(), v);
    if (const Value* s = state_storage(v)) {  // the state argument, before or after its write
      b.placement = Placement::Argument, b.index = arg_index_.at(s);
    } else if (auto it = prep_slot_.find(v); it != prep_slot_.end()) {
      b.placement = Placement::WeightPrep, b.index = it->second;
    } else if (out != outs.end() && v->producer()) {
      b.placement = Placement::Output, b.index = static_cast<int>(out - outs.begin());
    } else if (auto it = planned_.find(v); it != planned_.end()) {
      b.placement = Placement::Arena, b.index = it->second;
    } else if (written) {
      return absl::InternalError(str_cat("%", v->name(), " is written by a kernel but has no storage"));
    } else if (auto it = arg_index_.find(v); it != arg_index_.end()) {
      b.placement = Placement::Argument, b.index = it->second;
    } else if (v->is_param() && v->data()) {
      b.placement = Placement::Constant, b.data = v->data();
    } else if (v->producer() && v->producer()->op() == Op::Constant) {
      auto scalar = std::make_shared<HostTensor>(v->dtype(), std::vector<int64_t>{});
      const kir::ExprNode& c = kir::Expr::constant_of(*v->producer()).node();
      if (is_float(v->dtype())) scalar->set(0, c.value);
      else scalar->set_int(0, c.int_value);
      b.placement = Placement::Constant, b.data = std::move(scalar);
    } else {
      return absl::InternalError(str_cat("%", v->name(), " has no storage: not an argument, parameter, output or "
                                         "planned buffer"));
    }
    return add_buffer(v, std::move(b));
  }

  int add_buffer(const Value* v, ProgramBuffer b) {
    p_.buffers.push_back(std::move(b));
    int id = static_cast<int>(p_.buffers.size()) - 1;
    if (v) buffer_[v] = id;
    return id;
  }

  int add_scratch(std::string name, DType t, Shape shape, int slot) {
    return add_buffer(nullptr, {std::move(name), t, std::move(shape), Placement::Scratch, slot});
  }

  absl::StatusOr<int> add_kernel(kir::Kernel k, bool accumulator_input, bool on_demand) {
    if (t_.prepare_kernel) KILN_RETURN_IF_ERROR(t_.prepare_kernel(k));
    p_.kernels.push_back({std::move(k), accumulator_input, on_demand});
    return static_cast<int>(p_.kernels.size()) - 1;
  }

  // A step running `k` over the buffers of its graph values, then `extra` (the accumulator;
  // with `extra_buffer`, appended to the kernel's buffers again once they are mapped).
  absl::StatusOr<KernelStep> kernel_step(kir::Kernel k, bool accumulator_input, bool on_demand,
                                         std::vector<int> extra = {},
                                         std::optional<kir::Buffer> extra_buffer = std::nullopt) {
    KernelStep s;
    for (const kir::Buffer& buf : k.buffers) {
      if (buf.role == kir::Buffer::Role::Check) {  // its own words of the call's check words
        s.buffers.push_back(add_buffer(nullptr, {buf.name, buf.dtype, buf.shape, Placement::Check,
                                                 static_cast<int>(p_.checks.size())}));
        p_.checks.insert(p_.checks.end(), k.checks.begin(), k.checks.end());
        continue;
      }
      const Value* v = m_->state.graph.find(buf.name);
      if (!v) return absl::InternalError(str_cat("kernel ", k.name, ": buffer ", buf.name, " names no value of the graph"));
      KILN_ASSIGN_OR_RETURN(int id, buffer_of(v, buf.role == kir::Buffer::Role::Output));
      s.buffers.push_back(id);
    }
    s.buffers.insert(s.buffers.end(), extra.begin(), extra.end());
    s.storage.resize(s.buffers.size());
    for (size_t i = 0; i < s.buffers.size(); ++i) s.storage[i] = static_cast<int>(i);
    // An output the memory plan writes over one of this kernel's own (dead) inputs.
    for (size_t i = 0; i < k.buffers.size(); ++i) {
      const ProgramBuffer& out = p_.buffers[s.buffers[i]];
      if (k.buffers[i].role != kir::Buffer::Role::Output || out.placement != Placement::Arena) continue;
      const Value* donor = m_->state.memory.buffers[out.index].reuses;
      for (size_t j = 0; j < k.buffers.size(); ++j)
        if (donor && k.buffers[j].role == kir::Buffer::Role::Input && k.buffers[j].name == donor->name())
          s.storage[i] = static_cast<int>(j);
    }
    if (extra_buffer) k.buffers.push_back(*extra_buffer);
    KILN_ASSIGN_OR_RETURN(s.kernel, add_kernel(std::move(k), accumulator_input, on_demand));
    return s;
  }

  // The attention group as a fused step: q, k and v read in place through the strided
  // view its prologue makes of stored values; the result stored dense, or through the
  // strides its permute (the group's second node) gives it in the permuted value's buffer,
  // which the memory plan placed like any kernel output.
  absl::Status add_attention(const KernelGroup& grp, std::vector<Step>& list) {
    const Node& n = *grp.nodes[0];
    KILN_ASSIGN_OR_RETURN(AttentionForm form, attention_form(n));
    if (!t_.supports_attention || !t_.supports_attention(form))
      return absl::InternalError(str_cat("group ", grp.id, ": target ", t_.name, " has no fused attention for ",
                                         form.to_string(), " (decompose should have kept it decomposed)"));
    AttentionOperands ops = attention_operands(n);
    AttentionStep a;
    a.form = form;
    absl::flat_hash_set<const Node*> prologue(grp.prologue.begin(), grp.prologue.end());
    auto read = [&](const Value* v, int& buf, Strides4& st, Dim& offset) -> absl::Status {
      std::optional<StridedView> sv = strided_view(v, [&](const Node* p) { return prologue.contains(p); });
      if (!sv || sv->strides.size() != 4)
        return absl::InternalError(str_cat("group ", grp.id, ": %", v->name(), " is no strided view of a stored value"));
      KILN_ASSIGN_OR_RETURN(buf, buffer_of(sv->base, false));
      std::copy(sv->strides.begin(), sv->strides.end(), st.begin());
      offset = sv->offset;
      return absl::OkStatus();
    };
    KILN_RETURN_IF_ERROR(read(n.operand(0), a.q, a.q_strides, a.q_offset));
    KILN_RETURN_IF_ERROR(read(n.operand(1), a.k, a.k_strides, a.k_offset));
    KILN_RETURN_IF_ERROR(read(n.operand(2), a.v, a.v_strides, a.v_offset));
    a.out_strides = dense_strides(n.result()->shape());
    if (grp.nodes.size() == 2) {  // out[b, h, t, d] at permuted[dims^-1(b, h, t, d)]
      const Node& perm = *grp.nodes[1];
      Strides4 ps = dense_strides(perm.result()->shape());
      const std::vector<int64_t>& dims = PermuteAttrs(perm).dims();
      for (size_t j = 0; j < 4; ++j) a.out_strides[dims[j] < 0 ? dims[j] + 4 : dims[j]] = ps[j];
      KILN_ASSIGN_OR_RETURN(a.out, buffer_of(perm.result(), true));
    } else {
      KILN_ASSIGN_OR_RETURN(a.out, buffer_of(n.result(), true));
    }
    if (ops.mask) {
      KILN_ASSIGN_OR_RETURN(a.mask, buffer_of(n.operand(*ops.mask), false));
    }
    if (ops.kv_lens) {
      KILN_ASSIGN_OR_RETURN(a.kv_lens, buffer_of(n.operand(*ops.kv_lens), false));
    }
    if (ops.block_table) {
      KILN_ASSIGN_OR_RETURN(a.block_table, buffer_of(n.operand(*ops.block_table), false));
    }
    const Shape &qs = n.operand(0)->shape(), &ks = n.operand(1)->shape();
    a.batch = qs[0], a.tq = qs[2];
    if (form.paged()) {
      a.max_blocks = n.operand(*ops.block_table)->shape()[1];
      a.num_blocks = ks[0];
      a.tk = a.max_blocks * ks[1];
    } else {
      a.tk = ks[2];
    }
    a.mask_strides = ops.mask ? kiln::broadcast_strides(n.operand(*ops.mask)->shape()) : Strides4{Dim(0), Dim(0), Dim(0), Dim(0)};
    p_.attentions.push_back(std::move(a));
    list.push_back({Step::Kind::Attention, static_cast<int>(p_.attentions.size()) - 1, grp.id});
    return absl::OkStatus();
  }

  // The extern group as a call of the registered function: its operands are stored values
  // (fuse_elementwise leaves it no prologue), its results buffers the memory plan placed.
  absl::Status add_extern(const KernelGroup& grp, std::vector<Step>& list) {
    const Node& n = *grp.nodes[0];
    ExternStep e{ExternAttrs(n).name(), {}, {}};
    for (const Value* v : n.operands()) {
      KILN_ASSIGN_OR_RETURN(int b, buffer_of(v, false));
      e.inputs.push_back(b);
    }
    for (const Value* v : n.results()) {
      KILN_ASSIGN_OR_RETURN(int b, buffer_of(v, true));
      e.outputs.push_back(b);
    }
    p_.externs.push_back(std::move(e));
    list.push_back({Step::Kind::Extern, static_cast<int>(p_.externs.size()) - 1, grp.id});
    return absl::OkStatus();
  }

  // The collective group as the communicator's call over its operand's and result's buffers
  // (stored values, dense), along axis 0 (decompose moved any other axis there).
  absl::Status add_collective(const KernelGroup& grp, std::vector<Step>& list) {
    const Node& n = *grp.nodes[0];
    if (n.op() != Op::AllReduce && CollectiveAttrs(n).axis() != 0)
      return invalid_argument(n.describe(), ": a collective along axis ", CollectiveAttrs(n).axis(),
                              " (decompose leaves them along 0)");
    CollectiveStep c;
    c.op = n.op();
    c.dtype = n.result()->dtype();
    c.ranks = collective_ranks(n);
    c.count = shape_numel((n.op() == Op::ReduceScatter ? n.result() : n.operand(0))->shape());
    KILN_ASSIGN_OR_RETURN(c.input, buffer_of(n.operand(0), false));
    KILN_ASSIGN_OR_RETURN(c.output, buffer_of(n.result(), true));
    p_.collectives.push_back(std::move(c));
    list.push_back({Step::Kind::Collective, static_cast<int>(p_.collectives.size()) - 1, grp.id});
    return absl::OkStatus();
  }

  absl::Status add_group(const KernelGroup& grp, const kir::Kernel& k) {
    std::vector<Step>& list = grp.weight_prep ? p_.prep : p_.steps;
    if (grp.kind == KernelGroup::Kind::Attention) return add_attention(grp, list);
    if (grp.kind == KernelGroup::Kind::Extern) return add_extern(grp, list);
    if (grp.kind == KernelGroup::Kind::Collective) return add_collective(grp, list);
    KILN_ASSIGN_OR_RETURN(GemmDecision d, decide_gemm(grp, k, t_.gemms, p_.baked));
    if (!d.library) {
      KILN_ASSIGN_OR_RETURN(KernelStep s, kernel_step(k, false, false));
      if (t_.native_window_copy) p_.kernels[s.kernel].window_copy = window_copy_of(grp, p_.kernels[s.kernel].kernel);
      if (t_.native_depthwise) p_.kernels[s.kernel].depthwise = depthwise_of(grp, p_.kernels[s.kernel].kernel);
      if (t_.native_row_reduce && s.storage[0] == 0 && s.storage[1] == 1)
        p_.kernels[s.kernel].row_reduce = row_reduce_of(grp, p_.kernels[s.kernel].kernel);
      p_.kernel_steps.push_back(std::move(s));
      list.push_back({Step::Kind::Kernel, static_cast<int>(p_.kernel_steps.size()) - 1, grp.id});
      return absl::OkStatus();
    }
    const kir::GemmSpec& spec = *k.gemm;
    GemmStep gs;
    gs.group = grp.id;
    gs.library = t_.gemms;
    gs.layout = d.layout;
    KILN_ASSIGN_OR_RETURN(gs.a, buffer_of(m_->state.graph.find(k.buffers[spec.a.buffer].name), false));
    KILN_ASSIGN_OR_RETURN(gs.b, buffer_of(m_->state.graph.find(k.buffers[spec.b.buffer].name), false));
    for (bool is_b : {false, true}) {
      std::optional<kir::Kernel>& gather = is_b ? d.gather_b : d.gather_a;
      if (!gather) continue;
      int& operand = is_b ? gs.b : gs.a;
      const kir::Buffer& dense = gather->buffers[1];
      int dst = add_scratch(dense.name, dense.dtype, dense.shape, is_b ? 2 : 1);
      KernelStep c;
      c.buffers = {operand, dst};
      c.storage = {0, 1};
      KILN_ASSIGN_OR_RETURN(c.kernel, add_kernel(std::move(*gather), false, false));
      (is_b ? gs.gather_b : gs.gather_a) = std::move(c);
      operand = dst;
    }
    if (d.layout && has_bias(d.layout->epilogue)) {
      KILN_ASSIGN_OR_RETURN(gs.bias, buffer_of(grp.nodes.front()->operand(2), false));
    }
    if (d.layout && d.layout->residual) {
      KILN_ASSIGN_OR_RETURN(gs.residual, buffer_of(residual_of(grp, d.layout->dtype), false));
    }
    if (d.fused_epilogue) {
      KILN_ASSIGN_OR_RETURN(gs.c, buffer_of(grp.outputs[0], true));
    } else if (t_.accumulator_in_ir) {
      kir::Kernel epilogue = kir::with_accumulator_buffer(k);
      kir::Buffer acc = epilogue.buffers.back();
      gs.c = add_scratch(str_cat(k.name, ".acc"), acc.dtype, acc.shape, 0);
      epilogue.buffers.pop_back();  // kernel_step maps the graph's buffers, then the accumulator
      KILN_ASSIGN_OR_RETURN(gs.epilogue, kernel_step(epilogue, false, false, {gs.c}, acc));
    } else {
      KILN_ASSIGN_OR_RETURN(KernelStep s, kernel_step(k, true, false));
      // A native bias and clamp where the output has memory of its own (not a dead input's):
      // the library writes the output, the routine adds the bias and clamps it in place;
      // except for a conv's GEMM (an operand is a window), which the target may convolve
      // from the window's input, memory the output may reuse.
      std::optional<BiasClamp> e = t_.native_bias_clamp ? bias_clamp_of(grp, k) : std::nullopt;
      auto window = [&](int buffer) {
        const Value* v = m_->state.graph.find(k.buffers[buffer].name);
        while (v && v->producer() && v->producer()->op() == Op::Reshape) v = v->producer()->operand(0);
        return v && v->producer() && v->producer()->op() == Op::Window;
      };
      bool in_place = false;
      if (e && s.storage[e->out] == e->out) {
        p_.kernels[s.kernel].bias_clamp = e;
        in_place = !window(spec.a.buffer) && !window(spec.b.buffer);
      }
      gs.c = in_place ? s.buffers[e->out] : add_scratch(str_cat(k.name, ".acc"), DType::f32, k.domain, 0);
      s.buffers.push_back(gs.c);
      s.storage.push_back(static_cast<int>(s.storage.size()));
      gs.epilogue = std::move(s);
    }
    // The generated fallback: only where the library may refuse a call at run time.
    if (t_.gemms == GemmLibrary::CublasLt) {
      kir::Kernel naive = k;
      naive.name += "_naive";
      KILN_ASSIGN_OR_RETURN(gs.fallback, kernel_step(naive, false, true));
    }
    gs.lowered = k;
    p_.gemms.push_back(std::move(gs));
    list.push_back({Step::Kind::Gemm, static_cast<int>(p_.gemms.size()) - 1, grp.id});
    return absl::OkStatus();
  }

  // Outputs no kernel writes: arguments, parameters, weight-prep results, and a value
  // returned twice (its first place is the source).
  absl::Status add_output_copies() {
    const std::vector<Value*>& outs = m_->state.graph.outputs();
    for (size_t j = 0; j < outs.size(); ++j) {
      const Value* v = outs[j];
      if (p_.outputs[j].state_arg >= 0) continue;  // the caller's state buffer itself
      KILN_ASSIGN_OR_RETURN(int src, buffer_of(v, false));
      const ProgramBuffer& b = p_.buffers[src];
      if (b.placement == Placement::Output && b.index == static_cast<int>(j)) continue;
      int dst = add_buffer(nullptr, {v->name(), v->dtype(), v->shape(), Placement::Output, static_cast<int>(j)});
      p_.copies.push_back({src, dst, shape_numel(v->shape()) * dtype_size(v->dtype())});
      p_.steps.push_back({Step::Kind::Copy, static_cast<int>(p_.copies.size()) - 1, -1});
    }
    return absl::OkStatus();
  }

  // The memory plan's overlapped collectives: each joined before the first step of its join
  // group or of a later one, or before the output copies (which may read its result).
  void mark_overlaps() {
    for (const CollectiveOverlap& o : m_->state.memory.overlaps)
      for (size_t i = 0; i < p_.steps.size(); ++i) {
        if (p_.steps[i].kind != Step::Kind::Collective || p_.steps[i].group != o.group) continue;
        size_t j = i + 1;
        while (j < p_.steps.size() && p_.steps[j].group >= 0 && p_.steps[j].group < o.join) ++j;
        p_.collectives[p_.steps[i].index].join = static_cast<int>(j);
      }
  }

  std::shared_ptr<const CompiledModule> m_;
  const Target& t_;
  Program p_;
  absl::flat_hash_map<const Value*, int> buffer_, planned_, prep_slot_, arg_index_;
};

std::string buffer_text(const ProgramBuffer& b) {
  std::string where = str_cat(placement_name(b.placement), b.placement == Placement::Constant ? "" : str_cat(" ", b.index));
  return str_cat(b.name, ": ", dtype_name(b.dtype), shape_to_string(b.shape), " (", where, ")");
}

}  // namespace

std::string_view placement_name(Placement p) {
  switch (p) {
    case Placement::Argument: return "argument";
    case Placement::Constant: return "constant";
    case Placement::WeightPrep: return "weight prep";
    case Placement::Arena: return "arena";
    case Placement::Scratch: return "scratch";
    case Placement::Output: return "output";
    case Placement::Check: return "check";
  }
  return "?";
}

bool KernelStep::in_place() const {
  for (size_t i = 0; i < storage.size(); ++i)
    if (storage[i] != static_cast<int>(i)) return true;
  return false;
}

std::vector<int> Program::buffers_of(const Step& s) const {
  std::vector<int> out;
  auto kernel = [&](const KernelStep& k) { out.insert(out.end(), k.buffers.begin(), k.buffers.end()); };
  switch (s.kind) {
    case Step::Kind::Kernel: kernel(kernel_steps[s.index]); break;
    case Step::Kind::Gemm: {
      const GemmStep& g = gemms[s.index];
      out.insert(out.end(), {g.a, g.b, g.c, g.bias, g.residual});
      for (const std::optional<KernelStep>* k : {&g.gather_a, &g.gather_b, &g.epilogue, &g.fallback})
        if (*k) kernel(**k);
      break;
    }
    case Step::Kind::Copy: out.insert(out.end(), {copies[s.index].src, copies[s.index].dst}); break;
    case Step::Kind::Attention: {
      const AttentionStep& a = attentions[s.index];
      out.insert(out.end(), {a.q, a.k, a.v, a.out, a.mask, a.kv_lens, a.block_table});
      break;
    }
    case Step::Kind::Extern:
      out = externs[s.index].inputs;
      out.insert(out.end(), externs[s.index].outputs.begin(), externs[s.index].outputs.end());
      break;
    case Step::Kind::Collective: out = {collectives[s.index].input, collectives[s.index].output}; break;
  }
  return out;
}

absl::StatusOr<Program::ArenaLayout> Program::arena_layout(const Bindings& b) const {
  KILN_ASSIGN_OR_RETURN(kiln::ArenaLayout l, module_->state.memory.layout(b));
  return ArenaLayout{std::move(l.offsets), l.arena_bytes};
}

Bindings Program::bindings(std::span<const int64_t> values) const {
  Bindings b;
  for (size_t i = 0; i < symbols.size() && i < values.size(); ++i) b[symbols[i]] = values[i];
  return b;
}

int Program::compiled_kernels() const {
  return static_cast<int>(std::count_if(kernels.begin(), kernels.end(), [](const ProgramKernel& k) { return !k.on_demand; }));
}

int Program::launches() const {
  int n = 0;
  for (const Step& s : steps) {
    n += 1;
    if (s.kind != Step::Kind::Gemm) continue;
    // On the CPU, BLAS computes the accumulator inside the epilogue kernel's launch.
    const GemmStep& g = gemms[s.index];
    n += !!g.gather_a + !!g.gather_b;
    if (g.library == GemmLibrary::CublasLt) n += !!g.epilogue;
  }
  return n;
}

std::string_view native_note(const ProgramKernel& k) {
  return k.window_copy  ? " (native window copy)"
         : k.depthwise  ? " (native depthwise conv)"
         : k.bias_clamp ? " (native bias and clamp)"
         : k.row_reduce ? " (native row reduction)"
                        : "";
}

std::string Program::describe(const Step& s) const {
  switch (s.kind) {
    case Step::Kind::Kernel: {
      const ProgramKernel& k = kernels[kernel_steps[s.index].kernel];
      return str_cat("kernel ", k.kernel.name, native_note(k));
    }
    case Step::Kind::Copy: {
      const CopyStep& c = copies[s.index];
      return str_cat("copy ", buffer_text(buffers[c.src]), " -> ", buffer_text(buffers[c.dst]), ", ", c.bytes.to_string(),
                     " bytes");
    }
    case Step::Kind::Attention: return str_cat("attention ", attentions[s.index].form.to_string());
    case Step::Kind::Extern: {
      const ExternStep& e = externs[s.index];
      auto list = [](const std::vector<int>& bs) { return str_join(bs, ", ", [](int b) { return str_cat("b", b); }); };
      return str_cat("extern ", e.name, "(", list(e.inputs), ") -> ", list(e.outputs), " on ", target);
    }
    case Step::Kind::Collective: {
      const CollectiveStep& c = collectives[s.index];
      std::string t = str_cat(op_name(c.op), " ", dtype_name(c.dtype), " b", c.input, " -> b", c.output, ", ",
                              c.count.to_string(), " elements per rank, ", c.ranks, " ranks");
      if (c.join < 0) return t;
      size_t at = 0, join = static_cast<size_t>(c.join);  // a weight-prep collective is never overlapped
      while (at < steps.size() && (steps[at].kind != Step::Kind::Collective || steps[at].index != s.index)) ++at;
      return str_cat(t, ", overlaps ", join - at - 1, join - at - 1 == 1 ? " step " : " steps ",
                     comm_stream ? "on the comm stream" : "(in line here: the host group's call is synchronous)",
                     ", joined before ",
                     join == steps.size()    ? std::string("the call's end")
                     : steps[join].group < 0 ? std::string("the output copies")
                                             : str_cat("group ", steps[join].group));
    }
    case Step::Kind::Gemm: break;
  }
  const GemmStep& g = gemms[s.index];
  std::string t = str_cat(gemm_library_name(g.library));
  if (g.layout) {
    const GemmLayout& l = *g.layout;
    t += str_cat(" ", dtype_name(l.dtype), " m=", l.m.to_string(), " n=", l.n.to_string(), " k=", l.k.to_string(),
                 " batch=", l.batch.to_string(), " epilogue ", gemm_epilogue_name(l.epilogue),
                 l.residual ? " + residual" : "");
  } else {
    t += str_cat(" ", g.lowered.name);
  }
  if (g.gather_a) t += ", A gathered";
  if (g.gather_b) t += ", B gathered";
  if (g.epilogue) t += str_cat(", f32 accumulator into ", kernels[g.epilogue->kernel].kernel.name);
  return t;
}

std::string Program::to_string() const {
  std::string s = str_cat("program ", graph, " for ", target, "\n");
  if (!baked.empty()) {
    std::map<std::string, int64_t> sorted(baked.begin(), baked.end());
    s += str_cat("baked ", str_join(sorted, ", ", [](const auto& kv) { return str_cat(kv.first, " = ", kv.second); }), "\n");
  }
  for (const Value& o : outputs)
    if (o.state_arg >= 0) s += str_cat("output %", o.name, " is state argument %", args[o.state_arg].name, " (updated in place)\n");
  s += "buffers:\n";
  for (size_t i = 0; i < buffers.size(); ++i) s += str_cat("  b", i, " ", buffer_text(buffers[i]), "\n");
  for (size_t i = 0; i < checks.size(); ++i)
    s += str_cat(i == 0 ? "index checks:\n" : "", "  ", i, ": gather %", checks[i].node, " axis ", checks[i].axis,
                 " in [-", checks[i].dim.to_string(), ", ", checks[i].dim.to_string(), ")\n");
  auto call = [&](const KernelStep& k) {
    return str_cat(kernels[k.kernel].kernel.name, "(", str_join(k.buffers, ", ", [](int b) { return str_cat("b", b); }),
                   ")", k.in_place() ? " in place" : "", native_note(kernels[k.kernel]));
  };
  auto step_lines = [&](const std::vector<Step>& list) {
    std::string out;
    for (const Step& st : list) {
      std::string group = st.group >= 0 ? str_cat("group ", st.group, ": ") : std::string();
      if (st.kind == Step::Kind::Attention) {
        const AttentionStep& a = attentions[st.index];
        auto opt = [](const char* what, int b) { return b >= 0 ? str_cat(", ", what, " b", b) : std::string(); };
        // An operand read through a view of its buffer says where and how.
        auto view = [&](const char* what, int b, const Strides4& strides, const Dim& offset) {
          std::string v = str_cat(what, " b", b);
          if (buffers[b].shape.size() == 4 && dense_strides(buffers[b].shape) == strides && offset == Dim(0)) return v;
          return str_cat(v, " at +", offset.to_string(), " strides [",
                         str_join(strides, ", ", [](const Dim& d) { return d.to_string(); }), "]");
        };
        out += str_cat("  ", group, describe(st), "\n    ", view("q", a.q, a.q_strides, a.q_offset), ", ",
                       view("k", a.k, a.k_strides, a.k_offset), ", ", view("v", a.v, a.v_strides, a.v_offset),
                       opt("mask", a.mask), opt("kv_lens", a.kv_lens), opt("block_table", a.block_table), " -> ",
                       view("out", a.out, a.out_strides, a.out_offset), "; B=",
                       a.batch.to_string(), " Tq=", a.tq.to_string(), " Tk=", a.tk.to_string(), "\n");
        continue;
      }
      if (st.kind != Step::Kind::Gemm) {
        out += str_cat("  ", group, st.kind == Step::Kind::Kernel ? call(kernel_steps[st.index]) : describe(st), "\n");
        continue;
      }
      const GemmStep& g = gemms[st.index];
      out += str_cat("  ", group, describe(st), "\n");
      if (g.layout) {
        const GemmLayout& l = *g.layout;
        out += str_cat("    A b", g.a, l.a_is_km ? " as [K, M]" : " as [M, K]", " ld ", l.lda.to_string(), " batch stride ",
                       l.batch_a.to_string(), " offset ", l.offset_a.to_string(), "; B b", g.b,
                       l.b_is_nk ? " as [N, K]" : " as [K, N]", " ld ", l.ldb.to_string(), " batch stride ",
                       l.batch_b.to_string(), " offset ", l.offset_b.to_string(), "\n");
      } else {
        out += str_cat("    A b", g.a, ", B b", g.b, " as their kernel indexes them\n");
      }
      const char* c_note = !g.epilogue ? ""
                           : buffers[g.c].placement == Placement::Scratch
                               ? " (f32 accumulator)"
                               : " (the epilogue's output, updated in place)";
      out += str_cat("    C b", g.c, c_note, g.bias >= 0 ? str_cat(", bias b", g.bias) : std::string(),
                     g.residual >= 0 ? str_cat(", residual b", g.residual, " added") : std::string(), "\n");
      if (g.gather_a) out += str_cat("    first A gathered: ", call(*g.gather_a), "\n");
      if (g.gather_b) out += str_cat("    first B gathered: ", call(*g.gather_b), "\n");
      if (g.epilogue) out += str_cat("    then epilogue: ", call(*g.epilogue), "\n");
      if (g.fallback) out += str_cat("    where the library cannot run a call: ", call(*g.fallback), "\n");
    }
    return out;
  };
  if (!prep.empty()) s += "weight prep (when parameters change):\n" + step_lines(prep);
  s += "steps:\n" + step_lines(steps);
  return s;
}

absl::StatusOr<std::shared_ptr<const Program>> build_program(std::shared_ptr<const CompiledModule> m, const Target& t,
                                                             const Bindings& baked) {
  KILN_ASSIGN_OR_RETURN(Program p, ProgramBuilder(m, t, baked).build());
  p.module_ = std::move(m);
  return std::make_shared<const Program>(std::move(p));
}

}  // namespace kiln
