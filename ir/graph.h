// The graph IR: SSA values with a dtype and a symbolic shape; runtime inputs and named
// parameters (weights, with or without host data) in signature order; nodes kept in
// topological order; outputs. Passes mutate it through the methods below only.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "ir/attr.h"
#include "ir/host_tensor.h"
#include "ir/op.h"
#include "ir/sym.h"

namespace kiln {

class Node;

class Value {
 public:
  enum class Role : uint8_t { Input, Param, Result };

  const std::string& name() const { return name_; }  // without the '%'
  const TensorType& type() const { return type_; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  Role role() const { return role_; }
  bool is_input() const { return role_ == Role::Input; }
  bool is_param() const { return role_ == Role::Param; }
  // A state input: a caller-owned buffer the graph may update in place (DESIGN.md, State).
  bool is_state() const { return state_; }
  Node* producer() const { return producer_; }  // null for inputs and params
  int result_index() const { return index_; }
  // Host data of a parameter; null when the parameter is bound at run time.
  const std::shared_ptr<const HostTensor>& data() const { return data_; }
  // The nodes of its graph reading it, a node once per operand slot, in no particular order
  // (Graph::uses() lists them in node order). Kept by the graph's every edit, so that
  // replace_all_uses and erase cost O(uses), not a scan of the whole graph.
  const std::vector<Node*>& users() const { return users_; }

 private:
  friend class Graph;
  std::string name_;
  TensorType type_;
  Role role_ = Role::Result;
  Node* producer_ = nullptr;
  int index_ = 0;
  bool state_ = false;
  std::shared_ptr<const HostTensor> data_;
  std::vector<Node*> users_;
};

class Node {
 public:
  Op op() const { return op_; }
  const OpInfo& info() const { return op_info(op_); }
  const std::vector<Value*>& operands() const { return operands_; }
  Value* operand(size_t i) const { return operands_[i]; }
  size_t num_operands() const { return operands_.size(); }
  const std::vector<Value*>& results() const { return results_; }
  Value* result(size_t i = 0) const { return results_[i]; }
  const Attrs& attrs() const { return attrs_; }  // read them typed: ir/op_attrs.h
  // Where the node came from ("file.kiln:3:7", "decoder.cc:42"); empty if unknown.
  const std::string& loc() const { return loc_; }
  // "%g = linear (mlp.kiln:2:3)": how errors name a node.
  std::string describe() const;

 private:
  friend class Graph;
  Op op_;
  std::vector<Value*> operands_;
  std::vector<Value*> results_;
  Attrs attrs_;
  std::string loc_;
  std::list<std::unique_ptr<Node>>::iterator self_;  // its place in its graph's node list
};

struct SymbolInfo {
  int64_t min = 1;
  std::optional<int64_t> max;
  friend bool operator==(const SymbolInfo&, const SymbolInfo&) = default;
};

class Graph {
 public:
  using NodeList = std::list<std::unique_ptr<Node>>;

  explicit Graph(std::string name = "main");
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;
  Graph clone() const;

  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }

  // Arguments, in signature order. Names must be unique in the graph.
  // A `state` input is a caller-owned buffer that at most one state-writing op (cache_write)
  // updates in place; that op's result aliases it (DESIGN.md, State).
  absl::StatusOr<Value*> add_input(const std::string& name, TensorType type, bool state = false);
  absl::StatusOr<Value*> add_param(const std::string& name, TensorType type,
                                   std::shared_ptr<const HostTensor> data = nullptr);
  // Gives a parameter host data (checked against its type) or removes it (nullptr).
  absl::Status set_param_data(Value* param, std::shared_ptr<const HostTensor> data);

  // Adds a node at the insertion point (the end by default), inferring its result types.
  // `result_names` are used verbatim (an error if taken); absent names are made from the
  // op's name. Errors name the op, the operands' types and `loc`.
  absl::StatusOr<Node*> add_node(Op op, std::vector<Value*> operands, Attrs attrs = {},
                                 std::vector<std::string> result_names = {},
                                 std::string loc = {});
  // New nodes go before `before` until reset (nullptr: append at the end).
  void set_insertion_point(Node* before);
  Node* insertion_point() const;  // the node new nodes go before; nullptr: the end

  const std::vector<Value*>& args() const { return args_; }
  std::vector<Value*> inputs() const;
  std::vector<Value*> params() const;
  const NodeList& nodes() const { return nodes_; }
  size_t num_nodes() const { return nodes_.size(); }
  const std::vector<Value*>& outputs() const { return outputs_; }
  void set_outputs(std::vector<Value*> outs) { outputs_ = std::move(outs); }

  Value* find(std::string_view name) const;  // null if absent
  // Uses of every value: the nodes reading it, in node order (a node once per operand).
  absl::flat_hash_map<const Value*, std::vector<Node*>> uses() const;

  // Rewrites every use of `from` (node operands and outputs) to read `to`.
  void replace_all_uses(Value* from, Value* to);
  void replace_operand(Node* n, size_t i, Value* v);
  // Removes a node whose results are unused; returns false (and keeps it) otherwise.
  bool erase(Node* n);
  // Removes nodes that no output depends on; returns how many went.
  int remove_dead_nodes();

  // Known bounds per symbol (>= 1 unless stated). Symbols used without an entry have the
  // default bounds.
  const std::map<std::string, SymbolInfo>& symbol_bounds() const { return bounds_; }
  absl::Status set_symbol_bounds(const std::string& sym, SymbolInfo info);
  SymbolInfo symbol_info(const std::string& sym) const;
  // Symbols appearing in the arguments' shapes, sorted.
  std::vector<std::string> symbols() const;

  std::string fresh_name(std::string_view hint);
  // Gives a value a new name (unique in the graph), e.g. a traced value the user names.
  absl::Status rename(Value* v, const std::string& name);

 private:
  Value* new_value(std::string name);
  // Drops n's operand slots from their values' use lists, before n goes.
  static void drop_uses(Node* n);
  absl::Status claim_name(const std::string& name);

  std::string name_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<Value*> args_;
  NodeList nodes_;
  NodeList::iterator insert_at_;
  bool insert_at_end_ = true;
  std::vector<Value*> outputs_;
  absl::flat_hash_map<std::string, Value*> by_name_;
  absl::flat_hash_map<std::string, int> name_counters_;
  std::map<std::string, SymbolInfo> bounds_;
};

// Whether `n` writes a state input in place (operand 0), its result aliasing it.
bool writes_state(const Node& n);
// The state input whose buffer `v` is: the input itself, or the result of the op writing it;
// null for any other value.
const Value* state_storage(const Value* v);

// Symbol values implied by concrete argument shapes, keyed by argument name; errors on
// a rank mismatch, a static dim that differs, or a symbol bound two different ways.
absl::StatusOr<Bindings> bind_symbols(const Graph& g,
                                      const std::map<std::string, std::vector<int64_t>>& shapes);

}  // namespace kiln
