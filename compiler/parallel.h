// Tensor parallelism in one process (issue 22): every rank of a group compiled from the graph
// each rank runs (passes/shard.h), each with its communicator, and called together.
//
// One process drives all the GPUs of a host, one thread per rank, rather than one process
// per GPU: a C++ serving engine links kiln as a library and keeps one address space, the
// ranks share one kernel cache (each kernel NVRTC-compiles once, the other ranks hit the
// cache), the group needs no launcher and no out-of-band bootstrap (ncclCommInitAll makes the
// communicators together), and a rank's failure is seen by the others in the same process
// (abort) instead of hanging them. The ranks' threads only enqueue work; NCCL and the GPUs
// overlap it. The cost: the process is a single point of failure for the group, and one
// host's GPUs is the limit (multi-node needs a process per node and ncclCommInitRank).
//
//   kiln::ShardedGraph s = *kiln::shard(model, kiln::llama_shard_plan(2));
//   auto group = *kiln::RankGroup::compile(s.graph, 2, {.compile = {.device = kiln::Device::Cuda}});
//   std::vector<std::vector<kiln::Tensor>> outputs;
//   absl::Status st = group->run(per_rank_args, outputs);
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/compile.h"
#include "frontends/safetensors/safetensors.h"
#include "passes/shard.h"
#include "runtime/communicator.h"

namespace kiln {

struct ParallelOptions {
  CompileOptions compile;  // for every rank; cuda_device and communicator are set per rank
  // CUDA: rank r runs on cuda_devices[r]; empty: 0, 1, ..., ranks - 1.
  std::vector<int> cuda_devices;
};

// Rank `rank`'s parameters of a sharded graph from a checkpoint (Hugging Face names, as the
// graph's parameters have): a split parameter is only its chunk (read_chunk: the other
// ranks' bytes are not read), the others whole; float tensors of another dtype are converted
// to the parameter's. Errors name the checkpoint, the tensor, and a shape that is not the
// whole graph's.
absl::StatusOr<TensorMap> read_rank_parameters(const ShardedGraph& s, int64_t rank, int64_t ranks,
                                               const SafetensorsCheckpoint& ckpt);

class RankGroup {
 public:
  // Compiles `rank_graph` once per rank on the options' device (Auto: CUDA when present)
  // with a communicator of one new group: the host group on the CPU, NCCL on CUDA. Errors:
  // ranks < 1, a device list of another length, the group or a rank's compile (naming the rank).
  static absl::StatusOr<std::unique_ptr<RankGroup>> compile(const Graph& rank_graph, int64_t ranks,
                                                            const ParallelOptions& opts = {});
  ~RankGroup();  // stops the rank threads
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  int64_t ranks() const { return static_cast<int64_t>(graphs_.size()); }
  CompiledGraph& rank(int64_t r) { return graphs_[r]; }
  Communicator& communicator(int64_t r) const { return *comms_[r]; }
  Device device() const { return device_; }

  // Every rank's call at once: rank r runs CompiledGraph::run(args[r], outputs[r]) (outputs
  // resized to ranks(), an empty outputs[r] to one empty slot per output), rank 0 on the caller's thread, the others on
  // the group's. Returns once every rank's call has (on CUDA: with its work enqueued, as CompiledGraph::run). A rank
  // that fails aborts the group, so that the others' collectives fail instead of waiting for it; the error of the
  // lowest failing rank is returned, naming it, and the group is unusable.
  absl::Status run(const std::vector<std::vector<Tensor>>& args, std::vector<std::vector<Tensor>>& outputs);
  // The same with rank r's parameters from its weight store weights[r] (Weights::create of
  // rank(r)): inputs[r] are then the arguments that are not parameters (CompiledGraph::run).
  absl::Status run(const std::vector<std::vector<Tensor>>& inputs, const std::vector<const Weights*>& weights,
                   std::vector<std::vector<Tensor>>& outputs);
  // run() on host tensors: rank r's arguments by name (args[r], as shard_arguments gives
  // them), copied to its device; returns each rank's outputs on the host once its work is done.
  absl::StatusOr<std::vector<std::vector<HostTensor>>> run_host(const std::vector<TensorMap>& args);

 private:
  RankGroup() = default;
  struct Workers;
  absl::Status call(const std::vector<std::vector<Tensor>>& args, const std::vector<const Weights*>* weights,
                    std::vector<std::vector<Tensor>>& outputs);

  Device device_ = Device::Cpu;
  std::vector<std::shared_ptr<Communicator>> comms_;
  std::vector<CompiledGraph> graphs_;
  std::mutex mu_;  // one call at a time
  std::unique_ptr<Workers> workers_;
  absl::Status failed_;
};

}  // namespace kiln
