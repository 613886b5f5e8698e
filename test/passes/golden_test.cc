// Golden tests: each test/passes/golden/*.kiln file is IR with directives in comments,
//   # RUN: <pass>      print the IR after that pass of the default pipeline ("lower": the
//                      kernel IR; plan_memory also prints the memory plan)
//   # BIND: B=4 T=3    symbol values for the memory plan's layout (optional)
//   # CHECK...         FileCheck lines matched against that output,
// and also runs through the whole pipeline against the reference evaluator.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test/fuzz/check.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The text after "# <key>:" on its line, or "".
std::string directive(const std::string& text, const std::string& key) {
  size_t at = text.find("# " + key + ":");
  if (at == std::string::npos) return "";
  at += key.size() + 3;
  size_t end = text.find('\n', at);
  std::string v = text.substr(at, end - at);
  v.erase(0, v.find_first_not_of(' '));
  v.erase(v.find_last_not_of(' ') + 1);
  return v;
}

Bindings parse_bind(const std::string& spec) {
  Bindings b;
  std::istringstream in(spec);
  std::string item;
  while (in >> item) {
    size_t eq = item.find('=');
    REQUIRE(eq != std::string::npos);
    b[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
  }
  return b;
}

}  // namespace

TEST_CASE("golden files: a pass's printed output matches the CHECK lines", "[golden]") {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(KILN_GOLDEN_DIR))
    if (e.path().extension() == ".kiln") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 15);
  for (const std::filesystem::path& file : files) {
    DYNAMIC_SECTION(file.filename().string()) {
      std::string text = read_file(file);
      std::string pass = directive(text, "RUN");
      REQUIRE(!pass.empty());
      REQUIRE(text.find("CHECK") != std::string::npos);
      Graph g = parse_or_fail(text, file.string());
      PipelineOptions opts;
      opts.bindings = parse_bind(directive(text, "BIND"));
      opts.print_after = pass;
      std::string printed;
      opts.print = [&](const std::string& s) { printed += s; };
      compile_or_fail(g, opts);
      REQUIRE(printed.rfind("# after " + pass + "\n", 0) == 0);
      require_checks(printed, text);
      require_ok(check_compiled_matches_reference(g, test_bindings(g), 1));
      require_ok(check_fused_matches_unfused(g, test_bindings(g), 1));
    }
  }
}
