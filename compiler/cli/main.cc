// The `kiln` command-line tool: parses the command line and dispatches to a subcommand.
#include <cstdio>
#include <exception>
#include <new>

#include "compiler/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: a graph compiler for deep-learning inference graphs"};
  app.require_subcommand(1);
  kiln::cli::register_dump(app);
  kiln::cli::register_run(app);
  kiln::cli::register_compile(app);
  kiln::cli::register_onnx_conformance(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help (code 0) or the usage error
    return code == 0 ? 0 : 1;
  } catch (const kiln::cli::CliError& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kiln: out of memory\n");
    return 2;
  } catch (const std::exception& e) {  // a bug: still a message and a failing status, not an abort
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
