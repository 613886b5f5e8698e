// A device adapter for tests, written as a third backend would be: kernels run on the
// kernel-IR evaluator (codegen/kernel_eval.h) over host memory, exact and slow, with no GEMM
// library (or a library that refuses every call, to drive the executor's fallback). It
// counts what the executor asks of it, and captures as a CUDA graph does: one real run, then
// the launches recorded over the addresses they had, replayed as they are. With
// DeviceCounts::side_stream, it has a side stream for overlapped collectives, which logs its
// forks, records and joins between the launches (host memory: the ops order nothing).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device_adapter.h"

namespace kiln::testing {

struct DeviceCounts {
  std::map<std::string, int> launches;  // per kernel name, replays included
  int plans = 0;                        // kernel plans made (one per kernel per call plan)
  int copies = 0, captures = 0, replays = 0, gemm_calls = 0;
  // Set before making the device: it offers a side stream (DeviceAdapter::side_stream), and
  // `log` gets "fork", "record E", "join E" and "launch KERNEL" in call order (replays aside).
  bool side_stream = false;
  std::vector<std::string> log;
};

// `library`: None (GEMM groups run their own kernel) or CublasLt (its forms, with every
// library call refused, so the executor runs each GEMM's fallback kernel).
std::unique_ptr<DeviceAdapter> make_interpreter_device(std::shared_ptr<DeviceCounts> counts,
                                                       GemmLibrary library = GemmLibrary::None);

}  // namespace kiln::testing
