// Graphs as long as a whole model's op count: chains of 8,000 and 50,000 elementwise ops
// (examples/models.h) go through the pass pipeline and lowering (no recursion as deep as the
// graph, no quadratic pass) into fused kernels of at most kMaxFusedNodes ops each (LLVM's
// register allocation took minutes over one straight-line kernel of 8,000 ops), whose kernel
// IR run on the host evaluator matches the reference at B = 1, an odd size and a larger one.
// How compile time grows is measured by bench/compile_time, not asserted.
#include <catch2/catch.hpp>

#include "codegen/kernel_eval.h"
#include "compiler/pipeline.h"
#include "examples/models.h"
#include "ir/compare.h"
#include "ir/str.h"
#include "passes/fuse_elementwise.h"

using namespace kiln;

TEST_CASE("an elementwise chain of 8,000 and of 50,000 ops lowers to kernels of kMaxFusedNodes ops matching the reference",
          "[cpu][long]") {
  for (int64_t ops : {8000, 50000}) {
    INFO(ops << " ops");
    Graph g = examples::trace_elementwise_chain(ops);
    REQUIRE(g.num_nodes() == static_cast<size_t>(ops));
    absl::StatusOr<PipelineResult> r = compile_to_kernels(g.clone());
    if (!r.ok()) FAIL(status_message(r.status()));
    // Consecutive runs of the chain, each as long as a kernel may be.
    REQUIRE(r->kernels.size() == (static_cast<size_t>(ops) + kMaxFusedNodes - 1) / kMaxFusedNodes);
    for (const KernelGroup& grp : r->state.schedule.groups) REQUIRE(grp.nodes.size() <= kMaxFusedNodes);
    for (int64_t b : {1, 5, 16}) {
      INFO("B=" << b);
      TensorMap args = random_args(g, {{"B", b}}, static_cast<uint64_t>(ops + b));
      absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
      absl::StatusOr<std::vector<HostTensor>> got = evaluate_kernels(r->state.graph, r->state.schedule, r->kernels, args);
      REQUIRE(want.ok());
      if (!got.ok()) FAIL(status_message(got.status()));
      Comparison c = compare_tensors((*want)[0], (*got)[0], default_tolerance(DType::f32));
      INFO(c.message);
      CHECK(c.ok);
    }
  }
}
