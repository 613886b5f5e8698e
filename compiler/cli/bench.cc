// `kiln bench FILE`: compiles a graph for a device and times its calls on random inputs:
// latency (median, min, max), the host's part of a call (CUDA: until the call returns, its
// work queued; CPU: the whole call, run on the calling thread), launches per call and the
// memory held. --profile adds a per-kernel table from profiled calls (the device's clock
// around each launch: CUDA events, host timers on the CPU), after the timed calls so that
// it never slows them. Every call on CUDA carries NVTX ranges named after its kernel
// groups, so `nsys profile kiln bench ...` shows kiln's names. --weights store holds the
// parameters in a weight store (compiler/weights.h) instead of passing them as arguments; the
// memory line says what holds weights either way, against the parameters' own bytes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "compiler/json.h"
#include "compiler/profile.h"
#include "compiler/weights.h"

namespace kiln::cli {
namespace {

struct BenchOptions {
  std::string file;
  std::string float_type;
  std::vector<std::string> binds;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string mode = "default";
  int warmup = 10;
  int repeat = 100;
  bool profile = false;
  bool json = false;
  std::string weights = "args";
};

struct Spread {
  double median = 0, min = 0, max = 0, mean = 0;
};

Spread spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Spread s{v[v.size() / 2], v.front(), v.back(), 0};
  if (v.size() % 2 == 0) s.median = (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  return s;
}

nlohmann::ordered_json spread_json(const Spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"mean", s.mean}};
}

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string bytes_text(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

void run(const BenchOptions& o) {
  Graph g = load_verified(o.file, o.float_type);
  Bindings bindings = parse_binds(g, o.binds);
  TensorMap host_args = random_inputs(g, bindings, o.seed);
  Device device = *parse_device(o.device);
  if (absl::Status s = device_available(device); !s.ok()) throw CliError(str_cat("--device ", o.device, ": ", status_message(s)));
  CompiledGraph cg = check(compile(g, {.mode = *parse_mode(o.mode), .device = device}));
  DeviceId dev = cg.device();
  std::vector<Tensor> args;
  int64_t weight_bytes = 0;  // parameters passed as arguments, on the device
  for (const Value* v : cg.module().args) {
    args.push_back(check(Tensor::from_host(host_args.at(v->name()), dev)));
    if (v->is_param()) weight_bytes += host_args.at(v->name()).nbytes();
  }
  std::optional<Weights> store;
  std::vector<Tensor> inputs;  // with a store: the arguments that are not parameters
  if (o.weights == "store") {
    store.emplace(check(Weights::create(cg)));
    if (absl::Status s = store->load(host_args); !s.ok()) throw CliError(status_message(s));
    for (size_t i = 0; i < args.size(); ++i)
      if (!cg.module().args[i]->is_param()) inputs.push_back(args[i]);
  }
  std::vector<Tensor> outs(cg.graph().outputs().size());
  CallOptions call{.ranges = true};
  auto run_call = [&](const CallOptions& opts) {
    absl::Status s = store ? cg.run(inputs, *store, outs, opts) : cg.run(args, outs, opts);
    if (!s.ok()) throw CliError(status_message(s));
  };
  auto sync_call = [&](const CallOptions& opts) {
    run_call(opts);
    if (absl::Status s = cg.synchronize(opts); !s.ok()) throw CliError(status_message(s));
  };

  // The first call builds the specialization (compiles its kernels; max-autotune tunes).
  auto t0 = std::chrono::steady_clock::now();
  sync_call(call);
  double first_ms = ms_between(t0, std::chrono::steady_clock::now());
  for (int i = 1; i < o.warmup; ++i) sync_call(call);
  std::vector<double> latency, host;
  for (int i = 0; i < o.repeat; ++i) {
    auto a = std::chrono::steady_clock::now();
    run_call(call);
    auto b = std::chrono::steady_clock::now();
    if (absl::Status s = cg.synchronize(call); !s.ok()) throw CliError(status_message(s));
    auto c = std::chrono::steady_clock::now();
    host.push_back(ms_between(a, b));
    latency.push_back(ms_between(a, c));
  }
  // Profiled calls: one for the launch counts, --repeat of them for the table.
  std::vector<CallProfile> profiles(o.profile ? o.repeat : 1);
  for (CallProfile& p : profiles) {
    CallOptions opts = call;
    opts.profile = &p;
    sync_call(opts);
  }
  ProfileTable table = profile_table(cg.module(), profiles);
  int kernels = 0, library = 0, copies = 0;
  for (const ProfiledLaunch& l : profiles.front().launches)
    (l.kind == ProfiledLaunch::Kind::Kernel || l.kind == ProfiledLaunch::Kind::Attention ||
             l.kind == ProfiledLaunch::Kind::Extern || l.kind == ProfiledLaunch::Kind::Collective
         ? kernels
     : l.kind == ProfiledLaunch::Kind::Library ? library
                                               : copies)++;
  CompiledGraph::Memory mem = cg.memory();
  CompileStats stats = cg.stats();
  Spread lat = spread(latency), hst = spread(host);
  std::map<std::string, int64_t> sorted(bindings.begin(), bindings.end());
  bool cuda = dev.type == DeviceType::cuda;

  if (o.json) {
    nlohmann::ordered_json j;
    j["graph"] = g.name();
    j["bindings"] = nlohmann::ordered_json::object();
    for (const auto& [sym, value] : sorted) j["bindings"][sym] = value;
    j["device"] = device_name(dev);
    j["mode"] = o.mode;
    j["strategy"] = stats.strategy;
    j["warmup"] = o.warmup;
    j["repeat"] = o.repeat;
    j["first_call_ms"] = first_ms;
    j["latency_ms"] = spread_json(lat);
    j["host_ms"] = spread_json(hst);
    j["launches"] = {{"per_call", kernels + library + copies}, {"kernels", kernels}, {"library", library}, {"copies", copies}};
    j["memory"] = {{"arena_bytes", mem.held.arena},
                   {"scratch_bytes", mem.held.scratch},
                   {"weight_prep_bytes", mem.held.weight_prep},
                   {"weight_bytes", weight_bytes + mem.held.constants},
                   {"parameter_bytes", mem.parameters},
                   {"weight_store_bytes", mem.weight_store},
                   {"weights_held_bytes", mem.weights_held()}};
    if (mem.device) {
      j["memory"]["device_used_bytes"] = mem.device->total - mem.device->free;
      j["memory"]["device_total_bytes"] = mem.device->total;
    }
    j["stats"] = stats;
    if (o.profile) j["profile"] = table;
    std::puts(json_text(j, 2).c_str());
    return;
  }
  std::string binds = str_join(sorted, " ", [](const auto& kv) { return str_cat(kv.first, "=", kv.second); });
  std::printf("graph %s%s%s on %s (%s mode: %s), %d warm-up and %d timed calls\n", g.name().c_str(),
              binds.empty() ? "" : " with ", binds.c_str(), device_name(dev).c_str(), o.mode.c_str(),
              stats.strategy.c_str(), o.warmup, o.repeat);
  std::printf("first call  %.1f ms (builds the specialization: %d kernels, %lld compiled, %lld from the kernel cache)\n",
              first_ms, stats.kernels, static_cast<long long>(stats.cache_misses),
              static_cast<long long>(stats.cache_memory_hits + stats.cache_disk_hits));
  std::printf("latency     median %.4f ms, min %.4f ms, max %.4f ms\n", lat.median, lat.min, lat.max);
  if (cuda)
    std::printf("host        median %.4f ms to enqueue a call (%.0f%% of its latency), min %.4f ms, max %.4f ms\n",
                hst.median, lat.median > 0 ? 100 * hst.median / lat.median : 0.0, hst.min, hst.max);
  else
    std::printf("host        the whole call: its launches run on the calling thread\n");
  std::printf("launches    %d per call: %d kernels, %d library GEMMs, %d copies\n", kernels + library + copies,
              kernels, library, copies);
  std::printf("memory      arena %s, scratch %s, weight prep %s, weights %s", bytes_text(mem.held.arena).c_str(),
              bytes_text(mem.held.scratch).c_str(), bytes_text(mem.held.weight_prep).c_str(),
              bytes_text(weight_bytes + mem.held.constants).c_str());
  if (mem.device)
    std::printf("; device %s used of %s", bytes_text(mem.device->total - mem.device->free).c_str(),
                bytes_text(mem.device->total).c_str());
  std::printf("\n");
  std::printf("weights     %s held for %s of parameters (%.3fx): %s\n", bytes_text(mem.weights_held()).c_str(),
              bytes_text(mem.parameters).c_str(),
              mem.parameters > 0 ? static_cast<double>(mem.weights_held()) / mem.parameters : 1.0,
              store ? str_cat("a weight store of ", bytes_text(mem.weight_store), ", no prep copies").c_str()
                    : str_cat("the parameters as arguments, and prep copies of ", bytes_text(mem.held.weight_prep)).c_str());
  if (o.profile) {
    std::printf("\nprofile (%s)\n", cuda ? "CUDA events around each launch" : "host timers around each launch");
    std::fputs(profile_text(table).c_str(), stdout);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Compile a graph for a device and time its calls (--profile: per kernel)");
  cmd->add_option("FILE", o->file, "the graph to time (.kiln or .onnx)")->required();
  add_float_option(cmd, &o->float_type);
  cmd->add_option("--bind", o->binds, "a symbol's value, e.g. --bind B=8 (repeatable; every symbol must be bound)");
  cmd->add_option("--seed", o->seed, "seed of the random inputs (default 0), drawn as `kiln run` draws them");
  cmd->add_option("--device", o->device, "auto (default: cuda when a GPU is present, else cpu), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--mode", o->mode, "compile mode: default, reduce-overhead or max-autotune")
      ->check(CLI::IsMember({"default", "reduce-overhead", "max-autotune"}));
  cmd->add_option("--warmup", o->warmup, "untimed calls first, the first of which compiles (default 10)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--repeat", o->repeat, "timed calls (default 100); with --profile, as many profiled calls")
      ->check(CLI::Range(1, 1000000));
  cmd->add_flag("--profile", o->profile,
                "also profile --repeat calls and print a per-kernel table sorted by time (kernel, source ops, "
                "launches, total and mean ms, % of the call, GB/s or TFLOP/s)");
  cmd->add_flag("--json", o->json, "print the results as JSON");
  cmd->add_option("--weights", o->weights,
                  "args (default: parameters passed as arguments, weight prep copies made from them) or store (held "
                  "once in a weight store, merged projections laid out merged)")
      ->check(CLI::IsMember({"args", "store"}));
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
