// Compiled packages (.kilnpkg): one file that holds what a process needs to run a graph
// without compiling it again: the graph, its compile options, the bindings of every
// specialization built, every kernel's compiled code (CUDA: CUBIN and PTX; CPU: object code)
// and the autotuner's choices. Loading one parses the graph, runs the pass pipeline and
// lowering (milliseconds), puts the kernels into the kernel cache and the choices into the
// tune store, and builds the specializations: their kernels are cache hits, so no NVRTC or
// LLVM compile runs (CompileStats::cache_misses == 0).
//
// A package carries the graph, not the lowered programs: a package from another kiln commit
// still gives the reference's answer, and a kernel whose source changed is compiled again
// (and counted). What is refused: another package format, another kiln version, another
// device kind, or another compile target (CUDA: arch and NVRTC version; CPU: LLVM version and
// host CPU), each named against the present one. kiln does not fall back to JIT-compiling the
// PTX for another arch: the package would then not start without compiling, which is its point.
//
// File layout (integers little-endian u64, strings u64 length + bytes):
//   "KILNPKG\0" | u64 format version | fields (below) | 32-byte SHA-256 of every byte before it
//   fields: kiln version, git hash, device, target, mode, dynamic, fused attention, graph text,
//   n parameters x (name, raw bytes), n specializations x (guards, n x (symbol, value)),
//   n kernels x (key, cubin, ptx), n tune records x (key, choice, note)
// The checksum is verified before anything is parsed; parsing still checks every length.
#pragma once

#include <memory>
#include <string_view>
#include <utility>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/compile.h"
#include "runtime/kernel_cache.h"
#include "runtime/tune_store.h"

namespace kiln {

struct Package {
  std::string name;  // the file it was read from, for errors
  std::string kiln_version, git;
  std::string device;  // "cpu" or "cuda"
  std::string target;  // what the kernels were compiled for: "sm_90, NVRTC 13.0", "LLVM 16.0.6, znver4, ..."
  CompileOptions options;  // mode, device, dynamic, fused_attention
  Graph graph;             // as compile() was given it, parameters' host data included
  struct Specialization {
    std::string guards;  // "B >= 2"
    Bindings bindings;   // the symbol values it was built for
  };
  std::vector<Specialization> specializations;
  std::vector<std::pair<std::string, std::shared_ptr<const CompiledKernel>>> kernels;  // by cache key
  std::vector<TuneStore::Record> tune;
};

// The graph as a package holds it and its loader compiles it: `g`'s text read back, with its
// parameters' data. Fresh value names that passes make depend on a graph's history (a
// clone keeps its original's name counters), so kernels compiled from `g` itself may differ
// in names from the loader's; compile this one and they are the same.
absl::StatusOr<Graph> package_graph(const Graph& g);

// Writes `path` atomically from `source` (the graph `cg` was compiled from) and `cg`: its
// options, the bindings of every specialization it has built (build them first, e.g. with
// warm_up), rebuilt from package_graph(source) (compile only; cache hits where `cg`'s kernels
// are the same), every kernel in memory of the kernel cache of cg's device (compiled or read
// in this process: a process that compiled other graphs for that device packs their
// kernels too) and every tune store entry this process knows.
absl::Status save_compiled(const Graph& source, const CompiledGraph& cg, const std::string& path);

// Reads and checks a package (format, checksum, every length); errors name the file.
absl::StatusOr<Package> read_package(const std::string& path);
// Parses a package's bytes (what read_package does after reading); `name` names it in errors.
absl::StatusOr<Package> parse_package(std::string_view bytes, const std::string& name);

struct PackageOptions {
  int cuda_device = 0;
  std::string dump_dir;       // as CompileOptions::dump_dir
  bool compile_only = false;  // as CompileOptions::compile_only (CUDA: no device needed)
};

// Checks that this build and machine can use `p` (kiln version, device, target; the error
// names both sides), preloads its kernels and tune records, compiles its graph with its
// options and builds its specializations. A call with bindings no specialization accepts
// compiles a new one, as any CompiledGraph does (CompileStats counts it).
absl::StatusOr<CompiledGraph> load_compiled(const Package& p, const PackageOptions& options = {});
// read_package, then the above.
absl::StatusOr<CompiledGraph> load_compiled(const std::string& path, const PackageOptions& options = {});

}  // namespace kiln
