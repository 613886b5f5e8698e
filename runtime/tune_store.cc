#include "runtime/tune_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ir/file_io.h"
#include "runtime/kernel_cache.h"
#include "runtime/sha256.h"

namespace kiln {
namespace {

constexpr int64_t kMaxFileBytes = int64_t{64} << 20;

std::string line_check(const std::string& k, const std::string& choice, const std::string& note) {
  return Sha256::hex(Sha256().update_field(k).update_field(choice).update_field(note).finish()).substr(0, 8);
}

}  // namespace

TuneStore& TuneStore::instance() {
  static TuneStore* store = [] {
    std::optional<std::filesystem::path> dir = KernelCache::directory_from_env();
    return new TuneStore(dir ? std::optional<std::string>((*dir / "autotune.txt").string()) : std::nullopt);
  }();
  return *store;
}

TuneStore::TuneStore(std::optional<std::string> path) : path_(std::move(path)) {
  if (path_) merge_file(entries_);
}

void TuneStore::merge_file(Entries& into) const {
  // Not a regular file, too large or unreadable: no entries (the next put replaces it).
  absl::StatusOr<std::string> text = read_regular_file(*path_, kMaxFileBytes);
  if (!text.ok()) return;
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    // "<key> <choice> <check>  # note"; anything malformed is skipped (and dropped on rewrite).
    size_t hash = line.find("  # ");
    std::istringstream in(line.substr(0, hash));
    std::string k, choice, check, extra;
    if (!(in >> k >> choice >> check) || (in >> extra) || k.size() != 32) continue;
    std::string note = hash == std::string::npos ? std::string() : line.substr(hash + 4);
    if (check != line_check(k, choice, note)) continue;
    into.emplace(k, std::pair{choice, note});
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

std::vector<std::pair<std::string, std::string>> TuneStore::entries() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, v] : entries_) out.push_back(v);
  return out;
}

std::vector<TuneStore::Record> TuneStore::records() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Record> out;
  for (const auto& [key, v] : entries_) out.push_back({key, v.first, v.second});
  return out;
}

void TuneStore::insert(const Record& r) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.emplace(r.key, std::pair{r.choice, r.note});
}

void TuneStore::put(const std::string& description, const std::string& choice, const std::string& note) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string k = key(description);
  entries_[k] = {choice, note};
  if (!path_) return;
  // An unwritable cache directory only costs the next process a re-tune: failures return.
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(*path_).parent_path(), ec);
  int lock_fd = ::open((*path_ + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return;
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }  // closing releases the flock
  } unlock{lock_fd};
  if (::flock(lock_fd, LOCK_EX) != 0) return;
  merge_file(entries_);  // entries other processes wrote since this one read the file
  std::string tmp = *path_ + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    for (const auto& [key, v] : entries_)
      f << key << ' ' << v.first << ' ' << line_check(key, v.first, v.second) << "  # " << v.second << '\n';
    f.close();
    if (!f) {
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, *path_, ec);
}

}  // namespace kiln
