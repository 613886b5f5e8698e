// Node attributes: typed values (ints, floats, bools, strings, dtypes and lists) as they
// appear in the text IR, e.g. axes=[-1], eps=1e-6, approximate="tanh", shape=[B, -1].
#pragma once

#include <map>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/sym.h"

namespace kiln {

enum class AttrType : uint8_t { Int, Float, Bool, String, DType, Ints, Floats, Dims, Scalar, Dim };
std::string_view attr_type_name(AttrType t);

using AttrValue = std::variant<int64_t, double, bool, std::string, DType, std::vector<int64_t>,
                               std::vector<double>, std::vector<SymExpr>, SymExpr>;

// IR text of a value: 3, 1e-06, true, "tanh", bf16, [0, -1], [B, 128], T - 1. Floats print in
// the shortest form that reads back to the same double.
std::string attr_to_string(const AttrValue& v);
std::string format_double(double v);

// Converts a value as parsed (an int, a list of ints, ...) to the type an op's schema
// wants (a float, a list of dims, ...), or says what was expected.
absl::StatusOr<AttrValue> coerce_attr(const AttrValue& v, AttrType want);

// Attributes set on one node, keyed by name. The printer orders them by the op's schema.
class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<const std::string, AttrValue>> init) : map_(init) {}
  void set(const std::string& name, AttrValue v) { map_[name] = std::move(v); }
  void erase(const std::string& name) { map_.erase(name); }
  const AttrValue* find(std::string_view name) const {
    auto it = map_.find(std::string(name));
    return it == map_.end() ? nullptr : &it->second;
  }
  bool empty() const { return map_.empty(); }
  auto begin() const { return map_.begin(); }
  auto end() const { return map_.end(); }
  friend bool operator==(const Attrs&, const Attrs&) = default;

 private:
  std::map<std::string, AttrValue> map_;
};

}  // namespace kiln
