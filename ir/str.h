// String building for messages. Debian's Abseil has its own absl::string_view (not
// std::string_view), so kiln formats with fmt and never passes std::string_view to
// absl::StrCat; this header also teaches fmt to print absl::string_view (Status messages).
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#if !defined(ABSL_USES_STD_STRING_VIEW) || !ABSL_USES_STD_STRING_VIEW
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  auto format(absl::string_view s, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};
#endif

namespace kiln {

// Concatenates anything fmt can print: str_cat("axis ", 3, " of ", name).
template <typename... A>
std::string str_cat(const A&... a) {
  std::string s;
  (fmt::format_to(std::back_inserter(s), "{}", a), ...);
  return s;
}

inline std::string status_message(const absl::Status& s) {
  return std::string(s.message().data(), s.message().size());
}

// An InvalidArgument status whose message is the concatenation of the parts.
template <typename... A>
absl::Status invalid_argument(const A&... a) {
  return absl::InvalidArgumentError(str_cat(a...));
}

// The error `s` with the parts before its message, keeping its code and payloads: the
// context a caller adds to an error it passes on.
template <typename... A>
absl::Status prefix_error(const absl::Status& s, const A&... prefix) {
  absl::Status out(s.code(), str_cat(prefix..., s.message()));
  s.ForEachPayload([&](auto url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

// Joins a range, formatting each element with f(element) -> std::string.
template <typename R, typename F>
std::string str_join(const R& range, std::string_view sep, F f) {
  std::string s;
  bool first = true;
  for (const auto& x : range) {
    if (!first) s += sep;
    s += f(x);
    first = false;
  }
  return s;
}

}  // namespace kiln
