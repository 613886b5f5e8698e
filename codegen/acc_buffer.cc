#include "codegen/acc_buffer.h"

namespace kiln::kir {
namespace {

// `e` with every GemmAcc replaced by a load of buffer `acc` at `at`.
Expr replace_acc(const Expr& e, int acc, const Index& at) {
  return map_expr(e, [&](const Expr& x) -> std::optional<Expr> {
    if (x.node().kind == ExprKind::GemmAcc) return Expr::load(acc, at, x.node().dtype);
    return std::nullopt;
  });
}

}  // namespace

Kernel with_accumulator_buffer(const Kernel& gemm) {
  Kernel k = gemm;
  int acc = static_cast<int>(k.buffers.size());
  k.buffers.push_back({"acc", gemm.gemm ? gemm.gemm->acc_dtype : DType::f32, k.domain, Buffer::Role::Input});
  Index at(0);
  for (size_t d = 0; d < k.domain.size(); ++d) at = at * Index::from_dim(k.domain[d]) + Index::outer(static_cast<int>(d));
  for (Stage& st : k.stages) {
    for (Let& l : st.lets) l.value = replace_acc(l.value, acc, at);
    for (Store& s : st.stores) s.value = replace_acc(s.value, acc, at);
    if (st.value.defined()) st.value = replace_acc(st.value, acc, at);
  }
  k.gemm.reset();
  return k;
}

}  // namespace kiln::kir
