#include "codegen/cpu/collapse.h"

#include <functional>
#include <type_traits>

#include "codegen/index_simplify.h"

namespace kiln::cpu {
namespace {

// The floor divisions and modulos of every index inside `e` (visit_exprs reaches the scalars
// inside indices; count_divmod does not count them again).
int divmods(const kir::Expr& e) {
  int c = 0;
  kir::visit_exprs(e, [&](const kir::Expr& x) {
    if (x.node().index.defined()) c += kir::count_divmod(x.node().index);
  });
  return c;
}

// Every expression and index of the kernel's stages, through f (a store's index as an index
// value); where K is not const, f may rewrite them.
template <typename K, typename F>
void for_each_part(K& k, const F& f) {
  for (auto& st : k.stages) {
    for (auto& l : st.lets) f(l.value);
    for (auto& s : st.stores) {
      kir::Expr at = kir::Expr::index_value(s.index);
      f(at);
      if constexpr (!std::is_const_v<K>) s.index = at.node().index;
      f(s.value);
      if (s.mask.defined()) f(s.mask);
    }
    if (st.value.defined()) f(st.value);
  }
}

int divmods(const kir::Kernel& k) {
  int c = 0;
  for_each_part(k, [&](const kir::Expr& e) { c += divmods(e); });
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

// The constant c of the last dim's divisions and modulos (o // c, o % c) where there is one
// and only one, and c <= 4; 0 otherwise.
int64_t row_divisor(const kir::Kernel& k) {
  const int last = static_cast<int>(k.domain.size()) - 1;
  int64_t c = 0;
  bool other = false;
  std::function<void(const kir::Index&)> scan = [&](const kir::Index& i) {
    const kir::IndexNode& n = i.node();
    if ((n.kind == kir::IndexKind::FloorDiv || n.kind == kir::IndexKind::Mod) && n.a.kind() == kir::IndexKind::Outer &&
        n.a.node().value == last) {
      std::optional<int64_t> d = n.b.constant();
      other |= !d || *d < 2 || *d > 4 || (c != 0 && c != *d);
      if (d) c = *d;
    }
    if (n.a.defined()) scan(n.a);
    if (n.b.defined()) scan(n.b);
  };
  for_each_part(k, [&](const kir::Expr& e) {
    kir::visit_exprs(e, [&](const kir::Expr& x) {
      if (x.node().index.defined()) scan(x.node().index);
    });
  });
  return other ? 0 : c;
}

// An elementwise kernel whose last dim o (extent E) is read as o // c and o % c: o = c u + r,
// the domain's last dim u (extent E / c) and the map stage's inner loop r < c, so that the
// reads of o // c are consecutive and those of o contiguous groups of c (interleaved
// accesses, which the vectorizer loads and stores whole and shuffles) instead of gathers.
std::optional<kir::Kernel> split_last(const kir::Kernel& k, int64_t c) {
  std::optional<Dim> u = k.domain.back().divide_exact(Dim(c));
  if (!u) return std::nullopt;
  const int last = static_cast<int>(k.domain.size()) - 1;
  kir::Kernel m = k;
  m.domain.back() = *u;
  m.stages[0].extents = {Dim(c)};
  for_each_part(m, [&](kir::Expr& x) {
    x = kir::substitute_vars(x, [&](bool outer, int v) -> kir::Index {
      if (!outer) return kir::Index::inner(v);
      return v == last ? kir::Index::outer(v) * c + kir::Index::inner(0) : kir::Index::outer(v);
    });
  });
  kir::simplify_indices(m);
  if (divmods(m) >= divmods(k)) return std::nullopt;
  return m;
}

}  // namespace

RowForm row_form(const kir::Kernel& k) {
  RowForm f{collapse_rows(k).value_or(k)};
  const bool map = f.kernel.stages.size() == 1 && f.kernel.stages[0].kind == kir::Stage::Kind::Map &&
                   f.kernel.stages[0].extents.empty();
  if (!map || f.kernel.gemm || f.kernel.domain.empty()) return f;
  if (int64_t c = row_divisor(f.kernel); c > 0)
    if (std::optional<kir::Kernel> s = split_last(f.kernel, c)) return {std::move(*s), c};
  f.fold_rows_below = 64;
  return f;
}

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
