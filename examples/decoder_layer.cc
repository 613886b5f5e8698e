// A Llama-style decoder layer with symbolic batch B and sequence length T, traced from C++
// (examples/models.cc): pre-norm attention with rotary embeddings and a causal mask, then a
// SiLU-gated MLP, each with a residual connection. Prints the IR (and writes it to argv[1]
// when given; examples/decoder_layer.kiln is that file), then runs it through the reference
// evaluator at B=1, T=5 and summarizes the output.
#include <cstdio>
#include <fstream>

#include "compiler/summary.h"
#include "examples/models.h"
#include "frontends/trace/trace.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

int main(int argc, char** argv) try {
  kiln::Graph graph = kiln::examples::trace_decoder_layer();
  std::string ir = kiln::print_graph(graph);
  std::fputs(ir.c_str(), stdout);
  if (argc > 1) {
    std::ofstream f(argv[1], std::ios::binary);
    if (!(f << ir) || !f.flush()) {
      std::fprintf(stderr, "decoder_layer: cannot write %s\n", argv[1]);
      return 1;
    }
  }

  // Random inputs stand in for real cos/sin tables: the point is the graph, not the model.
  kiln::Bindings bindings{{"B", 1}, {"T", 5}};
  // Random arguments, weights scaled by 1/sqrt(fan-in) as in a trained layer.
  kiln::TensorMap args = kiln::random_args(graph, bindings, /*seed=*/0);
  kiln::scale_weights_by_fan_in(graph, args);
  auto outputs = kiln::evaluate(graph, args);
  if (!outputs.ok()) {
    std::fprintf(stderr, "decoder_layer: %s\n", kiln::status_message(outputs.status()).c_str());
    return 1;
  }
  std::printf("\nreference evaluator, B=1, T=5, random inputs (seed 0):\n");
  for (size_t i = 0; i < outputs->size(); ++i)
    std::printf("  %s\n", kiln::format_summary(graph.outputs()[i]->name(), kiln::summarize((*outputs)[i])).c_str());
  return 0;
} catch (const kiln::trace::TraceError& e) {
  std::fprintf(stderr, "decoder_layer: %s\n", e.what());
  return 1;
}
