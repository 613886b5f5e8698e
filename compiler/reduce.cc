#include "compiler/reduce.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/status.h"
#include "ir/str.h"
#include "ir/verifier.h"

namespace kiln {

std::string_view outcome_kind_name(Outcome::Kind k) {
  switch (k) {
    case Outcome::Kind::Pass: return "pass";
    case Outcome::Kind::Invalid: return "invalid";
    case Outcome::Kind::Mismatch: return "mismatch";
    case Outcome::Kind::Error: return "error";
    case Outcome::Kind::Crash: return "crash";
    case Outcome::Kind::Timeout: return "timeout";
  }
  return "?";
}

namespace {

// An error message without what shrinking a graph changes: value names and numbers (shapes,
// positions, locations).
std::string error_shape(std::string_view m) {
  std::string out;
  for (size_t i = 0; i < m.size();) {
    char c = m[i];
    if (c == '%' || std::isdigit(static_cast<unsigned char>(c))) {
      out += c == '%' ? '%' : '#';
      ++i;
      while (i < m.size() && (std::isalnum(static_cast<unsigned char>(m[i])) || m[i] == '_' || m[i] == '.')) ++i;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

}  // namespace

bool Outcome::same_failure(const Outcome& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case Kind::Error: return error_shape(detail) == error_shape(o.detail);
    case Kind::Crash: return detail == o.detail;
    default: return true;
  }
}

std::string Outcome::to_string() const {
  return detail.empty() ? std::string(outcome_kind_name(kind)) : str_cat(outcome_kind_name(kind), ": ", detail);
}

Outcome test_against_reference(const Graph& g, const Bindings& b, const DeviceFactory& make_device, uint64_t seed) {
  using K = Outcome::Kind;
  TensorMap args = random_args(g, b, seed);
  scale_weights_by_fan_in(g, args);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) return {K::Invalid, str_cat("the reference evaluator: ", status_message(want.status()))};
  absl::StatusOr<std::unique_ptr<DeviceAdapter>> device = make_device();
  if (!device.ok()) return {K::Error, str_cat("device: ", status_message(device.status()))};
  absl::StatusOr<CompiledGraph> cg = compile(g, *std::move(device));
  if (!cg.ok()) return {K::Error, str_cat("compile: ", status_message(cg.status()))};
  absl::StatusOr<std::vector<HostTensor>> got = run_host(*cg, args);
  if (!got.ok()) return {K::Error, str_cat("call: ", status_message(got.status()))};
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
    if (!c.ok) return {K::Mismatch, str_cat("%", g.outputs()[i]->name(), ": ", c.message)};
  }
  return {K::Pass, ""};
}

Outcome run_isolated(const std::function<Outcome()>& test, double timeout_s) {
  using K = Outcome::Kind;
  int fds[2];
  if (pipe(fds) != 0) return {K::Error, str_cat("pipe: ", std::strerror(errno))};
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {K::Error, str_cat("fork: ", std::strerror(errno))};
  }
  if (pid == 0) {  // the child: one byte of kind, then the detail
    close(fds[0]);
    Outcome o = test();
    std::string msg = std::string(1, static_cast<char>(o.kind)) + o.detail.substr(0, 16384);
    for (size_t at = 0; at < msg.size();) {
      ssize_t n = write(fds[1], msg.data() + at, msg.size() - at);
      if (n <= 0) _exit(3);
      at += static_cast<size_t>(n);
    }
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(0);
  }
  close(fds[1]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string data;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      timed_out = true;
      break;
    }
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of file: the child is done or died
    data.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return {K::Timeout, fmt::format("no answer within {:g} s", timeout_s)};
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    return {K::Crash, abbrev ? str_cat("SIG", abbrev) : str_cat("signal ", WTERMSIG(status))};
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || data.empty() ||
      static_cast<uint8_t>(data[0]) > static_cast<uint8_t>(K::Timeout))
    return {K::Crash, str_cat("exit status ", WIFEXITED(status) ? WEXITSTATUS(status) : -1, " without an outcome")};
  return {static_cast<K>(data[0]), data.substr(1)};
}

namespace {

// A change to a graph: the values it returns, the nodes whose results become inputs of the
// same names, the parameters whose data is dropped (inputs then), and the symbol values.
struct Plan {
  std::vector<const Value*> outputs;
  absl::flat_hash_set<const Node*> cut;
  absl::flat_hash_set<const Value*> to_input;
};

// The graph a plan makes of `g`: what the outputs need, arguments no longer read dropped; an
// error when it does not verify.
absl::StatusOr<Graph> build(const Graph& g, const Plan& p) {
  absl::flat_hash_set<const Value*> needed(p.outputs.begin(), p.outputs.end());
  for (auto it = g.nodes().rbegin(); it != g.nodes().rend(); ++it) {
    const Node& n = **it;
    bool live = std::any_of(n.results().begin(), n.results().end(), [&](const Value* r) { return needed.contains(r); });
    if (live && !p.cut.contains(&n)) needed.insert(n.operands().begin(), n.operands().end());
  }
  Graph out(g.name());
  absl::flat_hash_map<const Value*, Value*> map;
  for (const Value* a : g.args()) {
    if (!needed.contains(a)) continue;
    absl::StatusOr<Value*> v = a->is_param() && !p.to_input.contains(a) ? out.add_param(a->name(), a->type(), a->data())
                                                                          : out.add_input(a->name(), a->type(), a->is_state());
    KILN_RETURN_IF_ERROR(v.status());
    map[a] = *v;
  }
  for (const auto& n : g.nodes())
    if (p.cut.contains(n.get()))
      for (const Value* r : n->results())
        if (needed.contains(r)) {
          KILN_ASSIGN_OR_RETURN(map[r], out.add_input(r->name(), r->type()));
        }
  for (const auto& n : g.nodes()) {
    if (p.cut.contains(n.get()) ||
        std::none_of(n->results().begin(), n->results().end(), [&](const Value* r) { return needed.contains(r); }))
      continue;
    std::vector<Value*> operands;
    for (const Value* v : n->operands()) operands.push_back(map.at(v));
    std::vector<std::string> names;
    for (const Value* r : n->results()) names.push_back(r->name());
    KILN_ASSIGN_OR_RETURN(Node * c, out.add_node(n->op(), operands, n->attrs(), names, n->loc()));
    for (size_t i = 0; i < n->results().size(); ++i) map[n->result(i)] = c->result(i);
  }
  std::vector<Value*> outs;
  for (const Value* v : p.outputs) outs.push_back(map.at(v));
  out.set_outputs(outs);
  for (const std::string& s : out.symbols())
    if (g.symbol_bounds().contains(s)) KILN_RETURN_IF_ERROR(out.set_symbol_bounds(s, g.symbol_bounds().at(s)));
  KILN_RETURN_IF_ERROR(verify(out));
  return out;
}

std::string names(const std::vector<std::string>& v) {
  return str_join(v, ", ", [](const std::string& s) { return "%" + s; });
}

class Reducer {
 public:
  Reducer(const Graph& g, const Bindings& b, const Oracle& oracle, const std::function<void(const std::string&)>& log)
      : cur_(g.clone()), bindings_(b), oracle_(oracle), log_(log) {}

  absl::StatusOr<ReduceResult> run() {
    target_ = oracle_(cur_, bindings_);
    ++tests_;
    if (!target_.fails())
      return invalid_argument("graph ", cur_.name(), " does not fail (", target_.to_string(), "): nothing to reduce");
    say(str_cat("graph ", cur_.name(), ": ", cur_.num_nodes(), " nodes, ", target_.to_string()));
    last_ = target_;
    for (bool changed = true; changed;) {
      changed = drop_outputs();
      changed |= raise_outputs();
      changed |= cut_nodes();
      changed |= params_to_inputs();
      changed |= lower_symbols();
    }
    return ReduceResult{std::move(cur_), std::move(bindings_), last_, tests_, steps_};
  }

 private:
  void say(const std::string& line) {
    if (log_) log_(line);
  }

  Plan keep_all() const { return {std::vector<const Value*>(cur_.outputs().begin(), cur_.outputs().end()), {}, {}}; }

  // Tests the plan's graph (under `b`); keeps it when it fails as the original did.
  bool attempt(const Plan& p, const std::string& what, const Bindings* b = nullptr) {
    absl::StatusOr<Graph> g = build(cur_, p);
    if (!g.ok()) return false;
    Bindings nb;
    for (const std::string& s : g->symbols()) {
      const Bindings& from = b ? *b : bindings_;
      if (auto it = from.find(s); it != from.end()) nb[s] = it->second;
    }
    Outcome o = oracle_(*g, nb);
    ++tests_;
    if (!o.fails() || !o.same_failure(target_)) return false;
    cur_ = *std::move(g);
    bindings_ = std::move(nb);
    last_ = o;
    ++steps_;
    say(str_cat("step ", steps_, ": ", what, ": ", cur_.num_nodes(), " nodes, ", o.to_string()));
    return true;
  }

  // Fewer outputs: chunks of halving size, as delta debugging does.
  bool drop_outputs() {
    bool any = false;
    for (size_t chunk = cur_.outputs().size() / 2; chunk >= 1; chunk /= 2)
      for (size_t start = 0; start < cur_.outputs().size() && cur_.outputs().size() > 1;) {
        Plan p = keep_all();
        size_t end = std::min(start + chunk, p.outputs.size());
        std::vector<std::string> dropped;
        for (size_t i = start; i < end; ++i) dropped.push_back(p.outputs[i]->name());
        p.outputs.erase(p.outputs.begin() + static_cast<std::ptrdiff_t>(start), p.outputs.begin() + static_cast<std::ptrdiff_t>(end));
        if (!p.outputs.empty() && attempt(p, str_cat("dropped output ", names(dropped)))) any = true;
        else start += chunk;
      }
    return any;
  }

  // An output moved up to an operand of the node computing it: what is downstream of the
  // failure goes.
  bool raise_outputs() {
    bool any = false;
    for (size_t i = 0; i < cur_.outputs().size(); ++i) {
      for (bool moved = true; moved;) {
        moved = false;
        const Value* v = cur_.outputs()[i];
        if (!v->producer()) break;
        std::vector<const Value*> operands(v->producer()->operands().begin(), v->producer()->operands().end());
        for (const Value* u : operands) {
          if (!u->producer() || std::find(cur_.outputs().begin(), cur_.outputs().end(), u) != cur_.outputs().end())
            continue;
          Plan p = keep_all();
          p.outputs[i] = u;
          std::string what = str_cat("returned %", u->name(), " instead of %", v->name());
          if (attempt(p, what)) {
            moved = any = true;
            break;
          }
        }
      }
    }
    return any;
  }

  // Results replaced by inputs: a node's inputs, and whatever only it read, go. Chunks of
  // nodes in node order, halving down to single nodes; constants too (a scalar input then).
  bool cut_nodes() {
    bool any = false;
    auto candidates = [&] {
      std::vector<std::string> out;
      absl::flat_hash_set<const Value*> returned(cur_.outputs().begin(), cur_.outputs().end());
      for (const auto& n : cur_.nodes())
        if (std::none_of(n->results().begin(), n->results().end(), [&](const Value* r) { return returned.contains(r); }))
          out.push_back(n->result()->name());
      return out;
    };
    for (size_t chunk = std::max<size_t>(candidates().size() / 2, 1); chunk >= 1; chunk /= 2) {
      for (size_t start = 0;;) {
        std::vector<std::string> c = candidates();
        if (start >= c.size()) break;
        Plan p = keep_all();
        std::vector<std::string> cut(c.begin() + static_cast<std::ptrdiff_t>(start),
                                     c.begin() + static_cast<std::ptrdiff_t>(std::min(start + chunk, c.size())));
        for (const std::string& name : cut) p.cut.insert(cur_.find(name)->producer());
        if (attempt(p, str_cat("replaced ", names(cut), " by ", cut.size() == 1 ? "an input" : "inputs"))) any = true;
        else start += chunk;
      }
    }
    return any;
  }

  bool params_to_inputs() {
    bool any = false;
    std::vector<std::string> with_data;
    for (const Value* a : cur_.args())
      if (a->is_param() && a->data()) with_data.push_back(a->name());
    for (const std::string& name : with_data) {
      Plan p = keep_all();
      p.to_input.insert(cur_.find(name));
      any |= attempt(p, str_cat("parameter %", name, " without its data (random, as an input)"));
    }
    return any;
  }

  // Each symbol at 1, else at half its value.
  bool lower_symbols() {
    bool any = false;
    std::vector<std::string> syms = cur_.symbols();
    for (const std::string& s : syms) {
      for (bool lowered = true; lowered;) {
        lowered = false;
        auto it = bindings_.find(s);
        if (it == bindings_.end()) break;
        int64_t v = it->second, lo = cur_.symbol_info(s).min;
        for (int64_t to : {lo, v / 2}) {
          if (to >= v || to < lo) continue;
          Bindings b = bindings_;
          b[s] = to;
          if (attempt(keep_all(), str_cat(s, "=", to, " instead of ", v), &b)) {
            lowered = any = true;
            break;
          }
        }
      }
    }
    return any;
  }

  Graph cur_;
  Bindings bindings_;
  const Oracle& oracle_;
  const std::function<void(const std::string&)>& log_;
  Outcome target_, last_;
  int tests_ = 0, steps_ = 0;
};

}  // namespace

absl::StatusOr<ReduceResult> reduce_graph(const Graph& g, const Bindings& b, const Oracle& oracle,
                                          const std::function<void(const std::string&)>& log) {
  return Reducer(g, b, oracle, log).run();
}

}  // namespace kiln
