#include "ir/printer.h"

#include "ir/str.h"

namespace kiln {
namespace {

bool is_bare_name(const std::string& s, bool value) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (value && c == '.');
    if (!ok) return false;
  }
  // A graph name is an identifier; a value name may start with a digit (%0).
  return value || !(s[0] >= '0' && s[0] <= '9');
}

// Names that are not plain identifiers print as quoted strings so that any graph reads back.
std::string print_name(const std::string& s, bool value) {
  if (is_bare_name(s, value)) return s;
  return attr_to_string(AttrValue(s));
}

std::string value_ref(const Value* v) { return "%" + print_name(v->name(), true); }

}  // namespace

std::string print_node(const Node& n) {
  std::string s = str_join(n.results(), ", ", value_ref);
  s += str_cat(" = ", n.info().name, "(");
  bool first = true;
  for (const Value* v : n.operands()) {
    s += str_cat(first ? "" : ", ", v ? value_ref(v) : std::string("%<null>"));
    first = false;
  }
  for (const AttrSpec& spec : n.info().attrs) {
    const AttrValue* v = n.attrs().find(spec.name);
    // extern_call's results are the type annotation after it (the parser reads them there).
    if (!v || (n.op() == Op::ExternCall && spec.name == "results")) continue;
    s += str_cat(first ? "" : ", ", spec.name, "=", attr_to_string(*v));
    first = false;
  }
  s += ") : ";
  s += str_join(n.results(), ", ", [](const Value* v) { return v->type().to_string(); });
  return s;
}

std::string print_graph(const Graph& g) {
  std::string s = str_cat("graph ", print_name(g.name(), false), "(");
  s += str_join(g.args(), ", ", [](const Value* v) {
    return str_cat(value_ref(v), ": ", v->type().to_string(), v->is_param() ? " param" : v->is_state() ? " state" : "");
  });
  s += ") {\n";
  for (const auto& [sym, info] : g.symbol_bounds())
    s += str_cat("  symbol ", sym, " in [", info.min, ", ",
                 info.max ? str_cat(*info.max) : std::string("inf"), "]\n");
  for (const auto& n : g.nodes()) s += str_cat("  ", print_node(*n), "\n");
  s += str_cat("  return ", str_join(g.outputs(), ", ", [](const Value* v) {
                 return v ? value_ref(v) : std::string("%<null>");
               }),
               "\n}\n");
  return s;
}

}  // namespace kiln
