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

}  // namespace kiln
