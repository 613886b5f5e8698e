// A device adapter for tests, written as a third backend would be: kernels run on the
// kernel-IR evaluator (codegen/kernel_eval.h) over host memory, exact and slow, with no GEMM
// library (or a library that refuses every call, to drive the executor's fallback). It
// counts what the executor asks of it, and captures as a CUDA graph does: one real run, then
// the launches recorded over the addresses they had, replayed as they are.
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
};

// `library`: None (GEMM groups run their own kernel) or CublasLt (its forms, with every
// library call refused, so the executor runs each GEMM's fallback kernel).
std::unique_ptr<DeviceAdapter> make_interpreter_device(std::shared_ptr<DeviceCounts> counts,
                                                       GemmLibrary library = GemmLibrary::None);

}  // namespace kiln::testing
