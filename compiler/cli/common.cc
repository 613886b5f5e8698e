// Helpers shared by the subcommands: reading a verified graph, --bind, status unwrapping.
#include <algorithm>
#include <charconv>

#include "compiler/cli/commands.h"
#include "compiler/load.h"
#include "passes/convert_float.h"
#include "ir/checked.h"
#include "ir/str.h"
#include "ir/reference.h"
#include "ir/verifier.h"

namespace kiln::cli {

Graph load_verified(const std::string& file, const std::string& float_type) {
  Graph g = check(load_graph_file(file));
  if (absl::Status s = verify(g); !s.ok()) throw CliError(str_cat(file, ": ", status_message(s)));
  if (float_type.empty()) return g;
  g = check(convert_float(g, *parse_dtype(float_type)));
  if (absl::Status s = verify(g); !s.ok()) throw CliError(str_cat(file, " stored in ", float_type, ": ", status_message(s)));
  return g;
}

void add_float_option(CLI::App* cmd, std::string* float_type) {
  cmd->add_option("--float", *float_type,
                  "store every f32 tensor as bf16 or f16 (inputs, parameters, results), as model.to(dtype) in PyTorch; "
                  "arithmetic stays f32")
      ->check(CLI::IsMember({"bf16", "f16"}));
}

TensorMap random_inputs(const Graph& g, const Bindings& bindings, uint64_t seed, std::string_view alternative) {
  for (const std::string& sym : g.symbols())
    if (!bindings.contains(sym))
      throw CliError(str_cat("symbol ", sym, " is not bound; pass --bind ", sym, "=N", alternative));
  TensorMap args = random_args(g, bindings, seed);
  scale_weights_by_fan_in(g, args);
  return args;
}

std::optional<std::pair<std::string, int64_t>> parse_assignment(std::string_view s) {
  size_t eq = s.find('=');
  if (eq == std::string_view::npos || eq == 0) return std::nullopt;
  std::string_view digits = s.substr(eq + 1);
  if (digits.starts_with('+')) digits.remove_prefix(1);  // as std::stoll read it
  int64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return std::pair{std::string(s.substr(0, eq)), value};
}

Bindings parse_binds(const Graph& g, const std::vector<std::string>& binds) {
  std::vector<std::string> symbols = g.symbols();
  Bindings b;
  for (const std::string& s : binds) {
    std::optional<std::pair<std::string, int64_t>> nv = parse_assignment(s);
    if (!nv) throw CliError(str_cat("--bind ", s, ": expected SYMBOL=INTEGER, e.g. --bind B=8"));
    const auto& [name, value] = *nv;
    if (std::find(symbols.begin(), symbols.end(), name) == symbols.end())
      throw CliError(str_cat("--bind ", s, ": graph ", g.name(), " has no symbol ", name,
                             symbols.empty() ? std::string(" (it has none)")
                                             : str_cat(" (its symbols: ", str_join(symbols, ", ", [](auto& x) { return x; }), ")")));
    if (!b.emplace(name, value).second) throw CliError(str_cat("--bind: symbol ", name, " is bound twice"));
    SymbolInfo info = g.symbol_info(name);
    if (value < info.min || (info.max && value > *info.max))
      throw CliError(str_cat("--bind ", s, " is outside the symbol's bounds [", info.min, ", ",
                             info.max ? str_cat(*info.max) : std::string("inf"), "]"));
  }
  // Sizes under the bindings, before anything runs or is allocated (the host's limit: a
  // device run checks its own again when it plans the call).
  if (absl::Status st = check_value_sizes(g, b, host_allocation_limit()); !st.ok())
    throw CliError(str_cat("--bind: ", status_message(st)));
  return b;
}

}  // namespace kiln::cli
