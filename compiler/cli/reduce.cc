// `kiln reduce FILE --bind ... --device D`: shrinks a graph that the device computes wrong
// (beyond the dtype's tolerance of the reference), or that compile() or the call fails or
// crashes on, to a small graph that still fails the same way (compiler/reduce.h). Every test
// compiles and runs in a child process. Prints each step kept, then the reduced graph (or
// writes it with -o), headed by the failure and the --bind values that reproduce it.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "compiler/reduce.h"
#include "ir/printer.h"

namespace kiln::cli {
namespace {

struct ReduceCliOptions {
  std::string file;
  std::string float_type;
  std::vector<std::string> binds;
  std::string device;
  std::string out;
  uint64_t seed = 0;
  double timeout_s = 120;
};

void run(const ReduceCliOptions& o) {
  Graph g = load_verified(o.file, o.float_type);
  Bindings b = parse_binds(g, o.binds);
  for (const std::string& sym : g.symbols())
    if (!b.contains(sym)) throw CliError(str_cat("symbol ", sym, " is not bound; pass --bind ", sym, "=N"));
  Device d = *parse_device(o.device);
  DeviceFactory factory = [d] { return make_device_adapter(d); };
  // The device is made in a child too: this process stays single-threaded for fork().
  Outcome usable = run_isolated(
      [&] {
        absl::StatusOr<std::unique_ptr<DeviceAdapter>> dev = factory();
        return dev.ok() ? Outcome{} : Outcome{Outcome::Kind::Error, status_message(dev.status())};
      },
      o.timeout_s);
  if (usable.kind != Outcome::Kind::Pass) throw CliError(str_cat("--device ", o.device, ": ", usable.to_string()));
  Oracle oracle = [&](const Graph& cand, const Bindings& cb) {
    return run_isolated([&] { return test_against_reference(cand, cb, factory, o.seed); }, o.timeout_s);
  };
  auto log = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  ReduceResult r = check(reduce_graph(g, b, oracle, log));
  std::string binds = str_join(r.bindings, " ", [](const auto& kv) { return str_cat("--bind ", kv.first, "=", kv.second); });
  std::string text = str_cat("# kiln reduce ", o.file, " --device ", o.device, " --seed ", o.seed, ": ",
                             r.failure.to_string(), "\n# reproduce: kiln run FILE --device ", o.device, " --check --seed ",
                             o.seed, binds.empty() ? "" : " ", binds, "\n", print_graph(r.graph));
  std::printf("reduced %zu -> %zu nodes: %d steps kept of %d tests\n", g.num_nodes(), r.graph.num_nodes(), r.steps,
              r.tests);
  if (o.out.empty()) {
    std::fputs(text.c_str(), stdout);
    return;
  }
  std::ofstream f(o.out, std::ios::binary);
  f << text;
  if (!f.flush()) throw CliError(str_cat("-o ", o.out, ": cannot write"));
  std::printf("written to %s\n", o.out.c_str());
}

}  // namespace

void register_reduce(CLI::App& app) {
  auto o = std::make_shared<ReduceCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "reduce", "Shrink a graph that a device computes wrong, or fails or crashes on, to a small one failing the same way");
  cmd->add_option("FILE", o->file, "the failing graph (.kiln or .onnx)")->required();
  add_float_option(cmd, &o->float_type);
  cmd->add_option("--bind", o->binds, "every symbol's value, e.g. --bind B=8 (repeatable); lowered where it still fails");
  cmd->add_option("--device", o->device, "cpu or cuda: the device whose compiled result is checked")
      ->required()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("-o,--output", o->out, "write the reduced graph here (default: print it)");
  cmd->add_option("--seed", o->seed, "the random arguments' seed (default 0)");
  cmd->add_option("--timeout", o->timeout_s, "seconds a test may take before it counts as a hang (default 120)")
      ->check(CLI::PositiveNumber);
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
