#include "runtime/executable.h"

#include "ir/str.h"

namespace kiln {

std::string kernel_times_json(const std::vector<BuildStats::KernelTime>& times) {
  return str_cat("[", str_join(times, ", ", [](const BuildStats::KernelTime& t) {
                   return fmt::format("{{\"name\": \"{}\", \"codegen_ms\": {:.3f}, \"compile_ms\": {:.3f}, \"cached\": {}}}",
                                      t.name, t.codegen_ms, t.compile_ms, t.cached);
                 }), "]");
}

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
