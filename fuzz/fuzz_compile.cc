// libFuzzer target, differential: a graph parsed from the input is compiled by compile() for
// the CPU (LLVM JIT) and called with every symbol bound to 1, then to 3, on random
// arguments; each output must match the reference evaluator (test/fuzz/check.h's
// tolerances). Graphs the parser or compile() refuse and values over 4096 elements are
// skipped. A call the reference refuses for a gather index out of range must fail compiled
// too (index checks: errors on both sides agree); its other refusals of values are skipped.
// A call the compiled graph refuses where the reference answered is a failure, as is any
// difference in the outputs.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "compiler/compile.h"
#include "ir/index_error.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/fuzz/check.h"

namespace {

using namespace kiln;

constexpr int64_t kMaxElements = 4096;
constexpr size_t kMaxNodes = 64;

bool small_enough(const Graph& g, const Bindings& b) {
  auto fits = [&](const Value* v) {
    absl::StatusOr<std::vector<int64_t>> dims = evaluate_shape(v->shape(), b);
    if (!dims.ok()) return false;
    int64_t n = 1;
    for (int64_t d : *dims)
      if (d > kMaxElements || (n *= d) > kMaxElements) return false;
    return true;
  };
  for (const Value* v : g.inputs())
    if (!fits(v)) return false;
  for (const auto& n : g.nodes())
    for (const Value* v : n->results())
      if (!fits(v)) return false;
  return true;
}

[[noreturn]] void fail(const Graph& g, const std::string& what) {
  std::fprintf(stderr, "fuzz_compile: %s\n--- graph\n%s", what.c_str(), print_graph(g).c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<Graph> g = parse_graph(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.kiln");
  if (!g.ok() || g->num_nodes() > kMaxNodes) return 0;
  std::vector<Bindings> bindings;
  for (int64_t value : {1, 3}) {
    Bindings b;
    for (const std::string& s : g->symbols()) b[s] = value;
    if (small_enough(*g, b)) bindings.push_back(b);
  }
  if (bindings.empty()) return 0;
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
  if (!cg.ok()) return 0;
  for (size_t i = 0; i < bindings.size(); ++i) {
    std::string under = bindings_to_string(bindings[i]);
    TensorMap args = random_args(*g, bindings[i], 17 + i, /*int_high=*/3);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(*g, args);
    cg->parameters_changed();
    absl::StatusOr<std::vector<HostTensor>> got = run_host(*cg, args);
    if (!want.ok()) {
      // A gather index out of range is an error on both sides (index checks); the reference's
      // other refusals of values (a cache position outside the cache) are not compared.
      if (is_gather_index_error(want.status()) && got.ok())
        fail(*g, str_cat("the reference refused the call under ", under, " (", want.status().message(),
                         ") but the CPU call answered"));
      continue;
    }
    if (!got.ok())
      fail(*g, str_cat("the reference answered under ", under, " but the CPU call failed: ", got.status().message()));
    if (got->size() != want->size()) fail(*g, str_cat("output count differs under ", under));
    for (size_t o = 0; o < want->size(); ++o) {
      Comparison c = compare_tensors((*want)[o], (*got)[o], tolerance_for(g->outputs()[o], (*want)[o], 1));
      if (!c.ok) fail(*g, str_cat("output ", o, " (%", g->outputs()[o]->name(), ") differs under ", under, ": ", c.message));
    }
  }
  return 0;
}
