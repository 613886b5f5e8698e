#include "ir/dump.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <fstream>
#include <mutex>

#include "ir/str.h"

namespace kiln {

namespace fs = std::filesystem;

absl::Status DumpWriter::create() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return invalid_argument("cannot create dump directory ", dir_.string(), ": ", ec.message());
  return absl::OkStatus();
}

absl::Status DumpWriter::write(const fs::path& file, std::string_view text) const {
  fs::path p = dir_ / file;
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  if (ec) return invalid_argument("cannot create ", p.parent_path().string(), ": ", ec.message());
  // Unique per process and write, so that two writers of one file never share a temporary.
  static std::atomic<uint64_t> writes{0};
  fs::path tmp = p;
  tmp += str_cat(".tmp-", ::getpid(), "-", writes++);
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f) {
      fs::remove(tmp, ec);
      return invalid_argument("cannot write ", p.string());
    }
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return invalid_argument("cannot write ", p.string(), ": ", ec.message());
  }
  return absl::OkStatus();
}

absl::Status DumpWriter::write_pass(int index, std::string_view pass, std::string_view text) const {
  return write(fmt::format("{:02}-{}.kiln", index, pass), text);
}

absl::Status DumpWriter::remove_stale(const std::set<std::string>& keep) const {
  std::set<fs::path> extensions;
  for (const std::string& k : keep) extensions.insert(fs::path(k).extension());
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return absl::OkStatus();
  // increment(ec) and is_regular_file(ec): a range-for's ++ and the plain overload throw
  // filesystem_error on an I/O error.
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (it->is_regular_file(ec) && extensions.contains(p.extension()) && !keep.contains(p.filename().string()))
      fs::remove(p, ec);
    if (ec) break;
  }
  if (ec) return invalid_argument("cannot clear ", dir_.string(), ": ", ec.message());
  return absl::OkStatus();
}

DumpWriter DumpWriter::claim(std::string_view name) const {
  std::string safe;
  for (char c : name) safe += std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ? c : '_';
  if (safe.empty() || safe == "." || safe == "..") safe = "graph";
  static std::mutex mu;
  static std::set<std::string> claimed;  // folders handed out so far, as normalized paths
  std::lock_guard<std::mutex> lock(mu);
  for (int n = 1;; ++n) {
    fs::path folder = dir_ / (n == 1 ? safe : str_cat(safe, "-", n));
    if (claimed.insert(folder.lexically_normal().string()).second) return DumpWriter(folder);
  }
}

absl::Status write_dump_file(const fs::path& p, std::string_view text) {
  return DumpWriter(p.parent_path()).write(p.filename(), text);
}

}  // namespace kiln
