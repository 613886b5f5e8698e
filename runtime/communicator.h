// Communicators (issue 22): how the ranks of a tensor-parallel group exchange values. A
// program with collectives (codegen/program.h, CollectiveStep) calls them through the
// communicator its executor was given (ExecutorOptions::communicator, CompileOptions), one
// communicator per rank; every rank of a group makes the same calls in the same order, as the
// ranks of a sharded graph (passes/shard.h) do.
//
// Two implementations: host_group() for ranks on the CPU in one process (threads), and NCCL
// for ranks on GPUs (runtime/cuda/nccl.h). Both sum as ops.def says all_reduce does; the host
// group exactly as the reference evaluator (its sum_over_ranks: f64 in rank order, rounded
// once; integers wrap), NCCL in its own order and precision (within the dtype's tolerance).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/dtype.h"
#include "ir/extern_op.h"
#include "ir/op.h"

namespace kiln {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t ranks() const = 0;
  // Whose memory the buffers are: host memory (ExternDevice::Cpu) or the GPU's (Cuda).
  virtual ExternDevice device() const = 0;
  // "host group, rank 0 of 2", "NCCL 2.28.9, rank 1 of 2 on cuda:1".
  virtual std::string describe() const = 0;

  // Over dense buffers of `dtype`, `count` elements per rank: all_reduce writes into `out`
  // the sum of every rank's `in`; all_gather writes the ranks' `in` one after the other
  // (ranks() * count elements); reduce_scatter reads ranks() * count elements and writes the
  // sum of chunk rank(). `out` never overlaps `in`. On CUDA the call is enqueued on `stream`
  // (a CUstream; it may be being captured into a CUDA graph); on the host it is done on return.
  virtual absl::Status all_reduce(const void* in, void* out, int64_t count, DType dtype, void* stream) = 0;
  virtual absl::Status all_gather(const void* in, void* out, int64_t count, DType dtype, void* stream) = 0;
  virtual absl::Status reduce_scatter(const void* in, void* out, int64_t count, DType dtype, void* stream) = 0;

  // The group cannot go on (a rank failed between collectives): calls waiting in the other
  // ranks, and every later call, return an error that says so and quotes `why`.
  virtual void abort(const absl::Status& why) = 0;
};

// The call of `op` (all_reduce, all_gather, reduce_scatter) on `c`; errors are prefixed with
// the op and the communicator.
absl::Status call_collective(Communicator& c, Op op, const void* in, void* out, int64_t count, DType dtype,
                             void* stream);

// Whether `c` runs the collectives of a program over `ranks` ranks on `device` memory (named
// `device_name`: "cpu", "cuda"); the error names the communicator and what differs.
absl::Status check_communicator(const Communicator& c, int64_t ranks, ExternDevice device,
                                std::string_view device_name);

// One communicator per rank of an in-process group over host memory. A call blocks until
// every rank has made its own (so the ranks run on threads of their own), checks that they
// agree (the same collective, count and dtype; else every rank gets an error naming the
// difference), computes, and returns once every rank has read the others' operands and
// written its part of their results (an all_reduce's rank r sums elements [r * count / N,
// (r + 1) * count / N) for every rank: the group sums each element once).
// Sums with the reference evaluator's sum_over_ranks. Dtypes: f32, f16, bf16, f64, i32, i64.
std::vector<std::shared_ptr<Communicator>> host_group(int64_t ranks);

}  // namespace kiln
