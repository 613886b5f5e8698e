// Weight stores (compiler/weights.h) on a GPU: the example decoder layer (examples/models.cc,
// bf16) called with its parameters from a store, in default and reduce-overhead mode, matches
// the reference at sizes 1, odd and large, holds its weights once (<= 1.02x the parameters'
// bytes, no weight-prep copies), loads from device tensors (device-to-device) as from host
// values, and a refit at the same addresses is seen by the next call, replayed or not.
// Without a GPU these skip with the reason.
#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "compiler/weights.h"
#include "examples/models.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/gpu_test.h"

using namespace kiln;
using kiln::testing::require_ok;

namespace {

TensorMap layer_args(const Graph& g, const Bindings& b, uint64_t seed) {
  TensorMap args = random_args(g, b, seed);
  scale_weights_by_fan_in(g, args);
  return args;
}

TensorMap params_of(const Graph& g, const TensorMap& args) {
  TensorMap out;
  for (const Value* p : g.params()) out[p->name()] = args.at(p->name());
  return out;
}

TensorMap with_params(TensorMap args, const TensorMap& params) {
  for (const auto& [name, value] : params) args[name] = value;
  return args;
}

void require_matches(CompiledGraph& cg, const Weights& w, const Graph& g, const TensorMap& args) {
  absl::StatusOr<std::vector<HostTensor>> got = run_host(cg, args, w);
  require_ok(got.status());
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  require_ok(want.status());
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
}

}  // namespace

TEST_CASE("cuda: the decoder layer from a weight store matches the reference and holds its weights once", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  Graph g = examples::trace_decoder_layer({256, 4, 384, DType::bf16});
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    INFO(mode_name(mode));
    absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = mode, .device = Device::Cuda});
    require_ok(cg.status());
    absl::StatusOr<Weights> w = Weights::create(*cg);
    require_ok(w.status());
    TensorMap params = params_of(g, layer_args(g, {{"B", 1}, {"T", 1}}, 1));
    require_ok(w->load(params));
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {4, 129}, {3, 7}}) {
      INFO("B=" << b << " T=" << t);
      require_matches(*cg, *w, g, with_params(layer_args(g, {{"B", b}, {"T", t}}, 10 + b * t), params));
    }
    CompiledGraph::Memory m = cg->memory();
    INFO("store " << m.weight_store << " bytes, parameters " << m.parameters);
    CHECK(m.held.weight_prep == 0);
    CHECK(m.weights_held() <= 1.02 * m.parameters);
    test::gpu_summary().emplace_back(str_cat("decoder layer D=256 weights held (", mode_name(mode), ")"),
                                     fmt::format("{:.3f}x the parameters' bytes", double(m.weights_held()) / m.parameters));

    // Refit: new values at the same addresses; a replayed call reads them.
    absl::StatusOr<Tensor> wq = w->parameter("wq");
    require_ok(wq.status());
    TensorMap refit = params_of(g, layer_args(g, {{"B", 1}, {"T", 1}}, 2));
    std::map<std::string, Tensor> on_device;
    for (const auto& [name, value] : refit) on_device[name] = *Tensor::from_host(value, DeviceId::cuda(0));
    require_ok(w->load(on_device));
    require_matches(*cg, *w, g, with_params(layer_args(g, {{"B", 3}, {"T", 7}}, 40), refit));
    CHECK(w->parameter("wq")->data() == wq->data());
    CHECK(compare_tensors(refit.at("wq"), *w->parameter("wq")->to_host(), Tolerance{0, 0}).ok);

    // Parameters as arguments still work on the same graph, with their prep copies.
    TensorMap args = layer_args(g, {{"B", 2}, {"T", 5}}, 50);
    absl::StatusOr<std::vector<HostTensor>> got = run_host(*cg, args);
    require_ok(got.status());
    Comparison c = compare_tensors(evaluate(g, args)->at(0), got->at(0), default_tolerance(DType::bf16));
    INFO(c.message);
    CHECK(c.ok);
    CHECK(cg->memory().held.weight_prep > 0);
  }
}
