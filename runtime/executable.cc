#include "runtime/executable.h"

namespace kiln {

std::string_view mode_name(Mode m) {
  switch (m) {
    case Mode::Default: return "default";
    case Mode::ReduceOverhead: return "reduce-overhead";
    case Mode::MaxAutotune: return "max-autotune";
  }
  return "?";
}

std::optional<Mode> parse_mode(std::string_view name) {
  for (Mode m : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune})
    if (mode_name(m) == name) return m;
  return std::nullopt;
}

Bindings CompiledModule::bindings(std::span<const int64_t> values) const {
  Bindings b;
  for (size_t i = 0; i < symbols.size() && i < values.size(); ++i) b[symbols[i]] = values[i];
  return b;
}

}  // namespace kiln
