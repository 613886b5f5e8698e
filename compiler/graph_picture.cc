#include "compiler/graph_picture.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "compiler/profile.h"
#include "ir/str.h"

extern char** environ;

namespace kiln {
namespace {

namespace fs = std::filesystem;

// A DOT string literal's contents.
std::string esc(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string type_text(const Value* v) { return v->type().to_string(); }

std::string bytes_text(int64_t b) {
  return b < 1024 ? str_cat(b, " B") : b < (1 << 20) ? fmt::format("{:.1f} KiB", b / 1024.0) : fmt::format("{:.1f} MiB", b / 1048576.0);
}

// Where each planned value lives in the arena at the layout's symbol values.
std::map<const Value*, std::string> arena_notes(const PipelineResult& r) {
  std::map<const Value*, std::string> notes;
  absl::StatusOr<ArenaLayout> l = r.state.memory.layout(r.layout_bindings);
  if (!l.ok()) return notes;
  std::string at = str_join(std::map<std::string, int64_t>(r.layout_bindings.begin(), r.layout_bindings.end()), ", ",
                            [](const auto& kv) { return str_cat(kv.first, "=", kv.second); });
  for (size_t i = 0; i < r.state.memory.buffers.size(); ++i) {
    const PlannedBuffer& b = r.state.memory.buffers[i];
    notes[b.value] = str_cat("arena offset ", l->offsets[i], ", ", bytes_text(l->sizes[i]),
                             b.reuses ? str_cat(" (in place of %", b.reuses->name(), ")") : std::string(),
                             at.empty() ? std::string() : str_cat(" at ", at));
  }
  return notes;
}

// Writes one graph's nodes, arguments, outputs and edges into `out`, ids prefixed by
// `p` ("b" or "a"); `groups` (after fusion) puts each group's nodes in a cluster.
class DotWriter {
 public:
  DotWriter(std::string prefix, const Graph& g, const PipelineResult* r) : p_(std::move(prefix)), g_(g), r_(r) {
    if (r_) notes_ = arena_notes(*r_);
  }

  std::string body() {
    std::string s;
    int i = 0;
    for (const Value* v : g_.args()) {
      ids_[v] = str_cat(p_, "a", i);
      s += fmt::format("    {}a{} [id=\"{}a{}\", shape=ellipse, style=filled, fillcolor=\"{}\", label=\"%{}\", tooltip=\"{}\"];\n",
                       p_, i, p_, i, v->is_param() ? "#eeeeee" : "#fff2cc", esc(v->name()),
                       esc(str_cat(v->is_param() ? "parameter" : "input", " %", v->name(), ": ", type_text(v))));
      ++i;
    }
    i = 0;
    std::map<const Node*, std::string> node_lines;
    for (const auto& n : g_.nodes()) {
      std::string id = str_cat(p_, i++);
      for (const Value* v : n->results()) ids_[v] = id;
      std::string tip = str_cat(n->describe());
      for (const Value* v : n->results())
        if (auto it = notes_.find(v); it != notes_.end()) tip += str_cat("\n%", v->name(), ": ", it->second);
      node_lines[n.get()] = fmt::format("[id=\"{}\", shape=box, style=\"rounded,filled\", fillcolor=white, label=\"{}\\n%{}\", tooltip=\"{}\"]",
                                        id, esc(op_name(n->op())), esc(n->result()->name()), esc(tip));
      node_ids_[n.get()] = id;
    }
    std::set<const Node*> placed;
    if (r_) {
      for (size_t gi = 0; gi < r_->state.schedule.groups.size(); ++gi) {
        const KernelGroup& grp = r_->state.schedule.groups[gi];
        bool gemm = grp.kind == KernelGroup::Kind::Gemm;
        std::string kernel = gi < r_->kernels.size() ? r_->kernels[gi].name : str_cat("g", grp.id);
        std::string label = str_cat(gemm ? "GEMM " : "", kernel, grp.weight_prep ? " (weight prep)" : "", "\\n",
                                    esc(fused_ops_name(grp)));
        const char* color = grp.weight_prep ? "#f4f4f4" : gemm ? "#dae8fc" : grp.kind == KernelGroup::Kind::Reduction ? "#e1d5e7" : "#d5e8d4";
        s += fmt::format("    subgraph cluster_{}g{} {{\n      id=\"{}g{}\"; label=\"{}\"; style=\"filled{}\"; fillcolor=\"{}\"; tooltip=\"{}\";\n",
                         p_, grp.id, p_, grp.id, label, gemm ? ",bold" : "", color,
                         esc(str_cat(group_label(grp), gemm ? ": a library GEMM (cuBLASLt, BLAS) where the device has one, "
                                                              "its epilogue fused" : "")));
        for (const std::vector<Node*>* list : {&grp.prologue, &grp.nodes})
          for (const Node* n : *list) {
            s += fmt::format("      {} {};\n", node_ids_[n], node_lines[n]);
            placed.insert(n);
          }
        s += "    }\n";
      }
    }
    for (const auto& n : g_.nodes())
      if (!placed.contains(n.get())) s += fmt::format("    {} {};\n", node_ids_[n.get()], node_lines[n.get()]);
    for (size_t o = 0; o < g_.outputs().size(); ++o)
      s += fmt::format("    {}o{} [id=\"{}o{}\", shape=plaintext, label=\"return %{}\"];\n", p_, o, p_, o,
                       esc(g_.outputs()[o]->name()));
    // Edges: each operand from its producer (or argument), each output to its return node.
    for (const auto& n : g_.nodes())
      for (const Value* v : n->operands()) s += edge(v, node_ids_[n.get()]);
    for (size_t o = 0; o < g_.outputs().size(); ++o) s += edge(g_.outputs()[o], str_cat(p_, "o", o));
    return s;
  }

 private:
  std::string edge(const Value* v, const std::string& to) {
    auto it = ids_.find(v);
    if (it == ids_.end()) return {};
    std::string tip = str_cat("%", v->name(), ": ", type_text(v));
    if (auto n = notes_.find(v); n != notes_.end()) tip += str_cat("\n", n->second);
    return fmt::format("    {} -> {} [label=\"{}\", tooltip=\"{}\"];\n", it->second, to, esc(type_text(v)), esc(tip));
  }

  std::string p_;
  const Graph& g_;
  const PipelineResult* r_;
  std::map<const Value*, std::string> notes_;
  std::map<const Value*, std::string> ids_;
  std::map<const Node*, std::string> node_ids_;
};

constexpr const char* kHeader = "  graph [fontname=Helvetica, fontsize=11, rankdir=TB, newrank=true];\n"
                                "  node [fontname=Helvetica, fontsize=10];\n"
                                "  edge [fontname=Helvetica, fontsize=8, color=\"#666666\"];\n";

std::string one_graph_dot(const std::string& prefix, const Graph& g, const PipelineResult* r) {
  return str_cat("digraph \"", esc(g.name()), "\" {\n", kHeader, DotWriter(prefix, g, r).body(), "}\n");
}

// Runs `dot -Tsvg in -o out`; the exit status, or -1 where `dot` could not start.
int run_dot(const fs::path& in, const fs::path& out) {
  std::string a0 = "dot", a1 = "-Tsvg", a2 = in.string(), a3 = "-o", a4 = out.string();
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "dot", nullptr, nullptr, argv, environ) != 0) return -1;
  int ws = 0;
  if (waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws)) return -2;
  return WEXITSTATUS(ws);
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The part of dot's SVG output from <svg on (no XML prolog or doctype), for inlining.
std::string svg_element(const std::string& svg) {
  size_t at = svg.find("<svg");
  return at == std::string::npos ? svg : svg.substr(at);
}

constexpr const char* kHtmlStyle = R"(body { font-family: Helvetica, Arial, sans-serif; margin: 0; }
header { padding: 8px 12px; background: #333; color: #fff; }
#panes { display: flex; gap: 8px; padding: 8px; }
.pane { flex: 1; overflow: auto; border: 1px solid #ccc; }
.pane h2 { font-size: 14px; margin: 4px 8px; }
#info { position: fixed; bottom: 0; left: 0; right: 0; min-height: 3em; white-space: pre-wrap; font-family: monospace;
        font-size: 12px; background: #fffbe6; border-top: 1px solid #ccc; padding: 6px 12px; }
g.node:hover polygon, g.node:hover path, g.node:hover ellipse { stroke: #d00; stroke-width: 2; })";

// Hovering a node, edge or kernel box shows its details (the tooltip dot wrote) below.
constexpr const char* kHtmlScript = R"(
(function () {
  var info = document.getElementById('info');
  function detail(g) {
    var a = g.querySelector('a');
    var t = a && (a.getAttribute('xlink:title') || a.getAttribute('title'));
    return t || (g.querySelector('title') || {}).textContent || '';
  }
  document.querySelectorAll('g.node, g.edge, g.cluster').forEach(function (g) {
    g.addEventListener('mouseover', function (e) { info.textContent = detail(g); e.stopPropagation(); });
  });
  function count(pane, re) {
    var n = 0;
    document.querySelectorAll('#' + pane + ' g.node').forEach(function (g) { if (re.test(g.id)) n++; });
    return n;
  }
  var kernels = document.querySelectorAll('#after g.cluster').length;
  document.getElementById('summary').textContent = 'before fusion: ' + count('before', /^b[0-9]+$/) +
      ' ops; after fusion: ' + count('after', /^a[0-9]+$/) + ' ops in ' + kernels + ' kernels';
})();
)";

std::atomic<int> temp_counter{0};

std::string html_esc(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

std::string graph_dot(const Graph& before, const PipelineResult& after) {
  return str_cat("digraph \"", esc(before.name()), "\" {\n", kHeader,
                 "  subgraph cluster_before {\n    label=\"before fusion\"; id=\"before\";\n", DotWriter("b", before, nullptr).body(),
                 "  }\n  subgraph cluster_after {\n    label=\"after fusion: one box per kernel\"; id=\"after\";\n",
                 DotWriter("a", after.state.graph, &after).body(), "  }\n}\n");
}

absl::Status graphviz_available() {
  fs::path dir = fs::temp_directory_path() / str_cat("kiln_dot_", ::getpid(), "_", temp_counter++);
  std::error_code ec;
  fs::create_directories(dir, ec);
  std::ofstream(dir / "probe.dot") << "digraph g { a }\n";
  int status = run_dot(dir / "probe.dot", dir / "probe.svg");
  fs::remove_all(dir, ec);
  if (status == -1)
    return absl::FailedPreconditionError(
        "Graphviz's `dot` is not on PATH: it renders --graph's .svg and .html (Debian: apt-get install graphviz); "
        "--graph FILE.dot writes the DOT without it");
  if (status != 0) return absl::InternalError(str_cat("Graphviz's `dot` fails (exit status ", status, ") on a one-node graph"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> render_svg(const std::string& dot_text) {
  fs::path dir = fs::temp_directory_path() / str_cat("kiln_dot_", ::getpid(), "_", temp_counter++);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(str_cat("cannot create ", dir.string(), ": ", ec.message()));
  std::ofstream(dir / "graph.dot", std::ios::binary) << dot_text;
  int status = run_dot(dir / "graph.dot", dir / "graph.svg");
  std::string svg = status == 0 ? read_file(dir / "graph.svg") : std::string();
  fs::remove_all(dir, ec);
  if (status == -1) return graphviz_available();
  if (status != 0 || svg.empty()) return absl::InternalError(str_cat("Graphviz's `dot` failed (exit status ", status, ")"));
  return svg;
}

absl::StatusOr<std::string> graph_html(const Graph& before, const PipelineResult& after) {
  KILN_ASSIGN_OR_RETURN(std::string svg_before, render_svg(one_graph_dot("b", before, nullptr)));
  KILN_ASSIGN_OR_RETURN(std::string svg_after, render_svg(one_graph_dot("a", after.state.graph, &after)));
  std::string title = html_esc(before.name());
  return str_cat("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kiln: ", title, "</title>\n<style>\n",
                 kHtmlStyle, "\n</style></head>\n<body>\n<header>kiln: graph ", title, " &mdash; <span id=\"summary\"></span></header>\n",
                 "<div id=\"panes\">\n<div class=\"pane\" id=\"before\"><h2>before fusion</h2>\n", svg_element(svg_before),
                 "</div>\n<div class=\"pane\" id=\"after\"><h2>after fusion: one box per kernel (blue: GEMM)</h2>\n",
                 svg_element(svg_after), "</div>\n</div>\n<div id=\"info\">hover a node, an edge or a kernel box</div>\n<script>",
                 kHtmlScript, "</script>\n</body></html>\n");
}

}  // namespace kiln
