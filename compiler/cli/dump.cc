// `kiln dump FILE`: reads, verifies and prints a graph's IR.
#include <cstdio>
#include <string>

#include "compiler/cli/commands.h"
#include "ir/printer.h"

namespace kiln::cli {

void register_dump(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto float_type = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("dump", "Read a graph (.kiln or .onnx), verify it and print its IR");
  cmd->add_option("FILE", *file, "the graph to read (.kiln or .onnx)")->required();
  add_float_option(cmd, float_type.get());
  cmd->callback([file, float_type] {
    std::fputs(print_graph(load_verified(*file, *float_type)).c_str(), stdout);
  });
}

}  // namespace kiln::cli
