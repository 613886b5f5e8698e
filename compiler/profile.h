// Names of kernel groups after the ops they fuse, and the per-kernel profile table of
// profiled calls (CallProfile): what `kiln bench --profile` prints, sorted by time.
#pragma once

#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "codegen/module.h"
#include "runtime/executor.h"

namespace kiln {

// The ops a group fuses, in the spirit of Inductor's triton_poi_fused_add_mul_0: the distinct
// op names of its nodes in order, views left out unless the group is only views:
// "fused_silu_mul", or "mean" for a group of one op kind. Six names at most ("..._etc").
std::string fused_ops_name(const KernelGroup& g);
// A group's name in profiler ranges (NVTX) and pictures: "g3_fused_silu_mul".
std::string group_label(const KernelGroup& g);
// group_label of every group of `m`, in group order (ExecutorOptions::group_names).
std::vector<std::string> group_labels(const CompiledModule& m);

// One line of the table: every launch of one kernel, library GEMM or the copies.
struct ProfileRow {
  std::string name;  // the kernel's name (k3_mul, as in dumps and Nsight), "cuBLASLt[g9]", "copy"
  std::string kind;  // "kernel", "gemm kernel", "epilogue" (of a library GEMM), "library gemm", "copy"
  int group = -1;
  std::string ops;   // fused_ops_name of its group
  int64_t launches = 0;
  double total_ms = 0, mean_ms = 0;
  double percent = 0;  // of the profiled calls' time
  // Of all its launches: bytes of the buffers it reads and writes (each once, the least it
  // moves) and floating-point operations of its GEMM (2*m*n*k per batch); 0: not known.
  double bytes = 0, flops = 0;
  double gb_per_s() const { return total_ms > 0 ? bytes / total_ms / 1e6 : 0; }
  double tflop_per_s() const { return total_ms > 0 ? flops / total_ms / 1e9 : 0; }
};

struct ProfileTable {
  int calls = 0;
  double call_ms = 0;      // per call: first launch's start to the last one's end (mean)
  int launches_per_call = 0;
  std::vector<ProfileRow> rows;  // by total time, longest first
};

// Pre: every profile is of a specialization of `m`.
ProfileTable profile_table(const CompiledModule& m, std::span<const CallProfile> calls);
std::string profile_text(const ProfileTable& t);
// calls, call_ms, launches_per_call, rows [{name, kind, group, ops, launches, total_ms,
// mean_ms, percent, bytes, flops, gb_per_s, tflop_per_s}].
void to_json(nlohmann::ordered_json& j, const ProfileTable& t);

}  // namespace kiln
