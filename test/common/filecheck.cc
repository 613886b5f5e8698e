#include "test/common/filecheck.h"

#include <optional>
#include <regex>
#include <vector>

#include <fmt/format.h>

namespace kiln::testing {
namespace {

enum class Kind { Check, Next, Same, Not };

struct Directive {
  Kind kind;
  std::string text;
  std::regex re;
  int line;  // 1-based, in the checks text
};

std::vector<std::string> split_lines(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) {
      if (start < s.size()) out.emplace_back(s.substr(start));
      break;
    }
    out.emplace_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

std::string escape_regex(std::string_view s) {
  static const std::string special = R"(\^$.|?*+()[]{}/)";
  std::string out;
  for (char c : s) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// Literal text with {{regex}} holes, as one regular expression.
std::regex compile_pattern(std::string_view p) {
  std::string re;
  while (!p.empty()) {
    size_t open = p.find("{{");
    if (open == std::string_view::npos) {
      re += escape_regex(p);
      break;
    }
    size_t close = p.find("}}", open + 2);
    if (close == std::string_view::npos) {
      re += escape_regex(p);
      break;
    }
    re += escape_regex(p.substr(0, open));
    re += "(?:" + std::string(p.substr(open + 2, close - open - 2)) + ")";
    p.remove_prefix(close + 2);
  }
  return std::regex(re);
}

std::vector<Directive> parse_directives(std::string_view checks) {
  static const std::pair<const char*, Kind> kPrefixes[] = {
      {"CHECK-NEXT:", Kind::Next}, {"CHECK-SAME:", Kind::Same},
      {"CHECK-NOT:", Kind::Not},   {"CHECK:", Kind::Check}};
  std::vector<Directive> out;
  std::vector<std::string> lines = split_lines(checks);
  for (size_t i = 0; i < lines.size(); ++i) {
    for (const auto& [prefix, kind] : kPrefixes) {
      size_t at = lines[i].find(prefix);
      if (at == std::string::npos) continue;
      std::string text = lines[i].substr(at + std::string_view(prefix).size());
      size_t b = text.find_first_not_of(' '), e = text.find_last_not_of(" \r");
      text = b == std::string::npos ? "" : text.substr(b, e - b + 1);
      out.push_back({kind, text, compile_pattern(text), static_cast<int>(i + 1)});
      break;
    }
  }
  return out;
}

// Position of the first match of `re` in line[from..], as (start, end) columns.
std::optional<std::pair<size_t, size_t>> find_in(const std::string& line, size_t from, const std::regex& re) {
  std::smatch m;
  std::string tail = line.substr(std::min(from, line.size()));
  if (!std::regex_search(tail, m, re)) return std::nullopt;
  size_t start = from + m.position(0);
  return std::pair(start, start + m.length(0));
}

std::string name(Kind k) {
  switch (k) {
    case Kind::Check: return "CHECK";
    case Kind::Next: return "CHECK-NEXT";
    case Kind::Same: return "CHECK-SAME";
    case Kind::Not: return "CHECK-NOT";
  }
  return "";
}

}  // namespace

FileCheckResult file_check(std::string_view input, std::string_view checks) {
  std::vector<std::string> lines = split_lines(input);
  std::vector<Directive> dirs = parse_directives(checks);
  if (dirs.empty()) return {false, "no CHECK directives found"};
  auto fail = [&](const Directive& d, const std::string& why) {
    return FileCheckResult{false, fmt::format("{}: {} (check line {}) {}\n--- input ---\n{}", name(d.kind),
                                              d.text, d.line, why, input)};
  };
  // Position after the previous match; line -1 means "before the first line".
  int line = -1;
  size_t col = 0;
  std::vector<const Directive*> pending_not;
  // Checks the pending CHECK-NOTs over [from (line, col), to (line, col)).
  auto check_nots = [&](int to_line, size_t to_col) -> std::optional<FileCheckResult> {
    for (const Directive* d : pending_not) {
      for (int l = std::max(line, 0); l < static_cast<int>(lines.size()) && l <= to_line; ++l) {
        size_t from = l == line ? col : 0;
        std::string text = l == to_line ? lines[l].substr(0, to_col) : lines[l];
        if (find_in(text, from, d->re))
          return fail(*d, fmt::format("matched on input line {}: {}", l + 1, lines[l]));
      }
    }
    pending_not.clear();
    return std::nullopt;
  };
  for (const Directive& d : dirs) {
    if (d.kind == Kind::Not) {
      pending_not.push_back(&d);
      continue;
    }
    std::optional<std::pair<size_t, size_t>> m;
    int at = -1;
    if (d.kind == Kind::Check) {
      for (int l = std::max(line, 0); l < static_cast<int>(lines.size()) && !m; ++l) {
        m = find_in(lines[l], l == line ? col : 0, d.re);
        if (m) at = l;
      }
      if (!m) return fail(d, "not found after the previous match");
    } else if (d.kind == Kind::Same) {
      if (line < 0) return fail(d, "has no previous match");
      m = find_in(lines[line], col, d.re);
      at = line;
      if (!m) return fail(d, fmt::format("not found on input line {}: {}", line + 1, lines[line]));
    } else {
      at = line + 1;
      if (at >= static_cast<int>(lines.size())) return fail(d, "no next line");
      m = find_in(lines[at], 0, d.re);
      if (!m) return fail(d, fmt::format("not found on input line {}: {}", at + 1, lines[at]));
    }
    if (auto r = check_nots(at, m->first)) return *r;
    line = at;
    col = m->second;
  }
  if (auto r = check_nots(static_cast<int>(lines.size()), 0)) return *r;
  return {};
}

}  // namespace kiln::testing
