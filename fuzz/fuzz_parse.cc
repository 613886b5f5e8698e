// libFuzzer target: the text IR parser and the verifier on arbitrary bytes. A parsed graph
// must verify (the parser's contract) and print back to text that parses to the same text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "ir/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<kiln::Graph> g = kiln::parse_graph(text, "fuzz.kiln");
  if (!g.ok()) return 0;
  if (absl::Status s = kiln::verify(*g); !s.ok()) {
    std::fprintf(stderr, "parsed graph does not verify: %s\n", kiln::status_message(s).c_str());
    std::abort();
  }
  std::string printed = kiln::print_graph(*g);
  absl::StatusOr<kiln::Graph> again = kiln::parse_graph(printed, "printed.kiln");
  if (!again.ok() || kiln::print_graph(*again) != printed) {
    std::fprintf(stderr, "printed graph does not round-trip:\n%s\n", printed.c_str());
    std::abort();
  }
  return 0;
}
