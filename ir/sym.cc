#include "ir/sym.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/hash/hash.h"
#include "ir/checked.h"
#include "ir/scalar_ops.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using PolyPtr = std::shared_ptr<const SymPoly>;

std::strong_ordering compare_poly(const SymPoly& a, const SymPoly& b);

std::strong_ordering compare_atom(const SymAtom& a, const SymAtom& b) {
  if (&a == &b) return std::strong_ordering::equal;
  if (auto c = a.kind <=> b.kind; c != 0) return c;
  if (a.kind == SymAtom::Kind::Symbol) return a.name.compare(b.name) <=> 0;
  if (auto c = a.divisor <=> b.divisor; c != 0) return c;
  return compare_poly(*a.arg, *b.arg);
}

// Lexicographic over factors; a shorter prefix sorts first; the constant term (no
// factors) sorts last so that it prints last.
std::strong_ordering compare_factors(const std::vector<SymFactor>& a,
                                     const std::vector<SymFactor>& b) {
  if (a.empty() || b.empty()) return b.size() <=> a.size();
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (auto c = compare_atom(*a[i].atom, *b[i].atom); c != 0) return c;
    if (auto c = b[i].exp <=> a[i].exp; c != 0) return c;
  }
  return a.size() <=> b.size();
}

std::strong_ordering compare_poly(const SymPoly& a, const SymPoly& b) {
  if (&a == &b) return std::strong_ordering::equal;
  if (auto c = a.overflow <=> b.overflow; c != 0) return c;
  for (size_t i = 0; i < a.terms.size() && i < b.terms.size(); ++i) {
    if (auto c = compare_factors(a.terms[i].factors, b.terms[i].factors); c != 0) return c;
    if (auto c = a.terms[i].coeff <=> b.terms[i].coeff; c != 0) return c;
  }
  return a.terms.size() <=> b.terms.size();
}

size_t hash_atom(const SymAtom& a) {
  if (a.kind == SymAtom::Kind::Symbol) return absl::HashOf(0, a.name);
  return absl::HashOf(static_cast<int>(a.kind), a.divisor, a.arg->hash);
}

// Sorts, merges equal monomials, drops zero terms, and computes the hash. `overflow` marks
// a polynomial whose coefficients wrapped on the way (also set when merging wraps or an
// atom's argument overflowed): its value is not the expression's, and evaluate() and the
// verifier reject it.
PolyPtr make_poly(std::vector<SymTerm> terms, bool overflow = false) {
  for (SymTerm& t : terms) {
    std::sort(t.factors.begin(), t.factors.end(), [](const SymFactor& x, const SymFactor& y) {
      return compare_atom(*x.atom, *y.atom) < 0;
    });
    std::vector<SymFactor> merged;
    for (SymFactor& f : t.factors) {
      if (!merged.empty() && compare_atom(*merged.back().atom, *f.atom) == 0)
        merged.back().exp += f.exp;
      else
        merged.push_back(std::move(f));
    }
    t.factors = std::move(merged);
    for (const SymFactor& f : t.factors) overflow |= f.atom->arg && f.atom->arg->overflow;
  }
  std::sort(terms.begin(), terms.end(), [](const SymTerm& x, const SymTerm& y) {
    return compare_factors(x.factors, y.factors) < 0;
  });
  std::vector<SymTerm> out;
  for (SymTerm& t : terms) {
    if (!out.empty() && compare_factors(out.back().factors, t.factors) == 0)
      overflow |= __builtin_add_overflow(out.back().coeff, t.coeff, &out.back().coeff);
    else
      out.push_back(std::move(t));
  }
  std::erase_if(out, [](const SymTerm& t) { return t.coeff == 0; });
  auto p = std::make_shared<SymPoly>();
  p->terms = std::move(out);
  p->overflow = overflow;
  size_t h = overflow ? 0x6f766572 : 0x6b696c6e;
  for (const SymTerm& t : p->terms) {
    h = absl::HashOf(h, t.coeff);
    for (const SymFactor& f : t.factors) h = absl::HashOf(h, hash_atom(*f.atom), f.exp);
  }
  p->hash = h;
  return p;
}

PolyPtr constant_poly(int64_t v) {
  std::vector<SymTerm> t;
  if (v != 0) t.push_back({v, {}});
  return make_poly(std::move(t));
}

PolyPtr atom_poly(std::shared_ptr<const SymAtom> atom, int64_t coeff = 1) {
  return make_poly({SymTerm{coeff, {SymFactor{std::move(atom), 1}}}});
}

int64_t floor_mod(int64_t a, int64_t b) {  // a - floor(a/b)*b, without its overflow at INT64_MIN
  int64_t r = a % b;
  return r != 0 && (r < 0) != (b < 0) ? r + b : r;
}

int64_t coeff_gcd(const SymPoly& p, int64_t c) {
  int64_t g = c;
  for (const SymTerm& t : p.terms) g = std::gcd(g, t.coeff);
  return g;
}

PolyPtr scale_div(const SymPoly& p, int64_t g) {
  std::vector<SymTerm> terms = p.terms;
  for (SymTerm& t : terms) t.coeff /= g;
  return make_poly(std::move(terms));
}

std::string atom_to_string(const SymAtom& a, bool bare);

std::string poly_to_string(const SymPoly& p) {
  if (p.terms.empty()) return "0";
  std::string s;
  for (size_t i = 0; i < p.terms.size(); ++i) {
    const SymTerm& t = p.terms[i];
    int64_t c = t.coeff;
    if (i == 0) {
      if (c < 0 && !t.factors.empty()) s += "-";
    } else {
      s += c < 0 ? " - " : " + ";
    }
    int64_t mag = i == 0 && t.factors.empty() ? c : (c < 0 ? -c : c);
    if (t.factors.empty()) {
      s += str_cat(mag);
      continue;
    }
    // A floordiv/mod atom prints bare only when it stands alone after a binary +/-.
    bool alone = mag == 1 && t.factors.size() == 1 && t.factors[0].exp == 1;
    bool bare = alone && (i > 0 || c > 0);
    bool first = true;
    if (mag != 1) {
      s += str_cat(mag);
      first = false;
    }
    for (const SymFactor& f : t.factors) {
      for (int e = 0; e < f.exp; ++e) {
        if (!first) s += "*";
        s += atom_to_string(*f.atom, bare);
        first = false;
      }
    }
  }
  return s;
}

std::string atom_to_string(const SymAtom& a, bool bare) {
  if (a.kind == SymAtom::Kind::Symbol) return a.name;
  const SymPoly& arg = *a.arg;
  bool simple_arg = arg.terms.size() == 1 && arg.terms[0].coeff == 1 &&
                    arg.terms[0].factors.size() == 1 && arg.terms[0].factors[0].exp == 1 &&
                    arg.terms[0].factors[0].atom->kind == SymAtom::Kind::Symbol;
  std::string inner = poly_to_string(arg);
  if (!simple_arg) inner = "(" + inner + ")";
  std::string s = str_cat(inner, a.kind == SymAtom::Kind::FloorDiv ? " // " : " % ",
                               a.divisor);
  return bare ? s : "(" + s + ")";
}

}  // namespace

struct SymOps {
  static SymExpr wrap(PolyPtr p) { return SymExpr(std::move(p)); }
  static const PolyPtr& ptr(const SymExpr& e) { return e.p_; }
};

SymExpr::SymExpr() : p_(constant_poly(0)) {}
SymExpr::SymExpr(int64_t value) : p_(constant_poly(value)) {}

SymExpr SymExpr::symbol(std::string_view name) {
  auto a = std::make_shared<SymAtom>();
  a->kind = SymAtom::Kind::Symbol;
  a->name = std::string(name);
  return SymExpr(atom_poly(std::move(a)));
}

bool SymExpr::is_constant() const {
  return p_->terms.empty() || (p_->terms.size() == 1 && p_->terms[0].factors.empty());
}

std::optional<int64_t> SymExpr::constant() const {
  if (p_->terms.empty()) return 0;
  if (p_->terms.size() == 1 && p_->terms[0].factors.empty()) return p_->terms[0].coeff;
  return std::nullopt;
}

bool SymExpr::is_symbol() const {
  return p_->terms.size() == 1 && p_->terms[0].coeff == 1 &&
         p_->terms[0].factors.size() == 1 && p_->terms[0].factors[0].exp == 1 &&
         p_->terms[0].factors[0].atom->kind == SymAtom::Kind::Symbol;
}

std::string SymExpr::symbol_name() const {
  return is_symbol() ? p_->terms[0].factors[0].atom->name : std::string();
}

std::optional<std::pair<int64_t, std::string>> SymExpr::scaled_symbol() const {
  if (p_->terms.size() != 1 || p_->terms[0].coeff < 1) return std::nullopt;
  const SymTerm& t = p_->terms[0];
  if (t.factors.size() != 1 || t.factors[0].exp != 1 || t.factors[0].atom->kind != SymAtom::Kind::Symbol) return std::nullopt;
  return std::pair{t.coeff, t.factors[0].atom->name};
}

SymExpr operator+(const SymExpr& a, const SymExpr& b) {
  std::vector<SymTerm> t = a.p_->terms;
  t.insert(t.end(), b.p_->terms.begin(), b.p_->terms.end());
  return SymExpr(make_poly(std::move(t), a.p_->overflow || b.p_->overflow));
}

SymExpr SymExpr::operator-() const {
  std::vector<SymTerm> t = p_->terms;
  bool overflow = p_->overflow;
  for (SymTerm& x : t) overflow |= __builtin_sub_overflow(int64_t{0}, x.coeff, &x.coeff);
  return SymExpr(make_poly(std::move(t), overflow));
}

SymExpr operator-(const SymExpr& a, const SymExpr& b) { return a + (-b); }

SymExpr operator*(const SymExpr& a, const SymExpr& b) {
  std::vector<SymTerm> t;
  bool overflow = a.p_->overflow || b.p_->overflow;
  for (const SymTerm& x : a.p_->terms) {
    for (const SymTerm& y : b.p_->terms) {
      SymTerm z{0, x.factors};
      overflow |= __builtin_mul_overflow(x.coeff, y.coeff, &z.coeff);
      z.factors.insert(z.factors.end(), y.factors.begin(), y.factors.end());
      t.push_back(std::move(z));
    }
  }
  return SymExpr(make_poly(std::move(t), overflow));
}

SymExpr SymExpr::floordiv(int64_t c) const {
  if (p_->overflow) return *this;  // stays marked; its value is lost already
  if (c <= 0) return SymExpr(0);
  if (c == 1) return *this;
  if (auto k = constant()) return SymExpr(floor_div(*k, c));
  int64_t g = coeff_gcd(*p_, c);
  if (g > 1) return SymExpr(scale_div(*p_, g)).floordiv(c / g);
  // floor((c*q + r) / c) = q + floor(r / c) for integer q: every coefficient splits into
  // c*q + r with 0 <= r < c, so that e.g. (3*B + 1) // 2 and B + (B + 1) // 2 agree.
  std::vector<SymTerm> q, r;
  for (const SymTerm& t : p_->terms) {
    if (int64_t qc = floor_div(t.coeff, c); qc != 0) q.push_back({qc, t.factors});
    if (int64_t rc = floor_mod(t.coeff, c); rc != 0) r.push_back({rc, t.factors});
  }
  SymExpr quot(make_poly(std::move(q)));
  PolyPtr rest = make_poly(std::move(r));
  if (rest->terms.empty()) return quot;
  if (rest->terms.size() == 1 && rest->terms[0].factors.empty())
    return quot + SymExpr(floor_div(rest->terms[0].coeff, c));
  // (x // a) // b == x // (a*b) for positive a and b.
  if (rest->terms.size() == 1 && rest->terms[0].coeff == 1 &&
      rest->terms[0].factors.size() == 1 && rest->terms[0].factors[0].exp == 1 &&
      rest->terms[0].factors[0].atom->kind == SymAtom::Kind::FloorDiv) {
    const SymAtom& inner = *rest->terms[0].factors[0].atom;
    // Only when a*b fits: a wrapped product would make a divisor <= 0.
    if (std::optional<int64_t> ab = checked_mul(inner.divisor, c)) return quot + SymExpr(inner.arg).floordiv(*ab);
  }
  auto a = std::make_shared<SymAtom>();
  a->kind = SymAtom::Kind::FloorDiv;
  a->arg = std::move(rest);
  a->divisor = c;
  return quot + SymExpr(atom_poly(std::move(a)));
}

SymExpr SymExpr::mod(int64_t c) const {
  if (p_->overflow || c <= 0) return *this;
  if (c == 1) return SymExpr(0);
  if (auto k = constant()) return SymExpr(floor_mod(*k, c));
  // Coefficients reduce to [0, c): (5*B) % 3 and (-B) % 3 both become (2*B) % 3.
  std::vector<SymTerm> r;
  for (const SymTerm& t : p_->terms)
    if (int64_t rc = floor_mod(t.coeff, c); rc != 0) r.push_back({rc, t.factors});
  PolyPtr rest = make_poly(std::move(r));
  if (rest->terms.empty()) return SymExpr(0);
  int64_t g = coeff_gcd(*rest, c);
  if (g > 1) return SymExpr(g) * SymExpr(scale_div(*rest, g)).mod(c / g);
  if (rest->terms.size() == 1 && rest->terms[0].factors.empty())
    return SymExpr(floor_mod(rest->terms[0].coeff, c));
  auto a = std::make_shared<SymAtom>();
  a->kind = SymAtom::Kind::Mod;
  a->arg = std::move(rest);
  a->divisor = c;
  return SymExpr(atom_poly(std::move(a)));
}

std::optional<SymExpr> SymExpr::divide_exact(const SymExpr& d) const {
  if (p_->overflow || d.p_->overflow || d.p_->terms.size() != 1) return std::nullopt;
  const SymTerm& dt = d.p_->terms[0];
  std::vector<SymTerm> q;
  for (const SymTerm& t : p_->terms) {
    if (dt.coeff == -1 && t.coeff == INT64_MIN) return std::nullopt;  // the quotient 2^63 does not fit
    if (t.coeff % dt.coeff != 0) return std::nullopt;
    SymTerm out{t.coeff / dt.coeff, t.factors};
    for (const SymFactor& f : dt.factors) {
      auto it = std::find_if(out.factors.begin(), out.factors.end(), [&](const SymFactor& x) {
        return compare_atom(*x.atom, *f.atom) == 0;
      });
      if (it == out.factors.end() || it->exp < f.exp) return std::nullopt;
      it->exp -= f.exp;
      if (it->exp == 0) out.factors.erase(it);
    }
    q.push_back(std::move(out));
  }
  return SymExpr(make_poly(std::move(q)));
}

namespace {

absl::StatusOr<int64_t> eval_poly(const SymPoly& p, const Bindings& b);

absl::StatusOr<int64_t> eval_atom(const SymAtom& a, const Bindings& b) {
  if (a.kind == SymAtom::Kind::Symbol) {
    auto it = b.find(a.name);
    if (it == b.end()) return invalid_argument("symbol ", a.name, " is not bound");
    return it->second;
  }
  KILN_ASSIGN_OR_RETURN(int64_t v, eval_poly(*a.arg, b));
  if (a.divisor <= 0) return a.kind == SymAtom::Kind::FloorDiv ? 0 : v;  // as floordiv()/mod() define it
  return a.kind == SymAtom::Kind::FloorDiv ? floor_div(v, a.divisor) : floor_mod(v, a.divisor);
}

// Checked: a value that does not fit int64 is an error naming the expression, never a
// wrapped number that a caller would take for a dim.
absl::StatusOr<int64_t> eval_poly(const SymPoly& p, const Bindings& b) {
  int64_t sum = 0;
  auto overflow = [&] {
    return invalid_argument("the value of ", poly_to_string(p), " under ", bindings_to_string(b), " overflows int64");
  };
  for (const SymTerm& t : p.terms) {
    int64_t prod = t.coeff;
    for (const SymFactor& f : t.factors) {
      KILN_ASSIGN_OR_RETURN(int64_t v, eval_atom(*f.atom, b));
      for (int e = 0; e < f.exp; ++e) {
        std::optional<int64_t> m = checked_mul(prod, v);
        if (!m) return overflow();
        prod = *m;
      }
    }
    std::optional<int64_t> s = checked_add(sum, prod);
    if (!s) return overflow();
    sum = *s;
  }
  return sum;
}

SymExpr substitute_atom(const SymAtom& a, const std::map<std::string, SymExpr>& repl) {
  if (a.kind == SymAtom::Kind::Symbol) {
    auto it = repl.find(a.name);
    return it != repl.end() ? it->second : SymExpr::symbol(a.name);
  }
  SymExpr arg = SymOps::wrap(a.arg).substitute(repl);
  return a.kind == SymAtom::Kind::FloorDiv ? arg.floordiv(a.divisor) : arg.mod(a.divisor);
}

void collect_poly(const SymPoly& p, std::set<std::string>& out) {
  for (const SymTerm& t : p.terms) {
    for (const SymFactor& f : t.factors) {
      if (f.atom->kind == SymAtom::Kind::Symbol)
        out.insert(f.atom->name);
      else
        collect_poly(*f.atom->arg, out);
    }
  }
}

}  // namespace

absl::StatusOr<int64_t> SymExpr::evaluate(const Bindings& b) const {
  if (p_->overflow) return invalid_argument("a coefficient of ", to_string(), " overflowed int64 in shape arithmetic");
  return eval_poly(*p_, b);
}

bool SymExpr::overflowed() const { return p_->overflow; }

SymExpr SymExpr::substitute(const std::map<std::string, SymExpr>& repl) const {
  SymExpr sum(0);
  for (const SymTerm& t : p_->terms) {
    SymExpr prod(t.coeff);
    for (const SymFactor& f : t.factors) {
      SymExpr v = substitute_atom(*f.atom, repl);
      for (int e = 0; e < f.exp; ++e) prod = prod * v;
    }
    sum = sum + prod;
  }
  if (p_->overflow && !sum.p_->overflow) return SymExpr(make_poly(sum.p_->terms, true));
  return sum;
}

void SymExpr::collect_symbols(std::set<std::string>& out) const { collect_poly(*p_, out); }

std::string SymExpr::to_string() const { return poly_to_string(*p_); }

bool operator==(const SymExpr& a, const SymExpr& b) {
  return a.p_ == b.p_ || (a.p_->hash == b.p_->hash && compare_poly(*a.p_, *b.p_) == 0);
}

std::strong_ordering operator<=>(const SymExpr& a, const SymExpr& b) {
  return compare_poly(*a.p_, *b.p_);
}

size_t SymExpr::hash() const { return p_->hash; }

std::string shape_to_string(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += str_cat(i ? ", " : "", s[i].to_string());
  return out + "]";
}

SymExpr shape_numel(const Shape& s) {
  SymExpr n(1);
  for (const Dim& d : s) n = n * d;
  return n;
}

bool shape_is_static(const Shape& s) {
  return std::all_of(s.begin(), s.end(), [](const Dim& d) { return d.is_constant(); });
}

absl::StatusOr<std::vector<int64_t>> evaluate_shape(const Shape& s, const Bindings& b) {
  std::vector<int64_t> out;
  out.reserve(s.size());
  for (const Dim& d : s) {
    KILN_ASSIGN_OR_RETURN(int64_t v, d.evaluate(b));
    if (v < 0)
      return invalid_argument("dim ", out.size(), " of ", shape_to_string(s), " is ", v, " under ", bindings_to_string(b),
                              " (dims are never negative)");
    out.push_back(v);
  }
  return out;
}

namespace {

// Interval arithmetic in doubles (dims stay far below 2^53), +-inf for unbounded ends.
struct Interval {
  double lo, hi;
};
constexpr double kInf = std::numeric_limits<double>::infinity();

double mul_ends(double a, double b) { return a == 0 || b == 0 ? 0 : a * b; }  // 0 * inf = 0

Interval mul(Interval a, Interval b) {
  double p[4] = {mul_ends(a.lo, b.lo), mul_ends(a.lo, b.hi), mul_ends(a.hi, b.lo), mul_ends(a.hi, b.hi)};
  return {*std::min_element(p, p + 4), *std::max_element(p, p + 4)};
}

using RangeFn = std::function<SymRange(const std::string&)>;
Interval poly_range(const SymPoly& p, const RangeFn& r);

Interval atom_range(const SymAtom& a, const RangeFn& r) {
  switch (a.kind) {
    case SymAtom::Kind::Symbol: {
      SymRange s = r(a.name);
      return {s.lo ? double(*s.lo) : -kInf, s.hi ? double(*s.hi) : kInf};
    }
    case SymAtom::Kind::FloorDiv: {
      Interval x = poly_range(*a.arg, r);
      double c = double(a.divisor);
      return {std::floor(x.lo / c), std::floor(x.hi / c)};
    }
    case SymAtom::Kind::Mod: {
      Interval x = poly_range(*a.arg, r);
      if (x.lo >= 0 && x.hi < double(a.divisor)) return x;
      return {0, double(a.divisor - 1)};
    }
  }
  return {-kInf, kInf};
}

Interval poly_range(const SymPoly& p, const RangeFn& r) {
  Interval sum{0, 0};
  for (const SymTerm& t : p.terms) {
    Interval term{double(t.coeff), double(t.coeff)};
    for (const SymFactor& f : t.factors) {
      Interval x = atom_range(*f.atom, r);
      for (int e = 0; e < f.exp; ++e) term = mul(term, x);
    }
    sum = {sum.lo + term.lo, sum.hi + term.hi};
  }
  return sum;
}

}  // namespace

SymRange value_range(const SymExpr& e, const std::function<SymRange(const std::string&)>& symbol_range) {
  Interval i = poly_range(e.poly(), symbol_range);
  auto end = [](double v) -> std::optional<int64_t> {
    if (std::isinf(v) || std::isnan(v) || std::fabs(v) > 9.0e15) return std::nullopt;
    return static_cast<int64_t>(v);
  };
  return {end(i.lo), end(i.hi)};
}

std::string bindings_to_string(const Bindings& b) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : b) parts.push_back(str_cat(k, "=", v));
  std::sort(parts.begin(), parts.end());
  return str_cat("{", str_join(parts, ", ", [](const std::string& s) { return s; }), "}");
}

}  // namespace kiln
