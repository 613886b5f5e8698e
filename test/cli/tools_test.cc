// `kiln bench` (latency, launches, memory, the --profile table and its JSON), `kiln
// --version`, unknown subcommands and JSON errors. Timings are checked for consistency
// (rows add up to the call, min <= median <= max), never against thresholds.
#include <catch2/catch.hpp>

#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "ir/str.h"
#include "test/cli/kiln_cli.h"
#include "test/cli/process.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

constexpr const char* kMlp = R"(graph mlp(%x: f32[B, 16], %w_up: f32[24, 16] param, %w_gate: f32[24, 16] param, %w_down: f32[16, 24] param) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  %n = rms_norm(%y, eps=1e-6, axes=[-1])
  return %n, %x
}
)";

}  // namespace

#if KILN_CLI_HAS_CPU
TEST_CASE("kiln bench --profile --json on the CPU: latency, launches, memory and rows that add up", "[cli][bench]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  for (int64_t b : {1, 7, 64}) {
    INFO("B=" << b);
    Run r = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--bind", str_cat("B=", b), "--device", "cpu", "--warmup",
                      "2", "--repeat", "5", "--profile", "--json"},
                     dir);
    require_status(r, 0);
    nlohmann::json j = nlohmann::json::parse(r.out);
    CHECK(j["graph"] == "mlp");
    CHECK(j["bindings"]["B"] == b);
    CHECK(j["device"] == "cpu");
    CHECK(j["repeat"] == 5);
    for (const char* k : {"latency_ms", "host_ms"}) {
      INFO(k);
      CHECK(j[k]["min"].get<double>() <= j[k]["median"].get<double>());
      CHECK(j[k]["median"].get<double>() <= j[k]["max"].get<double>());
      CHECK(j[k]["min"].get<double>() > 0);
    }
    CHECK(j["first_call_ms"].get<double>() > 0);
    const nlohmann::json& l = j["launches"];
    CHECK(l["per_call"] == l["kernels"].get<int>() + l["library"].get<int>() + l["copies"].get<int>());
    CHECK(l["per_call"] == j["stats"]["launches_per_call"]);
    CHECK(l["copies"] == 1);  // %x returned as it is
    CHECK(l["library"] == 2);  // BLAS: gate and up merged, then down
    // Weights: the three matrices in f32; the arena holds at least the hidden activations.
    CHECK(j["memory"]["weight_bytes"] == 4 * (24 * 16 * 2 + 16 * 24));
    CHECK(j["memory"]["arena_bytes"].get<int64_t>() >= 4 * b * 24);

    const nlohmann::json& p = j["profile"];
    CHECK(p["calls"] == 5);
    CHECK(p["launches_per_call"] == l["per_call"]);
    int64_t launches = 0;
    double total = 0, percent = 0, prev = 1e300;
    std::set<std::string> kinds;
    for (const nlohmann::json& row : p["rows"]) {
      INFO(row.dump());
      launches += row["launches"].get<int64_t>();
      total += row["total_ms"].get<double>();
      percent += row["percent"].get<double>();
      CHECK(row["total_ms"].get<double>() <= prev);  // sorted by time
      prev = row["total_ms"].get<double>();
      CHECK(row["launches"].get<int64_t>() % 5 == 0);  // every launch in every call
      kinds.insert(row["kind"].get<std::string>());
      if (row["kind"] == "library gemm") {
        CHECK(row["flops"].get<double>() > 0);
        CHECK(row["ops"] == "linear");
      }
      if (row["kind"] == "kernel") {
        CHECK(row["bytes"].get<double>() > 0);
        CHECK(std::regex_match(row["name"].get<std::string>(), std::regex("k[0-9]+_[a-z_0-9]+")));
      }
    }
    CHECK(kinds == std::set<std::string>{"kernel", "library gemm", "copy"});
    CHECK(launches == 5 * l["per_call"].get<int64_t>());
    CHECK(total == Approx(5 * p["call_ms"].get<double>()).epsilon(1e-6));
    CHECK(percent == Approx(100).epsilon(1e-6));
  }
}

TEST_CASE("kiln bench --weights: a weight store holds the weights once, arguments cost the prep copies", "[cli][bench]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  const int64_t params = 4 * (24 * 16 * 2 + 16 * 24);
  for (const char* weights : {"args", "store"}) {
    INFO(weights);
    Run r = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--bind", "B=3", "--device", "cpu", "--warmup", "1",
                      "--repeat", "2", "--weights", weights, "--json"},
                     dir);
    require_status(r, 0);
    const nlohmann::json m = nlohmann::json::parse(r.out)["memory"];
    CHECK(m["parameter_bytes"] == params);
    bool store = std::string(weights) == "store";
    // The merged gate/up weight (24 + 24 rows of 16 f32) is the prep copy.
    CHECK(m["weight_prep_bytes"] == (store ? 0 : 4 * 48 * 16));
    CHECK(m["weight_store_bytes"] == (store ? params : 0));
    CHECK(m["weights_held_bytes"] == params + m["weight_prep_bytes"].get<int64_t>());
    Run text = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--bind", "B=3", "--device", "cpu", "--warmup", "1",
                         "--repeat", "2", "--weights", weights},
                        dir);
    require_status(text, 0);
    CHECK_THAT(text.out, Catch::Contains(store ? "weights     4.5 KiB held for 4.5 KiB of parameters (1.000x): a weight store"
                                               : "weights     7.5 KiB held for 4.5 KiB of parameters (1.667x)"));
  }
}

TEST_CASE("kiln bench --profile: a library GEMM's epilogue kernel is not counted as doing its GEMM", "[cli][bench]") {
  // In bf16 BLAS computes the f32 accumulator and a kernel rounds it (CPU target).
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  Run r = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--float", "bf16", "--bind", "B=5", "--device", "cpu",
                    "--warmup", "1", "--repeat", "2", "--profile", "--json"},
                   dir);
  require_status(r, 0);
  int epilogues = 0;
  double library_flops = 0;
  nlohmann::json j = nlohmann::json::parse(r.out);
  for (const nlohmann::json& row : j["profile"]["rows"]) {
    INFO(row.dump());
    if (row["kind"] == "epilogue") {
      ++epilogues;
      CHECK(row["flops"] == 0);
      CHECK(row["bytes"].get<double>() > 0);
    }
    if (row["kind"] == "library gemm") library_flops += row["flops"].get<double>();
  }
  CHECK(epilogues > 0);
  // Per call: 2*B*(2*24)*16 for gate and up merged, 2*B*16*24 for down; two calls.
  CHECK(library_flops == 2 * (2.0 * 5 * 48 * 16 + 2.0 * 5 * 16 * 24));
}

TEST_CASE("kiln bench prints its results and the per-kernel table as text", "[cli][bench]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  std::vector<std::string> args = {"bench", (dir / "mlp.kiln").string(), "--bind", "B=3", "--device", "cpu",
                                   "--warmup", "1", "--repeat", "3", "--profile"};
  Run r = kiln_cli(args, dir);
  require_status(r, 0);
  INFO(r.out);
  for (const char* line : {"graph mlp with B=3 on cpu (default mode: launch directly), 1 warm-up and 3 timed calls\n",
                           "\nfirst call  ", "\nlatency     median ", "\nhost        the whole call",
                           "\nlaunches    5 per call: 2 kernels, 2 library GEMMs, 1 copies\n", "\nmemory      arena ",
                           "\nprofile (host timers around each launch)\nkernel ", "\n3 profiled calls, 5 launches each, "})
    CHECK(r.out.find(line) != std::string::npos);
  // One table row per JSON row, with its name and ops.
  args.push_back("--json");
  Run j = kiln_cli(args, dir);
  require_status(j, 0);
  nlohmann::json parsed = nlohmann::json::parse(j.out);
  for (const nlohmann::json& row : parsed["profile"]["rows"]) {
    std::string name = row["name"].get<std::string>(), ops = row["ops"].get<std::string>();
    CHECK(std::regex_search(r.out, std::regex("\n" + std::regex_replace(name, std::regex(R"([\[\]])"), R"(\$&)") +
                                              " +[a-z ]+ +" + (ops.empty() ? "-" : ops) + " +3 ")));
  }
  // Without --profile: no table.
  args.pop_back();
  args.pop_back();
  Run plain = kiln_cli(args, dir);
  require_status(plain, 0);
  CHECK(plain.out.find("profile") == std::string::npos);
}
#endif

TEST_CASE("kiln bench: unbound symbols and bad counts are errors, JSON with --json", "[cli][bench]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  Run unbound = kiln_cli({"bench", (dir / "mlp.kiln").string()}, dir);
  require_status(unbound, 1);
  CHECK(unbound.out.empty());
  CHECK(unbound.err == "kiln: symbol B is not bound; pass --bind B=N\n");
  Run zero = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--bind", "B=2", "--repeat", "0"}, dir);
  require_status(zero, 1);
  CHECK(zero.err.find("--repeat") != std::string::npos);
  Run j = kiln_cli({"bench", (dir / "mlp.kiln").string(), "--json"}, dir);
  require_status(j, 1);
  CHECK(j.out.empty());
  nlohmann::json e = nlohmann::json::parse(j.err);
  CHECK(e["error"] == "symbol B is not bound; pass --bind B=N");
  CHECK(e["location"].is_null());
}

TEST_CASE("kiln ... --json: errors are one JSON object with the error's location, the status stays 1", "[cli]") {
  TempDir dir;
  write_text(dir / "op.kiln", "graph g(%x: f32[2]) {\n  %y = expo(%x)\n  return %y\n}\n");
  Run plain = kiln_cli({"run", (dir / "op.kiln").string()}, dir);
  require_status(plain, 1);
  Run r = kiln_cli({"run", (dir / "op.kiln").string(), "--json"}, dir);
  require_status(r, 1);
  CHECK(r.out.empty());
  nlohmann::json e = nlohmann::json::parse(r.err);
  CHECK(e["location"] == (dir / "op.kiln").string() + ":2:8");
  CHECK("kiln: " + e["error"].get<std::string>() + "\n" == plain.err);
  // A command-line error too.
  Run usage = kiln_cli({"compile", (dir / "op.kiln").string(), "--device", "tpu", "--json"}, dir);
  require_status(usage, 1);
  nlohmann::json u = nlohmann::json::parse(usage.err);
  CHECK(u["error"].get<std::string>().find("tpu") != std::string::npos);
  CHECK(u["location"].is_null());
}

TEST_CASE("an unknown subcommand names the valid ones and the nearest", "[cli]") {
  TempDir dir;
  Run r = kiln_cli({"bnech", "x.kiln"}, dir);
  require_status(r, 1);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "kiln: unknown subcommand 'bnech' (did you mean 'bench'?); the subcommands: bench, compile, dump, "
        "generate, onnx-conformance, reduce, run, shard (kiln --help says what each does)\n");
  Run far = kiln_cli({"frobnicate"}, dir);
  require_status(far, 1);
  CHECK(far.err.find("did you mean") == std::string::npos);
  CHECK(far.err.find("the subcommands: bench, compile, dump, generate, onnx-conformance, reduce, run") != std::string::npos);
  Run j = kiln_cli({"bnech", "--json"}, dir);
  require_status(j, 1);
  CHECK(nlohmann::json::parse(j.err)["error"].get<std::string>().starts_with("unknown subcommand 'bnech'"));
}

TEST_CASE("kiln --version: version, commit, CUDA, NVRTC and LLVM versions, devices", "[cli]") {
  TempDir dir;
  Run r = kiln_cli({"--version"}, dir);
  require_status(r, 0);
  INFO(r.out);
  CHECK(std::regex_search(r.out, std::regex(R"(^kiln [0-9]+\.[0-9]+ \(git ([0-9a-f]{7,}(-dirty)?|unknown.*)\)\n)")));
  for (const char* key : {"\nbuilt with: ", "\nCUDA toolkit: ", "\nNVRTC: ", "\nCUDA driver: ", "\ncuDNN: ", "\nNCCL: ",
                          "\nLLVM: ", "\ndevice: "})
    CHECK(r.out.find(key) != std::string::npos);
#if KILN_CLI_HAS_CPU
  CHECK(std::regex_search(r.out, std::regex(R"(\nLLVM: [0-9]+\.[0-9]+\.[0-9]+\n)")));
  // The core, and who chose it where not OpenBLAS: "(chosen by kiln: OpenBLAS picked X)",
  // "(set by OPENBLAS_CORETYPE)".
  CHECK(std::regex_search(
      r.out,
      std::regex(
          R"(\ndevice: cpu \([0-9]+ hardware threads, LLVM host CPU [^,]+, OpenBLAS core \w+( \([^)]+\))?\)\n)")));
#endif
#if KILN_CLI_HAS_CUDA
  CHECK(std::regex_search(r.out, std::regex(R"(\nCUDA toolkit: [0-9]+\.[0-9]+\nNVRTC: [0-9]+\.[0-9]+\n)")));
#endif
}

#if KILN_CLI_HAS_CPU
// Reductions themselves are tested with injected compiler bugs (test/cpu/reduce_test.cc).
TEST_CASE("kiln reduce: nothing to reduce where the CPU computes the graph right; usage errors", "[cli][reduce]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  std::string f = (dir / "mlp.kiln").string();
  Run ok = kiln_cli({"reduce", f, "--bind", "B=3", "--device", "cpu"}, dir);
  require_status(ok, 1);
  CHECK(ok.out.empty());
  CHECK(ok.err == "kiln: graph mlp does not fail (pass): nothing to reduce\n");
  Run unbound = kiln_cli({"reduce", f, "--device", "cpu"}, dir);
  require_status(unbound, 1);
  CHECK(unbound.err == "kiln: symbol B is not bound; pass --bind B=N\n");
  Run no_device = kiln_cli({"reduce", f, "--bind", "B=3"}, dir);
  require_status(no_device, 1);
  CHECK(no_device.err.find("--device is required") != std::string::npos);
}
#endif
