// Helpers of the pass tests: parsing test graphs, compiling them through the default
// pipeline, symbol bindings to run them under, and FileCheck assertions.
#pragma once

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "compiler/pipeline.h"
#include "passes/schedule_util.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"

namespace kiln::testing {

// Through the default pipeline with the verifier after every pass, whatever the build type:
// a pass that leaves a broken graph or schedule fails the test that ran it.
inline PipelineResult compile_or_fail(const Graph& g, PipelineOptions opts = {}) {
  opts.verify_passes = true;
  absl::StatusOr<PipelineResult> r = compile_to_kernels(g.clone(), opts);
  if (!r.ok()) FAIL(status_message(r.status()));
  return *std::move(r);
}

// Symbol values to run `g` under: every symbol 1, then odd and larger values (distinct
// per symbol, so that a transposed pair of dims shows).
inline std::vector<Bindings> test_bindings(const Graph& g) {
  std::vector<Bindings> out;
  std::vector<std::string> syms = g.symbols();
  for (std::vector<int64_t> values : {std::vector<int64_t>{1, 1, 1}, {3, 5, 2}, {2, 7, 3}, {5, 17, 1}}) {
    Bindings b;
    for (size_t i = 0; i < syms.size(); ++i) b[syms[i]] = values[i % values.size()];
    out.push_back(b);
    if (syms.empty()) break;
  }
  return out;
}

}  // namespace kiln::testing
