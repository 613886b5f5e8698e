// kiln's log: lines on stderr by topic, at levels that KILN_LOG selects (read once), in the
// spirit of PyTorch's TORCH_LOGS. Any layer logs through it (it depends on nothing of kiln).
//   KILN_LOG=guards,fusion,cache:2   those topics: level 1 unless `:N` says otherwise
//   KILN_LOG=all:2,passes:0          every topic at 2, then passes off (later items win)
//   KILN_LOG=2                       the numeric form: every topic whose threshold is <= 2
// Topics (level 1, and what higher levels add):
//   compile  a line per compile and per specialization built
//   guards   why a call recompiled (the guard that failed); 2: each specialization's guards
//   fusion   why two adjacent ops were not fused into one kernel
//   cache    kernel cache misses, disk writes and rejected entries; 2: every hit
//   lower    lowering's decisions, one line per step
//   passes   the IR after every pass
// Numeric thresholds (the old KILN_LOG=N): compile and guards 1; fusion, cache and lower 2;
// passes 3. Every line starts "[kiln:<topic>] ".
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kiln {

enum class LogTopic : uint8_t { compile, guards, fusion, cache, lower, passes };
inline constexpr int kLogTopics = 6;
std::string_view log_topic_name(LogTopic t);  // "compile", ...

// A level per topic (0: off).
using LogLevels = std::array<int, kLogTopics>;

// Parses a KILN_LOG value as above; "" or "0" turns everything off. An unknown topic or a
// bad level is an InvalidArgument naming it and listing the topics.
absl::StatusOr<LogLevels> parse_log_spec(std::string_view spec);

// The levels from KILN_LOG, parsed on first use; a bad value is reported once on stderr and
// logs nothing.
const LogLevels& log_levels();
inline bool log_enabled(LogTopic t, int level = 1) { return log_levels()[static_cast<int>(t)] >= level; }

// Writes "[kiln:<topic>] <text>" on stderr when `t` is enabled at `level`; each line of a
// multi-line text gets the prefix. One write per call, so lines of threads do not interleave.
void log_line(LogTopic t, int level, std::string_view text);

}  // namespace kiln
