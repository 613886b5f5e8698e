// Weight prep runs when parameters change, not when a call's symbols do: a group computing a
// value of a symbolic shape (the sum of T ones, as attention's decomposition makes for Tk - Tq)
// must run on every call.
#include "test/fuzz/check.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

TEST_CASE("fuse_elementwise: a value of a symbolic shape is no weight prep", "[passes]") {
  Graph g = parse_or_fail(R"(graph g(%x: f32[T], %w: f32[4] param) {
  %one = constant(value=1.0, dtype=f32)
  %e = expand(%one, shape=[T])
  %n = sum(%e)
  %w2 = mul(%w, %w)
  %s = sum(%w2)
  %m = mul(%n, %s)
  %y = mul(%x, %m)
  return %y
})");
  PipelineResult r = compile_or_fail(g);
  std::string scheduled = print_scheduled(r.state.graph, r.state.schedule);
  INFO(scheduled);
  // The parameter's square sums once per parameter set; the count of T ones on every call.
  CHECK(scheduled.find("%s = sum(%w2) : f32[]  # group 0 (weight-prep reduction)") != std::string::npos);
  CHECK(scheduled.find("%n = sum(%e) : f32[]  # group 1 (reduction)") != std::string::npos);
  require_ok(check_compiled_matches_reference(g, test_bindings(g), 1));
}
