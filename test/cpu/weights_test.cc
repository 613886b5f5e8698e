// Weight stores (compiler/weights.h) on the CPU: the example MLP and decoder layer
// (examples/models.cc) called with their parameters from a store match the reference at
// sizes 1, odd and large; the decoder layer's store holds its weights once (<= 1.02x the
// parameters' bytes) where parameters passed as arguments cost their prep copies besides;
// a refit changes the outputs as the new values say; loads from tensors equal loads from
// host values.
#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "compiler/weights.h"
#include "examples/models.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/cpu/decoder_layer.h"

using namespace kiln;
using kiln::testing::require_ok;

namespace {

CompiledGraph compile_cpu(const Graph& g) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  return *std::move(cg);
}

Weights make_store(const CompiledGraph& cg) {
  absl::StatusOr<Weights> w = Weights::create(cg);
  if (!w.ok()) FAIL(status_message(w.status()));
  return *std::move(w);
}

TensorMap params_of(const Graph& g, const TensorMap& args) {
  TensorMap out;
  for (const Value* p : g.params()) out[p->name()] = args.at(p->name());
  return out;
}

// `args` with its parameters replaced by `params`.
TensorMap with_params(TensorMap args, const TensorMap& params) {
  for (const auto& [name, value] : params) args[name] = value;
  return args;
}

// Calls `cg` with `w` on `args`' inputs; every output within its dtype's tolerance of the
// reference on `args`. Returns the outputs.
std::vector<HostTensor> require_matches(CompiledGraph& cg, const Weights& w, const Graph& g, const TensorMap& args) {
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
  return *std::move(got);
}

}  // namespace

TEST_CASE("weights on the CPU: the MLP from a store matches the reference, refit included", "[cpu][weights]") {
  for (DType dtype : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dtype));
    Graph g = examples::trace_mlp({64, 172, dtype});
    CompiledGraph cg = compile_cpu(g);
    Weights w = make_store(cg);
    TensorMap params = params_of(g, random_args(g, {{"B", 1}}, 1));
    scale_weights_by_fan_in(g, params);
    require_ok(w.load(params));
    std::vector<HostTensor> before;
    for (int64_t b : {1, 7, 64}) {
      INFO("B=" << b);
      before = require_matches(cg, w, g, with_params(random_args(g, {{"B", b}}, 10 + b), params));
    }
    CHECK(cg.memory().held.weight_prep == 0);
    // New values at the same addresses: the outputs follow them.
    TensorMap refit = params_of(g, random_args(g, {{"B", 1}}, 2));
    scale_weights_by_fan_in(g, refit);
    require_ok(w.load(refit));
    std::vector<HostTensor> after = require_matches(cg, w, g, with_params(random_args(g, {{"B", 64}}, 74), refit));
    CHECK(!compare_tensors(before[0], after[0], default_tolerance(dtype)).ok);
  }
}

TEST_CASE("weights on the CPU: the decoder layer holds its weights once and matches the reference", "[cpu][weights]") {
  Graph g = examples::trace_decoder_layer({64, 4, 96, DType::bf16});
  TensorMap params = params_of(g, kiln::testing::layer_args(g, {{"B", 1}, {"T", 1}}, 3));
  CompiledGraph cg = compile_cpu(g);
  Weights w = make_store(cg);
  require_ok(w.load(params));
  std::string layout = w.layout_text();
  INFO(layout);
  CHECK(layout.find("concat(axis 0: %wq bf16[64, 64], %wk bf16[64, 64], %wv bf16[64, 64])") != std::string::npos);
  CHECK(layout.find("concat(axis 0: %w_gate bf16[96, 64], %w_up bf16[96, 64])") != std::string::npos);
  for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {2, 33}}) {
    INFO("B=" << b << " T=" << t);
    Bindings bind{{"B", b}, {"T", t}};
    require_matches(cg, w, g, with_params(kiln::testing::layer_args(g, bind, 20 + 3 * b + t), params));
  }
  CompiledGraph::Memory m = cg.memory();
  INFO("store " << m.weight_store << " bytes, prep " << m.held.weight_prep << ", parameters " << m.parameters);
  CHECK(m.parameters == w.parameter_bytes());
  CHECK(m.held.weight_prep == 0);
  CHECK(m.weight_store == w.bytes());
  CHECK(m.weights_held() <= 1.02 * m.parameters);

  // The same layer with its parameters passed as arguments: it works as before, and holds the
  // merged and cast copies that weight prep makes beside the parameters.
  CompiledGraph old = compile_cpu(g);
  TensorMap args = with_params(kiln::testing::layer_args(g, {{"B", 3}, {"T", 5}}, 30), params);
  absl::StatusOr<std::vector<HostTensor>> got = run_host(old, args);
  require_ok(got.status());
  Comparison c = compare_tensors(evaluate(g, args)->at(0), got->at(0), default_tolerance(DType::bf16));
  INFO(c.message);
  CHECK(c.ok);
  CompiledGraph::Memory mo = old.memory();
  INFO("prep " << mo.held.weight_prep << ", parameters " << mo.parameters);
  CHECK(mo.weight_store == 0);
  CHECK(mo.held.weight_prep >= (3 * 64 * 64 + 2 * 96 * 64) * 2);
  CHECK(mo.weights_held() >= 1.5 * mo.parameters);
}

TEST_CASE("weights on the CPU: loads from tensors equal loads from host values", "[cpu][weights]") {
  Graph g = examples::trace_decoder_layer({64, 4, 96, DType::bf16});
  TensorMap params = params_of(g, kiln::testing::layer_args(g, {{"B", 1}, {"T", 1}}, 5));
  CompiledGraph cg = compile_cpu(g);
  Weights host = make_store(cg), device = make_store(cg);
  require_ok(host.load(params));
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, value] : params) tensors[name] = *Tensor::from_host(value, cg.device());
  require_ok(device.load(tensors));
  TensorMap args = with_params(kiln::testing::layer_args(g, {{"B", 2}, {"T", 7}}, 6), params);
  std::vector<HostTensor> a = require_matches(cg, host, g, args), b = require_matches(cg, device, g, args);
  CHECK(compare_tensors(a[0], b[0], Tolerance{0, 0}).ok);
  // A parameter read through a view of its place in the merged weight is the value loaded.
  absl::StatusOr<Tensor> wv = device.parameter("wv");
  require_ok(wv.status());
  CHECK(compare_tensors(params.at("wv"), *wv->to_host(), Tolerance{0, 0}).ok);
  CHECK_THAT(status_message(device.parameter("attn_norm").status()), Catch::Contains("held only cast"));
}
