// `kiln shard` (passes/shard.h, compiler/parallel.h): each rank's graph, the splits and what
// was made whole, --check on the reference and compiled for the CPU, the plans it refuses;
// and a graph with collectives under `kiln run`.
#include <catch2/catch.hpp>

#include "ir/printer.h"
#include "ir/str.h"
#include "test/cli/kiln_cli.h"
#include "test/cli/process.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"
#include "test/common/llama_args.h"

using namespace kiln;
using namespace kiln::testing;
namespace fs = std::filesystem;

TEST_CASE("kiln shard: each rank's graph, the splits, what was made whole, and --check on the reference",
          "[cli][shard]") {
  TempDir dir;
  fs::path f = dir / "mlp.kiln";
  write_text(f,
             "graph mlp(%x: f32[B, 8], %w1: f32[16, 8] param, %b1: f32[16] param, %w2: f32[8, 16] param, "
             "%b2: f32[8] param) {\n  %l = linear(%x, %w1, %b1)\n  %h = gelu(%l)\n  %y = linear(%h, %w2, %b2)\n"
             "  %s = softmax(%y, axis=-1)\n  return %s\n}\n");
  Run ok = kiln_cli({"shard", f.string(), "--ranks", "2", "--split", "w1=0", "--split", "b1=0", "--split", "w2=1",
                     "--check", "--bind", "B=3"},
                    dir);
  require_status(ok, 0);
  require_checks(ok.out, R"(
CHECK: # 2 ranks; split: %b1 along 0 %w1 along 0 %w2 along 1
CHECK-NOT: made whole
CHECK: graph mlp(%x: f32[B, 8], %w1: f32[8, 8] param, %b1: f32[8] param, %w2: f32[8, 8] param, %b2: f32[8] param)
CHECK: %y.partial = linear(%h, %w2) : f32[B, 8]
CHECK-NEXT: all_reduce(%y.partial, ranks=2)
CHECK-NEXT: %y = add(
CHECK: check: rank 0 matches the whole graph
CHECK-NEXT: check: rank 1 matches the whole graph
)");
#if KILN_CLI_HAS_CPU
  // The ranks compiled for the CPU, a thread each over the host group.
  Run cpu = kiln_cli({"shard", f.string(), "--ranks", "2", "--split", "w1=0", "--split", "b1=0", "--split", "w2=1",
                      "--check", "--bind", "B=5", "--device", "cpu", "--mode", "reduce-overhead"},
                     dir);
  require_status(cpu, 0);
  require_checks(cpu.out, R"(
CHECK: check: 2 ranks compiled for cpu (reduce-overhead), host group, rank 0 of 2
CHECK-NEXT: check: rank 0 matches the whole graph
CHECK-NEXT: check: rank 1 matches the whole graph
)");
#endif
  // Only w1 split: the first GEMM has no split form for it, so w1 is gathered back (said).
  Run gathered = kiln_cli({"shard", f.string(), "--split", "w1=0"}, dir);
  require_status(gathered, 0);
  CHECK_THAT(gathered.out, Catch::Contains("# made whole: %l = linear (") &&
                               Catch::Contains("%w1.all_gather = all_gather(%w1, axis=0, ranks=2)"));
  for (auto [args, why] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--split", "w1"}, "--split w1: expected NAME=AXIS"},
           {{"--split", "w1=2"}, "%w1 of type f32[16, 8] has no axis 2"},
           {{"--ranks", "3", "--split", "w1=0"}, "does not divide into 3 equal chunks"},
           {{"--paged"}, "--paged goes with --llama"}}) {
    args.insert(args.begin(), {"shard", f.string()});
    Run bad = kiln_cli(args, dir);
    require_status(bad, 1);
    CHECK_THAT(bad.err, Catch::Contains(why));
  }
}

TEST_CASE("kiln shard --llama: 4 ranks share a Llama step's 2 kv heads, nothing gathered before attention",
          "[cli][shard]") {
  TempDir dir;
  models::LlamaConfig c = tiny_llama();
  fs::path f = dir / "step.kiln";
  write_text(f, print_graph(models::trace_step(c, {.decode = true})));
  std::vector<std::string> args{"shard",   f.string(), "--ranks", "4",      "--llama",
                                "--check", "--bind",   "B=3",     "--bind", "S=8"};
  Run ok = kiln_cli(args, dir);
  require_status(ok, 0);
  // The kv heads (from k_cache.0's shape) in 2 groups; only the logits' argmax made whole.
  require_checks(ok.out, R"(
CHECK: # 4 ranks; split: %k_cache.0 along 1 in 2 groups %k_cache.1 along 1 in 2 groups
CHECK-SAME: %model.layers.0.self_attn.k_proj.weight along 0 in 2 groups %model.layers.0.self_attn.o_proj.weight along 1 %model.layers.0.self_attn.q_proj.weight along 0 %
CHECK-NEXT: # made whole: %next_token = argmax
CHECK-NOT: # made whole
CHECK: %model.layers.0.self_attn.k_proj.weight: f32[8, 32] param
CHECK: check: rank 3 matches the whole graph
)");
  auto count = [&](const std::string& what) {
    int64_t n = 0;
    for (size_t at = ok.out.find(what); at != std::string::npos; at = ok.out.find(what, at + 1)) ++n;
    return n;
  };
  CHECK(count(" = all_gather(") == 1);  // the logits
  CHECK(count(" = all_reduce(") == 2 * c.layers + 1);
#if KILN_CLI_HAS_CPU
  args.insert(args.end(), {"--device", "cpu"});
  Run cpu = kiln_cli(args, dir);
  require_status(cpu, 0);
  require_checks(cpu.out, R"(
CHECK: check: 4 ranks compiled for cpu (default), host group, rank 0 of 4
CHECK: check: rank 3 matches the whole graph
)");
#endif
}

TEST_CASE("kiln run: a collective runs on the reference; compiled, it needs its rank's communicator", "[cli][shard]") {
  TempDir dir;
  fs::path f = dir / "ar.kiln";
  write_text(f, "graph ar(%x: f32[B, 4]) {\n  %y = all_reduce(%x, ranks=1)\n  return %y\n}\n");
  Run ref = kiln_cli({"run", f.string(), "--bind", "B=2"}, dir);
  require_status(ref, 0);
  Run cpu = kiln_cli({"run", f.string(), "--bind", "B=2", "--device", "cpu"}, dir);
  require_status(cpu, 1);
  CHECK_THAT(cpu.err, Catch::Contains("%y = all_reduce (") &&
                          Catch::Contains("ar.kiln:2:3): a collective over 1 ranks needs this rank's communicator"));
}
