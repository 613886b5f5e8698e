// A decode step over a KV cache, traced and compiled: each call writes the new token's k and
// v into caches the caller owns (state inputs, updated in place, never copied) and attends
// over them with 8 query heads sharing 2 kv heads. Called twice with the same cache tensors:
// the second call sees the rows the first one wrote. Prints the IR, then each call's largest
// difference from the reference evaluator.
#include <cstdio>
#include <random>

#include "compiler/compile.h"
#include "frontends/trace/trace.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace kt = kiln::trace;

int main() try {
  kt::Tracer t("decode_step");
  auto q = t.input("q", kiln::f32, {"B", 8, 1, 64});
  auto k = t.input("k", kiln::f32, {"B", 2, 1, 64});
  auto v = t.input("v", kiln::f32, {"B", 2, 1, 64});
  auto pos = t.input("pos", kiln::i32, {"B"});  // where each sequence's new token goes
  auto k_cache = t.state("k_cache", kiln::f32, {"B", 2, "S", 64});
  auto v_cache = t.state("v_cache", kiln::f32, {"B", 2, "S", 64});
  auto k_new = kt::cache_write(k_cache, k, pos);
  auto v_new = kt::cache_write(v_cache, v, pos);
  auto out = kt::attention(q, k_new, v_new, {.kv_lens = pos + 1, .causal = true});
  t.output(out, "out");
  t.output(k_new, "k_cache_new");  // the caller's k_cache itself, after the write
  t.output(v_new, "v_cache_new");
  kiln::Graph graph = t.finish();
  std::fputs(kiln::print_graph(graph).c_str(), stdout);

  absl::StatusOr<kiln::CompiledGraph> cg = kiln::compile(graph);
  if (!cg.ok()) {
    std::fprintf(stderr, "decode_step: %s\n", kiln::status_message(cg.status()).c_str());
    return 1;
  }
  kiln::DeviceId dev = cg->device();
  std::mt19937_64 rng(0);
  auto random = [&](std::vector<int64_t> shape) {
    kiln::HostTensor h(kiln::DType::f32, std::move(shape));
    h.fill_random(rng);
    return h;
  };
  int64_t batch = 2, s_max = 16;
  kiln::TensorMap host{{"k_cache", random({batch, 2, s_max, 64})}, {"v_cache", random({batch, 2, s_max, 64})}};
  kiln::Tensor kc = *kiln::Tensor::from_host(host.at("k_cache"), dev), vc = *kiln::Tensor::from_host(host.at("v_cache"), dev);
  for (int call = 0; call < 2; ++call) {
    host["q"] = random({batch, 8, 1, 64});
    host["k"] = random({batch, 2, 1, 64});
    host["v"] = random({batch, 2, 1, 64});
    host["pos"] = kiln::HostTensor(kiln::DType::i32, {batch});
    for (int64_t b = 0; b < batch; ++b) host.at("pos").set_int(b, 3 + 5 * b + call);
    std::vector<kiln::Tensor> args;
    for (const kiln::Value* a : cg->module().args) {
      if (a->name() == "k_cache") args.push_back(kc);
      else if (a->name() == "v_cache") args.push_back(vc);
      else args.push_back(*kiln::Tensor::from_host(host.at(a->name()), dev));
    }
    absl::StatusOr<std::vector<kiln::Tensor>> got = (*cg)(args);
    absl::StatusOr<std::vector<kiln::HostTensor>> want = kiln::evaluate(graph, host);
    if (!got.ok() || !want.ok()) {
      std::fprintf(stderr, "decode_step: %s\n", kiln::status_message(got.ok() ? want.status() : got.status()).c_str());
      return 1;
    }
    std::printf("\ncall %d on %s (positions %lld, %lld):\n", call + 1, kiln::device_name(dev).c_str(),
                static_cast<long long>(host.at("pos").get_int(0)), static_cast<long long>(host.at("pos").get_int(1)));
    for (size_t i = 0; i < want->size(); ++i) {
      kiln::Comparison c = kiln::compare_tensors((*want)[i], *(*got)[i].to_host(), kiln::default_tolerance(kiln::DType::f32));
      std::printf("  %-12s max |error| vs the reference %.2e%s\n", graph.outputs()[i]->name().c_str(), c.max_abs_err,
                  i > 0 && (*got)[i].data() == (i == 1 ? kc : vc).data() ? " (the caller's cache, updated in place)" : "");
    }
    host["k_cache"] = (*want)[1];  // the reference's caches after this step, for the next
    host["v_cache"] = (*want)[2];
  }
  return 0;
} catch (const kiln::trace::TraceError& e) {
  std::fprintf(stderr, "decode_step: %s\n", e.what());
  return 1;
}
