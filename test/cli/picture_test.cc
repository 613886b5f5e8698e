// `kiln compile --graph`: the DOT parses with Graphviz and has one node per op before and
// after fusion, each fused op inside its kernel group's box (the groups read from the
// pipeline's own printed schedule); the SVG renders the same nodes; the HTML, loaded in a
// headless browser, runs its script and shows them. Tests that need Graphviz or a browser
// say so and stop where one is missing, or fail where KILN_TEST_REQUIRE_TOOLS=1 (CI: .ci/run,
// whose dev.sh installs both).
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>

#include "ir/parser.h"
#include "ir/str.h"
#include "test/cli/kiln_cli.h"
#include "test/cli/process.h"
#include "test/common/catch_helpers.h"

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
  return %n, %h
}
)";

// Where a tool the test needs is missing: a failure where CI asks for every tool
// (KILN_TEST_REQUIRE_TOOLS=1, .ci/run), else a printed skip.
bool missing_tool(const std::string& why) {
  if (const char* req = std::getenv("KILN_TEST_REQUIRE_TOOLS"); req && std::string(req) == "1") FAIL(why);
  WARN("skipped: " << why);
  return true;
}

// The graph after the passes as the pipeline prints it (--print-after plan_memory): per node
// in order, its group (-1: none, a scalar constant), and which groups are GEMMs.
struct AfterFusion {
  std::vector<int> group_of;
  std::set<int> gemms;
  int groups = 0;
};

AfterFusion after_fusion(const std::string& printed) {
  AfterFusion a;
  std::string ir = printed.substr(0, printed.find("\n}\n") + 3);
  ir = ir.substr(ir.find("graph "));
  Graph g = parse_or_fail(ir);
  static const std::regex node_line(R"(^  %\S+ = [a-z_0-9]+\(.*?(# group ([0-9]+) \(([a-z -]+)\))?$)");
  std::stringstream lines(ir);
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (!std::regex_match(l, m, node_line)) continue;
    int group = m[2].matched ? std::stoi(m[2].str()) : -1;
    a.group_of.push_back(group);
    if (m[3].str() == "gemm") a.gemms.insert(group);
    a.groups = std::max(a.groups, group + 1);
  }
  REQUIRE(a.group_of.size() == g.num_nodes());
  return a;
}

// Node ids by pattern in Graphviz's plain output of `dot_file` (what it parsed).
std::vector<std::string> plain_nodes(const std::string& dot, const std::string& dot_file, const TempDir& dir,
                                     const std::regex& id) {
  Run r = run_binary(dot, {"-Tplain", dot_file}, dir);
  require_status(r, 0);
  std::vector<std::string> ids;
  std::stringstream lines(r.out);
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (std::regex_search(l, m, std::regex("^node (\\S+) ")) && std::regex_match(m[1].str(), id)) ids.push_back(m[1].str());
  }
  return ids;
}

}  // namespace

TEST_CASE("kiln compile --graph FILE.dot: one node per op, fused ops inside their kernel's box", "[cli][graph]") {
  std::string dot = find_in_path("dot");
  if (dot.empty() && missing_tool("Graphviz's dot is not on PATH (apt-get install graphviz)")) return;
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  std::string out = (dir / "mlp.dot").string();
  Run r = kiln_cli({"compile", (dir / "mlp.kiln").string(), "--bind", "B=8", "--graph", out, "--print-after", "plan_memory"}, dir);
  require_status(r, 0);
  CHECK(r.out.find("graph before and after fusion drawn in " + out + "\n") != std::string::npos);
  AfterFusion after = after_fusion(r.err);
  size_t before_ops = parse_or_fail(kMlp).num_nodes();
  CHECK(plain_nodes(dot, out, dir, std::regex("b[0-9]+")).size() == before_ops);
  CHECK(plain_nodes(dot, out, dir, std::regex("a[0-9]+")).size() == after.group_of.size());
  CHECK(plain_nodes(dot, out, dir, std::regex("[ab]a[0-9]+")).size() == 2 * 4);  // the arguments, twice
  CHECK(plain_nodes(dot, out, dir, std::regex("[ab]o[0-9]+")).size() == 2 * 2);  // the outputs, twice

  // Each kernel group's cluster holds exactly its nodes; GEMM groups are marked.
  std::string text = read_text(out);
  std::map<int, std::set<std::string>> want, got;
  for (size_t n = 0; n < after.group_of.size(); ++n)
    if (after.group_of[n] >= 0) want[after.group_of[n]].insert(str_cat("a", n));
  static const std::regex cluster(R"re(subgraph cluster_ag([0-9]+) \{\n      id="ag[0-9]+"; label="([^"]*)";[^\n]*\n((      a[0-9]+ \[[^\n]*\n)*)    \})re");
  static const std::regex member("      (a[0-9]+) \\[");
  for (std::sregex_iterator it(text.begin(), text.end(), cluster), end; it != end; ++it) {
    int g = std::stoi((*it)[1].str());
    INFO("group " << g << ": " << (*it)[2].str());
    CHECK((*it)[2].str().starts_with("GEMM ") == after.gemms.contains(g));
    std::string body = (*it)[3].str();
    for (std::sregex_iterator n(body.begin(), body.end(), member); n != std::sregex_iterator(); ++n)
      got[g].insert((*n)[1].str());
  }
  CHECK(got == want);
  CHECK(static_cast<int>(got.size()) == after.groups);
  // Edges carry dtype and shape; planned values their arena offset at the bindings.
  CHECK(text.find("label=\"f32[B, 24]\"") != std::string::npos);
  CHECK(std::regex_search(text, std::regex(R"(arena offset [0-9]+, [0-9.]+ [KM]?i?B( \(in place of %\w+\))? at B=8)")));
}

TEST_CASE("kiln compile --graph FILE.svg renders the same nodes, and without dot a clear error and no file", "[cli][graph]") {
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  std::string out = (dir / "mlp.svg").string();
  Run missing = run_binary(KILN_BINARY, {"compile", (dir / "mlp.kiln").string(), "--graph", out}, dir,
                           {{"PATH", (dir / "empty").string()}});
  require_status(missing, 1);
  CHECK(missing.err.find("kiln: --graph " + out + ": Graphviz's `dot` is not on PATH") == 0);
  CHECK(!std::filesystem::exists(out));
  Run bad = kiln_cli({"compile", (dir / "mlp.kiln").string(), "--graph", (dir / "mlp.png").string()}, dir);
  require_status(bad, 1);
  CHECK(bad.err.find("--graph takes a .dot, .svg or .html file") != std::string::npos);
  if (find_in_path("dot").empty() && missing_tool("Graphviz's dot is not on PATH (apt-get install graphviz)")) return;
  Run r = kiln_cli({"compile", (dir / "mlp.kiln").string(), "--graph", out}, dir);
  require_status(r, 0);
  std::string svg = read_text(out);
  CHECK(svg.find("<svg") != std::string::npos);
  size_t nodes = 0;
  static const std::regex node(R"re(<g id="b[0-9]+" class="node">)re");
  for (std::sregex_iterator it(svg.begin(), svg.end(), node), end; it != end; ++it) ++nodes;
  CHECK(nodes == parse_or_fail(kMlp).num_nodes());
}

TEST_CASE("kiln compile --graph FILE.html in a headless browser: both panes, every node, the script ran", "[cli][graph]") {
  std::string browser;
  for (const char* b : {"chromium", "chromium-browser", "google-chrome"})
    if (browser.empty()) browser = find_in_path(b);
  if ((find_in_path("dot").empty() || browser.empty()) &&
      missing_tool("needs Graphviz's dot and a headless Chromium on PATH (apt-get install graphviz chromium)"))
    return;
  TempDir dir;
  write_text(dir / "mlp.kiln", kMlp);
  std::string out = (dir / "mlp.html").string();
  Run r = kiln_cli({"compile", (dir / "mlp.kiln").string(), "--bind", "B=8", "--graph", out, "--print-after", "plan_memory"}, dir);
  require_status(r, 0);
  AfterFusion after = after_fusion(r.err);
  std::string html = read_text(out);
  // Self-contained: nothing to fetch (the only URLs are XML namespace names).
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
  Run dom = run_binary(browser, {"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + (dir / "profile").string(),
                                 "--dump-dom", "file://" + out},
                       dir);
  require_status(dom, 0);
  INFO(dom.out.substr(0, 400));
  // The page's script counted the nodes the browser has in each pane.
  CHECK(dom.out.find(str_cat("<span id=\"summary\">before fusion: ", parse_or_fail(kMlp).num_nodes(),
                             " ops; after fusion: ", after.group_of.size(), " ops in ", after.groups, " kernels</span>")) !=
        std::string::npos);
  size_t before = 0, fused = 0;
  static const std::regex node(R"re(<g id="([ab])[0-9]+" class="node">)re");
  for (std::sregex_iterator it(dom.out.begin(), dom.out.end(), node), end; it != end; ++it)
    ((*it)[1].str() == "b" ? before : fused)++;
  CHECK(before == parse_or_fail(kMlp).num_nodes());
  CHECK(fused == after.group_of.size());
}
