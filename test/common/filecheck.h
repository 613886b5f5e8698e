// A small FileCheck-like matcher for golden tests: CHECK lines (CHECK, CHECK-NEXT,
// CHECK-NOT, CHECK-SAME) matched in order against printed IR.
#pragma once

#include <string>
#include <string_view>

namespace kiln::testing {

struct FileCheckResult {
  bool ok = true;
  std::string message;  // on failure: the directive (with its line in `checks`) and where it failed
};

// `checks` holds directives, one per line, anywhere in the line (so they can sit in IR
// comments: "# CHECK: %y = add"). Lines without a directive are ignored. A pattern is
// literal text, except that {{regex}} matches an ECMAScript regular expression.
//   CHECK: pattern       the first match at or after the previous match
//   CHECK-NEXT: pattern  on the line right after the previous match
//   CHECK-SAME: pattern  on the previous match's line, after it
//   CHECK-NOT: pattern   absent between the previous match and the next positive match
//                        (or the end of the input)
FileCheckResult file_check(std::string_view input, std::string_view checks);

}  // namespace kiln::testing
