// libFuzzer target: the ONNX importer on arbitrary bytes (mostly rejected by protobuf; the
// seed corpus of real models makes the mutations structured). An imported graph verifies.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "frontends/onnx/onnx_import.h"
#include "ir/str.h"
#include "ir/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<kiln::Graph> g = kiln::import_onnx_bytes(bytes, "fuzz.onnx");
  if (!g.ok()) return 0;
  if (absl::Status s = kiln::verify(*g); !s.ok()) {
    std::fprintf(stderr, "imported graph does not verify: %s\n", kiln::status_message(s).c_str());
    std::abort();
  }
  return 0;
}
