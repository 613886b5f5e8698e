// Profiled calls (CallOptions::profile) on the test device: one launch per kernel, library
// call and copy the program runs, in its order and with its groups; results as unprofiled;
// the per-kernel table (compiler/profile.h) adds up to the call. No timing thresholds: the
// device's clock is the host's here.
#include <catch2/catch.hpp>

#include <set>

#include "compiler/compile.h"
#include "compiler/profile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/executor/interpreter_device.h"

using namespace kiln;
using kiln::testing::DeviceCounts;
using kiln::testing::make_interpreter_device;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;

namespace {

// GEMMs with an epilogue, merged projections (weight prep), a reduction and an output that
// is an argument (a copy).
constexpr const char* kGraph = R"(graph block(%x: f32[B, 12], %wq: f32[8, 12] param, %wk: f32[8, 12] param,
                                   %w: f32[6, 8] param, %b: f32[6] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %s = mul(%q, %k)
  %l = linear(%s, %w, %b)
  %g = gelu(%l, approximate="tanh")
  %y = softmax(%g)
  return %y, %x
})";

using Kind = ProfiledLaunch::Kind;

// The launches a direct call of `p` makes, in order, where every library call is refused
// (the test device's CublasLt) and so followed by its fallback kernel.
std::vector<ProfiledLaunch> expected_launches(const Program& p, bool library_refuses) {
  std::vector<ProfiledLaunch> out;
  for (const Step& s : p.steps) {
    switch (s.kind) {
      case Step::Kind::Kernel: out.push_back({.kind = Kind::Kernel, .group = s.group, .kernel = &p.kernel_steps[s.index]}); break;
      case Step::Kind::Gemm: {
        const GemmStep& g = p.gemms[s.index];
        for (const std::optional<KernelStep>* k : {&g.gather_a, &g.gather_b})
          if (*k) out.push_back({.kind = Kind::Kernel, .group = s.group, .kernel = &**k});
        out.push_back({.kind = Kind::Library, .group = s.group, .gemm = &g});
        const std::optional<KernelStep>& next = library_refuses ? g.fallback : g.epilogue;
        if (next) out.push_back({.kind = Kind::Kernel, .group = s.group, .kernel = &*next});
        break;
      }
      case Step::Kind::Copy: out.push_back({.kind = Kind::Copy, .group = s.group, .copy = &p.copies[s.index]}); break;
      case Step::Kind::Extern:
        out.push_back({.kind = Kind::Extern, .group = s.group, .extern_step = &p.externs[s.index]});
        break;
      case Step::Kind::Attention:
        out.push_back({.kind = Kind::Attention, .group = s.group, .attention = &p.attentions[s.index]});
        break;
      case Step::Kind::Collective:
        out.push_back({.kind = Kind::Collective, .group = s.group, .collective = &p.collectives[s.index]});
        break;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("profile: every launch of the program, in order, with results as unprofiled", "[executor][profile]") {
  for (GemmLibrary library : {GemmLibrary::None, GemmLibrary::CublasLt}) {
    for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
      Graph graph = parse_or_fail(kGraph);
      auto counts = std::make_shared<DeviceCounts>();
      absl::StatusOr<CompiledGraph> cg = compile(graph, make_interpreter_device(counts, library), {.mode = mode});
      require_ok(cg.status());
      for (int64_t b : {1, 7, 64}) {
        INFO(gemm_library_name(library) << " " << mode_name(mode) << " B=" << b);
        TensorMap args = random_args(graph, {{"B", b}}, 200 + b);
        std::vector<Tensor> in;
        for (const Value* v : cg->module().args) in.push_back(*Tensor::from_host(args.at(v->name())));
        std::vector<Tensor> plain(2), profiled(2);
        require_ok(cg->run(in, plain));
        int replays = counts->replays;
        CallProfile prof;
        require_ok(cg->run(in, profiled, {.profile = &prof}));
        CHECK(counts->replays == replays);  // a profiled call launches directly

        absl::StatusOr<std::vector<HostTensor>> want = evaluate(graph, args);
        require_ok(want.status());
        for (size_t i = 0; i < want->size(); ++i) {
          CHECK(compare_tensors((*want)[i], *profiled[i].to_host(), default_tolerance(DType::f32)).ok);
          CHECK(compare_tensors(*plain[i].to_host(), *profiled[i].to_host(), {0, 0}).ok);
        }

        REQUIRE(prof.program);
        CHECK(prof.bindings == Bindings{{"B", b}});
        std::vector<ProfiledLaunch> want_launches = expected_launches(*prof.program, library == GemmLibrary::CublasLt);
        REQUIRE(prof.launches.size() == want_launches.size());
        double sum = 0;
        for (size_t i = 0; i < want_launches.size(); ++i) {
          const ProfiledLaunch& got = prof.launches[i];
          INFO("launch " << i);
          CHECK(got.kind == want_launches[i].kind);
          CHECK(got.group == want_launches[i].group);
          CHECK(got.kernel == want_launches[i].kernel);
          CHECK(got.gemm == want_launches[i].gemm);
          CHECK(got.copy == want_launches[i].copy);
          CHECK(got.ms >= 0);
          sum += got.ms;
        }
        CHECK(sum == Approx(prof.ms).margin(1e-9));

        ProfileTable t = profile_table(cg->module(), std::span<const CallProfile>(&prof, 1));
        int64_t launches = 0;
        double total = 0, percent = 0;
        for (const ProfileRow& r : t.rows) {
          launches += r.launches;
          total += r.total_ms;
          percent += r.percent;
          CHECK(r.mean_ms == Approx(r.total_ms / r.launches));
          if (r.kind != "copy") CHECK(!r.ops.empty());
          if (r.kind == "library gemm" || r.kind == "gemm kernel") CHECK(r.flops > 0);
          else CHECK(r.flops == 0);
        }
        CHECK(launches == static_cast<int64_t>(prof.launches.size()));
        CHECK(total == Approx(prof.ms).margin(1e-9));
        if (prof.ms > 0) CHECK(percent == Approx(100));
        for (size_t i = 1; i < t.rows.size(); ++i) CHECK(t.rows[i - 1].total_ms >= t.rows[i].total_ms);
      }
    }
  }
}

TEST_CASE("profile: kernel groups are named after the ops they fuse", "[profile]") {
  Graph graph = parse_or_fail(kGraph);
  absl::StatusOr<CompiledGraph> cg = compile(graph, make_interpreter_device(std::make_shared<DeviceCounts>()));
  require_ok(cg.status());
  std::vector<std::string> labels = group_labels(cg->module());
  const std::vector<KernelGroup>& groups = cg->module().state.schedule.groups;
  REQUIRE(labels.size() == groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    INFO(labels[i]);
    CHECK(labels[i].starts_with(str_cat("g", i, "_")));
    // Every non-view op of the group is in its name (six at most are named).
    std::set<std::string_view> ops;
    for (const Node* n : groups[i].nodes)
      if (n->info().kind != OpKind::View) ops.insert(op_name(n->op()));
    for (std::string_view op : ops)
      if (ops.size() <= 6) CHECK(labels[i].find(op) != std::string::npos);
    CHECK(labels[i].starts_with(str_cat("g", i, ops.size() > 1 ? "_fused_" : "_")));
  }
}
