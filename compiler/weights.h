// kiln::Weights: a compiled graph's runtime parameters held once on its device, in the layout
// its steps read. A merged projection (fuse_linear's concat of Wq, Wk, Wv, or of the gate and
// up weights) is one buffer, laid out as its GEMM reads it, and the separate parameters are
// views inside it; a parameter that weight prep only casts is held cast. Calls with the store
// run no weight prep for what it holds, and no second copy of those weights exists.
//
//   kiln::CompiledGraph cg = *kiln::compile(graph, {.device = kiln::Device::Cuda});
//   kiln::Weights w = *kiln::Weights::create(cg);
//   KILN_RETURN_IF_ERROR(w.load(checkpoint));     // name -> HostTensor, each copied once into place
//   std::vector<kiln::Tensor> out = *cg({x}, w);  // the inputs only: parameters come from w
//   KILN_RETURN_IF_ERROR(w.load(new_values));     // refit: same addresses, no recompile
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/compile.h"
#include "ir/host_tensor.h"
#include "runtime/tensor.h"

namespace kiln {

class Weights {
 public:
  // A runtime parameter of the graph (a parameter without host data), as loads must give it.
  struct Parameter {
    std::string name;
    DType dtype = DType::f32;
    std::vector<int64_t> shape;
  };

  // Lays out the runtime parameters of `cg` on its device: one buffer per weight-prep result
  // it can hold in its final form (a concat of parameters, each maybe cast, or one cast
  // parameter), one per parameter that something else reads and that is not a plain view of
  // such a buffer. The memory is allocated here; values come with load(). Parameters must
  // have static shapes (the error names one that does not).
  static absl::StatusOr<Weights> create(const CompiledGraph& cg);

  // Every runtime parameter of the graph, in signature order.
  const std::vector<Parameter>& parameters() const;

  // Copies one parameter's values into place, each element once: a host tensor (what a
  // checkpoint reader yields) or a tensor on the graph's device (a device-to-device copy; one
  // that prep would cast is cast on the host: it goes down and up once). The dtype and shape
  // must be the parameter's; an unknown name, another dtype or shape is an error naming it.
  // Loading values again is a refit: the addresses stay, captured CUDA graphs read the new
  // values, and no call is in flight meanwhile (synchronize first). Returns once copied.
  absl::Status load(std::string_view name, const HostTensor& value);
  absl::Status load(std::string_view name, const Tensor& value);
  // Every parameter of the graph from `values` (entries for other names are ignored: a
  // checkpoint may hold more than one graph uses); a parameter missing there is an error
  // naming it, and nothing is loaded then.
  absl::Status load(const std::map<std::string, HostTensor>& values);
  absl::Status load(const std::map<std::string, Tensor>& values);
  // Asks `fetch` for every parameter in turn (a reader that maps a file and converts one
  // tensor at a time needs no map of them all).
  absl::Status load(const std::function<absl::StatusOr<HostTensor>(const Parameter&)>& fetch);

  // Parameters never loaded; a call with the store fails naming the first.
  std::vector<std::string> missing() const;

  // Device memory held (the buffers' sizes), and the parameters' own bytes (dtype x shape).
  int64_t bytes() const;
  int64_t parameter_bytes() const;
  // One line per buffer: what it holds, its bytes, the parameters inside it at which offsets.
  std::string layout_text() const;

  // A parameter as it is held on the device: a view of its own memory, or of its part of a
  // merged buffer (the tensor keeps the store alive). An error for one held only cast or
  // interleaved with others.
  absl::StatusOr<Tensor> parameter(std::string_view name) const;

  struct State;

 private:
  Weights() = default;
  friend class CompiledGraph;
  // The store's parameters and results for calls of `m` (a graph whose weight prep this
  // store's layout covers: the graph it was made for, or one merging the same parameters the
  // same way), and its current values' generation. Errors name a parameter never loaded, or
  // what `m` needs that the store does not hold.
  absl::StatusOr<HeldWeights> held(const std::shared_ptr<const CompiledModule>& m) const;
  std::weak_ptr<const void> lifetime() const;

  std::shared_ptr<State> s_;
};

}  // namespace kiln
