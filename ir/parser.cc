#include "ir/parser.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"
#include "ir/verifier.h"

namespace kiln {
namespace {

// Dims, dim expressions and tensor sizes stay far below int64 so that no later symbolic
// arithmetic (products, sums, nested floordiv divisors) can overflow.
constexpr double kMaxMagnitude = 281474976710656.0;  // 2^48
constexpr int kMaxNesting = 200;

enum class Tok : uint8_t {
  End, Ident, Int, Float, String, ValueRef, LParen, RParen, LBracket, RBracket, LBrace, RBrace,
  Comma, Colon, Equals, Plus, Minus, Star, SlashSlash, Percent
};

struct Token {
  Tok kind = Tok::End;
  std::string text;  // as written; for String and ValueRef the unescaped name
  int line = 1;
  int col = 1;
};

bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool digit(char c) { return c >= '0' && c <= '9'; }
bool ident_char(char c) { return ident_start(c) || digit(c); }
bool name_char(char c) { return ident_char(c) || c == '.'; }

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::End: return "end of input";
    case Tok::String: return attr_to_string(AttrValue(t.text));
    case Tok::ValueRef: return str_cat("'%", t.text, "'");
    default: return str_cat("'", t.text, "'");
  }
}

class Parser {
 public:
  Parser(std::string_view text, std::string_view filename) : src_(text), file_(filename) {}

  absl::StatusOr<Graph> run() {
    KILN_RETURN_IF_ERROR(lex());
    if (toks_.size() == 1) return error(toks_[0], "empty input: expected 'graph'");
    KILN_ASSIGN_OR_RETURN(Graph g, parse_graph());
    return g;
  }

  absl::StatusOr<std::vector<TensorType>> run_types() {
    KILN_RETURN_IF_ERROR(lex());
    std::vector<TensorType> out;
    while (true) {
      KILN_ASSIGN_OR_RETURN(TensorType t, parse_type());
      out.push_back(std::move(t));
      if (!at(Tok::Comma)) break;
      take();
    }
    if (!at(Tok::End)) return expected("',' and a type, or the end of the types");
    return out;
  }

 private:
  // ---- errors -----------------------------------------------------------------------

  std::string loc(const Token& t) const { return str_cat(file_, ":", t.line, ":", t.col); }

  template <typename... A>
  absl::Status error(const Token& t, const A&... parts) const {
    return invalid_argument(loc(t), ": ", parts...);
  }
  absl::Status expected(std::string_view what) const {
    return error(peek(), "expected ", what, ", got ", describe(peek()));
  }

  // ---- lexer --------------------------------------------------------------------------

  absl::Status lex() {
    size_t i = 0;
    int line = 1;
    size_t line_start = 0;
    auto col_of = [&](size_t at) { return static_cast<int>(at - line_start) + 1; };
    while (true) {
      while (i < src_.size()) {
        char c = src_[i];
        if (c == '\n') {
          ++line;
          line_start = ++i;
        } else if (c == ' ' || c == '\t' || c == '\r') {
          ++i;
        } else if (c == '#') {
          while (i < src_.size() && src_[i] != '\n') ++i;
        } else {
          break;
        }
      }
      Token t;
      t.line = line;
      t.col = col_of(i);
      if (i >= src_.size()) {
        toks_.push_back(std::move(t));
        return absl::OkStatus();
      }
      char c = src_[i];
      size_t start = i;
      if (ident_start(c)) {
        while (i < src_.size() && ident_char(src_[i])) ++i;
        t.kind = Tok::Ident;
      } else if (digit(c)) {
        KILN_RETURN_IF_ERROR(lex_number(i, t));
      } else if (c == '"') {
        KILN_RETURN_IF_ERROR(lex_string(i, line, line_start, t));
      } else if (c == '%' && i + 1 < src_.size() && (name_char(src_[i + 1]) || src_[i + 1] == '"')) {
        ++i;
        if (src_[i] == '"') {
          Token inner;
          KILN_RETURN_IF_ERROR(lex_string(i, line, line_start, inner));
          if (inner.text.empty()) return error(t, "a value name must not be empty");
          t.text = std::move(inner.text);
        } else {
          while (i < src_.size() && name_char(src_[i])) ++i;
          t.text = std::string(src_.substr(start + 1, i - start - 1));
        }
        t.kind = Tok::ValueRef;
        toks_.push_back(std::move(t));
        continue;
      } else {
        static constexpr std::pair<char, Tok> kPunct[] = {
            {'(', Tok::LParen}, {')', Tok::RParen}, {'[', Tok::LBracket}, {']', Tok::RBracket},
            {'{', Tok::LBrace}, {'}', Tok::RBrace}, {',', Tok::Comma},    {':', Tok::Colon},
            {'=', Tok::Equals}, {'+', Tok::Plus},   {'-', Tok::Minus},    {'*', Tok::Star},
            {'%', Tok::Percent}};
        bool found = false;
        for (auto [ch, kind] : kPunct) {
          if (ch == c) {
            t.kind = kind;
            ++i;
            found = true;
            break;
          }
        }
        if (!found && c == '/' && i + 1 < src_.size() && src_[i + 1] == '/') {
          t.kind = Tok::SlashSlash;
          i += 2;
          found = true;
        }
        if (!found) {
          unsigned char u = static_cast<unsigned char>(c);
          std::string shown = u >= 0x20 && u < 0x7f ? str_cat("'", c, "'") : fmt::format("byte 0x{:02x}", u);
          return error(t, "unexpected character ", shown);
        }
      }
      if (t.kind != Tok::String) t.text = std::string(src_.substr(start, i - start));
      toks_.push_back(std::move(t));
    }
  }

  // digits [. digits] [e [+-] digits]; anything glued to it makes a bad number.
  absl::Status lex_number(size_t& i, Token& t) {
    size_t start = i;
    bool is_float = false;
    while (i < src_.size() && digit(src_[i])) ++i;
    if (i < src_.size() && src_[i] == '.') {
      is_float = true;
      ++i;
      while (i < src_.size() && digit(src_[i])) ++i;
    }
    if (i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      size_t j = i + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && digit(src_[j])) {
        is_float = true;
        i = j;
        while (i < src_.size() && digit(src_[i])) ++i;
      }
    }
    bool glued = i < src_.size() && name_char(src_[i]);
    while (i < src_.size() && name_char(src_[i])) ++i;
    std::string text(src_.substr(start, i - start));
    if (glued) return error(t, "bad number '", text, "'");
    t.kind = is_float ? Tok::Float : Tok::Int;
    if (is_float) {
      double v;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || p != text.data() + text.size() || !std::isfinite(v))
        return error(t, "bad number '", text, "' (out of range)");
    } else {
      // Up to 2^63 so that -9223372036854775808 can be written.
      uint64_t v;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || v > (uint64_t{1} << 63))
        return error(t, "bad number '", text, "' (out of range)");
    }
    return absl::OkStatus();
  }

  absl::Status lex_string(size_t& i, int& line, size_t& line_start, Token& t) {
    Token open = t;
    ++i;  // the opening quote
    std::string out;
    while (true) {
      if (i >= src_.size()) return error(open, "unterminated string");
      char c = src_[i++];
      if (c == '"') break;
      if (c == '\n') return error(open, "unterminated string (a string must end on its line)");
      if (c == '\\') {
        if (i >= src_.size()) return error(open, "unterminated string");
        char e = src_[i++];
        if (e != '"' && e != '\\') {
          Token at = open;
          at.col = static_cast<int>(i - 2 - line_start) + 1;
          return error(at, "bad escape in string: only \\\" and \\\\ are allowed");
        }
        c = e;
      }
      out += c;
    }
    t.kind = Tok::String;
    t.text = std::move(out);
    return absl::OkStatus();
  }

  // ---- token helpers -------------------------------------------------------------------

  const Token& peek(size_t ahead = 0) const {
    size_t k = std::min(pos_ + ahead, toks_.size() - 1);
    return toks_[k];
  }
  const Token& take() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool at(Tok k) const { return peek().kind == k; }
  bool at_word(std::string_view w) const { return at(Tok::Ident) && peek().text == w; }
  absl::Status expect(Tok k, std::string_view what) {
    if (!at(k)) return expected(what);
    take();
    return absl::OkStatus();
  }
  absl::Status expect_word(std::string_view w) {
    if (!at_word(w)) return expected(str_cat("'", w, "'"));
    take();
    return absl::OkStatus();
  }

  // ---- integers and dims ---------------------------------------------------------------

  // An optionally negated integer literal.
  absl::StatusOr<int64_t> parse_int(std::string_view what) {
    bool neg = at(Tok::Minus);
    if (neg && peek(1).kind != Tok::Int) {
      take();
      return expected(what);
    }
    if (neg) take();
    if (!at(Tok::Int)) return expected(what);
    const Token& t = take();
    uint64_t v = 0;
    std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
    if (!neg && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return error(t, "bad number '", t.text, "' (out of range)");
    return neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  }

  // An upper bound on every coefficient and divisor that arithmetic on `e` can produce.
  static double magnitude(const SymPoly& p) {
    double m = 0;
    for (const SymTerm& t : p.terms) {
      double term = std::fabs(static_cast<double>(t.coeff));
      for (const SymFactor& f : t.factors) {
        double a = f.atom->kind == SymAtom::Kind::Symbol
                       ? 1.0
                       : magnitude(*f.atom->arg) * static_cast<double>(f.atom->divisor);
        term *= std::pow(std::max(a, 1.0), f.exp);
      }
      m += term;
    }
    return m;
  }
  static double magnitude(const SymExpr& e) { return magnitude(e.poly()); }

  absl::Status check_magnitude(const Token& at_tok, double m) const {
    if (m > kMaxMagnitude)
      return error(at_tok, "dim expression is too large (its terms exceed 2^48)");
    return absl::OkStatus();
  }

  absl::StatusOr<SymExpr> parse_dim(int depth = 0) {
    const Token& first = peek();
    KILN_ASSIGN_OR_RETURN(SymExpr lhs, parse_dim_term(depth));
    while (at(Tok::Plus) || at(Tok::Minus)) {
      bool plus = take().kind == Tok::Plus;
      KILN_ASSIGN_OR_RETURN(SymExpr rhs, parse_dim_term(depth));
      KILN_RETURN_IF_ERROR(check_magnitude(first, magnitude(lhs) + magnitude(rhs)));
      lhs = plus ? lhs + rhs : lhs - rhs;
    }
    return lhs;
  }

  absl::StatusOr<SymExpr> parse_dim_term(int depth) {
    const Token& first = peek();
    KILN_ASSIGN_OR_RETURN(SymExpr lhs, parse_dim_unary(depth));
    while (true) {
      if (at(Tok::Star)) {
        take();
        KILN_ASSIGN_OR_RETURN(SymExpr rhs, parse_dim_unary(depth));
        KILN_RETURN_IF_ERROR(check_magnitude(first, magnitude(lhs) * magnitude(rhs)));
        lhs = lhs * rhs;
        continue;
      }
      bool div = at(Tok::SlashSlash);
      int64_t divisor;
      if (div || at(Tok::Percent)) {
        const Token& op = take();
        const Token& rhs_tok = peek();
        KILN_ASSIGN_OR_RETURN(SymExpr rhs, parse_dim_unary(depth));
        if (!rhs.constant() || *rhs.constant() <= 0)
          return error(rhs_tok, "expected a positive integer constant after '", op.text, "', got ",
                       rhs.to_string());
        divisor = *rhs.constant();
      } else if (at(Tok::ValueRef)) {
        // "B%4" lexes as a value reference: after an operand it is the mod operator.
        const Token& t = take();
        uint64_t v = 0;
        auto [p, ec] = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
        if (ec != std::errc() || p != t.text.data() + t.text.size() || v == 0 ||
            v > static_cast<uint64_t>(kMaxMagnitude)) {
          Token after = t;
          ++after.col;
          return error(after, "expected a positive integer constant after '%', got '", t.text, "'");
        }
        divisor = static_cast<int64_t>(v);
      } else {
        return lhs;
      }
      KILN_RETURN_IF_ERROR(check_magnitude(first, magnitude(lhs) * static_cast<double>(divisor)));
      lhs = div ? lhs.floordiv(divisor) : lhs.mod(divisor);
    }
  }

  absl::StatusOr<SymExpr> parse_dim_unary(int depth) {
    if (depth > kMaxNesting) return error(peek(), "dim expression is nested too deeply");
    if (at(Tok::Minus)) {
      take();
      KILN_ASSIGN_OR_RETURN(SymExpr e, parse_dim_unary(depth + 1));
      return -e;
    }
    if (at(Tok::LParen)) {
      take();
      KILN_ASSIGN_OR_RETURN(SymExpr e, parse_dim(depth + 1));
      KILN_RETURN_IF_ERROR(expect(Tok::RParen, "')'"));
      return e;
    }
    if (at(Tok::Int)) {
      const Token& t = peek();
      KILN_ASSIGN_OR_RETURN(int64_t v, parse_int("a dim"));
      KILN_RETURN_IF_ERROR(check_magnitude(t, std::fabs(static_cast<double>(v))));
      return SymExpr(v);
    }
    if (at(Tok::Ident) && !is_reserved(peek().text)) return SymExpr::symbol(take().text);
    return expected("a dim (an integer, a symbol or a parenthesized expression)");
  }

  static bool is_reserved(std::string_view w) {
    return w == "inf" || w == "nan" || w == "true" || w == "false";
  }

  absl::StatusOr<TensorType> parse_type() {
    const Token& start = peek();
    if (!at(Tok::Ident)) return expected("a type such as bf16[B, 4096]");
    std::optional<DType> dt = parse_dtype(peek().text);
    if (!dt) return error(peek(), "bad dtype '", peek().text, "' (expected one of f32 f16 bf16 i32 i64 bool)");
    take();
    KILN_RETURN_IF_ERROR(expect(Tok::LBracket, "'[' after the dtype"));
    TensorType t{*dt, {}};
    double numel = 1;
    if (!at(Tok::RBracket)) {
      while (true) {
        const Token& dim_tok = peek();
        KILN_ASSIGN_OR_RETURN(SymExpr d, parse_dim());
        // A dim is never negative: a constant below 0, or an expression below 0 for every
        // value of its symbols (each at least 1), is an error here.
        std::optional<int64_t> hi = value_range(d, [](const std::string&) { return SymRange{1, std::nullopt}; }).hi;
        if (hi && *hi < 0) return error(dim_tok, "dim ", d.to_string(), " is negative");
        numel *= std::max(magnitude(d), 1.0);
        t.shape.push_back(std::move(d));
        if (at(Tok::Comma)) {
          take();
          continue;
        }
        break;
      }
    }
    KILN_RETURN_IF_ERROR(expect(Tok::RBracket, "',' or ']' in the shape"));
    if (numel > kMaxMagnitude) return error(start, "tensor type ", t.to_string(), " is too large");
    return t;
  }

  // ---- attribute values ------------------------------------------------------------------

  // A float literal, possibly negated: 0.5, -2.0, 1e-6, inf, -inf, nan.
  bool at_float() const {
    size_t k = at(Tok::Minus) ? 1 : 0;
    const Token& t = peek(k);
    return t.kind == Tok::Float || (t.kind == Tok::Ident && (t.text == "inf" || t.text == "nan"));
  }

  double parse_float() {
    bool neg = at(Tok::Minus);
    if (neg) take();
    const Token& t = take();
    double v;
    if (t.text == "inf") v = std::numeric_limits<double>::infinity();
    else if (t.text == "nan") v = std::numeric_limits<double>::quiet_NaN();
    else std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
    return neg ? -v : v;
  }

  absl::StatusOr<AttrValue> parse_list(const std::string& name) {
    const Token& open = take();
    std::vector<SymExpr> dims;
    std::vector<double> floats;
    bool any_float = false, any_symbolic = false;
    double numel = 1;
    if (!at(Tok::RBracket)) {
      while (true) {
        if (at_float()) {
          any_float = true;
          floats.push_back(parse_float());
        } else {
          KILN_ASSIGN_OR_RETURN(SymExpr d, parse_dim());
          if (auto c = d.constant()) floats.push_back(static_cast<double>(*c));
          else any_symbolic = true;
          numel *= std::max(magnitude(d), 1.0);
          dims.push_back(std::move(d));
        }
        if (at(Tok::Comma)) {
          take();
          continue;
        }
        break;
      }
    }
    KILN_RETURN_IF_ERROR(expect(Tok::RBracket, "',' or ']' in the list"));
    if (any_float && any_symbolic)
      return error(open, "attribute ", name, ": a list mixes floats and symbolic dims");
    if (numel > kMaxMagnitude) return error(open, "attribute ", name, ": list values are too large");
    if (any_float) return floats;
    if (any_symbolic) return dims;
    std::vector<int64_t> ints;
    for (const SymExpr& d : dims) ints.push_back(*d.constant());
    return ints;
  }

  absl::StatusOr<AttrValue> parse_attr_value(const std::string& name, AttrType want) {
    if (at(Tok::LBracket)) return parse_list(name);
    // A dim: an expression such as T - 1 (a plain integer reads below, with the full range
    // of an int, as the "to the end" bound 9223372036854775807).
    size_t k = at(Tok::Minus) ? 1 : 0;
    bool plain_int = peek(k).kind == Tok::Int && (peek(k + 1).kind == Tok::Comma || peek(k + 1).kind == Tok::RParen);
    if (want == AttrType::Dim && !plain_int) {
      KILN_ASSIGN_OR_RETURN(SymExpr d, parse_dim());
      return d;
    }
    if (at_float()) return parse_float();
    if (at(Tok::Int) || (at(Tok::Minus) && peek(1).kind == Tok::Int)) {
      KILN_ASSIGN_OR_RETURN(int64_t v, parse_int("an integer"));
      return v;
    }
    if (at(Tok::String)) return take().text;
    if (at(Tok::Ident)) {
      const Token& t = peek();
      if (t.text == "true" || t.text == "false") {
        take();
        return t.text == "true";
      }
      if (std::optional<DType> dt = parse_dtype(t.text)) {
        take();
        return *dt;
      }
    }
    return expected(str_cat("a value for attribute ", name,
                            " (a number, true/false, a \"string\", a dtype or a [list])"));
  }

  // ---- graph structure ---------------------------------------------------------------------

  absl::StatusOr<std::string> parse_graph_name() {
    if (at(Tok::Ident) || at(Tok::String)) return take().text;
    return expected("the graph's name");
  }

  absl::Status parse_arg(Graph& g) {
    if (!at(Tok::ValueRef)) return expected("an argument such as %x: f32[B, 16]");
    const Token& name = take();
    KILN_RETURN_IF_ERROR(expect(Tok::Colon, "':' after the argument's name"));
    KILN_ASSIGN_OR_RETURN(TensorType type, parse_type());
    bool param = at_word("param"), state = at_word("state");
    if (param || state) take();
    absl::StatusOr<Value*> v =
        param ? g.add_param(name.text, std::move(type)) : g.add_input(name.text, std::move(type), state);
    if (!v.ok()) return error(name, v.status().message());
    return absl::OkStatus();
  }

  absl::Status parse_symbol_line(Graph& g, std::set<std::string>& seen) {
    const Token& kw = take();
    if (!at(Tok::Ident) || is_reserved(peek().text)) return expected("a symbol name");
    std::string sym = take().text;
    if (!seen.insert(sym).second) return error(kw, "bounds of symbol ", sym, " are given twice");
    KILN_RETURN_IF_ERROR(expect_word("in"));
    KILN_RETURN_IF_ERROR(expect(Tok::LBracket, "'['"));
    SymbolInfo info;
    KILN_ASSIGN_OR_RETURN(int64_t lo, parse_int("the symbol's minimum (an integer)"));
    info.min = lo;
    KILN_RETURN_IF_ERROR(expect(Tok::Comma, "','"));
    if (at_word("inf")) {
      take();
    } else {
      KILN_ASSIGN_OR_RETURN(int64_t hi, parse_int("the symbol's maximum (an integer or inf)"));
      info.max = hi;
    }
    KILN_RETURN_IF_ERROR(expect(Tok::RBracket, "']'"));
    if (auto s = g.set_symbol_bounds(sym, info); !s.ok()) return error(kw, s.message());
    return absl::OkStatus();
  }

  absl::StatusOr<Value*> lookup(const Graph& g, const Token& t) const {
    Value* v = g.find(t.text);
    if (!v) return error(t, "undefined value %", t.text);
    return v;
  }

  absl::Status parse_node(Graph& g) {
    const Token& first = peek();
    std::vector<const Token*> results;
    while (true) {
      if (!at(Tok::ValueRef)) return expected("a result name such as %y");
      const Token& r = take();
      if (g.find(r.text)) return error(r, "value %", r.text, " is already defined");
      for (const Token* prev : results)
        if (prev->text == r.text) return error(r, "value %", r.text, " is already defined");
      results.push_back(&r);
      if (!at(Tok::Comma)) break;
      take();
    }
    KILN_RETURN_IF_ERROR(expect(Tok::Equals, "'=' or ',' after the result names"));
    if (!at(Tok::Ident)) return expected("an op name");
    const Token& op_tok = take();
    std::optional<Op> op = find_op(op_tok.text);
    if (!op) return error(op_tok, "unknown op '", op_tok.text, "'");
    const OpInfo& info = op_info(*op);
    KILN_RETURN_IF_ERROR(expect(Tok::LParen, "'(' after the op name"));

    std::vector<Value*> operands;
    Attrs attrs;
    if (!at(Tok::RParen)) {
      while (true) {
        if (at(Tok::ValueRef)) {
          const Token& t = take();
          if (!attrs.empty()) return error(t, "operands must come before attributes");
          KILN_ASSIGN_OR_RETURN(Value* v, lookup(g, t));
          operands.push_back(v);
        } else if (at(Tok::Ident) && peek(1).kind == Tok::Equals) {
          const Token& name_tok = take();
          take();
          const AttrSpec* spec = info.find_attr(name_tok.text);
          if (!spec) {
            std::string known = str_join(info.attrs, ", ", [](const AttrSpec& s) { return s.name; });
            return error(name_tok, info.name, " has no attribute '", name_tok.text, "'",
                         known.empty() ? std::string(" (it takes none)")
                                       : str_cat(" (expected one of: ", known, ")"));
          }
          if (attrs.find(name_tok.text))
            return error(name_tok, "attribute '", name_tok.text, "' is given twice");
          const Token& value_tok = peek();
          KILN_ASSIGN_OR_RETURN(AttrValue v, parse_attr_value(name_tok.text, spec->type));
          absl::StatusOr<AttrValue> c = coerce_attr(v, spec->type);
          if (!c.ok()) return error(value_tok, "attribute '", name_tok.text, "' of ", info.name, ": ", c.status().message());
          attrs.set(name_tok.text, *std::move(c));
        } else {
          return expected(attrs.empty() ? "an operand (%x) or an attribute (name=value)"
                                        : "an attribute (name=value)");
        }
        if (at(Tok::Comma)) {
          take();
          continue;
        }
        break;
      }
    }
    KILN_RETURN_IF_ERROR(expect(Tok::RParen, "',' or ')'"));

    std::vector<std::string> names;
    for (const Token* r : results) names.push_back(r->text);
    size_t given = names.size();
    // The type annotations, read before the node is made: they are extern_call's results
    // when it does not spell them as an attribute (the printer's form).
    std::vector<std::pair<const Token*, TensorType>> annotated;
    if (at(Tok::Colon)) {
      take();
      for (size_t i = 0; i < given; ++i) {
        if (i > 0) {
          KILN_RETURN_IF_ERROR(expect(Tok::Comma, str_cat("',' and the type of result ", i + 1)));
        }
        const Token& type_tok = peek();
        KILN_ASSIGN_OR_RETURN(TensorType t, parse_type());
        annotated.emplace_back(&type_tok, std::move(t));
      }
    }
    if (*op == Op::ExternCall && !attrs.find("results") && !annotated.empty())
      attrs.set("results", str_join(annotated, ", ", [](const auto& a) { return a.second.to_string(); }));
    KILN_ASSIGN_OR_RETURN(Node* node, g.add_node(*op, std::move(operands), std::move(attrs), std::move(names), loc(first)));
    if (node->results().size() != given)
      return error(first, info.name, " gives ", node->results().size(), " result(s), but ", given,
                   " name(s) are given");
    if (node->op() == Op::Slice)
      if (absl::Status s = check_slice_range(g, *node); !s.ok()) return error(first, s.message());
    for (size_t i = 0; i < annotated.size(); ++i) {
      const TensorType& want = node->result(i)->type();
      if (annotated[i].second != want)
        return error(*annotated[i].first, "type annotation ", annotated[i].second.to_string(), " of %",
                     results[i]->text, " does not match the inferred type ", want.to_string());
    }
    return absl::OkStatus();
  }

  absl::Status parse_return(Graph& g) {
    take();
    std::vector<Value*> outs;
    while (true) {
      if (!at(Tok::ValueRef)) return expected("a value to return");
      KILN_ASSIGN_OR_RETURN(Value* v, lookup(g, take()));
      outs.push_back(v);
      if (!at(Tok::Comma)) break;
      take();
    }
    g.set_outputs(std::move(outs));
    return absl::OkStatus();
  }

  absl::StatusOr<Graph> parse_graph() {
    KILN_RETURN_IF_ERROR(expect_word("graph"));
    KILN_ASSIGN_OR_RETURN(std::string name, parse_graph_name());
    Graph g(name);
    KILN_RETURN_IF_ERROR(expect(Tok::LParen, "'(' after the graph's name"));
    if (!at(Tok::RParen)) {
      while (true) {
        KILN_RETURN_IF_ERROR(parse_arg(g));
        if (at(Tok::Comma)) {
          take();
          continue;
        }
        break;
      }
    }
    KILN_RETURN_IF_ERROR(expect(Tok::RParen, "',' or ')' after an argument"));
    KILN_RETURN_IF_ERROR(expect(Tok::LBrace, "'{'"));

    std::set<std::string> bounded;
    while (at_word("symbol"))
      KILN_RETURN_IF_ERROR(parse_symbol_line(g, bounded));
    while (!at_word("return")) {
      if (at(Tok::RBrace)) return error(peek(), "missing 'return' before '}'");
      if (at(Tok::End)) return expected("a node or 'return'");
      if (at_word("symbol")) return error(peek(), "symbol bounds must come before the first node");
      KILN_RETURN_IF_ERROR(parse_node(g));
    }
    const Token& ret = peek();
    KILN_RETURN_IF_ERROR(parse_return(g));
    KILN_RETURN_IF_ERROR(expect(Tok::RBrace, "'}' after the return (return must be last)"));
    if (!at(Tok::End)) return expected("end of input after the graph's '}'");
    if (absl::Status s = check_state(g); !s.ok()) return error(ret, s.message());
    return g;
  }

  std::string_view src_;
  std::string file_;
  std::vector<Token> toks_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Graph> parse_graph(std::string_view text, std::string_view filename) {
  return Parser(text, filename).run();
}

absl::StatusOr<std::vector<TensorType>> parse_types(std::string_view text) {
  return Parser(text, "<types>").run_types();
}

absl::StatusOr<Graph> parse_graph_file(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string text, read_regular_file(path, max_input_file_bytes()));
  return parse_graph(text, path);
}

}  // namespace kiln
