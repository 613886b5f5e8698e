// NCCL communicators (runtime/communicator.h) for the ranks of a tensor-parallel group on the
// GPUs of one process: NCCL (the CUDA toolkit's libnccl.so.2, dlopen'ed on first use like
// cuBLASLt, so a build runs where it is not installed) does the transport; kiln enqueues its
// collectives on the stream of the rank's call, where CUDA-graph capture records them.
//
// NVLink SHARP / multicast (NVLS) stays off: NCCL_NVLS_ENABLE is set to 0 before the first
// communicator is made (it can put GPUs that other tenants share out of service).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/communicator.h"

namespace kiln::cuda {

// One communicator per entry of `devices` (CUDA ordinals, one rank each, rank r on
// devices[r]; a device may appear once), made together (ncclCommInitAll). Errors: NCCL not
// loadable (naming the library and KILN_NCCL_LIBRARY), an NCCL error (its string), an empty
// or repeated device list.
absl::StatusOr<std::vector<std::shared_ptr<Communicator>>> nccl_group(std::span<const int> devices);

// "2.28.9", or the error of loading NCCL.
absl::StatusOr<std::string> nccl_version();

}  // namespace kiln::cuda
