// libFuzzer target: the kernel-cache entry reader on arbitrary bytes (seeds are entry
// files, fuzz/regressions/cache_entry/). The entry is read under the key its own header
// names, which reaches the length and checksum checks, and under a fixed key; an accepted
// payload must fit in the bytes read.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "runtime/kernel_cache.h"

namespace {

void check(std::string_view entry, const std::string& key) {
  std::optional<kiln::CompiledKernel> k = kiln::parse_kernel_cache_entry(entry, key);
  if (k && k->cubin.size() + k->ptx.size() > entry.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view entry(reinterpret_cast<const char*>(data), size);
  check(entry, std::string(64, '0'));
  if (size >= 48) {  // the 32-byte key at offset 16, as hex
    static const char* hex = "0123456789abcdef";
    std::string own;
    for (size_t i = 16; i < 48; ++i) own += hex[uint8_t(entry[i]) >> 4], own += hex[uint8_t(entry[i]) & 15];
    check(entry, own);
  }
  return 0;
}
