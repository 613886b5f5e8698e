#include "codegen/index_simplify.h"

#include <algorithm>
#include <string>
#include <utility>

namespace kiln::kir {
namespace {

// A product coeff * atoms, the atoms (loop variables, symbols, floordiv, mod, min, max,
// scalar indices) sorted by their printed text, which is also how they compare.
struct Term {
  int64_t coeff = 1;
  std::vector<std::pair<std::string, Index>> atoms;
};
using Poly = std::vector<Term>;  // terms sorted by their atoms, distinct, none zero

bool same_atoms(const Term& a, const Term& b) {
  return a.atoms.size() == b.atoms.size() &&
         std::equal(a.atoms.begin(), a.atoms.end(), b.atoms.begin(), [](const auto& x, const auto& y) { return x.first == y.first; });
}

bool atoms_less(const Term& a, const Term& b) {
  return std::lexicographical_compare(a.atoms.begin(), a.atoms.end(), b.atoms.begin(), b.atoms.end(),
                                      [](const auto& x, const auto& y) { return x.first < y.first; });
}

bool same_poly(const Poly& a, const Poly& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].coeff != b[i].coeff || !same_atoms(a[i], b[i])) return false;
  return true;
}

// Whether `e` >= 0 for all symbol values >= 0: non-negative coefficients over symbols, mods
// and floordivs of such expressions.
bool provably_nonneg(const SymPoly& p) {
  for (const SymTerm& t : p.terms) {
    if (t.coeff < 0) return false;
    for (const SymFactor& f : t.factors)
      if (f.atom->kind == SymAtom::Kind::FloorDiv && !provably_nonneg(*f.atom->arg)) return false;
  }
  return true;
}

bool provably_le(const SymExpr& a, const SymExpr& b) { return provably_nonneg((b - a).poly()); }

// The value of a variable-free index as a dim.
std::optional<SymExpr> sym_of(const Index& i) {
  const IndexNode& n = i.node();
  switch (n.kind) {
    case IndexKind::Const: return SymExpr(n.value);
    case IndexKind::Sym: return SymExpr::symbol(n.name);
    case IndexKind::Add:
    case IndexKind::Mul: {
      std::optional<SymExpr> a = sym_of(n.a), b = sym_of(n.b);
      if (!a || !b) return std::nullopt;
      return n.kind == IndexKind::Add ? *a + *b : *a * *b;
    }
    case IndexKind::FloorDiv:
    case IndexKind::Mod: {
      std::optional<SymExpr> a = sym_of(n.a);
      std::optional<int64_t> c = n.b.constant();
      if (!a || !c || *c <= 0) return std::nullopt;
      return n.kind == IndexKind::FloorDiv ? a->floordiv(*c) : a->mod(*c);
    }
    default: return std::nullopt;
  }
}

class Simplifier {
 public:
  explicit Simplifier(const VarRanges& r) : r_(r) {}
  bool overflow() const { return overflow_; }

  Poly poly_of(const Index& i) {
    const IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Const: return constant(n.value);
      case IndexKind::Add: return combine(add(poly_of(n.a), poly_of(n.b)));
      case IndexKind::Mul: return combine(mul(poly_of(n.a), poly_of(n.b)));
      case IndexKind::FloorDiv: return div(poly_of(n.a), poly_of(n.b), false);
      case IndexKind::Mod: return div(poly_of(n.a), poly_of(n.b), true);
      case IndexKind::Min: return atom(Index::min(index_of(poly_of(n.a)), index_of(poly_of(n.b))));
      case IndexKind::Max: return atom(Index::max(index_of(poly_of(n.a)), index_of(poly_of(n.b))));
      default: return atom(i);
    }
  }

  // Terms with atoms first, the constant last; each as atom * atom * .. * coeff.
  static Index index_of(const Poly& p) {
    Index sum(0);
    for (int pass = 0; pass < 2; ++pass)
      for (const Term& t : p) {
        if (t.atoms.empty() != (pass == 1)) continue;
        Index x(1);
        for (const auto& a : t.atoms) x = x * a.second;
        sum = sum + x * Index(t.coeff);
      }
    return sum;
  }

 private:
  static Poly constant(int64_t c) { return c == 0 ? Poly{} : Poly{Term{c, {}}}; }
  // Loop variables sort first, then symbols, then the rest (as o0 * H * S prints).
  static Poly atom(const Index& i) {
    if (std::optional<int64_t> c = i.constant()) return constant(*c);
    char rank = i.kind() == IndexKind::Outer ? '0' : i.kind() == IndexKind::Inner ? '1' : i.kind() == IndexKind::Sym ? '2' : '3';
    return Poly{Term{1, {{rank + print_index(i), i}}}};
  }

  Poly normalize(Poly p) {
    std::stable_sort(p.begin(), p.end(), atoms_less);
    Poly out;
    for (Term& t : p) {
      if (!out.empty() && same_atoms(out.back(), t)) {
        overflow_ |= __builtin_add_overflow(out.back().coeff, t.coeff, &out.back().coeff);
      } else {
        out.push_back(std::move(t));
      }
    }
    std::erase_if(out, [](const Term& t) { return t.coeff == 0; });
    return out;
  }

  Poly add(Poly a, const Poly& b) {
    a.insert(a.end(), b.begin(), b.end());
    return normalize(std::move(a));
  }

  Term times(const Term& a, const Term& b) {
    Term t;
    overflow_ |= __builtin_mul_overflow(a.coeff, b.coeff, &t.coeff);
    std::merge(a.atoms.begin(), a.atoms.end(), b.atoms.begin(), b.atoms.end(), std::back_inserter(t.atoms),
               [](const auto& x, const auto& y) { return x.first < y.first; });
    return t;
  }

  Poly mul(const Poly& a, const Poly& b) {
    Poly out;
    for (const Term& x : a)
      for (const Term& y : b) out.push_back(times(x, y));
    return normalize(std::move(out));
  }

  // t / d when the monomial d divides t exactly (its coefficient and each of its atoms).
  static std::optional<Term> quotient(const Term& t, const Term& d) {
    if (d.coeff <= 0 || t.coeff % d.coeff != 0) return std::nullopt;
    Term q{t.coeff / d.coeff, {}};
    size_t j = 0;
    for (const auto& a : t.atoms) {
      if (j < d.atoms.size() && d.atoms[j].first == a.first) ++j;
      else q.atoms.push_back(a);
    }
    if (j != d.atoms.size()) return std::nullopt;
    return q;
  }

  static std::optional<Term> monomial(const Poly& p) {
    if (p.size() != 1 || p[0].coeff <= 0) return std::nullopt;
    return p[0];
  }

  // An inclusive upper bound of `i` where it is provably non-negative under the ranges.
  std::optional<SymExpr> upper(const Index& i) const {
    const IndexNode& n = i.node();
    auto var = [](const std::vector<Dim>& extents, int64_t v) -> std::optional<SymExpr> {
      if (v < 0 || static_cast<size_t>(v) >= extents.size()) return std::nullopt;
      return extents[v] - 1;
    };
    switch (n.kind) {
      case IndexKind::Const: return n.value >= 0 ? std::optional<SymExpr>(n.value) : std::nullopt;
      case IndexKind::Outer: return var(r_.outer, n.value);
      case IndexKind::Inner: return var(r_.inner, n.value);
      case IndexKind::Sym: return SymExpr::symbol(n.name);
      case IndexKind::Add:
      case IndexKind::Mul: {
        std::optional<SymExpr> a = upper(n.a), b = upper(n.b);
        if (!a || !b) return std::nullopt;
        return n.kind == IndexKind::Add ? *a + *b : *a * *b;
      }
      case IndexKind::FloorDiv: {
        std::optional<SymExpr> a = upper(n.a), d = sym_of(n.b);
        if (!a) return std::nullopt;
        if (d && d->constant()) return a->floordiv(*d->constant());
        if (d)
          if (std::optional<SymExpr> q = (*a + 1).divide_exact(*d)) return *q - 1;
        return a;  // the divisor is at least 1
      }
      case IndexKind::Mod: {
        std::optional<SymExpr> a = upper(n.a), d = sym_of(n.b);
        if (!d) return a;
        if (a && provably_le(*a, *d - 1)) return a;
        return *d - 1;
      }
      case IndexKind::Min:
      case IndexKind::Max: {
        std::optional<SymExpr> a = upper(n.a), b = upper(n.b);
        if (!a || !b) return std::nullopt;
        if (n.kind == IndexKind::Min || provably_le(*b, *a)) return a;
        return provably_le(*a, *b) ? *b : *a + *b;
      }
      default: return std::nullopt;
    }
  }

  // 0 <= x < d under the ranges.
  bool below(const Poly& x, const Poly& d) const {
    std::optional<SymExpr> u = upper(index_of(x)), dd = sym_of(index_of(d));
    return u && dd && provably_le(*u + 1, *dd);
  }

  // x // d (or x % d), with x and d in canonical form.
  Poly div(const Poly& x, const Poly& d, bool is_mod) {
    std::optional<Term> dm = monomial(d);
    if (!dm) {
      Index xi = index_of(x), di = index_of(d);
      return atom(is_mod ? Index::mod(xi, di) : Index::floordiv(xi, di));
    }
    Poly q, r;
    for (const Term& t : x) {
      if (std::optional<Term> qt = quotient(t, *dm)) q.push_back(*qt);
      else r.push_back(t);
    }
    if (is_mod) return rest_mod(r, d, *dm);
    return add(normalize(std::move(q)), rest_div(r, d, *dm));
  }

  // The floordiv or mod that `p` is, when it is one atom.
  static const IndexNode* single_atom(const Poly& p, IndexKind kind) {
    if (p.size() != 1 || p[0].coeff != 1 || p[0].atoms.size() != 1) return nullptr;
    const IndexNode& n = p[0].atoms[0].second.node();
    return n.kind == kind ? &n : nullptr;
  }

  // d = f * e for a factor f of d (an atom, or the coefficient) where r // f and r % f
  // take no more floordiv/mod nodes than r: then r // d = (r // f) // e and
  // r % d = ((r // f) % e) * f + r % f simplify too, as a reshape chain [B, S*H] ->
  // [B*S, H] needs ((o*H + k) // (S*H) with k < H is o // S).
  struct Split {
    Poly q, m, f, e;  // r // f, r % f, f, e
  };
  std::optional<Split> split(const Poly& r, const Term& dm) {
    std::vector<Term> factors;
    if (dm.coeff > 1 && !dm.atoms.empty()) factors.push_back({dm.coeff, {}});
    for (size_t i = 0; i < dm.atoms.size(); ++i)
      if ((dm.atoms.size() > 1 || dm.coeff > 1) && (i == 0 || dm.atoms[i].first != dm.atoms[i - 1].first))
        factors.push_back({1, {dm.atoms[i]}});
    int nodes = count_divmod(index_of(r));
    for (const Term& f : factors) {
      Poly q = div(r, Poly{f}, false), m = div(r, Poly{f}, true);
      if (count_divmod(index_of(q)) + count_divmod(index_of(m)) <= nodes) return Split{q, m, {f}, {*quotient(dm, f)}};
    }
    return std::nullopt;
  }

  // r // d where no term of r is a multiple of d.
  Poly rest_div(const Poly& r, const Poly& d, const Term& dm) {
    if (r.empty() || below(r, d)) return {};
    if (const IndexNode* f = single_atom(r, IndexKind::FloorDiv))  // (x // a) // d = x // (a*d)
      return div(poly_of(f->a), mul(poly_of(f->b), d), false);
    if (const IndexNode* m = single_atom(r, IndexKind::Mod)) {  // (x % (b*d)) // d = (x // d) % b
      std::optional<Term> mm = monomial(poly_of(m->b));
      if (std::optional<Term> b = mm ? quotient(*mm, dm) : std::nullopt)
        return div(div(poly_of(m->a), d, false), Poly{*b}, true);
    }
    if (std::optional<Split> sp = split(r, dm)) return div(sp->q, sp->e, false);
    return atom(Index::floordiv(index_of(r), index_of(d)));
  }

  // r % d where no term of r is a multiple of d.
  Poly rest_mod(const Poly& r, const Poly& d, const Term& dm) {
    if (r.empty()) return {};
    if (below(r, d)) return r;
    if (const IndexNode* m = single_atom(r, IndexKind::Mod)) {  // (x % (b*d)) % d = x % d
      std::optional<Term> mm = monomial(poly_of(m->b));
      if (mm && quotient(*mm, dm)) return div(poly_of(m->a), d, true);
    }
    if (std::optional<Split> sp = split(r, dm)) return add(mul(div(sp->q, sp->e, true), sp->f), sp->m);
    return atom(Index::mod(index_of(r), index_of(d)));
  }

  // Term `t` without its atom number `skip`.
  static Term without(const Term& t, size_t skip) {
    Term r{t.coeff, {}};
    for (size_t i = 0; i < t.atoms.size(); ++i)
      if (i != skip) r.atoms.push_back(t.atoms[i]);
    return r;
  }

  // Whether terms t (holding f) and u (holding g) are c * (x // (a*b)) * b and
  // c * (x // a) % b (a = 1: no inner floordiv), or c * ((x // a) % b) * a and c * x % a: then
  // their sum, c * (x // a) or c * x % (a*b).
  std::optional<Poly> merge_pair(const Term& t, size_t fi, const Term& u, size_t gi) {
    const IndexNode &f = t.atoms[fi].second.node(), &g = u.atoms[gi].second.node();
    if (g.kind != IndexKind::Mod) return std::nullopt;
    // g = z % b with z = x // a, or z = x and a = 1.
    bool nested = g.a.kind() == IndexKind::FloorDiv;
    const Index& x = nested ? g.a.node().a : g.a;
    Poly a = nested ? poly_of(g.a.node().b) : constant(1), b = poly_of(g.b);
    Term rest_u = without(u, gi);
    Poly rest_t{without(t, fi)};
    if (f.kind == IndexKind::FloorDiv) {
      if (print_index(f.a) != print_index(x) || !same_poly(mul(a, b), poly_of(f.b)) || !same_poly(mul(Poly{rest_u}, b), rest_t))
        return std::nullopt;
      return mul(Poly{rest_u}, poly_of(g.a));
    }
    // f = (x // a2) % b2 with g = x % a2.
    if (f.kind != IndexKind::Mod || nested || f.a.kind() != IndexKind::FloorDiv) return std::nullopt;
    Poly a2 = poly_of(f.a.node().b);
    if (print_index(f.a.node().a) != print_index(x) || !same_poly(a2, b) || !same_poly(mul(Poly{rest_u}, b), rest_t))
      return std::nullopt;
    return mul(Poly{rest_u}, div(poly_of(x), mul(b, poly_of(f.b)), true));
  }

  // Merges pairs of terms (merge_pair) until none is left.
  Poly combine(Poly p) {
    // `!changed` is tested first: once a merge has replaced `p`, p[i] and p[j] may be gone.
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t i = 0; !changed && i < p.size(); ++i)
        for (size_t fi = 0; !changed && fi < p[i].atoms.size(); ++fi)
          for (size_t j = 0; !changed && j < p.size(); ++j)
            for (size_t gi = 0; !changed && j != i && gi < p[j].atoms.size(); ++gi) {
              std::optional<Poly> merged = merge_pair(p[i], fi, p[j], gi);
              if (!merged) continue;
              Poly others;
              for (size_t t = 0; t < p.size(); ++t)
                if (t != i && t != j) others.push_back(p[t]);
              p = add(std::move(others), *merged);
              changed = true;
            }
    }
    return p;
  }

  const VarRanges& r_;
  bool overflow_ = false;
};

Expr simplify_expr(const Expr& e, const VarRanges& r) {
  return map_expr(e, [&](const Expr& x) { return with_index(x, [&](const Index& i) { return simplify_index(i, r); }); });
}

}  // namespace

int count_divmod(const Index& i) {
  const IndexNode& n = i.node();
  int c = n.kind == IndexKind::FloorDiv || n.kind == IndexKind::Mod;
  if (n.a.defined()) c += count_divmod(n.a);
  if (n.b.defined()) c += count_divmod(n.b);
  return c;
}

Index simplify_index(const Index& i, const VarRanges& ranges) {
  if (count_divmod(i) == 0) return i;
  Simplifier s(ranges);
  Poly p = s.poly_of(i);
  if (s.overflow()) return i;
  Index out = Simplifier::index_of(p);
  return count_divmod(out) < count_divmod(i) ? out : i;
}

void simplify_indices(Kernel& k) {
  for (Stage& st : k.stages) {
    VarRanges r{k.domain, st.extents};
    for (Let& l : st.lets) l.value = simplify_expr(l.value, r);
    for (Store& s : st.stores) {
      s.index = simplify_index(s.index, r);
      s.value = simplify_expr(s.value, r);
    }
    if (st.value.defined()) st.value = simplify_expr(st.value, r);
  }
}

}  // namespace kiln::kir
