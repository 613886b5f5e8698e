#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "ir/str.h"
#include "runtime/kernel_cache.h"
#include "runtime/tune_store.h"

namespace fs = std::filesystem;
using kiln::CompiledKernel;
using kiln::KernelCache;

namespace {

// A fresh, empty directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> n{0};
    path = fs::temp_directory_path() / kiln::str_cat("kiln_cache_test_", getpid(), "_", n++);
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A payload derived from the key, large enough that a torn write would be visible.
CompiledKernel payload_for(const std::string& key, size_t bytes) {
  std::mt19937_64 rng(std::hash<std::string>()(key));
  CompiledKernel k;
  k.cubin.resize(bytes);
  for (char& c : k.cubin) c = char(rng());
  k.ptx = "// ptx of " + key;
  return k;
}

std::string key_of(int i) {
  std::vector<std::string> opts = {"--gpu-architecture=sm_90"};
  return kiln::kernel_cache_key(kiln::str_cat("kernel ", i), opts, "13.0", "sm_90");
}

// A compile function that counts its calls.
struct Compiler {
  int calls = 0;
  std::string key;
  absl::StatusOr<CompiledKernel> operator()() {
    ++calls;
    return payload_for(key, 4096);
  }
};

struct EnvOverride {
  std::string name;
  std::optional<std::string> old;
  EnvOverride(const char* n, const char* value) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    if (value) setenv(n, value, 1); else unsetenv(n);
  }
  ~EnvOverride() {
    if (old) setenv(name.c_str(), old->c_str(), 1); else unsetenv(name.c_str());
  }
};

}  // namespace

TEST_CASE("cache key depends on every field", "[runtime][cache]") {
  std::vector<std::string> o1 = {"-a", "-b"}, o2 = {"-a-b"}, o3 = {"-a", "-c"};
  std::string base = kiln::kernel_cache_key("src", o1, "13.0", "sm_90");
  CHECK(base.size() == 64);
  CHECK(base == kiln::kernel_cache_key("src", o1, "13.0", "sm_90"));
  CHECK(base != kiln::kernel_cache_key("src ", o1, "13.0", "sm_90"));
  CHECK(base != kiln::kernel_cache_key("src", o2, "13.0", "sm_90"));
  CHECK(base != kiln::kernel_cache_key("src", o3, "13.0", "sm_90"));
  CHECK(base != kiln::kernel_cache_key("src", o1, "13.1", "sm_90"));
  CHECK(base != kiln::kernel_cache_key("src", o1, "13.0", "sm_100"));
}

TEST_CASE("cache: miss, then memory hit, then a second instance hits disk", "[runtime][cache]") {
  TempDir dir;
  std::string key = key_of(1);
  Compiler c{0, key};
  auto compile = [&] { return c(); };
  KernelCache cache(dir.path);
  auto first = cache.get_or_compile(key, compile);
  REQUIRE(first.ok());
  auto second = cache.get_or_compile(key, compile);
  REQUIRE(second.ok());
  CHECK(c.calls == 1);
  CHECK(first->get() == second->get());
  CHECK(cache.stats().misses == 1);
  CHECK(cache.stats().memory_hits == 1);
  CHECK(cache.stats().disk_hits == 0);
  CHECK(fs::exists(cache.entry_path(key)));

  KernelCache other_process(dir.path);
  auto third = other_process.get_or_compile(key, compile);
  REQUIRE(third.ok());
  CHECK(c.calls == 1);
  CHECK((*third)->cubin == (*first)->cubin);
  CHECK((*third)->ptx == (*first)->ptx);
  CHECK(other_process.stats().disk_hits == 1);
  CHECK(other_process.stats().misses == 0);
}

TEST_CASE("cache: corrupt or truncated entries are detected and rebuilt", "[runtime][cache]") {
  TempDir dir;
  std::string key = key_of(2);
  Compiler c{0, key};
  auto compile = [&] { return c(); };
  REQUIRE(KernelCache(dir.path).get_or_compile(key, compile).ok());
  fs::path file = KernelCache(dir.path).entry_path(key);
  const auto good_size = fs::file_size(file);

  auto damage_and_reload = [&](auto damage) {
    damage();
    KernelCache cache(dir.path);
    int calls_before = c.calls;
    auto k = cache.get_or_compile(key, compile);
    REQUIRE(k.ok());
    CHECK(c.calls == calls_before + 1);  // rebuilt
    CHECK(cache.stats().corrupt_entries == 1);
    CHECK((*k)->cubin == payload_for(key, 4096).cubin);
    CHECK(fs::file_size(file) == good_size);  // rewritten whole
    KernelCache after(dir.path);
    REQUIRE(after.get_or_compile(key, compile).ok());
    CHECK(after.stats().disk_hits == 1);
  };
  SECTION("flipped payload byte") {
    damage_and_reload([&] {
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(std::streamoff(good_size - 100));
      f.put('\x5a');
    });
  }
  SECTION("truncated file") {
    damage_and_reload([&] { fs::resize_file(file, good_size / 2); });
  }
  SECTION("truncated inside the header") {
    damage_and_reload([&] { fs::resize_file(file, 20); });
  }
  SECTION("foreign file under the entry's name") {
    damage_and_reload([&] { std::ofstream(file, std::ios::trunc) << "not a kiln cache entry"; });
  }
  SECTION("lengths shifted between cubin and ptx, payload kept") {
    damage_and_reload([&] {
      // cubin length at byte 48, ptx length at 56 (little-endian): one byte moves from the
      // cubin to the ptx; the concatenated payload and its length stay the same.
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(48);
      unsigned char len[16];
      f.read(reinterpret_cast<char*>(len), 16);
      uint64_t cubin = 0, ptx = 0;
      for (int i = 0; i < 8; ++i) cubin |= uint64_t(len[i]) << (8 * i), ptx |= uint64_t(len[8 + i]) << (8 * i);
      --cubin, ++ptx;
      for (int i = 0; i < 8; ++i) len[i] = uint8_t(cubin >> (8 * i)), len[8 + i] = uint8_t(ptx >> (8 * i));
      f.seekp(48);
      f.write(reinterpret_cast<const char*>(len), 16);
    });
  }
  SECTION("an empty directory in the entry's place") {
    damage_and_reload([&] {
      fs::remove(file);
      fs::create_directory(file);
    });
  }
  SECTION("a FIFO in the entry's place: no hang") {
    damage_and_reload([&] {
      fs::remove(file);
      REQUIRE(::mkfifo(file.c_str(), 0600) == 0);
    });
  }
  SECTION("entry of another key renamed") {
    std::string other = key_of(3);
    Compiler c3{0, other};
    REQUIRE(KernelCache(dir.path).get_or_compile(other, [&] { return c3(); }).ok());
    damage_and_reload([&] {
      fs::rename(KernelCache(dir.path).entry_path(other), file);
    });
  }
}

TEST_CASE("cache: compile errors are returned and not stored", "[runtime][cache]") {
  TempDir dir;
  KernelCache cache(dir.path);
  std::string key = key_of(4);
  int calls = 0;
  auto failing = [&]() -> absl::StatusOr<CompiledKernel> {
    ++calls;
    return absl::InvalidArgumentError("NVRTC failed");
  };
  CHECK(cache.get_or_compile(key, failing).status().message() == "NVRTC failed");
  CHECK(cache.get_or_compile(key, failing).status().message() == "NVRTC failed");
  CHECK(calls == 2);
  CHECK(!fs::exists(cache.entry_path(key)));
  CHECK(cache.get_or_compile("not-a-key", failing).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("cache: disabled disk cache and the directory from the environment", "[runtime][cache]") {
  {
    EnvOverride e("KILN_CACHE_DIR", "off");
    CHECK(!KernelCache::directory_from_env().has_value());
  }
  {
    EnvOverride e("KILN_CACHE_DIR", "/some/where");
    CHECK(KernelCache::directory_from_env() == fs::path("/some/where"));
  }
  {
    EnvOverride e("KILN_CACHE_DIR", nullptr), x("XDG_CACHE_HOME", "/xdg");
    CHECK(KernelCache::directory_from_env() == fs::path("/xdg/kiln"));
  }
  {
    EnvOverride e("KILN_CACHE_DIR", nullptr), x("XDG_CACHE_HOME", nullptr), h("HOME", "/home/u");
    CHECK(KernelCache::directory_from_env() == fs::path("/home/u/.cache/kiln"));
  }
  TempDir dir;
  KernelCache memory_only(std::nullopt);
  std::string key = key_of(5);
  Compiler c{0, key};
  REQUIRE(memory_only.get_or_compile(key, [&] { return c(); }).ok());
  REQUIRE(memory_only.get_or_compile(key, [&] { return c(); }).ok());
  CHECK(c.calls == 1);
  CHECK(memory_only.stats().memory_hits == 1);
  KernelCache again(std::nullopt);
  REQUIRE(again.get_or_compile(key, [&] { return c(); }).ok());
  CHECK(c.calls == 2);  // nothing persisted
}

TEST_CASE("cache: a directory that cannot be created degrades to memory", "[runtime][cache]") {
  TempDir dir;
  fs::create_directories(dir.path);
  std::ofstream(dir.path / "file") << "x";
  KernelCache cache(dir.path / "file" / "sub");  // a path under a regular file
  std::string key = key_of(6);
  Compiler c{0, key};
  REQUIRE(cache.get_or_compile(key, [&] { return c(); }).ok());
  CHECK(cache.stats().disk_write_errors == 1);
  REQUIRE(cache.get_or_compile(key, [&] { return c(); }).ok());
  CHECK(cache.stats().memory_hits == 1);
}

TEST_CASE("cache: concurrent writers and readers never see a torn entry", "[runtime][cache]") {
  TempDir dir;
  constexpr int kThreads = 8, kKeys = 6;
  constexpr size_t kBytes = 1 << 20;
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(key_of(100 + i));
  std::atomic<int> wrong{0}, corrupt{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread is its own "process": its own cache instance, so every lookup goes to
      // disk and races with the other threads' renames.
      for (int round = 0; round < 3; ++round) {
        KernelCache cache(dir.path);
        for (int i = 0; i < kKeys; ++i) {
          const std::string& key = keys[(i + t) % kKeys];
          auto k = cache.get_or_compile(key, [&] { return payload_for(key, kBytes); });
          if (!k.ok() || (*k)->cubin != payload_for(key, kBytes).cubin) ++wrong;
        }
        corrupt += int(cache.stats().corrupt_entries);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(corrupt == 0);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path().extension() == ".kbin");  // no temporary file left behind
    ++entries;
  }
  CHECK(entries == kKeys);
}

TEST_CASE("cache: a non-empty directory in an entry's place is a miss every time, never a crash", "[runtime][cache]") {
  TempDir dir;
  std::string key = key_of(4);
  Compiler c{0, key};
  fs::path file = KernelCache(dir.path).entry_path(key);
  fs::create_directories(file / "inside");
  for (int run = 0; run < 2; ++run) {
    KernelCache cache(dir.path);
    auto k = cache.get_or_compile(key, [&] { return c(); });
    REQUIRE(k.ok());
    CHECK((*k)->cubin == payload_for(key, 4096).cubin);
    CHECK(cache.stats().corrupt_entries == 1);
    CHECK(cache.stats().disk_write_errors == 1);
  }
  CHECK(c.calls == 2);
}

TEST_CASE("tune store: damaged lines are dropped, entries survive a reload", "[runtime][tune]") {
  TempDir dir;
  fs::create_directories(dir.path);
  std::string path = (dir.path / "autotune.txt").string();
  {
    kiln::TuneStore s(path);
    s.put("kernel a", "128x1", "a note");
    s.put("kernel b", "256x2", "b note");
  }
  CHECK(kiln::TuneStore(path).get("kernel a") == "128x1");
  // Change b's choice in the file without its check: dropped, never used.
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = text.find(" 256x2 ");
  REQUIRE(at != std::string::npos);
  text.replace(at, 7, " 512x2 ");
  std::ofstream(path, std::ios::trunc) << text;
  kiln::TuneStore reread(path);
  CHECK(reread.get("kernel a") == "128x1");
  CHECK(!reread.get("kernel b"));
}

TEST_CASE("tune store: concurrent processes never lose each other's entries", "[runtime][tune]") {
  TempDir dir;
  fs::create_directories(dir.path);
  std::string path = (dir.path / "autotune.txt").string();
  constexpr int kProcs = 6, kEach = 15;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // each child: its own store (as another process starts), writing its entries
      kiln::TuneStore s(path);
      for (int i = 0; i < kEach; ++i) s.put(kiln::str_cat("proc ", p, " step ", i), kiln::str_cat(p, "x", i), "note");
      _exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
  kiln::TuneStore all(path);
  int found = 0;
  for (int p = 0; p < kProcs; ++p)
    for (int i = 0; i < kEach; ++i) found += all.get(kiln::str_cat("proc ", p, " step ", i)) == kiln::str_cat(p, "x", i);
  CHECK(found == kProcs * kEach);
}
