// The minifier (compiler/reduce.h) against injected compiler bugs: a CPU device whose
// programs compute tanh as its argument (a miscompile) reduces a 10-node graph to the lone
// tanh; one that crashes on any program holding an exp reduces it, in child processes, to
// the lone exp. Also run_isolated's crash, timeout and exit outcomes.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "codegen/program.h"
#include "compiler/compile.h"
#include "compiler/reduce.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/status.h"

namespace kiln {
namespace {

constexpr const char* kGraph = R"(graph mixed(%x: f32[B, 16], %w: f32[16, 16] param) {
  %h = linear(%x, %w) : f32[B, 16]
  %a = mul(%h, %x) : f32[B, 16]
  %s = sum(%a, axes=[-1], keepdim=true) : f32[B, 1]
  %e = exp(%s) : f32[B, 1]
  %b = sub(%a, %s) : f32[B, 16]
  %t = tanh(%b) : f32[B, 16]
  %u = add(%t, %x) : f32[B, 16]
  %v = sin(%u) : f32[B, 16]
  %m = max(%v, axes=[-1], keepdim=false) : f32[B]
  %n = neg(%u) : f32[B, 16]
  return %m, %n, %e
}
)";

bool has_op(const Program& p, Op op) {
  bool found = false;
  auto look = [&](const kir::Expr& e) {
    kir::map_expr(e, [&](const kir::Expr& x) -> std::optional<kir::Expr> {
      if ((x.kind() == kir::ExprKind::Unary || x.kind() == kir::ExprKind::Binary) && x.node().op == op) found = true;
      return std::nullopt;
    });
  };
  for (const ProgramKernel& k : p.kernels)
    for (const kir::Stage& st : k.kernel.stages) {
      for (const kir::Let& l : st.lets) look(l.value);
      for (const kir::Store& s : st.stores) look(s.value);
      if (st.value.defined()) look(st.value);
    }
  return found;
}

// The CPU device with a bug put into load(): `rewrite` edits the program first (or returns an
// error, or crashes).
class BuggyCpu final : public DeviceAdapter {
 public:
  using Rewrite = std::function<absl::StatusOr<Program>(Program)>;
  BuggyCpu(std::unique_ptr<DeviceAdapter> cpu, Rewrite rewrite) : cpu_(std::move(cpu)), rewrite_(std::move(rewrite)) {}
  DeviceId device() const override { return cpu_->device(); }
  const Target& target() const override { return cpu_->target(); }
  absl::StatusOr<std::unique_ptr<DeviceProgram>> load(std::shared_ptr<const Program> p, const LoadOptions& o) override {
    KILN_ASSIGN_OR_RETURN(Program changed, rewrite_(*p));
    return cpu_->load(std::make_shared<const Program>(std::move(changed)), o);
  }
  absl::StatusOr<DeviceMemory> allocate(int64_t bytes) override { return cpu_->allocate(bytes); }
  absl::StatusOr<DevicePtr> resident(const std::shared_ptr<const HostTensor>& d) override { return cpu_->resident(d); }
  absl::StatusOr<Tensor> empty(DType t, std::vector<int64_t> shape) override { return cpu_->empty(t, std::move(shape)); }
  absl::Status copy(DevicePtr dst, DevicePtr src, int64_t bytes, const CallContext& c) override {
    return cpu_->copy(dst, src, bytes, c);
  }

 private:
  std::unique_ptr<DeviceAdapter> cpu_;
  Rewrite rewrite_;
};

DeviceFactory buggy(BuggyCpu::Rewrite rewrite) {
  return [rewrite]() -> absl::StatusOr<std::unique_ptr<DeviceAdapter>> {
    KILN_ASSIGN_OR_RETURN(std::unique_ptr<DeviceAdapter> cpu, make_device_adapter(Device::Cpu));
    return std::make_unique<BuggyCpu>(std::move(cpu), rewrite);
  };
}

// tanh(a) computed as a.
absl::StatusOr<Program> tanh_is_identity(Program p) {
  auto fix = [](const kir::Expr& e) {
    return kir::map_expr(e, [](const kir::Expr& x) -> std::optional<kir::Expr> {
      if (x.kind() == kir::ExprKind::Unary && x.node().op == Op::Tanh) return x.node().a;
      return std::nullopt;
    });
  };
  for (ProgramKernel& k : p.kernels)
    for (kir::Stage& st : k.kernel.stages) {
      for (kir::Let& l : st.lets) l.value = fix(l.value);
      for (kir::Store& s : st.stores) s.value = fix(s.value);
      if (st.value.defined()) st.value = fix(st.value);
    }
  return p;
}

Graph parse(const char* text) {
  absl::StatusOr<Graph> g = parse_graph(text);
  REQUIRE(g.ok());
  return *std::move(g);
}

TEST_CASE("reduce: a miscompiled tanh reduces to the lone tanh at B=1", "[reduce]") {
  Graph g = parse(kGraph);
  DeviceFactory device = buggy(tanh_is_identity);
  // The injected bug is real, and the graph without it passes.
  CHECK(test_against_reference(g, {{"B", 5}}, device, 1).kind == Outcome::Kind::Mismatch);
  CHECK(test_against_reference(g, {{"B", 5}}, [] { return make_device_adapter(Device::Cpu); }, 1).kind ==
        Outcome::Kind::Pass);
  std::vector<std::string> steps;
  absl::StatusOr<ReduceResult> r = reduce_graph(
      g, {{"B", 5}}, [&](const Graph& c, const Bindings& b) { return test_against_reference(c, b, device, 1); },
      [&](const std::string& line) { steps.push_back(line); });
  REQUIRE(r.ok());
  CHECK(print_graph(r->graph) ==
        "graph mixed(%b: f32[B, 16]) {\n"
        "  %t = tanh(%b) : f32[B, 16]\n"
        "  return %t\n"
        "}\n");
  CHECK(r->bindings == Bindings{{"B", 1}});
  CHECK(r->failure.kind == Outcome::Kind::Mismatch);
  CHECK(r->failure.detail.starts_with("%t: "));
  REQUIRE(steps.size() == static_cast<size_t>(r->steps) + 1);  // the first line names the failure
  CHECK(steps.front().starts_with("graph mixed: 10 nodes, mismatch: "));
  CHECK(steps.back().find(": 1 nodes, mismatch") != std::string::npos);
}

TEST_CASE("reduce: a crash in a child process reduces to the lone exp", "[reduce]") {
  Graph g = parse(kGraph);
  // Crashes on any program computing exp; refuses every other program (an error is another
  // failure, so those candidates are not kept) without running it.
  DeviceFactory device = buggy([](Program p) -> absl::StatusOr<Program> {
    if (has_op(p, Op::Exp)) {
      signal(SIGSEGV, SIG_DFL);  // not the test framework's handler: die as a compiler would
      raise(SIGSEGV);
    }
    return absl::InternalError("refused: no exp here");
  });
  Oracle oracle = [&](const Graph& c, const Bindings& b) {
    return run_isolated([&] { return test_against_reference(c, b, device, 1); }, 60);
  };
  absl::StatusOr<ReduceResult> r = reduce_graph(g, {{"B", 3}}, oracle);
  REQUIRE(r.ok());
  CHECK(print_graph(r->graph) ==
        "graph mixed(%s: f32[B, 1]) {\n"
        "  %e = exp(%s) : f32[B, 1]\n"
        "  return %e\n"
        "}\n");
  CHECK(r->failure.to_string() == "crash: SIGSEGV");
}

TEST_CASE("reduce: a graph that does not fail is an error", "[reduce]") {
  Graph g = parse(kGraph);
  absl::StatusOr<ReduceResult> r = reduce_graph(g, {{"B", 2}}, [](const Graph&, const Bindings&) { return Outcome{}; });
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()) == "graph mixed does not fail (pass): nothing to reduce");
}

TEST_CASE("run_isolated: outcomes, signals, hangs and exits", "[reduce]") {
  CHECK(run_isolated([] { return Outcome{Outcome::Kind::Mismatch, "%y: differs"}; }, 10).to_string() ==
        "mismatch: %y: differs");
  CHECK(run_isolated([]() -> Outcome {
          signal(SIGABRT, SIG_DFL);
          abort();
        }, 10).to_string() == "crash: SIGABRT");
  CHECK(run_isolated([]() -> Outcome {
          sleep(30);
          return {};
        }, 0.5).kind == Outcome::Kind::Timeout);
  CHECK(run_isolated([]() -> Outcome { _exit(7); }, 10).to_string() == "crash: exit status 7 without an outcome");
}

TEST_CASE("Outcome::same_failure: errors alike but for names and numbers", "[reduce]") {
  using K = Outcome::Kind;
  CHECK(Outcome{K::Error, "lowering group 3: %mul_2 = mul (a.kiln:4:3) is read"}.same_failure(
      {K::Error, "lowering group 0: %t = mul (a.kiln:1:9) is read"}));
  CHECK_FALSE(Outcome{K::Error, "compile: no kernel"}.same_failure({K::Error, "call: no kernel"}));
  CHECK_FALSE(Outcome{K::Crash, "SIGSEGV"}.same_failure({K::Crash, "SIGABRT"}));
  CHECK(Outcome{K::Mismatch, "%a: x"}.same_failure({K::Mismatch, "%b: y"}));
  CHECK_FALSE(Outcome{K::Mismatch, ""}.same_failure({K::Error, ""}));
}

}  // namespace
}  // namespace kiln
