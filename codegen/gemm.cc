#include "codegen/gemm.h"

#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/schedule.h"

namespace kiln {
namespace {

// Flattens the strides of consecutive dims [from, to) of a domain into one stride: the
// dims must be laid out as one row-major block (or all broadcast, stride 0).
std::optional<Dim> flat_stride(const std::vector<Dim>& strides, const std::vector<Dim>& extents, size_t from, size_t to) {
  std::optional<Dim> inner;
  Dim span = 1;
  bool all_zero = true;
  for (size_t d = to; d-- > from;) {
    if (extents[d] == Dim(1)) continue;
    all_zero = all_zero && strides[d] == Dim(0);
    if (!inner) {
      inner = strides[d];
    } else if (strides[d] != *inner * span) {
      return std::nullopt;
    }
    span = span * extents[d];
  }
  if (all_zero) return Dim(0);
  return inner.value_or(Dim(0));
}

// One operand of a lowered GEMM as a strided batch of matrices: rows (M for A, N for B)
// and K, one of the two with stride 1.
struct OperandLayout {
  Dim batch_stride, ld, offset;
  bool k_contiguous = true;  // stride 1 along K: A as [M,K] (else [K,M]), B as [N,K] (else [K,N])
};

std::optional<OperandLayout> strided_operand(const kir::Kernel& k, bool is_b,
                                             const std::function<Dim(const Dim&)>& sub) {
  const kir::GemmSpec& g = *k.gemm;
  const kir::GemmOperand& op = is_b ? g.b : g.a;
  if (!op.strides) return std::nullopt;
  std::vector<Dim> domain, strides;
  for (const Dim& d : k.domain) domain.push_back(sub(d));
  for (const Dim& d : op.strides->outer) strides.push_back(sub(d));
  size_t nb = g.batch.size(), mb = nb + g.m_dims, ne = mb + g.n_dims;
  std::optional<Dim> batch = flat_stride(strides, domain, 0, nb);
  std::optional<Dim> rows = is_b ? flat_stride(strides, domain, mb, ne) : flat_stride(strides, domain, nb, mb);
  if (!batch || !rows) return std::nullopt;
  Dim kstride = sub(op.strides->k), kdim = sub(g.k), rdim = sub(is_b ? g.n : g.m);
  bool no_rows = (is_b ? g.n_dims : g.m_dims) == 0 || rdim == Dim(1);
  OperandLayout l{*batch, 0, sub(op.strides->offset)};
  if (kstride == Dim(1) || kdim == Dim(1)) {
    l.k_contiguous = true;
    l.ld = no_rows ? kdim : *rows;
  } else if (*rows == Dim(1) || no_rows) {
    l.k_contiguous = false;
    l.ld = kstride;
  } else {
    return std::nullopt;
  }
  // BLAS takes no negative stride (a reversed slice, slice(step=-1)), and a leading dim
  // below the matrix's extent (rows broadcast with stride 0, windows that overlap) is a
  // layout cuBLASLt refuses or misreads: such operands are gathered. Strides that are
  // symbolic must be provably in range for every value of their symbols (>= 0).
  auto at_least = [](const Dim& x, const Dim& floor) {
    std::optional<int64_t> lo = value_range(x - floor, [](const std::string&) { return SymRange{0, std::nullopt}; }).lo;
    return lo && *lo >= 0;
  };
  const Dim extent = l.k_contiguous ? kdim : rdim;
  if (!at_least(l.batch_stride, Dim(0)) || !at_least(l.offset, Dim(0)) ||
      !at_least(l.ld, no_rows && !l.k_contiguous ? Dim(1) : extent))
    return std::nullopt;
  return l;
}

// A kernel that gathers a GEMM operand into a dense [batch.., rows.., K] buffer (its second
// buffer), for operands that are no strided matrix (a reshape that splits K, batch dims
// that do not flatten), converted to `dtype` (BLAS: f32, so the copy is the only one).
kir::Kernel operand_gather(const kir::Kernel& k, bool is_b, DType dtype) {
  const kir::GemmSpec& g = *k.gemm;
  const kir::GemmOperand& op = is_b ? g.b : g.a;
  int nb = static_cast<int>(g.batch.size()), from = nb + (is_b ? g.m_dims : 0), to = from + (is_b ? g.n_dims : g.m_dims);
  kir::Kernel c;
  c.name = str_cat(k.name, is_b ? "_b" : "_a");
  c.domain.assign(k.domain.begin(), k.domain.begin() + nb);
  c.domain.insert(c.domain.end(), k.domain.begin() + from, k.domain.begin() + to);
  c.domain.push_back(g.k);
  int kvar = static_cast<int>(c.domain.size()) - 1;
  kir::Index at = kir::substitute_vars(op.index, [&](bool outer, int v) -> kir::Index {
    if (!outer) return kir::Index::outer(kvar);  // r0 = k
    if (v < nb) return kir::Index::outer(v);
    if (v >= from && v < to) return kir::Index::outer(nb + (v - from));
    return kir::Index(0);  // a dim of the other operand: this one does not vary along it
  });
  kir::Buffer src = k.buffers[op.buffer];
  src.role = kir::Buffer::Role::Input;
  c.buffers = {src, {c.name, dtype, c.domain, kir::Buffer::Role::Output}};
  kir::Index dense(0);
  for (size_t d = 0; d < c.domain.size(); ++d)
    dense = dense * kir::Index::from_dim(c.domain[d]) + kir::Index::outer(static_cast<int>(d));
  kir::Stage st;
  st.lets.push_back({0, kir::Expr::load(0, at, src.dtype)});
  st.stores.push_back({1, dense, kir::Expr::cast(kir::Expr::let(0, src.dtype), dtype)});
  c.stages.push_back(std::move(st));
  std::set<std::string> syms;
  for (const kir::Buffer& b : c.buffers)
    for (const Dim& d : b.shape) d.collect_symbols(syms);
  c.symbols.assign(syms.begin(), syms.end());
  return c;
}

}  // namespace

const Value* residual_of(const KernelGroup& g, DType dtype) {
  if (g.nodes.size() != 2 || g.nodes.back()->op() != Op::Add) return nullptr;
  const Node &gemm = *g.nodes.front(), &add = *g.nodes.back();
  const Value* r = add.operand(0) == gemm.result() ? add.operand(1) : add.operand(0);
  if (r == gemm.result() || (add.operand(0) != gemm.result() && add.operand(1) != gemm.result())) return nullptr;
  if (r->dtype() != dtype || r->shape() != add.result()->shape() || gemm.result()->shape() != add.result()->shape())
    return nullptr;
  // R must be stored as it is: a view the group computes from a stored value (its prologue,
  // a reshape of an input) has no buffer of its own.
  if (std::find(g.inputs.begin(), g.inputs.end(), r) == g.inputs.end()) return nullptr;
  return r;
}

namespace {

// Whether the group is GEMM [+ bias] [+ gelu-tanh] or GEMM [+ bias] + a residual
// (residual_of), and nothing else, returned in the GEMM's dtype: then cuBLASLt's epilogue
// computes it all (rounding once, after the activation or the residual, where the graph
// rounds after the bias too).
std::optional<GemmEpilogue> library_epilogue(const KernelGroup& g, DType dtype) {
  const Node* gemm = g.nodes.front();
  const Node* last = g.nodes.back();
  bool bias = gemm->op() == Op::Linear && gemm->num_operands() == 3;
  if (g.outputs.size() != 1 || g.outputs[0] != last->result() || last->result()->dtype() != dtype) return std::nullopt;
  if (bias && gemm->operand(2)->dtype() != dtype) return std::nullopt;
  if (g.nodes.size() == 1 || residual_of(g, dtype)) return bias ? GemmEpilogue::bias : GemmEpilogue::none;
  if (g.nodes.size() != 2 || last->operand(0) != gemm->result()) return std::nullopt;
  // Not relu: cuBLASLt's RELU epilogue makes NaN 0, where relu keeps NaN (the reference, torch).
  if (last->op() == Op::Gelu && GeluAttrs(*last).approximate() == "tanh")
    return bias ? GemmEpilogue::gelu_bias : GemmEpilogue::gelu;
  return std::nullopt;
}

bool is_zero(const Dim& d) { return d == SymExpr(0); }

absl::StatusOr<GemmDecision> decide_cublaslt(const KernelGroup& g, const kir::Kernel& k, const Bindings& baked) {
  GemmDecision d;
  DType a = k.buffers[k.gemm->a.buffer].dtype, b = k.buffers[k.gemm->b.buffer].dtype;
  // GEMMs over integers, f64 (cuBLASLt computes in f32 here) or mixed dtypes compute themselves.
  if (a != b || !is_float(a) || a == DType::f64) return d;
  if (std::optional<int64_t> rows = constant_gemm_rows(k, baked); rows && *rows <= warp_gemm_max_rows()) return d;
  std::map<std::string, SymExpr> bake;
  for (const auto& [sym, v] : baked) bake[sym] = SymExpr(v);
  auto sub = [&](const Dim& x) { return x.substitute(bake); };
  const kir::GemmSpec& spec = *k.gemm;
  GemmLayout layout;
  layout.dtype = a;
  layout.m = sub(spec.m), layout.n = sub(spec.n), layout.k = sub(spec.k);
  layout.batch = sub(shape_numel(spec.batch));
  for (bool is_b : {false, true}) {
    std::optional<OperandLayout> l = strided_operand(k, is_b, sub);
    if (!l) {
      // Gathered into scratch first: dense [batch, rows, K].
      Dim rows = is_b ? layout.n : layout.m;
      l = OperandLayout{rows * layout.k, layout.k, 0, true};
      (is_b ? d.gather_b : d.gather_a) = operand_gather(k, is_b, is_b ? b : a);
    }
    (is_b ? layout.batch_b : layout.batch_a) = l->batch_stride;
    (is_b ? layout.ldb : layout.lda) = l->ld;
    (is_b ? layout.offset_b : layout.offset_a) = l->offset;
    (is_b ? layout.b_is_nk : layout.a_is_km) = is_b ? l->k_contiguous : !l->k_contiguous;
  }
  if (std::optional<GemmEpilogue> e = library_epilogue(g, layout.dtype)) {
    layout.epilogue = *e;
    layout.residual = residual_of(g, layout.dtype) != nullptr;
    d.fused_epilogue = true;
  } else {
    layout.out_dtype = DType::f32;  // the accumulator goes to scratch; one kernel applies the epilogue
  }
  d.library = true;
  d.layout = std::move(layout);
  return d;
}

}  // namespace

std::optional<int64_t> constant_gemm_rows(const kir::Kernel& k, const Bindings& baked) {
  if (!k.gemm) return std::nullopt;
  std::map<std::string, SymExpr> bake;
  for (const auto& [sym, v] : baked) bake[sym] = SymExpr(v);
  return (shape_numel(k.gemm->batch) * k.gemm->m).substitute(bake).constant();
}

int warp_gemm_max_rows() {
  const char* v = std::getenv("KILN_WARP_GEMM_ROWS");
  return v && *v ? std::atoi(v) : 0;
}

bool blas_reads_in_place(const kir::Kernel& k, bool is_b) {
  if (!k.gemm) return false;
  const kir::GemmSpec& g = *k.gemm;
  const kir::GemmOperand& op = is_b ? g.b : g.a;
  size_t nb = g.batch.size();
  if (!op.strides || nb + g.m_dims + g.n_dims != k.domain.size() || op.strides->outer.size() != k.domain.size())
    return false;
  // Constant along the other operand's dims.
  for (size_t d = nb; d < k.domain.size(); ++d)
    if ((d < nb + static_cast<size_t>(g.m_dims)) == is_b && !is_zero(op.strides->outer[d])) return false;
  return true;
}

kir::GemmOperand gathered_operand(const kir::Kernel& k, bool is_b, int buffer) {
  const kir::GemmSpec& g = *k.gemm;
  size_t nb = g.batch.size(), from = nb + (is_b ? g.m_dims : 0), to = from + (is_b ? g.n_dims : g.m_dims);
  kir::GemmStrides s{Dim(0), std::vector<Dim>(k.domain.size(), Dim(0)), Dim(1)};
  Dim span = g.k;
  for (size_t d = k.domain.size(); d-- > 0;) {
    if (d >= to || (d >= nb && d < from)) continue;
    s.outer[d] = span;
    span = span * k.domain[d];
  }
  kir::Index index = kir::Index::inner(0);
  for (size_t d = 0; d < k.domain.size(); ++d)
    if (s.outer[d] != Dim(0)) index = index + kir::Index::outer(static_cast<int>(d)) * kir::Index::from_dim(s.outer[d]);
  return kir::GemmOperand{buffer, index, std::move(s)};
}

std::string_view gemm_epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none: return "none";
    case GemmEpilogue::relu: return "relu";
    case GemmEpilogue::gelu: return "gelu";
    case GemmEpilogue::bias: return "bias";
    case GemmEpilogue::relu_bias: return "relu_bias";
    case GemmEpilogue::gelu_bias: return "gelu_bias";
  }
  return "?";
}

bool has_bias(GemmEpilogue e) {
  return e == GemmEpilogue::bias || e == GemmEpilogue::relu_bias || e == GemmEpilogue::gelu_bias;
}

std::string_view gemm_library_name(GemmLibrary l) {
  switch (l) {
    case GemmLibrary::None: return "no library";
    case GemmLibrary::CublasLt: return "cuBLASLt";
    case GemmLibrary::Blas: return "BLAS";
  }
  return "?";
}

namespace {

// Whether the kernel's epilogue only stores the f32 accumulator, dense over its domain (a
// matmul with nothing after it): BLAS then writes the group's output itself, with no
// epilogue kernel and no round trip through scratch.
bool stores_accumulator_only(const kir::Kernel& k) {
  if (k.stages.size() != 1) return false;
  const kir::Stage& st = k.stages[0];
  if (st.kind != kir::Stage::Kind::Map || !st.extents.empty() || !st.lets.empty() || st.stores.size() != 1)
    return false;
  const kir::Store& s = st.stores[0];
  if (s.value.kind() != kir::ExprKind::GemmAcc || k.buffers[s.buffer].dtype != DType::f32) return false;
  std::optional<kir::AffineIndex> a = kir::affine_index(s.index, k.domain.size(), 0);
  if (!a || a->offset != Dim(0)) return false;
  Dim stride = 1;
  for (size_t d = k.domain.size(); d-- > 0;) {
    if (a->outer[d] != stride) return false;
    stride = stride * k.domain[d];
  }
  return true;
}

}  // namespace

absl::StatusOr<GemmDecision> decide_gemm(const KernelGroup& g, const kir::Kernel& k, GemmLibrary lib,
                                         const Bindings& baked) {
  if (g.kind != KernelGroup::Kind::Gemm || !k.gemm) return GemmDecision{};
  switch (lib) {
    case GemmLibrary::None: return GemmDecision{};
    case GemmLibrary::CublasLt: return decide_cublaslt(g, k, baked);
    case GemmLibrary::Blas: {
      // Integer GEMMs keep their own loop: sgemm's f32 would round their products.
      GemmDecision d;
      if (k.gemm->acc_dtype != DType::f32 || k.gemm->batch.size() + k.gemm->m_dims + k.gemm->n_dims != k.domain.size())
        return d;
      for (bool is_b : {false, true})
        if (!blas_reads_in_place(k, is_b)) (is_b ? d.gather_b : d.gather_a) = operand_gather(k, is_b, DType::f32);
      d.library = true;
      d.fused_epilogue = stores_accumulator_only(k);
      return d;
    }
  }
  return absl::InternalError(str_cat("group ", g.id, ": unknown GEMM library"));
}

}  // namespace kiln
