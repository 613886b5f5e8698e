#include "compiler/log.h"

#include <cstdio>
#include <cstdlib>

namespace kiln {

int log_level() {
  static const int level = [] {
    const char* v = std::getenv("KILN_LOG");
    return v ? std::atoi(v) : 0;
  }();
  return level;
}

void log_line(int level, const std::string& line) {
  if (level > log_level()) return;
  std::fprintf(stderr, "%s%s", line.c_str(), !line.empty() && line.back() == '\n' ? "" : "\n");
}

}  // namespace kiln
