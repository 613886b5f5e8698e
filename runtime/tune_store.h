// max-autotune's memory: one human-readable line per tuned step (a kernel's launch shape, a
// GEMM's library algorithm),
//   <key> <choice>  # <what was tuned: kernel or GEMM shape, device, times>
// in <kernel cache dir>/autotune.txt, so that a second process starts tuned. The key is a
// hash of the description (kernel source or GEMM spec, sizes, device); the file is rewritten
// atomically on every new entry. Without a cache directory choices live in memory only.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace kiln {

class TuneStore {
 public:
  static TuneStore& instance();  // at KernelCache::directory_from_env()
  std::optional<std::string> get(const std::string& description);
  void put(const std::string& description, const std::string& choice, const std::string& note);
  static std::string key(const std::string& description);  // 32 hex digits

 private:
  TuneStore();
  std::mutex mu_;
  std::optional<std::string> path_;
  std::map<std::string, std::pair<std::string, std::string>> entries_;  // key -> (choice, note)
};

}  // namespace kiln
