// Batch buckets (CompileOptions::buckets, compile.h): which bucket serves a batch, and the
// padded arguments, staging buffers and outputs of one bucketed call. CompiledGraph owns one
// and calls it with its lock held: one bucketed call at a time.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/module.h"
#include "compiler/compile.h"
#include "runtime/executor.h"

namespace kiln {

class Bucketing {
 public:
  // Checks `o` against `m` (the symbol's slot, its bounds, where it appears: only as the
  // leading dim of arguments that are not parameters and of outputs; at least one
  // non-state argument bucketed; pad names). Errors name the option and the value at fault.
  static absl::StatusOr<Bucketing> make(const BucketOptions& o, const CompiledModule& m,
                                        const std::vector<SymbolInfo>& bounds);  // per symbol slot

  int slot() const { return slot_; }  // the symbol's, in CompiledModule::symbols
  const std::vector<int64_t>& sizes() const { return sizes_; }
  // The index in sizes() of the smallest size >= rows; past the largest, an error naming it.
  absl::StatusOr<size_t> bucket_of(int64_t rows) const;
  // A call's batch: the leading dim of its first bucketed non-state argument.
  absl::StatusOr<int64_t> rows(std::span<const Tensor> args) const;
  bool arg_bucketed(size_t i) const { return args_[i].bucketed; }

  // One bucket's (one set of symbol values') buffers: inputs and outputs per argument and
  // output, of the bucket's rows, for bucketed non-state ones (else empty); the executor's
  // static slots when it captures (so that a replay copies nothing), else allocated here.
  struct Staging {
    std::vector<Tensor> inputs, outputs;
    std::vector<std::vector<int64_t>> out_shapes;  // every output's, at the bucket's size
    std::vector<int64_t> pad_from;  // per argument: rows from here on hold its pad value
  };
  absl::StatusOr<Staging*> staging(std::span<const int64_t> syms, Executor& exe, DeviceAdapter& device);
  // Static slots for a batch of `rows` within the bucket of `syms`: views of their first rows.
  absl::StatusOr<StaticSlots> slot_views(std::span<const int64_t> syms, int64_t rows, Executor& exe,
                                         DeviceAdapter& device);

  // The executor's arguments for a call of `rows` real rows (0: every row a pad row) at
  // bucket size `size`: staging with the rows copied and the rest padded (a tensor of the
  // bucket's rows passes as it is), the first `size` rows of state, the rest as given.
  absl::Status pad(std::span<const Tensor> args, int64_t rows, int64_t size, Staging& st, DeviceAdapter& device,
                   void* stream, std::vector<Tensor>& padded);
  // The executor's output slots: staging for bucketed outputs (unless `rows` fills the bucket
  // and the caller gave one), empty for state, the caller's for the rest. Given outputs are
  // checked against their shapes at `rows`.
  absl::Status out_slots(const std::vector<Tensor>& outputs, int64_t rows, int64_t size, const Staging& st,
                         DeviceId device, std::vector<Tensor>& slots) const;
  // The caller's outputs after the executor wrote `slots`: the first `rows` rows of bucketed
  // ones (copied into given or new tensors, unless given as the staging's own views), state
  // arguments as the caller passed them.
  absl::Status finish(std::span<const Tensor> args, int64_t rows, const std::vector<Tensor>& slots,
                      DeviceAdapter& device, void* stream, std::vector<Tensor>& outputs) const;

 private:
  struct Arg {
    bool bucketed = false, state = false;
    DType dtype{};
    double pad = 0;
    Tensor pad_rows;  // the pad value, largest-size rows of it (made on first need)
  };
  struct Out {
    bool bucketed = false;
    int state_arg = -1;  // the state argument it is, or -1
    DType dtype{};
  };
  const CompiledModule* module_ = nullptr;
  std::string symbol_;
  int slot_ = -1;
  std::vector<int64_t> sizes_;
  std::vector<Arg> args_;
  std::vector<Out> outs_;
  std::map<std::vector<int64_t>, Staging> staging_;
};

}  // namespace kiln
