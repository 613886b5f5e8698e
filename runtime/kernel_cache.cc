#include "runtime/kernel_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/sha256.h"

namespace kiln {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'K', 'E', 'R', 'N'};
constexpr uint32_t kFormatVersion = 2;  // 2: the checksum covers the header too
constexpr int64_t kMaxEntryBytes = int64_t{1} << 30;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 32 + 8 + 8 + 32;

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += char(uint8_t(v >> (8 * i)));
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return v;
}

// Over the header before the checksum field (magic, version, key, both lengths) and the
// payload: shifting bytes between the two lengths changes it.
Sha256::Digest entry_checksum(std::string_view header, const CompiledKernel& k) {
  return Sha256().update(header).update(k.cubin).update(k.ptx).finish();
}

bool is_key(const std::string& key) {
  return key.size() == 64 &&
         key.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

}  // namespace

std::string kernel_cache_key(std::string_view source, std::span<const std::string> options,
                             std::string_view compiler_version, std::string_view arch) {
  Sha256 h;
  h.update_field("kiln kernel cache key v1");
  h.update_field(source);
  h.update_field(std::to_string(options.size()));
  for (const std::string& o : options) h.update_field(o);
  h.update_field(compiler_version);
  h.update_field(arch);
  return Sha256::hex(h.finish());
}

std::optional<std::filesystem::path> KernelCache::directory_from_env() {
  if (auto dir = env("KILN_CACHE_DIR")) {
    if (*dir == "off") return std::nullopt;
    return std::filesystem::path(*dir);
  }
  if (auto xdg = env("XDG_CACHE_HOME")) return std::filesystem::path(*xdg) / "kiln";
  if (auto home = env("HOME")) return std::filesystem::path(*home) / ".cache" / "kiln";
  return std::nullopt;  // no place to put it: memory only
}

KernelCache::KernelCache(std::optional<std::filesystem::path> disk_dir) : dir_(std::move(disk_dir)) {}

std::filesystem::path KernelCache::entry_path(const std::string& key) const {
  return dir_ ? *dir_ / (key + ".kbin") : std::filesystem::path();
}

std::vector<std::pair<std::string, std::shared_ptr<const CompiledKernel>>> KernelCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::shared_ptr<const CompiledKernel>>> out(memory_.begin(), memory_.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

absl::Status KernelCache::insert(const std::string& key, std::shared_ptr<const CompiledKernel> kernel) {
  if (!is_key(key)) return invalid_argument("kernel cache key must be 64 lowercase hex digits, got '", key, "'");
  std::lock_guard<std::mutex> lock(mu_);
  memory_.emplace(key, std::move(kernel));
  return absl::OkStatus();
}

KernelCacheStats KernelCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::shared_ptr<const CompiledKernel> KernelCache::read_disk(const std::string& key) {
  // A directory, FIFO or device in the entry's place, or an oversized file, is corrupt.
  absl::StatusOr<std::string> read = read_regular_file(entry_path(key).string(), kMaxEntryBytes);
  if (absl::IsNotFound(read.status())) return nullptr;  // absent: a plain miss
  std::optional<CompiledKernel> k = read.ok() ? parse_kernel_cache_entry(*read, key) : std::nullopt;
  if (!k) {
    std::error_code ec;
    std::filesystem::remove(entry_path(key), ec);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.corrupt_entries;
    return nullptr;
  }
  return std::make_shared<const CompiledKernel>(*std::move(k));
}

std::optional<CompiledKernel> parse_kernel_cache_entry(std::string_view bytes, const std::string& key) {
  auto reject = [] { return std::nullopt; };
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, 8) != 0) return reject();
  const char* p = bytes.data() + 8;
  uint32_t version = 0;
  std::memcpy(&version, p, 4);
  if (version != kFormatVersion) return reject();
  p += 8;  // version + reserved
  Sha256::Digest stored_key, checksum;
  std::memcpy(stored_key.data(), p, 32);
  if (Sha256::hex(stored_key) != key) return reject();
  p += 32;
  uint64_t cubin_len = get_u64(p), ptx_len = get_u64(p + 8);
  p += 16;
  std::memcpy(checksum.data(), p, 32);
  if (cubin_len > bytes.size() || ptx_len > bytes.size() ||
      kHeaderBytes + cubin_len + ptx_len != bytes.size())
    return reject();
  CompiledKernel k;
  k.cubin = bytes.substr(kHeaderBytes, cubin_len);
  k.ptx = bytes.substr(kHeaderBytes + cubin_len, ptx_len);
  if (entry_checksum(bytes.substr(0, kHeaderBytes - 32), k) != checksum) return reject();
  return k;
}

void KernelCache::write_disk(const std::string& key, const CompiledKernel& k) {
  std::string bytes(kMagic, 8);
  uint32_t header[2] = {kFormatVersion, 0};
  bytes.append(reinterpret_cast<const char*>(header), 8);
  for (size_t i = 0; i < 32; ++i) bytes += char(std::stoi(key.substr(2 * i, 2), nullptr, 16));
  put_u64(bytes, k.cubin.size());
  put_u64(bytes, k.ptx.size());
  Sha256::Digest sum = entry_checksum(bytes, k);
  bytes.append(reinterpret_cast<const char*>(sum.data()), sum.size());
  bytes += k.cubin;
  bytes += k.ptx;

  // A name no other writer (thread or process) can pick, in the same directory so that
  // rename() is atomic.
  static std::atomic<uint64_t> counter{0};
  std::ostringstream tmp_name;
  tmp_name << "." << key << "." << getpid() << "." << std::this_thread::get_id() << "."
           << counter++ << ".tmp";
  std::filesystem::path tmp = *dir_ / tmp_name.str();
  std::error_code ec;
  std::filesystem::create_directories(*dir_, ec);
  bool ok = !ec;
  if (ok) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    out.close();
    ok = bool(out);
  }
  if (ok) {
    std::filesystem::rename(tmp, entry_path(key), ec);
    ok = !ec;
  }
  if (!ok) {
    std::filesystem::remove(tmp, ec);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.disk_write_errors;
  }
}

absl::StatusOr<std::shared_ptr<const CompiledKernel>> KernelCache::get_or_compile(
    const std::string& key, const std::function<absl::StatusOr<CompiledKernel>()>& compile) {
  if (!is_key(key))
    return invalid_argument("kernel cache key must be 64 lowercase hex digits, got '", key, "'");
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = memory_.find(key);
    if (it != memory_.end()) {
      ++stats_.memory_hits;
      return it->second;
    }
  }
  if (dir_) {
    if (auto k = read_disk(key)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.disk_hits;
      return memory_.emplace(key, k).first->second;
    }
  }
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CompiledKernel> compiled = compile();
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    stats_.compile_ms += ms;
  }
  KILN_ASSIGN_OR_RETURN(CompiledKernel kernel, std::move(compiled));
  auto k = std::make_shared<const CompiledKernel>(std::move(kernel));
  if (dir_) write_disk(key, *k);
  std::lock_guard<std::mutex> lock(mu_);
  return memory_.emplace(key, k).first->second;
}

}  // namespace kiln
