// The `kiln` command-line tool: parses the command line and dispatches to a subcommand.
// Errors go to stderr as "kiln: <message>", or with --json as one JSON object
// {"error": message, "location": file:line:col or null}; the exit status is 1 either way.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/cli/commands.h"
#include "compiler/json.h"
#include "compiler/version.h"

namespace {

// The edit distance of `a` and `b`: how a mistyped subcommand finds the one meant.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown subcommand 'bnech' (did you mean 'bench'?); the subcommands: bench, compile, ..."
std::string unknown_subcommand(const CLI::App& app, const std::string& given) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
  std::sort(names.begin(), names.end());
  std::string best;
  size_t best_d = 3;  // suggest only a near miss
  for (const std::string& n : names)
    if (size_t d = edit_distance(given, n); d < best_d) {
      best = n;
      best_d = d;
    }
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  return "unknown subcommand '" + given + "'" + (best.empty() ? "" : " (did you mean '" + best + "'?)") +
         "; the subcommands: " + list + " (kiln --help says what each does)";
}

// The message's leading location, where it has one ("model.kiln:3:14: ..."), for JSON.
nlohmann::ordered_json location_of(const std::string& message) {
  static const std::regex located(R"(^([^:\s]+:\d+:\d+):)");
  std::smatch m;
  if (std::regex_search(message, m, located)) return m[1].str();
  return nullptr;
}

int fail(const std::string& message, bool json) {
  if (json) {
    nlohmann::ordered_json j = {{"error", message}, {"location", location_of(message)}};
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", kiln::json_text(j).c_str());
  } else {
    std::fprintf(stderr, "kiln: %s\n", message.c_str());
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln: a graph compiler for deep-learning inference graphs"};
  app.require_subcommand(1);
  kiln::cli::register_dump(app);
  kiln::cli::register_run(app);
  kiln::cli::register_compile(app);
  kiln::cli::register_bench(app);
  kiln::cli::register_generate(app);
  kiln::cli::register_onnx_conformance(app);
  kiln::cli::register_reduce(app);
  kiln::cli::register_shard(app);
  app.set_version_flag("--version", [] {
    std::string text = kiln::version_text(kiln::version_info());
    text.pop_back();  // CLI11 ends the line
    return text;
  },
                       "print kiln's version, the commit it was built from, the CUDA, NVRTC and LLVM versions it "
                       "uses and the devices it finds");
  bool json = std::any_of(argv + 1, argv + argc, [](const char* a) { return std::strcmp(a, "--json") == 0; });
  if (argc > 1 && argv[1][0] != '-' &&
      app.get_subcommands([&](const CLI::App* sub) { return sub->check_name(argv[1]); }).empty())
    return fail(unknown_subcommand(app, argv[1]), json);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (!json || e.get_exit_code() == 0) {
      int code = app.exit(e);  // prints help or the version (code 0) or the usage error
      return code == 0 ? 0 : 1;
    }
    return fail(e.what(), json);
  } catch (const kiln::cli::CliError& e) {
    return fail(e.what(), json);
  } catch (const std::bad_alloc&) {
    fail("out of memory", json);
    return 2;
  } catch (const std::exception& e) {  // a bug: still a message and a failing status, not an abort
    fail(std::string("internal error: ") + e.what(), json);
    return 2;
  }
  return 0;
}
