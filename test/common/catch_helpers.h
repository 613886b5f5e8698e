// Catch2 helpers that several test suites share: a graph parsed or the test failed with the
// parser's located message, a status required ok with its message printed, and a text
// required to pass FileCheck-style checks.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <catch2/catch.hpp>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/filecheck.h"

namespace kiln::testing {

inline Graph parse_or_fail(std::string_view text, std::string_view name = "<test>") {
  absl::StatusOr<Graph> g = parse_graph(text, name);
  if (!g.ok()) FAIL(status_message(g.status()));
  return *std::move(g);
}

inline void require_ok(const absl::Status& s) {
  INFO(status_message(s));
  REQUIRE(s.ok());
}

// `text` passes `checks` (test/common/filecheck.h), or the test stops showing both the text
// and the first check that failed.
inline void require_checks(const std::string& text, std::string_view checks) {
  FileCheckResult r = file_check(text, checks);
  INFO(text);
  INFO(r.message);
  REQUIRE(r.ok);
}

}  // namespace kiln::testing
