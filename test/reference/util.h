// Helpers for the reference evaluator's tests: literal tensors, one-op graphs, and exact
// element checks (NaN equal to NaN).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace kiln::test {

using Dims = std::vector<int64_t>;

inline HostTensor tensor(DType t, Dims shape, const std::vector<double>& values) {
  HostTensor h(t, std::move(shape));
  REQUIRE(static_cast<int64_t>(values.size()) == h.numel());
  for (size_t i = 0; i < values.size(); ++i) h.set(i, values[i]);
  return h;
}

inline HostTensor int_tensor(DType t, Dims shape, const std::vector<int64_t>& values) {
  HostTensor h(t, std::move(shape));
  REQUIRE(static_cast<int64_t>(values.size()) == h.numel());
  for (size_t i = 0; i < values.size(); ++i) h.set_int(i, values[i]);
  return h;
}

inline std::vector<double> doubles_of(const HostTensor& t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.get(i));
  return v;
}

inline Shape static_shape(const Dims& d) { return Shape(d.begin(), d.end()); }

// Evaluates one node of `op` on `ins` (inputs %x0, %x1, ... with static shapes).
inline absl::StatusOr<std::vector<HostTensor>> try_run(Op op, const std::vector<HostTensor>& ins, Attrs attrs = {}) {
  Graph g("one");
  std::vector<Value*> vals;
  TensorMap args;
  for (size_t i = 0; i < ins.size(); ++i) {
    std::string name = str_cat("x", i);
    absl::StatusOr<Value*> v = g.add_input(name, TensorType{ins[i].dtype(), static_shape(ins[i].shape())});
    REQUIRE(v.ok());
    vals.push_back(*v);
    args[name] = ins[i];
  }
  absl::StatusOr<Node*> n = g.add_node(op, vals, std::move(attrs));
  INFO(n.status().message());
  REQUIRE(n.ok());
  g.set_outputs((*n)->results());
  return evaluate(g, args);
}

inline std::vector<HostTensor> run_all(Op op, const std::vector<HostTensor>& ins, Attrs attrs = {}) {
  absl::StatusOr<std::vector<HostTensor>> out = try_run(op, ins, std::move(attrs));
  INFO(out.status().message());
  REQUIRE(out.ok());
  return *std::move(out);
}

inline HostTensor run(Op op, const std::vector<HostTensor>& ins, Attrs attrs = {}) {
  return run_all(op, ins, std::move(attrs)).at(0);
}

inline bool same_value(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// Exact: dtype, shape and every element (as stored).
inline void check_exact(const HostTensor& t, DType dtype, const Dims& shape, const std::vector<double>& want) {
  REQUIRE(t.dtype() == dtype);
  REQUIRE(t.shape() == shape);
  REQUIRE(static_cast<int64_t>(want.size()) == t.numel());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": got " << t.get(i) << ", want " << want[i]);
    CHECK(same_value(t.get(i), want[i]));
  }
}

inline void check_ints(const HostTensor& t, DType dtype, const Dims& shape, const std::vector<int64_t>& want) {
  REQUIRE(t.dtype() == dtype);
  REQUIRE(t.shape() == shape);
  REQUIRE(static_cast<int64_t>(want.size()) == t.numel());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i);
    CHECK(t.get_int(i) == want[i]);
  }
}

// Within `rel` relative (plus a tiny absolute) error; NaN only matches NaN.
inline void check_close(const HostTensor& t, const Dims& shape, const std::vector<double>& want, double rel = 2e-7,
                        double abs = 1e-12) {
  REQUIRE(t.shape() == shape);
  REQUIRE(static_cast<int64_t>(want.size()) == t.numel());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": got " << t.get(i) << ", want " << want[i]);
    if (std::isnan(want[i]) || std::isinf(want[i])) CHECK(same_value(t.get(i), want[i]));
    else CHECK(std::fabs(t.get(i) - want[i]) <= abs + rel * std::fabs(want[i]));
  }
}

inline bool contains(const absl::Status& s, std::string_view what) {
  return status_message(s).find(what) != std::string::npos;
}

}  // namespace kiln::test
