#include "ir/log.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "ir/str.h"

namespace kiln {
namespace {

constexpr std::array<std::string_view, kLogTopics> kNames = {"compile", "guards", "fusion", "cache", "lower", "passes"};
// The numeric KILN_LOG=N level at which each topic turns on.
constexpr LogLevels kThreshold = {1, 1, 2, 2, 2, 3};

std::string topic_list() {
  return str_join(kNames, ", ", [](std::string_view n) { return std::string(n); });
}

absl::StatusOr<int> parse_level(std::string_view text, std::string_view item) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0 || v > 9)
    return absl::InvalidArgumentError(str_cat("KILN_LOG: bad level in '", item, "' (want 0 to 9)"));
  return v;
}

}  // namespace

std::string_view log_topic_name(LogTopic t) { return kNames[static_cast<int>(t)]; }

absl::StatusOr<LogLevels> parse_log_spec(std::string_view spec) {
  LogLevels levels{};
  if (spec.empty()) return levels;
  if (spec.find_first_not_of("0123456789") == std::string_view::npos) {
    absl::StatusOr<int> n = parse_level(spec, spec);
    if (!n.ok()) return n.status();
    for (int t = 0; t < kLogTopics; ++t) levels[t] = *n >= kThreshold[t] ? *n - kThreshold[t] + 1 : 0;
    return levels;
  }
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    std::string_view name = item;
    int level = 1;
    if (size_t colon = item.find(':'); colon != std::string_view::npos) {
      name = item.substr(0, colon);
      absl::StatusOr<int> l = parse_level(item.substr(colon + 1), item);
      if (!l.ok()) return l.status();
      level = *l;
    }
    if (name == "all") {
      levels.fill(level);
      continue;
    }
    auto it = std::find(kNames.begin(), kNames.end(), name);
    if (it == kNames.end())
      return absl::InvalidArgumentError(
          str_cat("KILN_LOG: unknown topic '", name, "' (topics: ", topic_list(), ", all; or a number)"));
    levels[it - kNames.begin()] = level;
  }
  return levels;
}

const LogLevels& log_levels() {
  static const LogLevels levels = [] {
    const char* v = std::getenv("KILN_LOG");
    absl::StatusOr<LogLevels> l = parse_log_spec(v ? v : "");
    if (l.ok()) return *l;
    std::fprintf(stderr, "[kiln] %s; logging nothing\n", std::string(l.status().message()).c_str());
    return LogLevels{};
  }();
  return levels;
}

void log_line(LogTopic t, int level, std::string_view text) {
  if (!log_enabled(t, level)) return;
  std::string prefix = str_cat("[kiln:", log_topic_name(t), "] ");
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    out += prefix;
    out.append(text.substr(start, end - start));
    out += '\n';
    start = end + 1;
  }
  if (out.empty()) out = prefix + "\n";
  std::fputs(out.c_str(), stderr);
}

}  // namespace kiln
