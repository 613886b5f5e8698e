// The MLP of a Llama-style block, traced from ordinary C++ (examples/models.cc): x [B, 4096]
// goes through a SiLU-gated MLP (hidden size 11008) and an RMS norm. Prints the recorded
// IR, then runs it through the reference evaluator on random inputs at B=2 and summarizes
// each output.
#include <cstdio>

#include "compiler/summary.h"
#include "examples/models.h"
#include "frontends/trace/trace.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

int main() try {
  kiln::Graph graph = kiln::examples::trace_mlp();
  std::fputs(kiln::print_graph(graph).c_str(), stdout);

  kiln::Bindings bindings{{"B", 2}};
  // Random arguments, weights scaled by 1/sqrt(fan-in) as in a trained layer.
  kiln::TensorMap args = kiln::random_args(graph, bindings, /*seed=*/0);
  kiln::scale_weights_by_fan_in(graph, args);
  auto outputs = kiln::evaluate(graph, args);
  if (!outputs.ok()) {
    std::fprintf(stderr, "mlp: %s\n", kiln::status_message(outputs.status()).c_str());
    return 1;
  }
  std::printf("\nreference evaluator, B=2, random inputs (seed 0):\n");
  for (size_t i = 0; i < outputs->size(); ++i)
    std::printf("  %s\n", kiln::format_summary(graph.outputs()[i]->name(), kiln::summarize((*outputs)[i])).c_str());
  return 0;
} catch (const kiln::trace::TraceError& e) {
  std::fprintf(stderr, "mlp: %s\n", e.what());
  return 1;
}
