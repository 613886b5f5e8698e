// `kiln shard FILE --ranks N --split NAME=AXIS ... [--llama] [--check --bind S=N ... [--device D]]`:
// the graph every rank of an N-rank tensor-parallel group runs (passes/shard.h), headed by the
// arguments split and the places where a value had to be made whole; with --check, the N
// ranks against the whole graph (on the reference evaluator) on random inputs: on the
// reference evaluator (evaluate_ranks), or compiled as a RankGroup (compiler/parallel.h) on
// the CPU (host group, a thread per rank) or on CUDA (NCCL, a GPU per rank).
#include <cstdio>
#include <string>
#include <vector>

#include "compiler/cli/commands.h"
#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "passes/shard.h"

namespace kiln::cli {
namespace {

struct ShardCliOptions {
  std::string file;
  int64_t ranks = 2;
  std::vector<std::string> splits, binds;
  std::string device = "reference", mode = "default";
  bool llama = false, paged = false, check = false;
  uint64_t seed = 0;
};

// A Llama step's kv heads: the kv-head axis of its first k cache (0 without one).
int64_t kv_heads_of(const Graph& g, bool paged) {
  const Value* c = g.find("k_cache.0");
  const size_t axis = paged ? 2 : 1;
  return c && c->shape().size() > axis ? c->shape()[axis].constant().value_or(0) : 0;
}

ShardPlan plan_of(const ShardCliOptions& o, const Graph& g) {
  ShardPlan plan{o.ranks, {}};
  for (const std::string& s : o.splits) {
    std::optional<std::pair<std::string, int64_t>> rule = parse_assignment(s);
    if (!rule) throw CliError(str_cat("--split ", s, ": expected NAME=AXIS, e.g. wq=0"));
    plan.rules.push_back({rule->first, rule->second});
  }
  if (o.llama)
    for (ShardRule& r : llama_shard_plan(o.ranks, o.paged, true, kv_heads_of(g, o.paged)).rules)
      plan.rules.push_back(std::move(r));
  return plan;
}

// Every rank's outputs, from a RankGroup on o.device (its communicator named) on the shards
// of `whole`.
std::vector<std::vector<HostTensor>> run_group(const ShardCliOptions& o, const ShardedGraph& s,
                                               const TensorMap& whole) {
  Device device = *parse_device(o.device);
  if (absl::Status st = device_available(device); !st.ok())
    throw CliError(str_cat("--device ", o.device, ": ", status_message(st)));
  std::unique_ptr<RankGroup> group =
      check(RankGroup::compile(s.graph, o.ranks, {.compile = {.mode = *parse_mode(o.mode), .device = device}}));
  absl::StatusOr<std::vector<std::vector<HostTensor>>> got = group->run_host(check(shard_arguments(s, o.ranks, whole)));
  if (!got.ok()) throw CliError(str_cat("check: ", status_message(got.status())));
  std::printf("check: %lld ranks compiled for %s (%s), %s\n", static_cast<long long>(o.ranks), o.device.c_str(),
              o.mode.c_str(), group->communicator(0).describe().c_str());
  return *std::move(got);
}

void run(const ShardCliOptions& o) {
  if (o.paged && !o.llama) throw CliError("--paged goes with --llama");
  Graph g = load_verified(o.file);
  ShardedGraph s = check(shard(g, plan_of(o, g)));
  std::printf("# %lld ranks; split:", static_cast<long long>(o.ranks));
  if (s.split.empty()) std::printf(" none");
  for (const auto& [name, sp] : s.split) {
    std::printf(" %%%s along %lld", name.c_str(), static_cast<long long>(sp.axis));
    if (sp.groups != o.ranks) std::printf(" in %lld groups", static_cast<long long>(sp.groups));
  }
  std::printf("\n");
  for (const std::string& n : s.notes) std::printf("# made whole: %s\n", n.c_str());
  std::fputs(print_graph(s.graph).c_str(), stdout);
  if (!o.check) return;
  TensorMap args = random_inputs(g, parse_binds(g, o.binds), o.seed);
  ShardedRun run = check(evaluate_sharded(g, s, o.ranks, args));
  if (o.device != "reference") run.got = run_group(o, s, args);
  for (int64_t r = 0; r < o.ranks; ++r) {
    double worst = 0;
    for (size_t i = 0; i < run.expected[r].size(); ++i) {
      const HostTensor& want = run.expected[r][i];
      Comparison c = compare_tensors(want, run.got[r][i], default_tolerance(want.dtype()));
      if (!c.ok)
        throw CliError(str_cat("check: rank ", r, "'s output %", g.outputs()[i]->name(),
                               " differs from the whole graph's: ", c.message));
      worst = std::max(worst, c.max_abs_err);
    }
    std::printf("check: rank %lld matches the whole graph (max abs err %.3g)\n", static_cast<long long>(r), worst);
  }
}

}  // namespace

void register_shard(CLI::App& app) {
  auto o = std::make_shared<ShardCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "shard", "Split a graph across the ranks of a tensor-parallel group and print the graph each rank runs");
  cmd->add_option("FILE", o->file, "the graph to split (.kiln or .onnx)")->required();
  cmd->add_option("--ranks", o->ranks, "ranks in the group (default 2)")->check(CLI::PositiveNumber);
  cmd->add_option("--split", o->splits,
                  "NAME=AXIS: split the arguments NAME matches ('*': any run of characters) along AXIS "
                  "(repeatable; the first rule that matches decides)");
  cmd->add_flag(
      "--llama", o->llama,
      "then Hugging Face Llama's rules: q/k/v/gate/up projections by output features, o/down by input "
      "features, k_cache.*/v_cache.* by kv heads (fewer kv heads than ranks: each on ranks / kv heads ranks)");
  cmd->add_flag("--paged", o->paged, "with --llama: the caches are paged, [NB, block, KVH, D]");
  cmd->add_flag("--check", o->check,
                "run the ranks on the reference evaluator against the whole graph on random inputs (--bind every "
                "symbol)");
  cmd->add_option("--bind", o->binds, "a symbol's value for --check, e.g. --bind B=2 (repeatable)");
  cmd->add_option("--device", o->device,
                  "what runs the ranks for --check: reference (default: the reference evaluator), cpu (compiled, a "
                  "thread per rank) or cuda (compiled, NCCL, a GPU per rank)")
      ->check(CLI::IsMember({"reference", "cpu", "cuda"}));
  cmd->add_option("--mode", o->mode, "compile mode with --device cpu or cuda: default, reduce-overhead or max-autotune")
      ->check(CLI::IsMember({"default", "reduce-overhead", "max-autotune"}));
  cmd->add_option("--seed", o->seed, "the random inputs' seed for --check (default 0)");
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
