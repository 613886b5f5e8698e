// libFuzzer target: the .npy reader on arbitrary bytes. A tensor it accepts has exactly
// the bytes its header announces.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ir/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<kiln::HostTensor> t = kiln::parse_npy(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.npy");
  if (!t.ok()) return 0;
  if (t->nbytes() > static_cast<int64_t>(size)) std::abort();  // data cannot come from nowhere
  for (int64_t i = 0; i < t->numel(); ++i) (void)t->get(i);      // every element readable
  return 0;
}
