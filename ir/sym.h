// Symbolic integer expressions for tensor dimensions: integers, named symbols (B, T) and
// +, -, * and floordiv/mod by positive constants, held in a canonical form so that equal
// expressions compare and hash equal. Immutable; a SymExpr is a cheap shared handle.
#pragma once

#include <compare>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace kiln {

using Bindings = absl::flat_hash_map<std::string, int64_t>;

// "{B=2, T=7}": the bindings sorted by symbol, for messages.
std::string bindings_to_string(const Bindings& b);

class SymExpr;
struct SymPoly;

// A factor that is not a plain integer: a symbol, or floordiv/mod of an expression.
struct SymAtom {
  enum class Kind : uint8_t { Symbol, FloorDiv, Mod };
  Kind kind;
  std::string name;                   // Symbol
  std::shared_ptr<const SymPoly> arg;  // FloorDiv, Mod
  int64_t divisor = 0;                // FloorDiv, Mod
};

class SymExpr {
 public:
  SymExpr();                              // the constant 0
  SymExpr(int64_t value);                 // NOLINT: integers convert implicitly
  SymExpr(int value) : SymExpr(static_cast<int64_t>(value)) {}  // NOLINT
  static SymExpr symbol(std::string_view name);

  bool is_constant() const;
  std::optional<int64_t> constant() const;  // the value if constant
  bool is_symbol() const;                   // exactly one symbol, coefficient 1
  std::string symbol_name() const;          // requires is_symbol()
  // (c, S) when the expression is c*S for a symbol S and a constant c >= 1 (an input dim
  // that an importer declared a multiple of c), nullopt otherwise.
  std::optional<std::pair<int64_t, std::string>> scaled_symbol() const;

  friend SymExpr operator+(const SymExpr& a, const SymExpr& b);
  friend SymExpr operator-(const SymExpr& a, const SymExpr& b);
  friend SymExpr operator*(const SymExpr& a, const SymExpr& b);
  SymExpr operator-() const;
  SymExpr& operator+=(const SymExpr& o) { return *this = *this + o; }
  SymExpr& operator*=(const SymExpr& o) { return *this = *this * o; }
  // Floor division and modulo by a positive constant (floor semantics, like Python). The
  // divisor comes checked (the parser, the ONNX importer and infer_slice reject others with
  // a located error); a divisor <= 0 gives x // c = 0 and x % c = x, which keeps
  // x == c*(x // c) + x % c, instead of an exception through the caller.
  SymExpr floordiv(int64_t divisor) const;
  SymExpr mod(int64_t divisor) const;
  // Exact division: the quotient when every term of *this divides by `d` (a single term),
  // nullopt otherwise. Used to infer reshape's -1.
  std::optional<SymExpr> divide_exact(const SymExpr& d) const;

  // True when a coefficient overflowed int64 while building this expression (e.g. the
  // element count of [2^40, 2^40, 2^40]): it compares equal only to another overflowed
  // one, evaluate() fails, and the verifier rejects a type with such a dim.
  bool overflowed() const;
  // Value under `b`; an error names the first unbound symbol or an int64 overflow.
  absl::StatusOr<int64_t> evaluate(const Bindings& b) const;
  SymExpr substitute(const std::map<std::string, SymExpr>& repl) const;
  void collect_symbols(std::set<std::string>& out) const;

  // Canonical text: terms in a fixed order, e.g. "2*B*T + T // 2 + 1". Parsing it back
  // gives an equal expression.
  std::string to_string() const;

  friend bool operator==(const SymExpr& a, const SymExpr& b);
  friend std::strong_ordering operator<=>(const SymExpr& a, const SymExpr& b);
  size_t hash() const;
  template <typename H>
  friend H AbslHashValue(H h, const SymExpr& e) {
    return H::combine(std::move(h), e.hash());
  }

  const SymPoly& poly() const { return *p_; }

 private:
  explicit SymExpr(std::shared_ptr<const SymPoly> p) : p_(std::move(p)) {}
  friend struct SymOps;
  std::shared_ptr<const SymPoly> p_;
};

// The values an expression can take: [lo, hi], nullopt for an unbounded end.
struct SymRange {
  std::optional<int64_t> lo, hi;
};
// A range holding every value of `e` when each symbol S lies in symbol_range(S) (interval
// arithmetic: sound, not always tight). Used to prove that a bound is >= 0.
SymRange value_range(const SymExpr& e, const std::function<SymRange(const std::string&)>& symbol_range);

using Dim = SymExpr;
using Shape = std::vector<Dim>;

std::string shape_to_string(const Shape& s);  // "[B, 4096]"
SymExpr shape_numel(const Shape& s);
bool shape_is_static(const Shape& s);
// Every dim evaluated; an error names the unbound symbol, an overflow or a negative dim.
absl::StatusOr<std::vector<int64_t>> evaluate_shape(const Shape& s, const Bindings& b);

// Storage for a canonical polynomial: sum over terms of coeff * product(atom^exp).
struct SymFactor {
  std::shared_ptr<const SymAtom> atom;
  int exp;
};
struct SymTerm {
  int64_t coeff;
  std::vector<SymFactor> factors;  // sorted by atom; empty for the constant term
};
struct SymPoly {
  std::vector<SymTerm> terms;  // sorted by factors; no zero coefficients
  bool overflow = false;       // see SymExpr::overflowed()
  size_t hash = 0;
};

}  // namespace kiln

template <>
struct std::hash<kiln::SymExpr> {
  size_t operator()(const kiln::SymExpr& e) const { return e.hash(); }
};
