// The examples through the default pipeline: kernel counts, numerics against the reference
// at small sizes (every symbol 1, odd sizes, larger ones), and the decoder layer's memory
// plan against its lower bound at the real sizes.
#include <fstream>
#include <sstream>

#include "examples/models.h"
#include "ir/printer.h"
#include "test/fuzz/check.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

std::string read_example(const std::string& name) {
  std::ifstream f(std::string(KILN_EXAMPLES_DIR) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const std::vector<Bindings> kDecoderBindings = {{{"B", 1}, {"T", 1}}, {{"B", 1}, {"T", 7}}, {{"B", 2}, {"T", 5}},
                                                {{"B", 3}, {"T", 16}}};

}  // namespace

TEST_CASE("the decoder layer traced in C++ prints exactly examples/decoder_layer.kiln", "[examples]") {
  std::string file = read_example("decoder_layer.kiln");
  REQUIRE(!file.empty());
  CHECK(print_graph(examples::trace_decoder_layer()) == file);
  // And the file parses back to the same text.
  CHECK(print_graph(parse_or_fail(file, "decoder_layer.kiln")) == file);
}

TEST_CASE("MLP example: 2 GEMMs, silu * mul and the norm as 2 kernels, matches the reference", "[examples]") {
  for (DType t : {DType::f32, DType::bf16}) {
    Graph g = examples::trace_mlp({64, 172, t});
    PipelineResult r = compile_or_fail(g);
    INFO(print_scheduled(r.state.graph, r.state.schedule));
    CHECK(r.summary.gemms == 2);
    CHECK(r.summary.kernels == 2);
    require_ok(check_compiled_matches_reference(g, {{{"B", 1}}, {{"B", 3}}, {{"B", 17}}}, 11));
    require_ok(check_fused_matches_unfused(g, {{{"B", 1}}, {{"B", 3}}, {{"B", 17}}}, 11));
  }
}

TEST_CASE("decoder layer at small sizes: 6 GEMMs and 6 kernels, matches the reference", "[examples]") {
  for (DType t : {DType::f32, DType::bf16}) {
    Graph g = examples::trace_decoder_layer({64, 4, 96, t});
    PipelineResult r = compile_or_fail(g);
    std::string scheduled = print_scheduled(r.state.graph, r.state.schedule);
    INFO(scheduled);
    // GEMMs: q/k/v merged, q @ k^T (scale and causal mask as epilogue), probs @ v, the
    // output projection (+ residual), gate/up merged, down (+ residual). Kernels: two
    // rms_norms, rotary for q and for k, the softmax, silu * mul.
    CHECK(r.summary.gemms == 6);
    CHECK(r.summary.kernels == 6);
    require_checks(scheduled, R"(
CHECK: %le = le(%iota_1, %iota) : bool[T, T]  # group {{[0-9]+}} (gemm)
CHECK: %attn_out = add(%x, %linear_3) : {{bf16|f32}}[B, T, 64]  # group {{[0-9]+}} (gemm)
CHECK: %out = add(%attn_out, %linear_6) : {{bf16|f32}}[B, T, 64]  # group {{[0-9]+}} (gemm)
)");
    require_ok(check_compiled_matches_reference(g, kDecoderBindings, 13));
    require_ok(check_fused_matches_unfused(g, kDecoderBindings, 13));
  }
}

TEST_CASE("decoder layer example: arena within 10% of the lower bound", "[examples][memory]") {
  Graph g = parse_or_fail(read_example("decoder_layer.kiln"), "decoder_layer.kiln");
  PipelineResult r = compile_or_fail(g);
  for (auto [b, t] : {std::pair{1, 1}, {1, 7}, {2, 16}, {8, 128}, {4, 512}, {1, 2048}, {16, 1}, {3, 333}}) {
    Bindings bind{{"B", b}, {"T", t}};
    absl::StatusOr<ArenaLayout> l = r.state.memory.layout(bind);
    REQUIRE(l.ok());
    INFO("B=" << b << " T=" << t << " arena " << l->arena_bytes << " lower bound " << l->lower_bound_bytes);
    require_ok(r.state.memory.check_layout(*l));
    CHECK(l->arena_bytes <= l->lower_bound_bytes * 11 / 10);
    CHECK(l->arena_bytes < l->no_reuse_bytes);
  }
}
