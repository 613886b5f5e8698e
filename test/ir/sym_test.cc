// SymExpr: canonical form (equal expressions compare and hash equal), the floordiv/mod
// rewrite rules, divide_exact, and evaluation against an independent brute force over
// random expression trees with negative values.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <random>

#include "ir/parser.h"
#include "ir/str.h"
#include "ir/sym.h"

using namespace kiln;

namespace {

const SymExpr B = SymExpr::symbol("B");
const SymExpr T = SymExpr::symbol("T");
const SymExpr H = SymExpr::symbol("H");

void check_same(const SymExpr& a, const SymExpr& b) {
  INFO(a.to_string() << " vs " << b.to_string());
  CHECK(a == b);
  CHECK(a.hash() == b.hash());
  CHECK(std::hash<SymExpr>()(a) == std::hash<SymExpr>()(b));
  CHECK((a <=> b) == std::strong_ordering::equal);
  CHECK(a.to_string() == b.to_string());
}

// Python's // and %, derived from C++'s truncating % rather than from the code under test.
int64_t py_mod(int64_t a, int64_t c) { return ((a % c) + c) % c; }
int64_t py_div(int64_t a, int64_t c) { return (a - py_mod(a, c)) / c; }

// A random expression tree, evaluated directly and also built as a SymExpr.
struct Tree {
  enum Kind { Const, Sym, Add, Sub, Mul, Neg, Div, Mod } kind;
  int64_t value = 0;  // Const; the divisor for Div and Mod
  std::string name;
  std::vector<Tree> kids;

  int64_t eval(const Bindings& b) const {
    switch (kind) {
      case Const: return value;
      case Sym: return b.at(name);
      case Add: return kids[0].eval(b) + kids[1].eval(b);
      case Sub: return kids[0].eval(b) - kids[1].eval(b);
      case Mul: return kids[0].eval(b) * kids[1].eval(b);
      case Neg: return -kids[0].eval(b);
      case Div: return py_div(kids[0].eval(b), value);
      case Mod: return py_mod(kids[0].eval(b), value);
    }
    return 0;
  }
  // An upper bound on |value| for bindings within +-limit, so tests stay clear of overflow.
  double bound(double limit) const {
    switch (kind) {
      case Const: return std::fabs(static_cast<double>(value));
      case Sym: return limit;
      case Add: case Sub: return kids[0].bound(limit) + kids[1].bound(limit);
      case Mul: return kids[0].bound(limit) * kids[1].bound(limit);
      case Neg: case Div: return kids[0].bound(limit) + 1;
      case Mod: return static_cast<double>(value);
    }
    return 0;
  }
  SymExpr build() const {
    switch (kind) {
      case Const: return SymExpr(value);
      case Sym: return SymExpr::symbol(name);
      case Add: return kids[0].build() + kids[1].build();
      case Sub: return kids[0].build() - kids[1].build();
      case Mul: return kids[0].build() * kids[1].build();
      case Neg: return -kids[0].build();
      case Div: return kids[0].build().floordiv(value);
      case Mod: return kids[0].build().mod(value);
    }
    return {};
  }
};

Tree random_tree(std::mt19937& rng, int depth) {
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  if (depth == 0 || pick(4) == 0) {
    if (pick(2)) return Tree{Tree::Const, pick(15) - 7};
    return Tree{Tree::Sym, 0, std::string(1, "abc"[pick(3)])};
  }
  Tree t{static_cast<Tree::Kind>(Tree::Add + pick(6))};
  t.kids.push_back(random_tree(rng, depth - 1));
  if (t.kind == Tree::Add || t.kind == Tree::Sub || t.kind == Tree::Mul)
    t.kids.push_back(random_tree(rng, depth - 1));
  if (t.kind == Tree::Div || t.kind == Tree::Mod) t.value = 1 + pick(7);
  return t;
}

}  // namespace

TEST_CASE("constants, symbols and accessors", "[sym]") {
  CHECK(SymExpr() == SymExpr(0));
  CHECK(SymExpr(7).constant() == 7);
  CHECK(SymExpr(0).constant() == 0);
  CHECK(SymExpr(-3).is_constant());
  CHECK_FALSE(B.is_constant());
  CHECK_FALSE(B.constant());
  CHECK(B.is_symbol());
  CHECK(B.symbol_name() == "B");
  CHECK_FALSE((B * 2).is_symbol());
  CHECK_FALSE((B + 0 + 1).is_symbol());
  CHECK((B + 1 - 1).is_symbol());
  CHECK(SymExpr(-1).to_string() == "-1");
  CHECK(SymExpr(0).to_string() == "0");
  CHECK(B.to_string() == "B");
  std::set<std::string> syms;
  ((B * T).floordiv(2) + H.mod(3) + 4).collect_symbols(syms);
  CHECK(syms == std::set<std::string>{"B", "H", "T"});
}

TEST_CASE("commutativity, associativity and distribution are canonical", "[sym]") {
  check_same(B + T, T + B);
  check_same(B * T, T * B);
  check_same((B + T) + H, B + (T + H));
  check_same((B * T) * H, B * (T * H));
  check_same((B + T) * H, B * H + T * H);
  check_same((B + 1) * (B - 1), B * B - 1);
  check_same((B + T) * (B + T), B * B + 2 * B * T + T * T);
  check_same(B - B, SymExpr(0));
  check_same(B * 2 - B, B);
  check_same(B * 0, SymExpr(0));
  check_same(-(-B), B);
  check_same(B + B + B, 3 * B);
  check_same(3 + B * 2 + 4, 2 * B + 7);
  // Floordiv/mod atoms take part in the canonical order like symbols do.
  check_same(T.floordiv(2) + B.mod(3), B.mod(3) + T.floordiv(2));
  check_same((B + T).floordiv(2) * H, H * (T + B).floordiv(2));
  CHECK(B != T);
  CHECK(B * B != B * 2);
  CHECK(B.floordiv(2) != B.mod(2));
  CHECK(B.floordiv(2) != B.floordiv(3));
  // Ordering is total and consistent.
  std::vector<SymExpr> v = {T, B + 1, SymExpr(3), B.floordiv(2), B * T, B};
  std::sort(v.begin(), v.end());
  for (size_t i = 1; i < v.size(); ++i) CHECK(v[i - 1] < v[i]);
  // Canonical text puts the constant last.
  CHECK((1 + T * B * 2 + T.floordiv(2)).to_string() == "2*B*T + T // 2 + 1");
}

TEST_CASE("floordiv rules", "[sym]") {
  check_same((2 * B + 2).floordiv(4), (B + 1).floordiv(2));
  check_same((B + 5).floordiv(2), (B + 1).floordiv(2) + 2);
  check_same(B.floordiv(2).floordiv(3), B.floordiv(6));
  check_same((B + 1).floordiv(2).floordiv(3), (B + 1).floordiv(6));
  check_same((4 * B + 8).floordiv(4), B + 2);
  check_same((4 * B + 6).floordiv(4), B + 1);
  check_same((6 * B * T + T).floordiv(3), 2 * B * T + T.floordiv(3));
  check_same(B.floordiv(1), B);
  check_same(SymExpr(-7).floordiv(2), SymExpr(-4));
  check_same(SymExpr(7).floordiv(2), SymExpr(3));
  check_same((B - 1).floordiv(2), (B + 1).floordiv(2) - 1);
  CHECK(B.floordiv(2).to_string() == "B // 2");
  CHECK((B + 1).floordiv(2).to_string() == "(B + 1) // 2");
  CHECK((2 * B.floordiv(2)).to_string() == "2*(B // 2)");
  check_same(B.floordiv(0), SymExpr(0));
  check_same(B.floordiv(-2), SymExpr(0));
}

TEST_CASE("mod rules", "[sym]") {
  check_same(B.mod(1), SymExpr(0));
  check_same((4 * B + 3).mod(2), SymExpr(1));
  check_same((B + 4).mod(4), B.mod(4));
  check_same((B + 5).mod(4), (B + 1).mod(4));
  check_same((2 * B).mod(4), 2 * B.mod(2));
  check_same((6 * B + 4).mod(8), 2 * (3 * B + 2).mod(4));
  check_same((B * T * 3).mod(3), SymExpr(0));
  check_same(SymExpr(-7).mod(3), SymExpr(2));
  check_same(SymExpr(7).mod(3), SymExpr(1));
  CHECK(B.mod(4).to_string() == "B % 4");
  CHECK((B.mod(4) * T).to_string() == "T*(B % 4)");
  check_same(B.mod(0), B);
  check_same(B.mod(-3), B);
  // x == c*(x // c) + x % c.
  for (int64_t c = 1; c <= 5; ++c) {
    SymExpr x = 3 * B + T + 2;
    SymExpr back = c * x.floordiv(c) + x.mod(c);
    for (int64_t b = -6; b <= 6; ++b)
      for (int64_t t = -6; t <= 6; ++t) CHECK(*back.evaluate({{"B", b}, {"T", t}}) == 3 * b + t + 2);
  }
}

TEST_CASE("divide_exact", "[sym]") {
  CHECK(*(B * T * 2048).divide_exact(B * T * 16) == SymExpr(128));
  CHECK(*(B * 6 + B * T * 4).divide_exact(B * 2) == 3 + 2 * T);
  CHECK(*(B * B).divide_exact(B) == B);
  CHECK(*SymExpr(12).divide_exact(-4) == SymExpr(-3));
  CHECK(*SymExpr(0).divide_exact(B) == SymExpr(0));
  CHECK(*(B.floordiv(2) * 4).divide_exact(B.floordiv(2)) == SymExpr(4));
  CHECK_FALSE((B * 6 + 1).divide_exact(SymExpr(2)));
  CHECK_FALSE((B * 6).divide_exact(SymExpr(4)));
  CHECK_FALSE((B * 6).divide_exact(T));
  CHECK_FALSE(B.divide_exact(B * B));
  CHECK_FALSE(B.divide_exact(B + 1));  // not a single term
  CHECK_FALSE(B.divide_exact(SymExpr(0)));
}

TEST_CASE("evaluate and substitute", "[sym]") {
  SymExpr e = 2 * B * T + T.floordiv(2) - B.mod(3) + 1;
  CHECK(*e.evaluate({{"B", 4}, {"T", 7}}) == 2 * 4 * 7 + 3 - 1 + 1);
  CHECK(*e.evaluate({{"B", -4}, {"T", -7}}) == 2 * 28 + py_div(-7, 2) - py_mod(-4, 3) + 1);
  absl::StatusOr<int64_t> unbound = e.evaluate({{"B", 1}});
  REQUIRE_FALSE(unbound.ok());
  CHECK(status_message(unbound.status()) == "symbol T is not bound");
  check_same(e.substitute({{"T", SymExpr(2) * H}}), 4 * B * H + H - B.mod(3) + 1);
  check_same(e.substitute({{"B", SymExpr(3)}, {"T", SymExpr(5)}}), SymExpr(30 + 2 - 0 + 1));
  check_same(e.substitute({}), e);
  CHECK(*evaluate_shape({B, 4, T * 2}, {{"B", 3}, {"T", 5}}) == std::vector<int64_t>{3, 4, 10});
  CHECK_FALSE(evaluate_shape({B, H}, {{"B", 3}}).ok());
  CHECK(shape_numel({B, 4, T}) == 4 * B * T);
  CHECK(shape_numel({}) == SymExpr(1));
  CHECK(shape_is_static({2, 3}));
  CHECK_FALSE(shape_is_static({2, B}));
  CHECK(shape_to_string({B, 4096}) == "[B, 4096]");
}

TEST_CASE("random expression trees evaluate like Python integer arithmetic", "[sym]") {
  std::mt19937 rng(42);
  int checked = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    Tree t = random_tree(rng, 4);
    if (t.bound(9) > 1e15) continue;
    SymExpr e = t.build();
    std::string text = e.to_string();
    for (int k = 0; k < 8; ++k) {
      Bindings b = {{"a", static_cast<int64_t>(rng() % 19) - 9},
                    {"b", static_cast<int64_t>(rng() % 19) - 9},
                    {"c", static_cast<int64_t>(rng() % 19) - 9}};
      absl::StatusOr<int64_t> got = e.evaluate(b);
      INFO(text << " at a=" << b["a"] << " b=" << b["b"] << " c=" << b["c"]);
      REQUIRE(got.ok());
      REQUIRE(*got == t.eval(b));
      // Substituting the values gives the same constant.
      std::map<std::string, SymExpr> repl;
      for (const auto& [k2, v] : b) repl[k2] = SymExpr(v);
      REQUIRE(e.substitute(repl).constant() == t.eval(b));
      ++checked;
    }
    // The canonical text parses back to an equal expression, as a dim; a dim below 0 for
    // every value of its symbols (each at least 1) is refused as negative.
    std::string ir = str_cat("graph g(%x: f32[", text, "]) {\n  return %x\n}\n");
    absl::StatusOr<Graph> g = parse_graph(ir);
    INFO(ir);
    std::optional<int64_t> hi = value_range(e, [](const std::string&) { return SymRange{1, std::nullopt}; }).hi;
    if (hi && *hi < 0) {
      REQUIRE(!g.ok());
      REQUIRE_THAT(status_message(g.status()), Catch::Contains("is negative"));
      continue;
    }
    REQUIRE(g.ok());
    REQUIRE(g->find("x")->shape()[0] == e);
    REQUIRE(g->find("x")->shape()[0].hash() == e.hash());
  }
  CHECK(checked > 10000);
}

TEST_CASE("rearranged random trees stay equal", "[sym]") {
  std::mt19937 rng(7);
  // Mirror every + and * (commutativity) and rebuild: the canonical form must not change.
  std::function<Tree(const Tree&)> mirror = [&](const Tree& t) {
    Tree m = t;
    for (Tree& k : m.kids) k = mirror(k);
    if (m.kind == Tree::Add || m.kind == Tree::Mul) std::swap(m.kids[0], m.kids[1]);
    return m;
  };
  for (int iter = 0; iter < 2000; ++iter) {
    Tree t = random_tree(rng, 4);
    if (t.bound(9) > 1e15) continue;
    SymExpr a = t.build(), b = mirror(t).build();
    INFO(a.to_string() << " vs " << b.to_string());
    REQUIRE(a == b);
    REQUIRE(a.hash() == b.hash());
    // Distribution: t*(x + y) == t*x + t*y.
    SymExpr x = random_tree(rng, 2).build(), y = random_tree(rng, 2).build();
    REQUIRE(a * (x + y) == a * x + a * y);
    REQUIRE((a + x) - x == a);
  }
}

TEST_CASE("coefficients reduce modulo the divisor", "[sym]") {
  // floor((c*q + r) / c) = q + floor(r / c) per term, not only for the constant.
  check_same((3 * B + 1).floordiv(2), B + (B + 1).floordiv(2));
  check_same((5 * B).floordiv(3), B + (2 * B).floordiv(3));
  check_same((-B).floordiv(2), -B + B.floordiv(2));
  check_same((5 * B).mod(3), (2 * B).mod(3));
  check_same((-B).mod(3), (2 * B).mod(3));
  check_same((B + 3 * T + 1).mod(2), (B + T + 1).mod(2));
}
