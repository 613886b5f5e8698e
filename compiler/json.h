// The JSON forms of the compiler's reports (`kiln compile --json`, `kiln run --json`,
// CompileStats::to_json), through nlohmann::json's to_json customization point:
//   nlohmann::ordered_json j = summary;
// Keys come in the order listed here; the CLI's tests and scripts read them.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "compiler/compile.h"
#include "compiler/pipeline.h"

namespace kiln {

// groups, kernels, gemms, weight_prep, bindings {symbol: value, sorted}, arena_bytes,
// no_reuse_bytes, lower_bound_bytes, passes [{name, ms, changed}].
void to_json(nlohmann::ordered_json& j, const CompileSummary& s);
void to_json(nlohmann::ordered_json& j, const PassStat& p);
// calls, guard_hits, compiles, recompiles, recompile_reasons, kernels, gemms,
// launches_per_call, cache_memory_hits, cache_disk_hits, cache_misses, pass_ms, lower_ms,
// codegen_ms, compile_ms, tune_ms, kernel_times, buckets [{size, calls, captures, replays,
// compile_ms, capture_ms}].
void to_json(nlohmann::ordered_json& j, const CompileStats& s);
void to_json(nlohmann::ordered_json& j, const CompileStats::Bucket& b);
// name, codegen_ms, compile_ms, cached.
void to_json(nlohmann::ordered_json& j, const BuildStats::KernelTime& t);

// The text of `j`, on one line or indented by `indent`. Names come from users' files (ONNX
// graphs and symbols): bytes that are not UTF-8 print as U+FFFD instead of throwing.
std::string json_text(const nlohmann::ordered_json& j, int indent = -1);

}  // namespace kiln
