// The example programs: each prints its IR and runs it through the reference evaluator;
// the decoder layer writes the IR it prints to a file, which is examples/decoder_layer.kiln
// exactly, and which `kiln run` accepts.
#include <catch2/catch.hpp>

#include "test/cli/process.h"

using namespace kiln::testing;

TEST_CASE("the MLP example prints its IR and the reference's summary of both outputs", "[examples]") {
  TempDir dir;
  Run r = run_binary(KILN_MLP_EXAMPLE, {}, dir);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.rfind("graph mlp(%x: bf16[B, 4096], %w_up: bf16[11008, 4096] param,", 0) == 0);
  CHECK(r.out.find("\nreference evaluator, B=2, random inputs (seed 0):\n  n: bf16[2, 4096] min=") != std::string::npos);
  CHECK(r.out.find("\n  h: bf16[2, 11008] min=") != std::string::npos);
}

TEST_CASE("the decoder layer example writes examples/decoder_layer.kiln and runs it", "[examples]") {
  TempDir dir;
  Run r = run_binary(KILN_DECODER_EXAMPLE, {(dir / "decoder.kiln").string()}, dir);
  INFO(r.err);
  REQUIRE(r.status == 0);
  std::string ir = read_text(dir / "decoder.kiln");
  CHECK(ir == read_text(std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln"));
  CHECK(r.out.rfind(ir, 0) == 0);
  CHECK(r.out.find("\nreference evaluator, B=1, T=5, random inputs (seed 0):\n  out: bf16[1, 5, 2048] min=") !=
        std::string::npos);
  Run run = run_binary(KILN_BINARY, {"run", (dir / "decoder.kiln").string(), "--bind", "B=1", "--bind", "T=2"}, dir);
  INFO(run.err);
  CHECK(run.status == 0);
  CHECK(run.out.find("out: bf16[1, 2, 2048] min=") != std::string::npos);
}
