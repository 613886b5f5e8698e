// max-autotune's memory: one human-readable line per tuned step (a kernel's launch shape, a
// GEMM's library algorithm),
//   <key> <choice> <check>  # <what was tuned: kernel or GEMM shape, device, times>
// in <kernel cache dir>/autotune.txt, so that a second process starts tuned. The key is a
// hash of the description (kernel source or GEMM spec, sizes, device); <check> is 8 hex
// digits of a SHA-256 of the key, choice and note, so that a damaged line is dropped, never
// used. A new entry is written under an exclusive lock of autotune.txt.lock: the file is
// re-read, merged with this process's entries and replaced atomically, so concurrent
// processes never lose each other's entries. Without a cache directory choices live in
// memory only.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

class TuneStore {
 public:
  static TuneStore& instance();  // at KernelCache::directory_from_env()
  // A store in the file `path` (nullopt: memory only); instance() is the one kiln uses.
  explicit TuneStore(std::optional<std::string> path);
  std::optional<std::string> get(const std::string& description);
  void put(const std::string& description, const std::string& choice, const std::string& note);
  static std::string key(const std::string& description);  // 32 hex digits
  // Every entry this process knows, (choice, note) by key: what max-autotune chose and why.
  std::vector<std::pair<std::string, std::string>> entries();
  // The same with their keys, by key (what a compiled package carries), and the way back: an
  // entry added to memory where its key is absent (not written to the file).
  struct Record {
    std::string key, choice, note;
  };
  std::vector<Record> records();
  void insert(const Record& r);

 private:
  using Entries = std::map<std::string, std::pair<std::string, std::string>>;  // key -> (choice, note)
  void merge_file(Entries& into) const;  // the file's valid lines, added where absent
  std::mutex mu_;
  std::optional<std::string> path_;
  Entries entries_;
};

}  // namespace kiln
