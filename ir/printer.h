// The text IR printer. Output is deterministic and parses back to identical text:
// print_graph(parse_graph(print_graph(g))) == print_graph(g).
#pragma once

#include <string>

#include "ir/graph.h"

namespace kiln {

std::string print_graph(const Graph& g);
// One node as its IR line without indentation: "%h = mul(%a, %u) : bf16[B, 11008]".
std::string print_node(const Node& n);

}  // namespace kiln
