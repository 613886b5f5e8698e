// `kiln generate` end to end: a checkpoint directory written in process, generated from with
// --check, the tokens it prints equal to those of models::generate in process; bad models
// refused with the file or preset named; --tp 2 over the host group, from a preset and from a
// checkpoint each rank reads its slice of, with one device's tokens.
#include <catch2/catch.hpp>

#include "ir/npy.h"
#include "ir/str.h"
#include "models/generate.h"
#include "test/cli/kiln_cli.h"
#include "test/cli/process.h"
#include "test/common/catch_helpers.h"

using namespace kiln;
using namespace kiln::testing;

#if KILN_CLI_HAS_CPU
TEST_CASE("kiln generate --checkpoint --check: the in-process tokens, checked against the reference", "[cli]") {
  TempDir dir;
  models::LlamaConfig c{.dim = 32, .layers = 2, .heads = 4, .kv_heads = 1, .ffn = 48, .vocab = 61, .qkv_bias = true,
                        .dtype = DType::f32};
  auto weights = models::random_weights(c, 9);
  require_ok(models::write_checkpoint((dir / "ckpt").string(), c, weights, 2));
  Run r = run_binary(KILN_BINARY, {"generate", "--checkpoint", (dir / "ckpt").string(), "--device", "cpu", "--batch", "3",
                                   "--prompt-len", "7", "--new-tokens", "17", "--check", "--check-steps", "16", "--seed", "4",
                                   "--logits-out", (dir / "logits.npy").string()},
                     dir);
  require_status(r, 0);
  INFO(r.out);
  for (const char* line : {"compile ", "prefill ", "decode ", "throughput ", "memory ",
                           "check       prefill + 16 decode steps match the reference"})
    CHECK(r.out.find(line) != std::string::npos);
  auto want = models::generate(c, weights, {.device = Device::Cpu, .batch = 3, .prompt_len = 7, .new_tokens = 17, .seed = 4});
  require_ok(want.status());
  for (size_t b = 0; b < 3; ++b)
    CHECK(r.out.find(fmt::format("tokens[{}]   {}\n", b, fmt::join(want->tokens[b], " "))) != std::string::npos);
  auto logits = read_npy((dir / "logits.npy").string());
  require_ok(logits.status());
  CHECK(logits->shape() == std::vector<int64_t>{3, 61});

  // The same prompts from a file: every one full length, the batch its first dim.
  HostTensor prompts(DType::i32, {2, 5});
  for (int64_t i = 0; i < prompts.numel(); ++i) prompts.set_int(i, (i * 7) % 61);
  require_ok(write_npy((dir / "p.npy").string(), prompts));
  Run p = run_binary(KILN_BINARY, {"generate", "--checkpoint", (dir / "ckpt").string(), "--device", "cpu", "--prompts",
                                   (dir / "p.npy").string(), "--new-tokens", "3", "--check"}, dir);
  require_status(p, 0);
  CHECK(p.out.find("tokens[1]") != std::string::npos);
  CHECK(p.out.find("tokens[2]") == std::string::npos);
}

TEST_CASE("kiln generate --tp 2 --check: the group named, checked against the whole model, one device's tokens",
          "[cli]") {
  TempDir dir;
  models::LoadedModel m = *models::load_model("tiny", "", std::nullopt, 0);
  auto want = models::generate(m.config, m.weights, {.device = Device::Cpu, .batch = 3, .new_tokens = 6});
  require_ok(want.status());
  require_ok(models::write_checkpoint((dir / "ckpt").string(), m.config, m.weights, 2));
  for (const char* from : {"--config", "--checkpoint"}) {
    std::string model = from == std::string("--config") ? "tiny" : (dir / "ckpt").string();
    Run r = run_binary(
        KILN_BINARY,
        {"generate", from, model, "--tp", "2", "--check", "--device", "cpu", "--batch", "3", "--new-tokens", "6"}, dir);
    require_status(r, 0);
    INFO(r.out);
    for (const char* line : {"group       2 ranks, tensor parallel (rank 0: host group, rank 0 of 2); weights ",
                             " in the store per rank, ", "check       prefill + 4 decode steps match the reference"})
      CHECK(r.out.find(line) != std::string::npos);
    for (size_t b = 0; b < 3; ++b)
      CHECK(r.out.find(fmt::format("tokens[{}]   {}\n", b, fmt::join(want->tokens[b], " "))) != std::string::npos);
  }
}
#endif

TEST_CASE("kiln generate: unknown presets, missing checkpoints and bad options are named", "[cli]") {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {{"--device", "cpu", "--config", "llama9"},
            "model config 'llama9': no such file or directory, and no model preset 'llama9'"},
           {{"--device", "cpu", "--checkpoint", (dir / "none").string()}, "none"},
           {{"--device", "cpu", "--config", "tiny", "--dtype", "q4"}, "unknown --dtype 'q4'"},
           {{"--config", "tiny", "--device", "tpu"}, "unknown --device 'tpu'"},
           {{"--device", "cpu"}, "a model needs a config or a checkpoint directory"},
           {{"--device", "cpu", "--config", "tiny", "--tp", "3"},
            "tp 3 must divide the heads (4) and the vocabulary (256)"},
           {{"--device", "cpu", "--config", "tiny", "--tp", "2", "--buckets", "1,4"}, "does not support batch buckets"},
           {{"--device", "cpu", "--config", "tiny", "--tp", "-2"}, "--tp"},
       }) {
    std::vector<std::string> args{"generate"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Run r = run_binary(KILN_BINARY, args, dir);
    require_status(r, 1);
    CHECK_THAT(r.err, Catch::Contains(c.want));
  }
}
