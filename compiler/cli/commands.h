// The subcommands of the `kiln` command-line tool, each defined in its own file.
//
// To add a subcommand `foo`: write compiler/cli/foo.cc defining `void register_foo(CLI::App&
// app)`, which calls app.add_subcommand("foo", "one-line description"), declares its options
// and sets a callback doing the work; declare it below; add foo.cc to kiln_cli in
// compiler/CMakeLists.txt; call it in main.cc. Callbacks report failure by throwing
// CliError: main prints "kiln: <message>" on stderr and exits with status 1, so a command
// must finish every check before it writes any file.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace kiln::cli {

class CliError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void register_dump(CLI::App& app);     // kiln dump FILE
void register_run(CLI::App& app);      // kiln run FILE [--bind S=N ...] [--seed N] [--inputs DIR] ...
void register_compile(CLI::App& app);  // kiln compile FILE [--bind S=N ...] [--dump-dir D] ...
void register_onnx_conformance(CLI::App& app);  // kiln onnx-conformance [DIR] [--device D]
void register_bench(CLI::App& app);    // kiln bench FILE [--bind S=N ...] [--profile] [--json] ...
void register_generate(CLI::App& app);  // kiln generate --config X [--checkpoint DIR] [--check] ... (models/)
void register_reduce(CLI::App& app);    // kiln reduce FILE --bind S=N ... --device D [-o OUT]
void register_shard(CLI::App& app);     // kiln shard FILE --ranks N --split NAME=AXIS ... [--llama] [--check]

// Shared by the subcommands (common.cc).
template <typename T>
T check(absl::StatusOr<T> v) {
  if (!v.ok()) throw CliError(status_message(v.status()));
  return *std::move(v);
}
// Reads FILE by its extension and verifies it; errors are located (file:line:col or node).
// `float_type` "bf16" or "f16" stores every f32 value in that type (passes/convert_float.h);
// empty keeps the graph's types.
Graph load_verified(const std::string& file, const std::string& float_type = {});
// The --float option of the commands that read a graph: bf16 or f16.
void add_float_option(CLI::App* cmd, std::string* float_type);
// NAME=INTEGER (the integer may carry a sign); nullopt when `s` is not of that form.
std::optional<std::pair<std::string, int64_t>> parse_assignment(std::string_view s);
// --bind S=N values: well-formed, each symbol of the graph once, within its bounds.
Bindings parse_binds(const Graph& g, const std::vector<std::string>& binds);
// The inputs `kiln run --seed` draws: uniform in [-1, 1), 2-D parameters scaled by
// 1/sqrt(fan-in). Every symbol must be bound; the error suggests --bind (and `alternative`).
TensorMap random_inputs(const Graph& g, const Bindings& bindings, uint64_t seed, std::string_view alternative = {});

}  // namespace kiln::cli
