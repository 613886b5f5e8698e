// Shape-signature guards of compiled specializations: the per-symbol conditions under which
// one specialization's code is valid.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

struct SymbolGuard {
  enum class Kind : uint8_t { Equals, AtLeast };
  std::string symbol;
  Kind kind = Kind::AtLeast;
  int64_t value = 0;
};

// Dtypes, ranks and static dims are fixed by the graph (a call with anything else is
// rejected), so a specialization is told apart by its symbol guards: a symbol bound to 0 or 1
// is specialized to that value (broadcast-like dims get constant loop bounds, as
// torch.compile's 0/1 specialization does) and any other value is dynamic (>= 2). With
// `dynamic` false every symbol is specialized to its value.
struct GuardSet {
  std::vector<SymbolGuard> guards;  // sorted by symbol

  static GuardSet for_bindings(const Bindings& b, bool dynamic);
  // nullopt when `b` passes; else which guard failed and why.
  std::optional<std::string> check(const Bindings& b) const;
  // The symbols this specialization's code treats as constants.
  Bindings baked() const;
  std::string to_string() const;  // "B >= 2, T == 1"
};

}  // namespace kiln
