#include "ir/str.h"
#include "ir/attr.h"

#include <charconv>
#include <cmath>


namespace kiln {

std::string_view attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::Int: return "int";
    case AttrType::Float: return "float";
    case AttrType::Bool: return "bool";
    case AttrType::String: return "string";
    case AttrType::DType: return "dtype";
    case AttrType::Ints: return "list of ints";
    case AttrType::Floats: return "list of floats";
    case AttrType::Dims: return "list of dims";
    case AttrType::Scalar: return "number or bool";
    case AttrType::Dim: return "dim";
  }
  return "?";
}

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  // Keep a float recognisable as one when it reads back: 2 -> 2.0.
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

template <typename T, typename F>
std::string list_to_string(const std::vector<T>& xs, F f) {
  std::string s = "[";
  for (size_t i = 0; i < xs.size(); ++i) s += str_cat(i ? ", " : "", f(xs[i]));
  return s + "]";
}

}  // namespace

std::string attr_to_string(const AttrValue& v) {
  struct Visitor {
    std::string operator()(int64_t x) { return str_cat(x); }
    std::string operator()(double x) { return format_double(x); }
    std::string operator()(bool x) { return x ? "true" : "false"; }
    std::string operator()(const std::string& x) { return quote(x); }
    std::string operator()(DType x) { return std::string(dtype_name(x)); }
    std::string operator()(const std::vector<int64_t>& x) {
      return list_to_string(x, [](int64_t i) { return str_cat(i); });
    }
    std::string operator()(const std::vector<double>& x) { return list_to_string(x, format_double); }
    std::string operator()(const std::vector<SymExpr>& x) {
      return list_to_string(x, [](const SymExpr& e) { return e.to_string(); });
    }
    std::string operator()(const SymExpr& x) { return x.to_string(); }
  };
  return std::visit(Visitor{}, v);
}

absl::StatusOr<AttrValue> coerce_attr(const AttrValue& v, AttrType want) {
  auto fail = [&] {
    return absl::InvalidArgumentError(
        str_cat("expected ", attr_type_name(want), ", got ", attr_to_string(v)));
  };
  switch (want) {
    case AttrType::Int:
      if (std::holds_alternative<int64_t>(v)) return v;
      return fail();
    case AttrType::Float:
      if (auto* d = std::get_if<double>(&v)) return *d;
      if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
      return fail();
    case AttrType::Bool:
      if (std::holds_alternative<bool>(v)) return v;
      return fail();
    case AttrType::String:
      if (std::holds_alternative<std::string>(v)) return v;
      return fail();
    case AttrType::DType:
      if (std::holds_alternative<DType>(v)) return v;
      return fail();
    case AttrType::Ints:
      if (std::holds_alternative<std::vector<int64_t>>(v)) return v;
      if (auto* d = std::get_if<std::vector<SymExpr>>(&v)) {
        std::vector<int64_t> out;
        for (const SymExpr& e : *d) {
          if (!e.constant()) return fail();
          out.push_back(*e.constant());
        }
        return out;
      }
      return fail();
    case AttrType::Floats:
      if (std::holds_alternative<std::vector<double>>(v)) return v;
      if (auto* i = std::get_if<std::vector<int64_t>>(&v))
        return std::vector<double>(i->begin(), i->end());
      return fail();
    case AttrType::Dims:
      if (std::holds_alternative<std::vector<SymExpr>>(v)) return v;
      if (auto* i = std::get_if<std::vector<int64_t>>(&v))
        return std::vector<SymExpr>(i->begin(), i->end());
      return fail();
    case AttrType::Scalar:
      if (std::holds_alternative<int64_t>(v) || std::holds_alternative<double>(v) ||
          std::holds_alternative<bool>(v))
        return v;
      return fail();
    case AttrType::Dim:
      if (std::holds_alternative<SymExpr>(v)) return v;
      if (auto* i = std::get_if<int64_t>(&v)) return SymExpr(*i);
      return fail();
  }
  return fail();
}

}  // namespace kiln
