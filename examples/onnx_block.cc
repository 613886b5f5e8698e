// A small ONNX transformer block (examples/onnx_block.onnx, written by make_onnx_block.py)
// imported into kiln: batch and sequence stay symbolic, the exporter's shape arithmetic
// folds into the reshapes. Prints the imported IR, checks the reference evaluator against
// the NumPy result the script stored, then runs two other batch/sequence sizes.
//
//   onnx_block [MODEL_DIR]    (default: the source tree's examples/ folder)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "compiler/summary.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/compare.h"
#include "ir/npy.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace {

template <typename T>
T check(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "onnx_block: %s\n", kiln::status_message(v.status()).c_str());
    std::exit(1);
  }
  return *std::move(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : KILN_EXAMPLES_DIR;
  kiln::Graph graph = check(kiln::import_onnx_file(dir + "/onnx_block.onnx"));
  std::fputs(kiln::print_graph(graph).c_str(), stdout);

  // The test vector: x [2, 5, 16] and y as NumPy computed it in float64.
  kiln::HostTensor x = check(kiln::read_npy(dir + "/onnx_block_x.npy"));
  kiln::HostTensor want = check(kiln::read_npy(dir + "/onnx_block_y.npy"));
  std::vector<kiln::HostTensor> got = check(kiln::evaluate(graph, {{"x", x}}));
  kiln::Comparison c = kiln::compare_tensors(want, got[0], kiln::default_tolerance(kiln::DType::f32));
  std::printf("\nreference evaluator vs NumPy at batch=2, seq=5: max abs error %.3g, %s\n", c.max_abs_err,
              c.ok ? "match" : c.message.c_str());
  if (!c.ok) return 1;

  for (auto [batch, seq] : {std::pair{1, 3}, std::pair{4, 7}}) {
    kiln::Bindings b{{"batch", batch}, {"seq", seq}};
    std::vector<kiln::HostTensor> out = check(kiln::evaluate(graph, kiln::random_args(graph, b, /*seed=*/0)));
    std::printf("batch=%d seq=%d, random x (seed 0): %s\n", batch, seq,
                kiln::format_summary(graph.outputs()[0]->name(), kiln::summarize(out[0])).c_str());
  }
  return 0;
}
