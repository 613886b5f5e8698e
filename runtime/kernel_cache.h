// The kernel cache: compiled CUBIN + PTX in memory and on disk, keyed by a SHA-256 of
// (source, compile options, compiler version, arch), so a second process starts warm.
//
// On disk: one file per entry, <dir>/<64 hex digits of the key>.kbin, written to a unique
// temporary name in the same directory and renamed into place, so readers never see a torn
// entry. The directory is $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln;
// KILN_CACHE_DIR=off keeps the cache in memory only. Entry layout (integers little-endian):
//   "KILNKERN" | u32 format version | u32 0 | 32-byte key | u64 cubin bytes | u64 ptx bytes |
//   32-byte SHA-256 of (every header byte before it + cubin + ptx) | cubin | ptx
// A file whose magic, version, key, lengths or checksum disagree, or that is not a regular
// file of at most 1 GiB, is counted as corrupt, deleted, and rebuilt by the next compile.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln {

struct CompiledKernel {
  std::string cubin;  // the device code: a CUBIN; for the CPU backend (runtime/cpu/jit.h) an ELF object
  std::string ptx;    // its text: PTX; for the CPU backend the optimized LLVM IR
};

struct KernelCacheStats {
  int64_t memory_hits = 0;
  int64_t disk_hits = 0;
  int64_t misses = 0;           // compiles run
  int64_t corrupt_entries = 0;  // disk entries rejected and rebuilt
  int64_t disk_write_errors = 0;
  double compile_ms = 0;  // time spent in compiles (NVRTC), misses only
};

// The 64-hex-digit key of one compilation. Each field is length-prefixed before hashing.
std::string kernel_cache_key(std::string_view source, std::span<const std::string> options,
                             std::string_view compiler_version, std::string_view arch);

// The kernel of an entry file's bytes when every check passes for `key` (magic, version,
// key, lengths, checksum); nullopt otherwise. Pure: KernelCache reads a file with it.
std::optional<CompiledKernel> parse_kernel_cache_entry(std::string_view bytes, const std::string& key);

class KernelCache {
 public:
  // The disk directory from the environment (see the file comment); nullopt when disabled.
  static std::optional<std::filesystem::path> directory_from_env();

  // disk_dir nullopt: memory only. The directory is created on first write.
  explicit KernelCache(std::optional<std::filesystem::path> disk_dir);

  // The entry for `key` from memory, else disk, else from `compile()` (timed, then stored in
  // both). Concurrent callers may compile the same key twice; both results are identical and
  // the rename keeps the file whole. A compile error is returned and nothing is stored.
  absl::StatusOr<std::shared_ptr<const CompiledKernel>> get_or_compile(
      const std::string& key, const std::function<absl::StatusOr<CompiledKernel>()>& compile);

  // Every entry in memory (compiled, read from disk or inserted in this process), by key:
  // what a compiled package (compiler/package.h) carries.
  std::vector<std::pair<std::string, std::shared_ptr<const CompiledKernel>>> entries() const;
  // Adds a kernel compiled elsewhere (a loaded package's) to memory, where `key` is absent;
  // later lookups of it are memory hits. An invalid key is an error.
  absl::Status insert(const std::string& key, std::shared_ptr<const CompiledKernel> kernel);

  KernelCacheStats stats() const;
  const std::optional<std::filesystem::path>& directory() const { return dir_; }
  std::filesystem::path entry_path(const std::string& key) const;

 private:
  std::shared_ptr<const CompiledKernel> read_disk(const std::string& key);
  void write_disk(const std::string& key, const CompiledKernel& kernel);

  std::optional<std::filesystem::path> dir_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const CompiledKernel>> memory_;
  KernelCacheStats stats_;
};

}  // namespace kiln
