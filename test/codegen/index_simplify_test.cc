// The kernel-IR index simplifier, rule by rule: each rewrite's printed result, and the
// simplified index equal to the original at every point of the variables' ranges under
// several symbol values (so a rule that is wrong for some value fails here).
#include <catch2/catch.hpp>

#include <functional>

#include "codegen/index_simplify.h"
#include "ir/scalar_ops.h"
#include "ir/str.h"

using namespace kiln;
using kir::Index;
using kir::IndexKind;
using kir::VarRanges;

namespace {

Index o(int v) { return Index::outer(v); }
Index r(int v) { return Index::inner(v); }
Index sym(const char* s) { return Index::sym(s); }
Index div(const Index& a, const Index& b) { return Index::floordiv(a, b); }
Index mod(const Index& a, const Index& b) { return Index::mod(a, b); }

int64_t eval(const Index& i, const std::vector<int64_t>& outer, const std::vector<int64_t>& inner, const Bindings& b) {
  const kir::IndexNode& n = i.node();
  auto sub = [&](const Index& x) { return eval(x, outer, inner, b); };
  switch (n.kind) {
    case IndexKind::Const: return n.value;
    case IndexKind::Outer: return outer.at(n.value);
    case IndexKind::Inner: return inner.at(n.value);
    case IndexKind::Sym: return b.at(n.name);
    case IndexKind::Add: return sub(n.a) + sub(n.b);
    case IndexKind::Mul: return sub(n.a) * sub(n.b);
    case IndexKind::FloorDiv: return floor_div(sub(n.a), sub(n.b));
    case IndexKind::Mod: return sub(n.a) - floor_div(sub(n.a), sub(n.b)) * sub(n.b);
    case IndexKind::Min: return std::min(sub(n.a), sub(n.b));
    case IndexKind::Max: return std::max(sub(n.a), sub(n.b));
    default: FAIL("unexpected index kind"); return 0;
  }
}

// Simplifies `i` under `ranges`, checks that it prints `expected`, and that both agree at
// every point of the ranges for every binding of `bs`.
void check(const Index& i, const VarRanges& ranges, const std::string& expected, const std::vector<Bindings>& bs) {
  Index s = kir::simplify_index(i, ranges);
  INFO("simplifying " << kir::print_index(i));
  CHECK(kir::print_index(s) == expected);
  for (const Bindings& b : bs) {
    std::vector<int64_t> ext;
    for (const std::vector<Dim>* v : {&ranges.outer, &ranges.inner})
      for (const Dim& d : *v) ext.push_back(*d.evaluate(b));
    std::vector<int64_t> at(ext.size(), 0);
    std::function<void(size_t)> walk = [&](size_t d) {
      if (d == ext.size()) {
        std::vector<int64_t> outer(at.begin(), at.begin() + ranges.outer.size()), inner(at.begin() + ranges.outer.size(), at.end());
        INFO("at " << str_join(at, ", ", [](int64_t v) { return std::to_string(v); }) << " under " << bindings_to_string(b));
        REQUIRE(eval(s, outer, inner, b) == eval(i, outer, inner, b));
        return;
      }
      for (at[d] = 0; at[d] < ext[d]; ++at[d]) walk(d + 1);
    };
    walk(0);
  }
}

const std::vector<Bindings> kSizes = {{{"S", 1}, {"B", 1}, {"H", 1}},
                                      {{"S", 3}, {"B", 2}, {"H", 4}},
                                      {{"S", 7}, {"B", 3}, {"H", 2}}};

}  // namespace

TEST_CASE("x // c * c + x % c is x, for constant and symbolic c, times a coefficient", "[index]") {
  Dim bs = Dim::symbol("B") * Dim::symbol("S");
  check(div(o(0), 4) * 4 + mod(o(0), 4), {{30}}, "o0", kSizes);
  check(div(o(0), sym("S")) * sym("S") + mod(o(0), sym("S")), {{bs}}, "o0", kSizes);
  // 3 * (x // S * S + x % S) with x = o0 + 2 * r0: every term carries the coefficient.
  Index x = o(0) + r(0) * 2;
  check((div(x, sym("S")) * sym("S") + mod(x, sym("S"))) * 3, {{bs}, {5}}, "o0 * 3 + r0 * 6", kSizes);
  // Two different dividends do not merge.
  check(div(o(0), 4) * 4 + mod(o(1), 4), {{9, 9}}, "o0 // 4 * 4 + o1 % 4", kSizes);
}

TEST_CASE("the loop ranges decide x % c = x and x // c = 0", "[index]") {
  Dim s = Dim::symbol("S");
  check(mod(o(1), sym("S")) + div(o(1), sym("S")), {{3, s}}, "o1", kSizes);
  // o1 < 2*S only: neither holds.
  check(mod(o(1), sym("S")) + div(o(1), sym("S")), {{3, s * 2}}, "o1 % S + o1 // S", kSizes);
  // A constant extent against a constant divisor; a negative offset stops the rule.
  check(mod(r(0), 8) + div(r(0), 8), {{}, {8}}, "r0", kSizes);
  check(mod(r(0) + Index(-1), 8) + div(r(0), 8), {{}, {8}}, "(r0 + -1) % 8", kSizes);
}

TEST_CASE("a multiple of the divisor leaves the floordiv and mod: merge and split of adjacent dims", "[index]") {
  Dim s = Dim::symbol("S");
  // [B, S] merged to [B*S] and split again: (o0*S + o1) // S = o0, (o0*S + o1) % S = o1.
  Index flat = o(0) * sym("S") + o(1);
  check(div(flat, sym("S")) * Index(100) + mod(flat, sym("S")), {{Dim::symbol("B"), s}}, "o0 * 100 + o1", kSizes);
  // Without the range of o1 the quotient keeps the rest's floordiv: o0 + o1 // S, no fewer
  // floordivs than the original, which stays.
  check(div(flat, sym("S")), {{Dim::symbol("B"), s * 2}}, "(o0 * S + o1) // S", kSizes);
  // Put back together, the pair of the rest merges still: (o1 // S) * S + o1 % S = o1.
  check(div(flat, sym("S")) * sym("S") + mod(flat, sym("S")), {{Dim::symbol("B"), s * 2}}, "o0 * S + o1", kSizes);
  // A reshape [B, S, H] -> [B*S, H] read back as [B, S, H], over symbolic extents.
  Index row = (o(0) * sym("S") + o(1));
  Index back = (div(row, sym("S")) * sym("S") + mod(row, sym("S"))) * sym("H") + o(2);
  check(back, {{Dim::symbol("B"), s, Dim::symbol("H")}}, "o0 * H * S + o1 * H + o2", kSizes);
}

TEST_CASE("nested floordiv and mod forms of reshape chains", "[index]") {
  Dim hd = Dim::symbol("H"), nh = Dim::symbol("S");
  SECTION("(x // a) // b = x // (a*b)") { check(div(div(r(0), 4), 8), {{}, {100}}, "r0 // 32", kSizes); }
  SECTION("(x // (a*b)) * b + (x // a) % b = x // a") {
    check(div(r(0), 32) * 8 + mod(div(r(0), 4), 8), {{}, {100}}, "r0 // 4", kSizes);
    Index x = r(0);
    check(div(x, sym("H") * sym("S")) * sym("S") + mod(div(x, sym("H")), sym("S")), {{}, {hd * nh * 3}}, "r0 // H",
          kSizes);
  }
  SECTION("(x % (a*b)) // a = (x // a) % b, and then ((x // a) % b) * a + x % a = x % (a*b)") {
    check(div(mod(r(0), 12), 4) * 4 + mod(r(0), 4), {{}, {50}}, "r0 % 12", kSizes);
    check(div(mod(r(0), sym("H") * sym("S")), sym("H")) * sym("H") + mod(r(0), sym("H")), {{}, {hd * nh * 2}},
          "r0 % (H * S)", kSizes);
  }
  SECTION("(x % (a*b)) % a = x % a") { check(mod(mod(r(0), 12), 4), {{}, {50}}, "r0 % 4", kSizes); }
  SECTION("a divisor split where part of it divides: [B, S*H] -> [B*S, H]") {
    // Row o0 of [B*S, H], column r0 < H, is element f = o0*H + r0 of the flat tensor:
    // [f // (S*H), (f % (S*H)) // H, f % H] in [B, S, H], which flattens back to f.
    Index f = o(0) * sym("H") + r(0);
    Index sh = sym("S") * sym("H");
    // (f // (S*H) is o0 // S and f % (S*H) is (o0 % S) * H + r0, no fewer nodes alone.)
    check((div(f, sh) * sym("S") + div(mod(f, sh), sym("H"))) * sym("H") + mod(mod(f, sh), sym("H")),
          {{Dim::symbol("B") * nh}, {hd}}, "o0 * H + r0", kSizes);
    // Without r0 < H nothing splits.
    Index back = (div(f, sh) * sym("S") + div(mod(f, sh), sym("H"))) * sym("H") + mod(mod(f, sh), sym("H"));
    check(back, {{Dim::symbol("B") * nh}, {hd * 2}},
          "H * S * ((o0 * H + r0) // (H * S)) + H * ((o0 + r0 // H) % S) + r0 % H", kSizes);
  }
}

TEST_CASE("indices that do not simplify keep their form", "[index]") {
  // The heads merge: [B, nh, S, hd] permuted to [B, S, nh, hd] and reshaped to [B, S, nh*hd],
  // read at (o0, o1, r0): a two-level stride along r0 stays two floordiv/mods.
  Dim b = Dim::symbol("B"), s = Dim::symbol("S");
  Index heads = ((o(0) * 2 + div(r(0), 4)) * sym("S") + o(1)) * 4 + mod(r(0), 4);
  Index out = kir::simplify_index(heads, {{b, s}, {8}});
  CHECK(out.same_as(heads));
  // A divisor that is no product of dims, and min/max, pass through.
  Index other = mod(o(0), sym("S") + 1) + Index::min(o(0), 3);
  CHECK(kir::simplify_index(other, {{s}}).same_as(other));
}
