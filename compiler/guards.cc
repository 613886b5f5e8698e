#include "compiler/guards.h"

#include <algorithm>
#include <map>

#include "ir/str.h"

namespace kiln {

GuardSet GuardSet::for_bindings(const Bindings& b, bool dynamic) {
  GuardSet g;
  for (const auto& [sym, v] : b) {
    bool bake = !dynamic || v <= 1;
    g.guards.push_back({sym, bake ? SymbolGuard::Kind::Equals : SymbolGuard::Kind::AtLeast, bake ? v : 2});
  }
  std::sort(g.guards.begin(), g.guards.end(), [](const SymbolGuard& x, const SymbolGuard& y) { return x.symbol < y.symbol; });
  return g;
}

std::optional<std::string> GuardSet::check(const Bindings& b) const {
  for (const SymbolGuard& g : guards) {
    auto it = b.find(g.symbol);
    if (it == b.end()) return str_cat("symbol ", g.symbol, " is not bound");
    bool ok = g.kind == SymbolGuard::Kind::Equals ? it->second == g.value : it->second >= g.value;
    if (!ok)
      return str_cat(g.symbol, " = ", it->second, " fails guard ", g.symbol,
                     g.kind == SymbolGuard::Kind::Equals ? " == " : " >= ", g.value);
  }
  return std::nullopt;
}

Bindings GuardSet::baked() const {
  Bindings out;
  for (const SymbolGuard& g : guards)
    if (g.kind == SymbolGuard::Kind::Equals) out[g.symbol] = g.value;
  return out;
}

std::string GuardSet::to_string() const {
  if (guards.empty()) return "(none)";
  return str_join(guards, ", ", [](const SymbolGuard& g) {
    return str_cat(g.symbol, g.kind == SymbolGuard::Kind::Equals ? " == " : " >= ", g.value);
  });
}

}  // namespace kiln
