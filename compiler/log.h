// kiln's log, on stderr, at the level KILN_LOG gives (read once): 1 compile summaries,
// specializations built and why they were rebuilt; 2 also lowering decisions; 3 also the
// IR after every pass. Unset or 0: silent.
#pragma once

#include <string>

namespace kiln {

int log_level();
void log_line(int level, const std::string& line);  // printed when level <= log_level()

}  // namespace kiln
