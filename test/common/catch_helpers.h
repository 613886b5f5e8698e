// Catch2 helpers that several test suites share: a graph parsed or the test failed with the
// parser's located message, and a status required ok with its message printed.
#pragma once

#include <string_view>
#include <utility>

#include <catch2/catch.hpp>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/parser.h"
#include "ir/str.h"

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

}  // namespace kiln::testing
