// The `kiln` tool end to end: dump, run and compile on small graphs, their located errors,
// and --help on every subcommand. Expected outputs come from the library in process (the
// reference evaluator, the parser), never from hard-coded numbers.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <regex>

#include <nlohmann/json.hpp>

#include "compiler/summary.h"
#include "ir/npy.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/cli/kiln_cli.h"
#include "test/cli/process.h"
#include "test/common/catch_helpers.h"
#include "test/common/filecheck.h"
#include "test/common/graphs.h"

using namespace kiln;
using namespace kiln::testing;
namespace fs = std::filesystem;

namespace {

// The same MLP at sizes the reference evaluator runs in milliseconds.
constexpr const char* kSmallMlp = R"(graph mlp(%x: bf16[B, 16], %w_up: bf16[24, 16] param, %w_gate: bf16[24, 16] param, %w_down: bf16[16, 24] param) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  %n = rms_norm(%y, eps=1e-6, axes=[-1])
  return %n, %h
}
)";

// The arguments `kiln run --seed` draws: random_args with its weights scaled by fan-in.
TensorMap cli_random_args(const Graph& g, const Bindings& b, uint64_t seed) {
  TensorMap args = random_args(g, b, seed);
  scale_weights_by_fan_in(g, args);
  return args;
}

// The lines `kiln run` prints for each output, computed in process.
std::vector<std::string> summary_lines(const Graph& g, const std::vector<HostTensor>& outs) {
  std::vector<std::string> lines;
  for (size_t i = 0; i < outs.size(); ++i) lines.push_back(format_summary(g.outputs()[i]->name(), summarize(outs[i])));
  return lines;
}

void require_lines(const std::string& out, const std::vector<std::string>& lines) {
  for (const std::string& l : lines) {
    INFO(out);
    CHECK(out.find(l + "\n") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("kiln dump prints the issue's MLP as IR that parses back to identical text", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", test_graphs::kIssueMlp);
  Run r = kiln_cli({"dump", (dir / "mlp.kiln").string()}, dir);
  require_status(r, 0);
  CHECK(r.err.empty());
  CHECK(print_graph(parse_or_fail(r.out)) == r.out);
  // Dumping the dump changes nothing.
  write_text(dir / "again.kiln", r.out);
  Run again = kiln_cli({"dump", (dir / "again.kiln").string()}, dir);
  require_status(again, 0);
  CHECK(again.out == r.out);
  require_checks(r.out, R"(
CHECK: graph mlp(%x: bf16[B, 4096], %w_up: bf16[11008, 4096] param,
CHECK-NEXT: %g = linear(%x, %w_gate) : bf16[B, 11008]
CHECK: %n = rms_norm(%y, axes=[-1], eps=1e-06) : bf16[B, 4096]
CHECK-NEXT: return %n, %h
)");
}

TEST_CASE("kiln dump: bad input exits with status 1 and a located error", "[cli]") {
  TempDir dir;
  struct Case {
    const char* file;
    const char* text;
    const char* want;  // a regex the error must match
  };
  std::vector<Case> cases = {
      {"syntax.kiln", "graph g(%x: f32[2]) {\n  %y = exp(%x\n  return %y\n}\n", "syntax\\.kiln:3:3: .*expected"},
      {"op.kiln", "graph g(%x: f32[2]) {\n  %y = expo(%x)\n  return %y\n}\n", "op\\.kiln:2:8: .*expo"},
      {"type.kiln", "graph g(%x: f32[2]) {\n  %y = exp(%x) : f32[3]\n  return %y\n}\n", "type\\.kiln:2:18: type annotation f32\\[3\\] of %y does not match the inferred type f32\\[2\\]"},
      {"undefined.kiln", "graph g(%x: f32[2]) {\n  %y = exp(%z)\n  return %y\n}\n", "undefined\\.kiln:2:12: .*%z"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.file) {
      write_text(dir / c.file, c.text);
      Run r = kiln_cli({"dump", (dir / c.file).string()}, dir);
      require_status(r, 1);
      CHECK(r.out.empty());
      INFO(r.err);
      CHECK(std::regex_search(r.err, std::regex(std::string("^kiln: .*") + c.want)));
    }
  }
  SECTION("a missing file and an unknown extension name the file") {
    Run missing = kiln_cli({"dump", (dir / "nope.kiln").string()}, dir);
    require_status(missing, 1);
    CHECK(missing.err.find("nope.kiln") != std::string::npos);
    write_text(dir / "graph.txt", kSmallMlp);
    Run ext = kiln_cli({"dump", (dir / "graph.txt").string()}, dir);
    require_status(ext, 1);
    CHECK(ext.err.find("graph.txt: unsupported file type '.txt'") != std::string::npos);
  }
}

TEST_CASE("kiln run: random inputs by seed, summaries equal to the reference's", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  Graph g = parse_or_fail(kSmallMlp);
  for (auto [b, seed] : {std::pair<int64_t, uint64_t>{1, 0}, {3, 7}, {5, 123}}) {
    Run r = kiln_cli({"run", (dir / "mlp.kiln").string(), "--bind", str_cat("B=", b), "--seed", str_cat(seed)}, dir);
    require_status(r, 0);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, cli_random_args(g, {{"B", b}}, seed));
    REQUIRE(want.ok());
    CHECK(r.out.rfind(str_cat("graph mlp with B=", b, ", random inputs (seed ", seed, ")\n"), 0) == 0);
    require_lines(r.out, summary_lines(g, *want));
  }
  // Another seed, other numbers.
  Run a = kiln_cli({"run", (dir / "mlp.kiln").string(), "--bind", "B=2", "--seed", "1"}, dir);
  Run b = kiln_cli({"run", (dir / "mlp.kiln").string(), "--bind", "B=2", "--seed", "2"}, dir);
  CHECK(a.out != b.out);
}

TEST_CASE("kiln run --json prints the summary as JSON", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  Graph g = parse_or_fail(kSmallMlp);
  Run r = kiln_cli({"run", (dir / "mlp.kiln").string(), "--bind", "B=3", "--seed", "4", "--json"}, dir);
  require_status(r, 0);
  nlohmann::json j = nlohmann::json::parse(r.out);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, cli_random_args(g, {{"B", 3}}, 4));
  REQUIRE(want.ok());
  CHECK(j["graph"] == "mlp");
  CHECK(j["bindings"]["B"] == 3);
  CHECK(j["seed"] == 4);
  REQUIRE(j["outputs"].size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    TensorSummary s = summarize((*want)[i]);
    const nlohmann::json& o = j["outputs"][i];
    CHECK(o["name"] == g.outputs()[i]->name());
    CHECK(o["dtype"] == "bf16");
    CHECK(o["shape"] == nlohmann::json(s.shape));
    CHECK(o["min"].get<double>() == s.min);
    CHECK(o["max"].get<double>() == s.max);
    CHECK(o["mean"].get<double>() == Approx(s.mean).epsilon(1e-12));
    CHECK(o["checksum"] == checksum_hex(s.checksum));
  }
}

TEST_CASE("kiln run --inputs reads .npy files (bf16 as float32) and --save-outputs writes them", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  Graph g = parse_or_fail(kSmallMlp);
  fs::create_directories(dir / "in");
  // float32 files for the bf16 arguments, with values that bf16 cannot hold exactly.
  TensorMap args = random_args(g, {{"B", 3}}, 9);
  TensorMap rounded;
  for (auto& [name, t] : args) {
    HostTensor f(DType::f32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) f.set(i, t.get(i) + 1e-4 * static_cast<double>(i % 7));
    REQUIRE(write_npy((dir / "in" / (name + ".npy")).string(), f).ok());
    HostTensor r(DType::bf16, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) r.set(i, f.get(i));
    rounded.emplace(name, std::move(r));
  }
  Run r = kiln_cli({"run", (dir / "mlp.kiln").string(), "--inputs", (dir / "in").string(), "--save-outputs",
                    (dir / "out").string()},
                   dir);
  require_status(r, 0);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, rounded);
  REQUIRE(want.ok());
  CHECK(r.out.rfind(str_cat("graph mlp with B=3, inputs from ", (dir / "in").string(), "\n"), 0) == 0);
  require_lines(r.out, summary_lines(g, *want));
  for (size_t i = 0; i < want->size(); ++i) {
    absl::StatusOr<HostTensor> saved = read_npy((dir / "out" / (g.outputs()[i]->name() + ".npy")).string());
    REQUIRE(saved.ok());
    REQUIRE(saved->shape() == (*want)[i].shape());
    for (int64_t k = 0; k < saved->numel(); ++k) CHECK(saved->get(k) == (*want)[i].get(k));
  }
  CHECK(!fs::exists(dir / "out" / ".kiln-run-staging"));
}

TEST_CASE("kiln run: missing, extra and mismatched .npy files are located errors", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  Graph g = parse_or_fail(kSmallMlp);
  auto fill = [&](const fs::path& in, int64_t batch) {
    fs::create_directories(in);
    for (auto& [name, t] : random_args(g, {{"B", batch}}, 1)) {
      HostTensor f(DType::f32, t.shape());
      for (int64_t i = 0; i < t.numel(); ++i) f.set(i, t.get(i));
      REQUIRE(write_npy((in / (name + ".npy")).string(), f).ok());
    }
  };
  auto run_in = [&](const fs::path& in, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run", (dir / "mlp.kiln").string(), "--inputs", in.string(), "--save-outputs",
                                      (dir / "out").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    Run r = kiln_cli(args, dir);
    require_status(r, 1);
    CHECK(r.out.empty());
    CHECK(!fs::exists(dir / "out"));  // nothing written on failure
    return r.err;
  };
  SECTION("missing") {
    fill(dir / "in", 2);
    fs::remove(dir / "in" / "w_gate.npy");
    std::string err = run_in(dir / "in");
    CHECK(err.find((dir / "in" / "w_gate.npy").string() + ": missing; it must hold parameter %w_gate: bf16[24, 16]") !=
          std::string::npos);
  }
  SECTION("extra") {
    fill(dir / "in", 2);
    REQUIRE(write_npy((dir / "in" / "bias.npy").string(), HostTensor(DType::f32, {3})).ok());
    std::string err = run_in(dir / "in");
    CHECK(err.find((dir / "in" / "bias.npy").string() + ": matches no input or parameter of graph mlp") !=
          std::string::npos);
  }
  SECTION("wrong shape") {
    fill(dir / "in", 2);
    REQUIRE(write_npy((dir / "in" / "w_up.npy").string(), HostTensor(DType::f32, {16, 24})).ok());
    std::string err = run_in(dir / "in");
    INFO(err);
    CHECK(err.find((dir / "in" / "w_up.npy").string() + ": holds f32[16, 24], whose shape does not fit parameter %w_up") !=
          std::string::npos);
  }
  SECTION("wrong dtype") {
    fill(dir / "in", 2);
    REQUIRE(write_npy((dir / "in" / "x.npy").string(), HostTensor(DType::i32, {2, 16})).ok());
    std::string err = run_in(dir / "in");
    CHECK(err.find((dir / "in" / "x.npy").string() + ": holds i32[2, 16], whose dtype does not fit input %x") !=
          std::string::npos);
  }
  SECTION("a symbol bound two ways") {
    fill(dir / "in", 2);
    std::string err = run_in(dir / "in", {"--bind", "B=5"});
    CHECK(err.find("--bind B=5 disagrees with the input files, which give B=2") != std::string::npos);
  }
}

TEST_CASE("kiln run: bad --bind and unbound symbols are errors", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  std::string file = (dir / "mlp.kiln").string();
  struct Case {
    std::vector<std::string> args;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{
           {{"run", file}, "symbol B is not bound; pass --bind B=N"},
           {{"run", file, "--bind", "B"}, "--bind B: expected SYMBOL=INTEGER"},
           {{"run", file, "--bind", "B=x"}, "--bind B=x: expected SYMBOL=INTEGER"},
           {{"run", file, "--bind", "T=2"}, "--bind T=2: graph mlp has no symbol T (its symbols: B)"},
           {{"run", file, "--bind", "B=2", "--bind", "B=3"}, "--bind: symbol B is bound twice"},
           {{"run", file, "--bind", "B=0"}, "--bind B=0 is outside the symbol's bounds [1, inf]"},
           // Sizes under the bindings are checked before anything runs (a SIGSEGV and an
           // uncaught length_error before).
           {{"run", file, "--bind", "B=4611686018427387904"}, "overflows int64"},
           {{"run", file, "--bind", "B=9223372036854775807"}, "overflows int64"},
           {{"run", file, "--bind", "B=1099511627776"}, "out of memory: needs"},
       }) {
    Run r = kiln_cli(c.args, dir);
    require_status(r, 1);
    INFO(r.err);
    CHECK(r.err.find(c.want) != std::string::npos);
  }
}

TEST_CASE("kiln compile: summary, JSON, per-pass dumps, kernel IR, print-after", "[cli]") {
  TempDir dir;
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  SECTION("the decoder layer's summary and its arena against the lower bound") {
    Run r = kiln_cli({"compile", decoder, "--bind", "B=2", "--bind", "T=16"}, dir);
    require_status(r, 0);
    require_checks(r.out, R"(
CHECK: graph decoder_layer with B=2 T=16
CHECK-NEXT: groups 16: 6 kernels, 6 GEMMs, 4 weight-prep
CHECK-NEXT: arena {{[0-9]+}} bytes; lower bound {{[0-9]+}} ({{[-+][0-9.]+}}%); without reuse {{[0-9]+}}
CHECK-NEXT: decompose {{ *[0-9.]+}} ms
CHECK: lower {{ *[0-9.]+}} ms
CHECK-NEXT: k0_cast {{ +}}weight-prep elementwise
CHECK: k15_linear {{ +}}gemm {{ +}}2 nodes  domain [B, T, 2048]
)");
    for (auto [b, t] : {std::pair{1, 1}, {4, 512}, {3, 333}}) {
      Run j = kiln_cli({"compile", decoder, "--bind", str_cat("B=", b), "--bind", str_cat("T=", t), "--json"}, dir);
      require_status(j, 0);
      nlohmann::json s = nlohmann::json::parse(j.out);
      CHECK(s["kernels"] == 6);
      CHECK(s["gemms"] == 6);
      CHECK(s["groups"] == 16);
      CHECK(s["bindings"]["B"] == b);
      CHECK(s["bindings"]["T"] == t);
      int64_t arena = s["arena_bytes"], bound = s["lower_bound_bytes"], no_reuse = s["no_reuse_bytes"];
      CHECK(arena <= bound * 11 / 10);
      CHECK(bound <= arena);
      CHECK(arena < no_reuse);
      REQUIRE(s["passes"].size() == 6);
      CHECK(s["passes"][5]["name"] == "lower");
      CHECK(s["passes"][0]["ms"].get<double>() >= 0);
    }
  }
  SECTION("unbound symbols take their lower bound, and the summary says so") {
    Run r = kiln_cli({"compile", decoder, "--bind", "B=3"}, dir);
    require_status(r, 0);
    CHECK(r.out.rfind("graph decoder_layer with B=3 T=1 (unbound: its lower bound)\n", 0) == 0);
  }
  SECTION("--dump-dir writes each pass's IR (accepted by kiln dump), the memory plan and every kernel") {
    fs::path d = dir / "dump";
    Run r = kiln_cli({"compile", decoder, "--bind", "B=2", "--bind", "T=8", "--dump-dir", d.string()}, dir);
    require_status(r, 0);
    std::vector<std::string> passes = {"01-decompose", "02-simplify", "03-fuse_linear", "04-fuse_elementwise",
                                       "05-plan_memory"};
    for (const std::string& p : passes) {
      fs::path file = d / (p + ".kiln");
      REQUIRE(fs::exists(file));
      Run dump = kiln_cli({"dump", file.string()}, dir);
      require_status(dump, 0);
    }
    require_checks(read_text(d / "04-fuse_elementwise.kiln"), R"(
CHECK: %attn_in = cast(%mul_7, dtype=bf16) : bf16[B, T, 2048]  # group 1 (reduction)
CHECK: # schedule:
CHECK-NEXT: #   group 0 weight-prep elementwise: 1 nodes
)");
    require_checks(read_text(d / "memory_plan.txt"), R"(
CHECK: # bindings: B=2 T=8
CHECK-NEXT: # arena_bytes {{[0-9]+}}, no_reuse_bytes {{[0-9]+}}, lower_bound_bytes {{[0-9]+}}
CHECK-NEXT: %attn_in  bytes 4096*B*T  live [1, 3]  offset {{[0-9]+}}  size 65536
)");
    int kernels = 0;
    for (const auto& e : fs::directory_iterator(d / "kernels")) kernels += e.path().extension() == ".kir";
    CHECK(kernels == 16);
    require_checks(read_text(d / "kernels" / "k7_max.kir"), R"(
CHECK: kernel k7_max
CHECK: s0 = reduce max acc f32
CHECK: s1 = reduce sum acc f32
)");
  }
  SECTION("--print-after prints one pass's IR, or the kernel IR, on stderr") {
    Run r = kiln_cli({"compile", decoder, "--print-after=fuse_linear"}, dir);
    require_status(r, 0);
    CHECK(r.err.rfind("# after fuse_linear\ngraph decoder_layer(", 0) == 0);
    CHECK(r.err.find("# after simplify") == std::string::npos);
    Run all = kiln_cli({"compile", decoder, "--print-after=all"}, dir);
    require_status(all, 0);
    require_checks(all.err, R"(
CHECK: # after decompose
CHECK: # after simplify
CHECK: # after fuse_linear
CHECK: # after fuse_elementwise
CHECK: # after plan_memory
CHECK: # memory plan
CHECK: # after lower
CHECK-NEXT: kernel k0_cast
)");
  }
  SECTION("errors") {
    for (auto [args, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"compile", decoder, "--print-after=fusion"}, "--print-after=fusion: no such pass (expected one of decompose, "},
             {{"compile", decoder, "--bind", "X=2"}, "--bind X=2: graph decoder_layer has no symbol X (its symbols: B, T)"},
             {{"compile", (dir / "missing.kiln").string()}, "missing.kiln"},
         }) {
      Run r = kiln_cli(args, dir);
      require_status(r, 1);
      INFO(r.err);
      CHECK(r.err.find(want) != std::string::npos);
    }
  }
}

// Sets an environment variable for one test (children spawned by kiln_cli inherit it).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

int count_files(const fs::path& dir, const std::string& ext) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ext;
  return n;
}

#if KILN_CLI_HAS_CUDA
TEST_CASE("kiln compile --device cuda: every kernel NVRTC-compiled with no GPU, .cu and .ptx dumped", "[cli]") {
  TempDir dir;
  ScopedEnv cache("KILN_CACHE_DIR", (dir / "cache").string());
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  fs::path d = dir / "dump";
  Run r = kiln_cli({"compile", decoder, "--bind", "B=1", "--bind", "T=5", "--device", "cuda", "--dump-dir", d.string()},
                   dir);
  require_status(r, 0);
  // 5 fused kernels and 4 weight-prep kernels: 9 (the residual adds are cuBLASLt's, no
  // epilogue kernel reads an f32 accumulator; the attention step reads v in the QKV
  // projection and stores what the o-projection reads: no copy kernel around it); and its 4
  // tile configurations (codegen/cuda/attention.h): 13. The second RMS norm's weight cast and
  // mean are the first one's kernels (built once): 11 compiles.
  require_checks(r.out, R"(
CHECK: cuda sm_90: 13 kernels, 4 cuBLASLt GEMMs; NVRTC {{[0-9.]+}} ms (11 compiled, 0 from the kernel cache, 2 shared with an identical kernel)
CHECK-NEXT: group 0   k0_cast elementwise, 8 lanes, weight prep
CHECK-NEXT: group 1   k1_mean rows, 8 lanes, row cached (128 threads x 2 chunks), evict-first in L2 when its data exceed it
CHECK: group 6   attention bf16 H=16 KVH=16 D=128 scale=0.08838834764831843 causal
CHECK-NEXT: group 7   cuBLASLt bf16 m=T n=2048 k=2048 batch=1 epilogue none + residual
CHECK: group 11  cuBLASLt bf16 m=T n=11264 k=2048 batch=1 epilogue none
CHECK-NEXT: group 12  k12_mul elementwise, 8 lanes
CHECK-NEXT: group 13  cuBLASLt bf16 m=T n=2048 k=5632 batch=1 epilogue none + residual
CHECK: dumped to
)");
  CHECK(count_files(d / "cuda", ".cu") == 13);
  CHECK(count_files(d / "cuda", ".ptx") == 13);
  require_checks(read_text(d / "cuda" / "kiln_attention_4x2x1x64.cu"), R"(
CHECK: // kiln attention: bf16 H=16 KVH=16 D=128
CHECK: extern "C" __global__ void __launch_bounds__(KTHREADS) kiln_attention(
)");
  CHECK(fs::exists(d / "05-plan_memory.kiln"));
  // Kernels are emitted without their names (named by op, buffers b0, b1, ...), so that
  // identical layers share one source.
  require_checks(read_text(d / "cuda" / "k12_mul.cu"), R"(
CHECK: extern "C" __global__
CHECK-SAME: k_mul(
)");
  require_checks(read_text(d / "cuda" / "k12_mul.ptx"), R"(
CHECK: .target sm_90
CHECK: .entry k_mul
)");
  // A second process finds every kernel in the disk cache; --json adds the backend's figures.
  Run again = kiln_cli({"compile", decoder, "--bind", "B=1", "--bind", "T=5", "--device", "cuda", "--json"}, dir);
  require_status(again, 0);
  nlohmann::json j = nlohmann::json::parse(again.out);
  CHECK(j["kernels"] == 5);
  CHECK(j["backend"]["device"] == "cuda");
  CHECK(j["backend"]["arch"] == "sm_90");
  CHECK(j["backend"]["kernels"] == 13);
  CHECK(j["backend"]["gemms"] == 4);
  CHECK(j["backend"]["compiled"] == 0);
  CHECK(j["backend"]["cache_hits"] == 11);  // 13 kernels, 2 of them shared with an identical one
  // Modes are accepted (they act when the graph runs); unknown ones are errors.
  Run tuned = kiln_cli({"compile", decoder, "--bind", "B=1", "--device", "cuda", "--mode", "max-autotune"}, dir);
  require_status(tuned, 0);
  CHECK(tuned.out.find("mode max-autotune: applies when the graph runs") != std::string::npos);
  Run bad = kiln_cli({"compile", decoder, "--device", "cuda", "--mode", "fastest"}, dir);
  CHECK(bad.status != 0);
  CHECK(bad.err.find("--mode") != std::string::npos);
}

TEST_CASE("kiln compile --device cuda: program.txt holds every buffer's place and each GEMM's form", "[cli]") {
  TempDir dir;
  ScopedEnv cache("KILN_CACHE_DIR", (dir / "cache").string());
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  fs::path d = dir / "dump";
  Run r = kiln_cli({"compile", decoder, "--bind", "B=1", "--bind", "T=5", "--device", "cuda", "--dump-dir", d.string()},
                   dir);
  require_status(r, 0);
  // B = 1 is baked; parameters are arguments, merged weights weight prep, intermediates in
  // the arena; the weight prep runs apart; attention is one fused step reading q and k where
  // the RoPE kernels wrote them and v in place in the fused QKV projection, and storing
  // [B, T, H, D], which the o-projection reads as a dense A and adds the residual x to (C).
  require_checks(read_text(d / "cuda" / "program.txt"), R"(
CHECK: program decoder_layer for cuda
CHECK-NEXT: baked B = 1
CHECK-NEXT: buffers:
CHECK: b7 concat_2: bf16[6144, 2048] (weight prep 1)
CHECK: b13 permute_3: bf16[B, T, 16, 128] (arena 4)
CHECK: b25 out: bf16[B, T, 2048] (output 0)
CHECK-NEXT: weight prep (when parameters change):
CHECK-NEXT: group 0: k0_cast(b0, b1)
CHECK: steps:
CHECK-NEXT: group 1: k1_mean(b2, b1, b3)
CHECK-NEXT: group 3: cuBLASLt bf16 m=T n=6144 k=2048 batch=1 epilogue none
CHECK-NEXT: A b3 as [M, K] ld 2048 batch stride 0 offset 0; B b7 as [N, K] ld 2048 batch stride 0 offset 0
CHECK-NEXT: C b8
CHECK-NEXT: where the library cannot run a call: k3_linear_naive(b3, b7, b8)
CHECK: group 6: attention bf16 H=16 KVH=16 D=128 scale=0.08838834764831843 causal
CHECK-NEXT: q b11, k b12, v b8 at +4096 strides [6144*T, 128, 6144, 1] -> out b13 at +0 strides [2048*T, 128, 2048, 1]; B=B Tq=T Tk=T
CHECK-NEXT: group 7: cuBLASLt bf16 m=T n=2048 k=2048 batch=1 epilogue none + residual
CHECK-NEXT: A b13 as [M, K] ld 2048 batch stride 0 offset 0; B b14 as [N, K] ld 2048 batch stride 0 offset 0
CHECK-NEXT: C b15, residual b2 added
CHECK-NEXT: where the library cannot run a call: k7_linear_naive(b13, b14, b2, b15)
)");
  // Each program kernel's IR sits beside its source, with the schedule the source follows.
  CHECK(count_files(d / "cuda", ".kir") == 9 + 4);  // and each library GEMM's fallback
  require_checks(read_text(d / "cuda" / "k1_mean.kir"), R"(
CHECK: kernel k1_mean
CHECK: schedule:
CHECK-NEXT: launch rows, work B*T, row [2048]
CHECK-NEXT: vector width 8 along r0, divisible [], aligned [x, cast_1, attn_in], streams L2:
CHECK-NEXT: x[(o0 * T + o1) * 2048 + r0] streamed
CHECK: row cache 2 chunks per thread, 128 threads: x[(o0 * T + o1) * 2048 + r0]
)");
  // An epilogue cuBLASLt has not (a sigmoid) is a kernel reading the library's f32
  // accumulator as one more buffer of its kernel IR.
  fs::path gs = dir / "gemm_sigmoid.kiln";
  write_text(gs,
             "graph gemm_sigmoid(%x: bf16[B, T, 64], %w: bf16[32, 64]) {\n  %y = linear(%x, %w)\n"
             "  %z = sigmoid(%y)\n  return %z\n}\n");
  Run acc = kiln_cli(
      {"compile", gs.string(), "--bind", "B=1", "--device", "cuda", "--dump-dir", (dir / "acc").string()}, dir);
  require_status(acc, 0);
  CHECK_THAT(acc.out, Catch::Contains("epilogue none, f32 accumulator into k0_linear"));
  require_checks(read_text(dir / "acc" / "cuda" / "k0_linear.kir"), R"(
CHECK: kernel k0_linear
CHECK: in  acc: f32[B, T, 32]
CHECK-NOT: gemm
CHECK: schedule:
CHECK-NEXT: launch elementwise, work 32*B*T
)");
  // The CPU's program: BLAS accumulators read by each GEMM's kernel, no fallback; attention
  // as the CPU's fused step.
  Run cpu = kiln_cli({"compile", decoder, "--bind", "B=2", "--device", "cpu", "--dump-dir", (dir / "cpu_dump").string()},
                     dir);
  if (cpu.status == 0)
    require_checks(read_text(dir / "cpu_dump" / "cpu" / "program.txt"), R"(
CHECK: program decoder_layer for cpu
CHECK-NOT: baked
CHECK: group 6: attention bf16 H=16 KVH=16 D=128 scale=0.08838834764831843 causal
CHECK-NEXT: q b12, k b13, v b8 at +4096 strides [6144*T, 128, 6144, 1] -> out b14 at +0 strides [2048*T, 128, 2048, 1]; B=B Tq=T Tk=T
CHECK-NEXT: group 7: BLAS k7_linear, f32 accumulator into k7_linear
CHECK-NEXT: A b14, B b15 as their kernel indexes them
CHECK-NOT: gathered
CHECK: group 13: BLAS k13_linear, f32 accumulator into k13_linear
CHECK-NEXT: A b26, B b27 as their kernel indexes them
CHECK-NEXT: C b29 (f32 accumulator)
CHECK-NEXT: then epilogue: k13_linear(b26, b27, b16, b28, b29)
CHECK-NOT: where the library cannot run a call
)");
}

// The CUDA fuzzer's GEMM findings of 2026-12-07 as decisions (no GPU needed; on the GPU the
// same files run with `kiln run --device cuda --check`): a reversed-slice operand is gathered,
// a residual that is a view is no cuBLASLt C matrix, relu is no cuBLASLt epilogue.
TEST_CASE("kiln compile --device cuda: GEMM operands and epilogues cuBLASLt cannot take as they are", "[cli]") {
  TempDir dir;
  auto compile = [&](const char* file, std::vector<std::string> binds) {
    std::vector<std::string> args{"compile", str_cat(KILN_FUZZ_REGRESSIONS_DIR, "/", file), "--device", "cuda"};
    for (const std::string& b : binds) args.insert(args.end(), {"--bind", b});
    Run r = kiln_cli(args, dir);
    INFO(file << ": " << r.out << r.err);
    require_status(r, 0);
    return r.out;
  };
  require_checks(compile("cuda_gemm_reversed_operand.kiln", {"B=3"}), R"(
CHECK: cuBLASLt f32 m=2 n=5 k=1 batch=1 epilogue none, A gathered
CHECK: cuBLASLt f32 m=1 n=B k=6 batch=1 epilogue none, A gathered
)");
  require_checks(compile("cuda_gemm_residual_view.kiln", {}), R"(
CHECK: cuBLASLt f32 m=1 n=8 k=4 batch=1 epilogue none, f32 accumulator into
CHECK-NOT: residual
)");
  require_checks(compile("cuda_gemm_relu_nan.kiln", {"B=3"}), R"(
CHECK: cuBLASLt f32 m=B n=3 k=4 batch=1 epilogue none, f32 accumulator into
CHECK-NOT: relu
)");
}

TEST_CASE("kiln run --device cuda with no GPU: 'no CUDA device', exit status 1", "[cli]") {
  TempDir dir;
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  Run r = kiln_cli({"run", decoder, "--bind", "B=1", "--bind", "T=3", "--device", "cuda", "--check"}, dir);
  if (r.status == 0) {
    WARN("this machine has a CUDA device: the no-device report is not exercised");
    return;
  }
  require_status(r, 1);
  CHECK(r.err.find("no CUDA device") != std::string::npos);
  CHECK(r.out.empty());
}
#endif

#if KILN_CLI_HAS_CPU
TEST_CASE("kiln compile --device cpu: JIT-compiled kernels, optimized LLVM IR dumped", "[cli]") {
  TempDir dir;
  ScopedEnv cache("KILN_CACHE_DIR", (dir / "cache").string());  // every kernel compiles here
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  fs::path d = dir / "dump";
  Run r = kiln_cli({"compile", decoder, "--bind", "B=2", "--bind", "T=3", "--device", "cpu", "--dump-dir", d.string()},
                   dir);
  require_status(r, 0);
  // The second RMS norm's weight cast and mean are the first one's kernels: JIT cache hits.
  require_checks(r.out, R"(
CHECK: cpu: 13 kernels, 4 GEMMs; LLVM codegen {{[0-9.]+}} ms, O2 + JIT {{[0-9.]+}} ms (11 compiled, 2 from the JIT cache)
CHECK-NEXT: k0_cast {{ +}}codegen {{[0-9.]+}} ms, O2 + JIT {{[0-9.]+}} ms
CHECK: k13_linear {{ +}}codegen {{[0-9.]+}} ms, O2 + JIT {{[0-9.]+}} ms
)");
  // Attention is the CPU's fused step, compiled by nothing, and stores the heads merge that
  // BLAS reads (no gather kernel).
  CHECK(count_files(d / "cpu", ".ll") == 13);
  require_checks(read_text(d / "cpu" / "k12_mul.ll"), R"(
CHECK: define
CHECK-SAME: k_mul_
CHECK: <{{[0-9]+}} x float>
)");
  Run j = kiln_cli({"compile", decoder, "--bind", "B=2", "--bind", "T=3", "--device", "cpu", "--json"}, dir);
  require_status(j, 0);
  nlohmann::json s = nlohmann::json::parse(j.out);
  CHECK(s["backend"]["device"] == "cpu");
  CHECK(s["backend"]["kernels"] == 13);
  CHECK(s["backend"]["gemms"] == 4);
  REQUIRE(s["backend"]["kernel_times"].size() == 13);
  CHECK(s["backend"]["kernel_times"][11]["name"] == "k12_mul");
}

TEST_CASE("kiln run --device cpu --check: the decoder layer compiled vs the reference", "[cli]") {
  TempDir dir;
  std::string decoder = std::string(KILN_EXAMPLES_DIR) + "/decoder_layer.kiln";
  for (auto [b, t] : {std::pair{1, 1}, {1, 7}, {2, 33}}) {
    Run r = kiln_cli({"run", decoder, "--bind", str_cat("B=", b), "--bind", str_cat("T=", t), "--device", "cpu",
                      "--check", "--seed", str_cat(t)},
                     dir);
    INFO(r.out << r.err);
    require_status(r, 0);
    require_checks(r.out, R"(
CHECK: compiled for cpu (default): calls 1 (0 guard hits); compiles 1 (0 recompiles); kernels 13, GEMMs 4
CHECK: out: bf16[
CHECK-NEXT: check: matches the reference (max abs err
)");
  }
  Run j = kiln_cli({"run", decoder, "--bind", "B=1", "--bind", "T=4", "--device", "cpu", "--check", "--json"}, dir);
  require_status(j, 0);
  nlohmann::json s = nlohmann::json::parse(j.out);
  CHECK(s["device"] == "cpu");
  CHECK(s["stats"]["compiles"] == 1);
  CHECK(s["stats"]["kernels"] == 13);
  // The 4 weight-prep kernels run once, not per call; the fused attention step is one
  // launch, with no copy of v or gather of its output around it.
  CHECK(s["stats"]["launches_per_call"] == 10);
  CHECK(s["stats"]["kernel_times"].size() == 13);
  CHECK(s["stats"]["strategy"] == "launch directly");
  CHECK(s["outputs"][0]["check"]["ok"] == true);
  // The CPU cannot capture: reduce-overhead says how its calls run instead.
  Run ro = kiln_cli({"run", decoder, "--bind", "B=1", "--bind", "T=3", "--device", "cpu", "--mode", "reduce-overhead",
                     "--check"},
                    dir);
  INFO(ro.out << ro.err);
  require_status(ro, 0);
  require_checks(ro.out, R"(
CHECK: compiled for cpu (reduce-overhead): calls 1
CHECK: calls: launch directly
CHECK: check: matches the reference
)");
}

TEST_CASE("kiln run --check: a mismatch exits 1 and names the worst element", "[cli]") {
  // The reference sums in f64, compiled kernels in f32: 1e8 + 1 + 1 + 1 + 1 - 1e8 cancels to
  // 4 in f64 and to less in f32 (1e8 + 1 == 1e8 there), whatever the summation order.
  TempDir dir;
  write_text(dir / "total.kiln", "graph total(%x: f32[N]) {\n  %s = sum(%x, axes=[0])\n  return %s\n}\n");
  fs::create_directories(dir / "in");
  HostTensor x(DType::f32, {6});
  for (int64_t i = 0; i < 6; ++i) x.set(i, i == 0 ? 1e8 : i == 5 ? -1e8 : 1.0);
  REQUIRE(write_npy((dir / "in" / "x.npy").string(), x).ok());
  Run r = kiln_cli({"run", (dir / "total.kiln").string(), "--inputs", (dir / "in").string(), "--device", "cpu",
                    "--check"},
                   dir);
  require_status(r, 1);
  CHECK(r.out.find("check: DIFFERS: 1 of 1 elements of f32[] differ; worst at []: expected 4.0, got ") !=
        std::string::npos);
  CHECK(r.err.find("kiln: compiled outputs differ from the reference") != std::string::npos);
}
#endif

TEST_CASE("kiln run --check needs a compiled device", "[cli]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kSmallMlp);
  Run r = kiln_cli({"run", (dir / "mlp.kiln").string(), "--bind", "B=2", "--check"}, dir);
  require_status(r, 1);
  CHECK(r.err.find("--check") != std::string::npos);
}

TEST_CASE("--help on the tool and every subcommand", "[cli]") {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> mentions;
  };
  for (const Case& c : std::vector<Case>{
           {{"--help"}, {"dump", "run", "compile", "bench", "generate", "--version"}},
           {{"generate", "--help"}, {"--config", "--checkpoint", "--prompt-len", "--new-tokens", "--batch", "--check"}},
           {{"bench", "--help"}, {"--bind", "--device", "--mode", "--warmup", "--repeat", "--profile", "--json", "--weights"}},
           {{"dump", "--help"}, {"FILE"}},
           {{"run", "--help"}, {"--bind", "--seed", "--inputs", "--save-outputs", "--json", "--device", "--mode", "--check"}},
           {{"compile", "--help"}, {"--bind", "--dump-dir", "--print-after", "--json", "--device", "--mode"}},
       }) {
    Run r = kiln_cli(c.args, dir);
    require_status(r, 0);
    for (const std::string& m : c.mentions) {
      INFO(r.out);
      CHECK(r.out.find(m) != std::string::npos);
    }
  }
  Run none = kiln_cli({}, dir);
  CHECK(none.status == 1);
}

TEST_CASE("kiln compile shows an extern call in every stage; a device needs the op registered", "[cli]") {
  TempDir dir;
  write_text(dir / "ext.kiln", R"(graph block(%x: f32[T, 64], %norm: f32[64] param, %w1: f32[128, 64] param) {
  %h = extern_call(%x, %norm, name="my.rms_norm") : f32[T, 64]
  %a = linear(%h, %w1)
  %y = silu(%a)
  return %y
}
)");
  Run r = kiln_cli({"compile", (dir / "ext.kiln").string(), "--device", "none", "--print-after=fuse_elementwise"}, dir);
  require_status(r, 0);
  require_checks(r.out, R"(
CHECK: groups 2: 0 kernels, 1 GEMMs, 1 extern, 0 weight-prep
CHECK: k0_extern_call {{ +}}extern {{ +}}1 nodes  domain [T, 64]
CHECK-NEXT: k1_linear {{ +}}gemm
)");
  CHECK_THAT(r.err, Catch::Contains("%h = extern_call(%x, %norm, name=\"my.rms_norm\") : f32[T, 64]  # group 0 (extern)"));
  // The kiln process registers no ops: building the device's program says so.
  Run cpu = kiln_cli({"compile", (dir / "ext.kiln").string(), "--device", "cpu"}, dir);
  require_status(cpu, 1);
  CHECK_THAT(cpu.err, Catch::Contains("no extern op \"my.rms_norm\" is registered in this process"));
}
