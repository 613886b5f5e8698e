#include "codegen/cpu/collapse.h"

#include <functional>

#include "codegen/index_simplify.h"

namespace kiln::cpu {
namespace {

// Floor divisions and modulos of `i`, not counting those of the scalars inside it.
int divmods_here(const kir::Index& i) {
  const kir::IndexNode& n = i.node();
  int c = n.kind == kir::IndexKind::FloorDiv || n.kind == kir::IndexKind::Mod;
  if (n.a.defined()) c += divmods_here(n.a);
  if (n.b.defined()) c += divmods_here(n.b);
  return c;
}

// Those of every index inside `e` (visit_exprs reaches the scalars inside indices).
int divmods(const kir::Expr& e) {
  int c = 0;
  kir::visit_exprs(e, [&](const kir::Expr& x) {
    if (x.node().index.defined()) c += divmods_here(x.node().index);
  });
  return c;
}

// Every expression and index of the kernel's stages, through f (which may rewrite them).
void for_each_part(kir::Kernel& k, const std::function<void(kir::Expr&)>& f) {
  for (kir::Stage& st : k.stages) {
    for (kir::Let& l : st.lets) f(l.value);
    for (kir::Store& s : st.stores) {
      kir::Expr at = kir::Expr::index_value(s.index);
      f(at);
      s.index = at.node().index;
      f(s.value);
      if (s.mask.defined()) f(s.mask);
    }
    if (st.value.defined()) f(st.value);
  }
}

int divmods(const kir::Kernel& k) {
  int c = 0;
  for (const kir::Stage& st : k.stages) {
    for (const kir::Let& l : st.lets) c += divmods(l.value);
    for (const kir::Store& s : st.stores)
      c += divmods(kir::Expr::index_value(s.index)) + divmods(s.value) + (s.mask.defined() ? divmods(s.mask) : 0);
    if (st.value.defined()) c += divmods(st.value);
  }
  return c;
}

// The last two domain dims merged, if that passes the test.
std::optional<kir::Kernel> merge_last(const kir::Kernel& k) {
  const int n = static_cast<int>(k.domain.size());
  const kir::Index q = kir::Index::outer(n - 2), e = kir::Index::from_dim(k.domain[n - 1]);
  auto var = [&](bool outer, int v) -> kir::Index {
    if (!outer) return kir::Index::inner(v);
    if (v == n - 2) return kir::Index::floordiv(q, e);
    if (v == n - 1) return kir::Index::mod(q, e);
    return kir::Index::outer(v);
  };
  kir::Kernel m = k;
  m.domain.pop_back();
  m.domain.back() = k.domain[n - 2] * k.domain[n - 1];
  for_each_part(m, [&](kir::Expr& x) { x = kir::substitute_vars(x, var); });
  kir::simplify_indices(m);
  if (divmods(m) > divmods(k)) return std::nullopt;
  return m;
}

}  // namespace

std::optional<kir::Kernel> collapse_rows(const kir::Kernel& k) {
  if (k.gemm) return std::nullopt;
  std::optional<kir::Kernel> out;
  while (true) {
    const kir::Kernel& cur = out ? *out : k;
    if (cur.domain.size() < 2) break;
    std::optional<kir::Kernel> m = merge_last(cur);
    if (!m) break;
    out = std::move(m);
  }
  return out;
}

}  // namespace kiln::cpu
