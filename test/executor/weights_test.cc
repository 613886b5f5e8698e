// Weight stores (compiler/weights.h) on the interpreter device: calls read the parameters and
// the merged weights from the store and run no weight prep for what it holds (counted
// launches), match the reference at sizes 1, odd and large, refit is seen by captured replays
// without recapturing, a weight-prep result the store cannot lay out is made from the store's
// parameters (and remade after a refit), interleaved pieces (a concat along a later axis)
// land where the GEMM reads them, and bad loads are errors that name the parameter.
#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "compiler/weights.h"
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

// Merged q/k/v projections (linear: a concat along axis 0, so each weight is a plain view).
constexpr const char* kQkv = R"(graph block(%x: f32[B, 12], %wq: f32[8, 12] param, %wk: f32[8, 12] param,
                                 %wv: f32[8, 12] param, %w: f32[6, 8] param, %b: f32[6] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %v = linear(%x, %wv)
  %s = mul(%q, %k)
  %t = add(%s, %v)
  %l = linear(%t, %w, %b)
  %y = softmax(%l)
  return %y
})";

// Merged matmuls (a concat along axis 1: each weight's rows interleave with the other's) and
// a weight-prep result no layout holds (the square of a parameter).
constexpr const char* kInterleaved = R"(graph mm(%x: f32[B, 12], %a: f32[12, 8] param, %c: f32[12, 5] param,
                                        %s: f32[8] param) {
  %p = matmul(%x, %a)
  %q = matmul(%x, %c)
  %s2 = mul(%s, %s)
  %ps = mul(%p, %s2)
  %qs = sum(%q, axes=[-1], keepdim=true)
  %y = add(%ps, %qs)
  return %y
})";

struct Fixture {
  explicit Fixture(const char* text, Mode mode = Mode::Default)
      : graph(parse_or_fail(text)), counts(std::make_shared<DeviceCounts>()) {
    absl::StatusOr<CompiledGraph> c = compile(graph, make_interpreter_device(counts), {.mode = mode});
    if (!c.ok()) FAIL(status_message(c.status()));
    cg.emplace(*std::move(c));
    absl::StatusOr<Weights> w = Weights::create(*cg);
    if (!w.ok()) FAIL(status_message(w.status()));
    weights.emplace(*std::move(w));
  }
  Graph graph;
  std::shared_ptr<DeviceCounts> counts;
  std::optional<CompiledGraph> cg;
  std::optional<Weights> weights;
};

TensorMap params_of(const TensorMap& args, const CompiledGraph& cg) {
  TensorMap out;
  for (const Value* v : cg.module().args)
    if (v->is_param()) out[v->name()] = args.at(v->name());
  return out;
}

// The outputs of `cg` called with `w` on `args`' inputs equal the reference's on `args`.
void require_matches_with(CompiledGraph& cg, const Weights& w, const Graph& g, const TensorMap& args) {
  absl::StatusOr<std::vector<HostTensor>> got = run_host(cg, args, w);
  require_ok(got.status());
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  require_ok(want.status());
  REQUIRE(got->size() == want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
}

int launches_of(const DeviceCounts& c, std::string_view what) {
  int n = 0;
  for (const auto& [name, count] : c.launches)
    if (name.find(what) != std::string::npos) n += count;
  return n;
}

}  // namespace

TEST_CASE("weights: calls read the store, run no weight prep, and match the reference", "[executor][weights]") {
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    INFO(mode_name(mode));
    Fixture f(kQkv, mode);
    // Values for every parameter, with inputs drawn afresh per size.
    require_ok(f.weights->load(params_of(random_args(f.graph, {{"B", 1}}, 5), *f.cg)));
    for (int64_t b : {1, 7, 64, 7}) {
      TensorMap args = random_args(f.graph, {{"B", b}}, 100 + b);
      for (auto& [name, value] : params_of(random_args(f.graph, {{"B", 1}}, 5), *f.cg)) args[name] = value;
      require_matches_with(*f.cg, *f.weights, f.graph, args);
    }
    CHECK(launches_of(*f.counts, "concat") == 0);
    // The store is the only copy: q/k/v are views of the merged weight, nothing else is held.
    CompiledGraph::Memory m = f.cg->memory();
    CHECK(m.held.weight_prep == 0);
    CHECK(m.weight_store == f.weights->bytes());
    CHECK(m.parameters == f.weights->parameter_bytes());
    CHECK(m.weights_held() == m.parameters);
    std::string layout = f.weights->layout_text();
    INFO(layout);
    CHECK(layout.find("concat(axis 0: %wq f32[8, 12], %wk f32[8, 12], %wv f32[8, 12])") != std::string::npos);
    absl::StatusOr<Tensor> wk = f.weights->parameter("wk");
    require_ok(wk.status());
    Comparison same = compare_tensors(random_args(f.graph, {{"B", 1}}, 5).at("wk"), *wk->to_host(), Tolerance{0, 0});
    CHECK(same.ok);

    // The same compiled graph still takes parameters as arguments, and then makes its prep copy.
    TensorMap args = random_args(f.graph, {{"B", 3}}, 9);
    std::vector<Tensor> in;
    for (const Value* v : f.cg->module().args) in.push_back(*Tensor::from_host(args.at(v->name())));
    absl::StatusOr<std::vector<Tensor>> out = (*f.cg)(in);
    require_ok(out.status());
    Comparison c = compare_tensors(evaluate(f.graph, args)->at(0), *(*out)[0].to_host(), default_tolerance(DType::f32));
    INFO(c.message);
    CHECK(c.ok);
    CHECK(launches_of(*f.counts, "concat") == 1);
    CHECK(f.cg->memory().held.weight_prep >= 3 * 8 * 12 * 4);
  }
}

TEST_CASE("weights: a refit is seen by the next call and by captured replays, with no recapture", "[executor][weights]") {
  Fixture f(kQkv, Mode::ReduceOverhead);
  TensorMap args = random_args(f.graph, {{"B", 9}}, 3);
  require_ok(f.weights->load(params_of(args, *f.cg)));
  for (int i = 0; i < 2; ++i) require_matches_with(*f.cg, *f.weights, f.graph, args);
  CHECK(f.counts->captures == 1);
  absl::StatusOr<Tensor> wq = f.weights->parameter("wq");
  require_ok(wq.status());
  const void* before = wq->data();

  TensorMap refit = random_args(f.graph, {{"B", 9}}, 4);
  for (const Value* v : f.cg->module().args)
    if (!v->is_param()) refit[v->name()] = args[v->name()];
  require_ok(f.weights->load(params_of(refit, *f.cg)));
  int replays = f.counts->replays;
  require_matches_with(*f.cg, *f.weights, f.graph, refit);
  CHECK(f.counts->captures == 1);
  CHECK(f.counts->replays == replays + 1);
  CHECK(f.weights->parameter("wq")->data() == before);
  // One parameter at a time, as a checkpoint reader's callback gives them.
  TensorMap third = random_args(f.graph, {{"B", 9}}, 6);
  for (const Value* v : f.cg->module().args)
    if (!v->is_param()) third[v->name()] = args[v->name()];
  require_ok(f.weights->load([&](const Weights::Parameter& p) -> absl::StatusOr<HostTensor> { return third.at(p.name); }));
  require_matches_with(*f.cg, *f.weights, f.graph, third);
  CHECK(f.counts->captures == 1);
}

TEST_CASE("weights: interleaved pieces and a prep result made from the store's parameters", "[executor][weights]") {
  Fixture f(kInterleaved);
  std::string layout = f.weights->layout_text();
  INFO(layout);
  // [12, 13] = concat(a, c, axis 1): a's 12 rows of 8 and c's 12 rows of 5 interleave.
  CHECK(layout.find("concat(axis 1: %a f32[12, 8], %c f32[12, 5])") != std::string::npos);
  CHECK(layout.find("%c at 32 (12 runs of 20 bytes, 52 apart)") != std::string::npos);
  CHECK(!f.weights->parameter("a").ok());  // held only interleaved
  require_ok(f.weights->parameter("s").status());
  TensorMap params = params_of(random_args(f.graph, {{"B", 1}}, 1), *f.cg);
  require_ok(f.weights->load(params));
  for (int64_t b : {1, 5, 33}) {
    TensorMap args = random_args(f.graph, {{"B", b}}, 20 + b);
    for (auto& [name, value] : params) args[name] = value;
    require_matches_with(*f.cg, *f.weights, f.graph, args);
  }
  CHECK(launches_of(*f.counts, "concat") == 0);
  // A refit remakes the square from the new %s (a stale one would not match), and lays the
  // interleaved pieces anew.
  params = params_of(random_args(f.graph, {{"B", 1}}, 2), *f.cg);
  require_ok(f.weights->load(params));
  TensorMap args = random_args(f.graph, {{"B", 5}}, 40);
  for (auto& [name, value] : params) args[name] = value;
  require_matches_with(*f.cg, *f.weights, f.graph, args);
  CHECK(f.cg->memory().held.weight_prep > 0);  // the square: the store does not hold it
}

TEST_CASE("weights: bad loads and calls name the parameter", "[executor][weights]") {
  Fixture f(kQkv);
  TensorMap params = params_of(random_args(f.graph, {{"B", 1}}, 1), *f.cg);
  auto message = [](const absl::Status& s) { return status_message(s); };

  // A call before every parameter has values.
  absl::StatusOr<std::vector<HostTensor>> early = run_host(*f.cg, random_args(f.graph, {{"B", 2}}, 2), *f.weights);
  REQUIRE(!early.ok());
  CHECK_THAT(message(early.status()), Catch::Contains("parameter %wq was never loaded"));
  CHECK(f.weights->missing().size() == 5);

  TensorMap missing = params;
  missing.erase("wk");
  absl::Status s = f.weights->load(missing);
  CHECK_THAT(message(s), Catch::Contains("parameter %wk (f32[8, 12]) is missing"));
  CHECK(f.weights->missing().size() == 5);  // nothing was loaded

  TensorMap shaped = params;
  shaped["wv"] = HostTensor(DType::f32, {12, 8});
  CHECK_THAT(message(f.weights->load(shaped)), Catch::Contains("parameter %wv expects f32[8, 12], got f32[12, 8]"));
  CHECK_THAT(message(f.weights->load("b", HostTensor(DType::f16, {6}))),
             Catch::Contains("parameter %b expects f32[6], got f16[6]"));
  CHECK_THAT(message(f.weights->load("bias", HostTensor(DType::f32, {6}))),
             Catch::Contains("no runtime parameter %bias (it has %wq, %wk, %wv, %w, %b)"));
  CHECK_THAT(message(f.weights->load("w", *Tensor::from_host(HostTensor(DType::f32, {6, 9})))),
             Catch::Contains("parameter %w expects f32[6, 8], got f32[6, 9]"));

  require_ok(f.weights->load(params));
  CHECK(f.weights->missing().empty());
  // Inputs only: the parameters come from the store.
  absl::StatusOr<std::vector<Tensor>> wrong = (*f.cg)(std::vector<Tensor>{}, *f.weights);
  CHECK_THAT(message(wrong.status()), Catch::Contains("takes 1 inputs besides its parameters"));
  absl::StatusOr<std::vector<Tensor>> typed = (*f.cg)({*Tensor::from_host(HostTensor(DType::f16, {2, 12}))}, *f.weights);
  CHECK_THAT(message(typed.status()), Catch::Contains("argument 0 (%x) expects f32[B, 12], got f16[2, 12]"));

  // A store serves another graph only where that graph's layout is the store's.
  Graph other = parse_or_fail(kInterleaved);
  absl::StatusOr<CompiledGraph> og = compile(other, make_interpreter_device(f.counts), {});
  require_ok(og.status());
  absl::StatusOr<std::vector<HostTensor>> foreign = run_host(*og, random_args(other, {{"B", 2}}, 2), *f.weights);
  REQUIRE(!foreign.ok());
  CHECK_THAT(message(foreign.status()), Catch::Contains("which the weight store made for graph block does not hold"));
}
