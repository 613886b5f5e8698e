// The `kiln` binary of this build (KILN_BINARY) run from a test, and the check of its exit
// status that prints both streams when it fails: what the CLI test files share.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "test/cli/process.h"

namespace kiln::testing {

inline Run kiln_cli(const std::vector<std::string>& args, const TempDir& dir) {
  return run_binary(KILN_BINARY, args, dir);
}

inline void require_status(const Run& r, int status) {
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.status == status);
}

}  // namespace kiln::testing
