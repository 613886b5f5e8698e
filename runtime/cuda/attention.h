// The fused attention step on CUDA: the form's kernels (codegen/cuda/attention.h) compiled
// through the kernel cache and loaded, a launch plan per call (tile configuration, grid,
// key splits and their workspace) and the launch itself. Independent of the executor, so
// the step, tests and benchmarks drive it the same way.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/cuda/attention.h"
#include "ir/dump.h"
#include "runtime/cuda/cudnn_attention.h"
#include "runtime/cuda_driver.h"

namespace kiln::cuda {

// One call's operands: device addresses and sizes, strides in elements (attention.h's
// AttentionStep evaluated). The last stride of q, k, v and out must be 1.
struct AttentionCall : AttentionSizes {
  CUdeviceptr q = 0, k = 0, v = 0, out = 0, mask = 0, kv_lens = 0, block_table = 0;
};

// How one call launches: a configuration of attention_configs(form), the grid, and how many
// CTAs share each row block's keys (splits > 1: partials in the workspace, then a combine);
// or, with `cudnn` set, cuDNN's fused attention (its workspace in workspace_bytes).
struct AttentionPlan {
  int config = 0;
  int64_t row_tiles = 0;
  int splits = 1, tiles_per_split = 0;
  int64_t workspace_bytes = 0;
  std::shared_ptr<const CudnnAttention> cudnn;
  std::string to_string() const;  // "config 0 grid 16x32x1 splits 1", "cuDNN 9.19.0 engine 8"
  unsigned grid[3] = {1, 1, 1};
};

class AttentionKernels {
 public:
  // The kernels of every configuration of `f` for `arch`, through kernel_cache(). Without a
  // context every configuration is compiled here and none is loaded (as `kiln compile
  // --device cuda` on a machine with no GPU; plan and launch then fail). With one, `lazily`
  // leaves each configuration to the first plan that picks it (a model compiles the one
  // or two its shapes use, not all), else all are compiled and loaded here. `dump` receives
  // each compiled configuration's .cu and .ptx. Errors name the form.
  static absl::StatusOr<std::unique_ptr<AttentionKernels>> build(const Context* ctx, const std::string& arch,
                                                                 const AttentionForm& f,
                                                                 const std::optional<DumpWriter>& dump = std::nullopt,
                                                                 bool lazily = false);
  int compiled() const;  // configurations compiled so far

  const AttentionForm& form() const { return form_; }
  const std::vector<AttentionConfig>& configs() const { return configs_; }

  // The default plan for `c` (config and splits chosen from the rows per kv head and the
  // keys, against the device's SM count), or the one forced by `config` / `splits`. Reads
  // c's sizes and strides, not its addresses. Compiles and loads the plan's configuration
  // on its first use (thread-safe).
  absl::StatusOr<AttentionPlan> plan(const AttentionCall& c, std::optional<int> config = std::nullopt,
                                     std::optional<int> splits = std::nullopt) const;
  // The plan that runs `c` on cuDNN's fused attention instead (cudnn_attention.h): built on
  // the first call of each shape (sizes and strides) and kept. Errors: no device, cuDNN not
  // loadable, the form or sizes not taken, no cuDNN engine for them.
  absl::StatusOr<AttentionPlan> cudnn_plan(const AttentionCall& c) const;
  // Pre: `p` came from plan() or cudnn_plan(); `workspace` holds p.workspace_bytes (0 allowed when none). An
  // operand that is not 16-byte aligned is an error naming it (the kernel copies rows in
  // 16-byte pieces).
  absl::Status launch(const AttentionPlan& p, const AttentionCall& c, CUdeviceptr workspace, CUstream stream) const;

 private:
  struct Loaded {
    bool compiled = false;  // by NVRTC (and loaded, with a context)
    std::optional<Module> module;
    CUfunction main = nullptr, combine = nullptr;
    int shared_bytes = 0;
  };
  AttentionKernels(const Context* ctx, std::string arch, AttentionForm f, std::vector<AttentionConfig> c,
                   std::optional<DumpWriter> dump);
  // Compiles (and with a context loads) the configurations in `which` not compiled yet.
  absl::Status ensure(const std::vector<int>& which) const;
  const Context* ctx_;
  std::string arch_;
  AttentionForm form_;
  std::vector<AttentionConfig> configs_;
  std::optional<DumpWriter> dump_;
  int sms_ = 132;
  mutable std::mutex mu_;
  mutable std::vector<Loaded> loaded_;  // per configuration
  mutable std::map<std::string, std::shared_ptr<const CudnnAttention>> cudnn_;  // per call shape
};

}  // namespace kiln::cuda
