// Gathers with indices out of range on a compiled device (issue 21, RELIABILITY.md "Index
// checks"), shared by the CPU and CUDA test binaries: gathers fused into elementwise kernels,
// read by a reduction (embedding + rms_norm), on a later axis, in a GEMM's epilogue and
// feeding a GEMM. Per graph and binding: indices drawn from all of [-dim, dim) match the
// reference; one index set outside it makes the reference refuse and the compiled graph
// report the reference's gather, index and range (on the CPU from the call itself; on CUDA
// from the call or the synchronize() after it), and the next in-range call matches again.
#pragma once

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/index_error.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"

namespace kiln::testing {

struct GatherCase {
  const char* text;     // the gather is %g, of %ids over dim symbol V
  int axis;
  std::vector<Bindings> bindings;
};

inline std::vector<GatherCase> gather_cases() {
  return {
      {R"(graph elementwise(%t: f32[V, 4], %ids: i64[N, 2], %s: f32[4]) {
  %g = gather(%t, %ids, axis=0)
  %e = exp(%g)
  %y = mul(%e, %s)
  return %y
})", 0, {{{"V", 1}, {"N", 1}}, {{"V", 5}, {"N", 3}}, {{"V", 37}, {"N", 200}}}},
      {R"(graph embedding_rms(%emb: f32[V, 64], %ids: i64[B, T], %w: f32[64]) {
  %g = gather(%emb, %ids, axis=0)
  %n = rms_norm(%g, %w, axes=[-1], eps=1e-6)
  return %n
})", 0, {{{"V", 1}, {"B", 1}, {"T", 1}}, {{"V", 7}, {"B", 2}, {"T", 3}}, {{"V", 50}, {"B", 3}, {"T", 33}}}},
      {R"(graph columns(%x: f32[R, V], %ids: i64[K]) {
  %g = gather(%x, %ids, axis=1)
  %y = relu(%g)
  %s = sum(%y, axes=[0])
  return %y, %s
})", 1, {{{"R", 1}, {"V", 2}, {"K", 1}}, {{"R", 3}, {"V", 9}, {"K", 5}}, {{"R", 17}, {"V", 64}, {"K", 40}}}},
      {R"(graph gemm_epilogue(%x: f32[T, 16], %w: f32[8, 16], %table: f32[V, 8], %ids: i64[T]) {
  %l = linear(%x, %w)
  %g = gather(%table, %ids, axis=0)
  %y = add(%l, %g)
  return %y
})", 0, {{{"T", 1}, {"V", 1}}, {{"T", 5}, {"V", 3}}, {{"T", 64}, {"V", 11}}}},
      {R"(graph feeds_gemm(%emb: f32[V, 16], %ids: i64[T], %w: f32[24, 16]) {
  %g = gather(%emb, %ids, axis=0)
  %l = linear(%g, %w)
  return %l
})", 0, {{{"V", 1}, {"T", 1}}, {{"V", 6}, {"T", 7}}, {{"V", 30}, {"T", 65}}}},
  };
}

// The error text of the reference's refusal and the devices' (ir/index_error.h).
inline std::string gather_error(int64_t index, int64_t dim, int axis) {
  return str_cat("gather %g: index ", index, " out of range [", -dim, ", ", dim, ") on axis ", axis);
}

// One call of `cg` on `host` (through the device's tensors), then a synchronize: the first
// error, or the outputs on the host.
inline absl::StatusOr<std::vector<HostTensor>> call_and_sync(CompiledGraph& cg, const TensorMap& host, DeviceId dev) {
  std::vector<Tensor> args;
  for (const Value* v : cg.module().args) {
    KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::from_host(host.at(v->name()), dev));
    args.push_back(std::move(t));
  }
  absl::StatusOr<std::vector<Tensor>> got = cg(args);
  absl::Status synced = cg.synchronize();
  if (!got.ok()) return got.status();
  KILN_RETURN_IF_ERROR(synced);
  std::vector<HostTensor> out;
  for (const Tensor& t : *got) {
    KILN_ASSIGN_OR_RETURN(HostTensor h, t.to_host());
    out.push_back(std::move(h));
  }
  return out;
}

inline void require_matches_reference(const Graph& g, const TensorMap& host,
                                      const absl::StatusOr<std::vector<HostTensor>>& got) {
  if (!got.ok()) FAIL(status_message(got.status()));
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, host);
  if (!want.ok()) FAIL(status_message(want.status()));
  REQUIRE(got->size() == want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
}

// `immediate`: the call itself must report (a device whose calls return done).
inline void check_gather_indices(Device device, Mode mode, bool immediate) {
  const DeviceId dev = device == Device::Cuda ? DeviceId::cuda(0) : DeviceId::cpu();
  std::mt19937_64 rng(21);
  for (const GatherCase& c : gather_cases()) {
    Graph g = parse_or_fail(c.text);
    absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = mode, .device = device});
    if (!cg.ok()) FAIL(status_message(cg.status()));
    for (const Bindings& b : c.bindings) {
      const int64_t dim = b.at("V");
      INFO(g.name() << " under " << bindings_to_string(b) << " in " << mode_name(mode));
      TensorMap host = random_args(g, b, rng());
      HostTensor& ids = host.at("ids");
      std::uniform_int_distribution<int64_t> in_range(-dim, dim - 1);
      for (int64_t i = 0; i < ids.numel(); ++i) ids.set_int(i, in_range(rng));
      require_matches_reference(g, host, call_and_sync(*cg, host, dev));

      for (int64_t bad : {dim + static_cast<int64_t>(rng() % 3), -dim - 1 - static_cast<int64_t>(rng() % 3)}) {
        TensorMap wrong = host;
        wrong.at("ids").set_int(static_cast<int64_t>(rng() % ids.numel()), bad);
        // One error text and kind on the reference and the device (ir/index_error.h).
        absl::StatusOr<std::vector<HostTensor>> refused = evaluate(g, wrong);
        REQUIRE_FALSE(refused.ok());
        CHECK(is_gather_index_error(refused.status()));
        CHECK(status_message(refused.status()).find(gather_error(bad, dim, c.axis)) != std::string::npos);
        std::vector<Tensor> args;
        for (const Value* v : cg->module().args) args.push_back(*Tensor::from_host(wrong.at(v->name()), dev));
        absl::StatusOr<std::vector<Tensor>> got = cg->operator()(args);
        absl::Status reported = got.status();
        if (immediate) REQUIRE_FALSE(reported.ok());
        if (reported.ok()) reported = cg->synchronize();
        REQUIRE_FALSE(reported.ok());
        INFO(status_message(reported));
        CHECK(status_message(reported).find(gather_error(bad, dim, c.axis)) != std::string::npos);
        CHECK(is_gather_index_error(reported));
        REQUIRE(cg->synchronize().ok());  // reported once, then cleared
        require_matches_reference(g, host, call_and_sync(*cg, host, dev));
      }
    }
  }
}

}  // namespace kiln::testing
