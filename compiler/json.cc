#include "compiler/json.h"

#include <map>

#include <nlohmann/json.hpp>

namespace kiln {

void to_json(nlohmann::ordered_json& j, const PassStat& p) {
  j = {{"name", p.name}, {"ms", p.ms}, {"changed", p.changed}};
}

void to_json(nlohmann::ordered_json& j, const CompileSummary& s) {
  j = {{"groups", s.groups},
       {"kernels", s.kernels},
       {"gemms", s.gemms},
       {"weight_prep", s.weight_prep},
       {"bindings", std::map<std::string, int64_t>(s.layout.bindings.begin(), s.layout.bindings.end())},
       {"arena_bytes", s.layout.arena_bytes},
       {"no_reuse_bytes", s.layout.no_reuse_bytes},
       {"lower_bound_bytes", s.layout.lower_bound_bytes},
       {"passes", s.passes}};
}

void to_json(nlohmann::ordered_json& j, const CompileStats::Bucket& b) {
  j = {{"size", b.size},       {"calls", b.calls},           {"captures", b.captures},
       {"replays", b.replays}, {"compile_ms", b.compile_ms}, {"capture_ms", b.capture_ms}};
}

void to_json(nlohmann::ordered_json& j, const CompileStats& s) {
  j = {{"calls", s.calls},
       {"guard_hits", s.guard_hits},
       {"compiles", s.compiles},
       {"recompiles", s.recompiles},
       {"recompile_reasons", s.recompile_reasons},
       {"kernels", s.kernels},
       {"kernels_shared", s.kernels_shared},
       {"gemms", s.gemms},
       {"launches_per_call", s.launches_per_call},
       {"strategy", s.strategy},
       {"cache_memory_hits", s.cache_memory_hits},
       {"cache_disk_hits", s.cache_disk_hits},
       {"cache_misses", s.cache_misses},
       {"pass_ms", s.pass_ms},
       {"lower_ms", s.lower_ms},
       {"codegen_ms", s.codegen_ms},
       {"compile_ms", s.compile_ms},
       {"tune_ms", s.tune_ms},
       {"device_ms", s.device_ms},
       {"build_ms", s.build_ms},
       {"kernel_times", s.kernel_times},
       {"buckets", s.buckets}};
}

void to_json(nlohmann::ordered_json& j, const BuildStats::KernelTime& t) {
  j = {{"name", t.name}, {"codegen_ms", t.codegen_ms}, {"compile_ms", t.compile_ms}, {"cached", t.cached}};
}

std::string json_text(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace kiln
