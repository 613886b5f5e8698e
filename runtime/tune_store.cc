#include "runtime/tune_store.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "runtime/kernel_cache.h"
#include "runtime/sha256.h"

namespace kiln {

TuneStore& TuneStore::instance() {
  static TuneStore* store = new TuneStore();
  return *store;
}

TuneStore::TuneStore() {
  std::optional<std::filesystem::path> dir = KernelCache::directory_from_env();
  if (!dir) return;
  path_ = (*dir / "autotune.txt").string();
  std::ifstream f(*path_);
  std::string line;
  while (std::getline(f, line)) {
    // "<key> <choice>  # note"; anything malformed is skipped (and dropped on rewrite).
    std::istringstream in(line);
    std::string k, choice;
    if (!(in >> k >> choice) || k.size() != 32) continue;
    size_t hash = line.find("  # ");
    entries_[k] = {choice, hash == std::string::npos ? std::string() : line.substr(hash + 4)};
  }
}

std::string TuneStore::key(const std::string& description) {
  return Sha256::hex(Sha256::hash(description)).substr(0, 32);
}

std::optional<std::string> TuneStore::get(const std::string& description) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key(description));
  if (it == entries_.end()) return std::nullopt;
  return it->second.first;
}

void TuneStore::put(const std::string& description, const std::string& choice, const std::string& note) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_[key(description)] = {choice, note};
  if (!path_) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(*path_).parent_path(), ec);
  std::string tmp = *path_ + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    for (const auto& [k, v] : entries_) f << k << ' ' << v.first << "  # " << v.second << '\n';
    if (!f) return;  // an unwritable cache directory only costs the next process a re-tune
  }
  std::filesystem::rename(tmp, *path_, ec);
}

}  // namespace kiln
