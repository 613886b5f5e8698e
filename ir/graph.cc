#include "ir/graph.h"

#include <algorithm>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

std::string Node::describe() const {
  std::string names = str_join(results_, ", ", [](const Value* v) { return "%" + v->name(); });
  std::string s = str_cat(names, names.empty() ? "" : " = ", op_name(op_));
  if (!loc_.empty()) s += str_cat(" (", loc_, ")");
  return s;
}

bool writes_state(const Node& n) { return n.op() == Op::CacheWrite; }

const Value* state_storage(const Value* v) {
  while (v && v->producer() && writes_state(*v->producer())) v = v->producer()->operand(0);
  return v && v->is_state() ? v : nullptr;
}

Graph::Graph(std::string name) : name_(std::move(name)), insert_at_(nodes_.end()) {}

Value* Graph::new_value(std::string name) {
  values_.push_back(std::make_unique<Value>());
  Value* v = values_.back().get();
  v->name_ = std::move(name);
  by_name_[v->name_] = v;
  return v;
}

absl::Status Graph::claim_name(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("a value name must not be empty");
  if (by_name_.contains(name))
    return invalid_argument("value %", name, " is already defined");
  return absl::OkStatus();
}

std::string Graph::fresh_name(std::string_view hint) {
  std::string base(hint.empty() ? "t" : hint);
  int& n = name_counters_[base];
  std::string name = n == 0 ? base : str_cat(base, "_", n);
  while (by_name_.contains(name)) name = str_cat(base, "_", ++n);
  ++n;
  return name;
}

absl::Status Graph::rename(Value* v, const std::string& name) {
  if (v->name_ == name) return absl::OkStatus();
  KILN_RETURN_IF_ERROR(claim_name(name));
  by_name_.erase(v->name_);
  v->name_ = name;
  by_name_[name] = v;
  return absl::OkStatus();
}

absl::StatusOr<Value*> Graph::add_input(const std::string& name, TensorType type, bool state) {
  KILN_RETURN_IF_ERROR(claim_name(name));
  Value* v = new_value(name);
  v->type_ = std::move(type);
  v->role_ = Value::Role::Input;
  v->state_ = state;
  args_.push_back(v);
  return v;
}

absl::StatusOr<Value*> Graph::add_param(const std::string& name, TensorType type,
                                        std::shared_ptr<const HostTensor> data) {
  KILN_RETURN_IF_ERROR(claim_name(name));
  Value* v = new_value(name);
  v->type_ = std::move(type);
  v->role_ = Value::Role::Param;
  args_.push_back(v);
  if (auto s = set_param_data(v, std::move(data)); !s.ok()) {
    args_.pop_back();
    by_name_.erase(name);
    values_.pop_back();
    return s;
  }
  return v;
}

absl::Status Graph::set_param_data(Value* param, std::shared_ptr<const HostTensor> data) {
  if (data) {
    absl::StatusOr<std::vector<int64_t>> shape = evaluate_shape(param->shape(), {});
    if (!shape.ok() || *shape != data->shape() || data->dtype() != param->dtype())
      return invalid_argument("data ", data->type_string(), " for parameter %",
                                                     param->name(), " does not match its type ",
                                                     param->type().to_string());
  }
  param->data_ = std::move(data);
  return absl::OkStatus();
}

absl::StatusOr<Node*> Graph::add_node(Op op, std::vector<Value*> operands, Attrs attrs,
                                      std::vector<std::string> result_names, std::string loc) {
  std::vector<TensorType> in;
  for (const Value* v : operands) in.push_back(v->type());
  absl::StatusOr<std::vector<TensorType>> out = infer_types(op, in, attrs);
  if (!out.ok()) {
    std::string where = loc.empty() ? "" : str_cat(loc, ": ");
    return invalid_argument(where, op_name(op), ": ", out.status().message());
  }
  if (result_names.size() > out->size())
    return invalid_argument(loc.empty() ? "" : loc + ": ", op_name(op), " has ",
                                                   out->size(), " result(s), but ", result_names.size(),
                                                   " names were given");
  for (const std::string& n : result_names)
    if (auto s = claim_name(n); !s.ok())
      return invalid_argument(loc.empty() ? "" : loc + ": ", s.message());
  auto node = std::make_unique<Node>();
  node->op_ = op;
  node->operands_ = std::move(operands);
  for (Value* v : node->operands_) v->users_.push_back(node.get());
  node->attrs_ = std::move(attrs);
  node->loc_ = std::move(loc);
  for (size_t i = 0; i < out->size(); ++i) {
    Value* v = new_value(i < result_names.size() ? result_names[i] : fresh_name(op_name(op)));
    v->type_ = (*out)[i];
    v->producer_ = node.get();
    v->index_ = static_cast<int>(i);
    node->results_.push_back(v);
  }
  Node* raw = node.get();
  raw->self_ = nodes_.insert(insert_at_end_ ? nodes_.end() : insert_at_, std::move(node));
  return raw;
}

void Graph::set_insertion_point(Node* before) {
  insert_at_end_ = before == nullptr;
  if (before)
    insert_at_ = before->self_;
}

Node* Graph::insertion_point() const {
  return insert_at_end_ || insert_at_ == nodes_.end() ? nullptr : insert_at_->get();
}

std::vector<Value*> Graph::inputs() const {
  std::vector<Value*> out;
  for (Value* v : args_) if (v->is_input()) out.push_back(v);
  return out;
}

std::vector<Value*> Graph::params() const {
  std::vector<Value*> out;
  for (Value* v : args_) if (v->is_param()) out.push_back(v);
  return out;
}

Value* Graph::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : it->second;
}

absl::flat_hash_map<const Value*, std::vector<Node*>> Graph::uses() const {
  absl::flat_hash_map<const Value*, std::vector<Node*>> u;
  for (const auto& n : nodes_)
    for (Value* v : n->operands_) u[v].push_back(n.get());
  return u;
}

namespace {

// Removes one entry of n from a use list (the entry of one operand slot).
void remove_one_use(std::vector<Node*>& users, const Node* n) {
  auto it = std::find(users.begin(), users.end(), n);
  if (it == users.end()) return;
  *it = users.back();
  users.pop_back();
}

}  // namespace

void Graph::drop_uses(Node* n) {
  for (Value* v : n->operands_) remove_one_use(v->users_, n);
}

void Graph::replace_operand(Node* n, size_t i, Value* v) {
  if (n->operands_[i] == v) return;
  remove_one_use(n->operands_[i]->users_, n);
  n->operands_[i] = v;
  v->users_.push_back(n);
}

void Graph::replace_all_uses(Value* from, Value* to) {
  if (from == to) return;
  // Each user once, though it may read `from` in several slots (it is listed per slot).
  std::vector<Node*> users = std::move(from->users_);
  from->users_.clear();
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  for (Node* n : users)
    for (Value*& v : n->operands_)
      if (v == from) {
        v = to;
        to->users_.push_back(n);
      }
  for (Value*& v : outputs_)
    if (v == from) v = to;
}

bool Graph::erase(Node* n) {
  for (const Value* r : n->results_)
    if (!r->users_.empty() || std::find(outputs_.begin(), outputs_.end(), r) != outputs_.end()) return false;
  drop_uses(n);
  auto it = n->self_;
  if (!insert_at_end_ && insert_at_ == it) ++insert_at_;
  for (Value* v : n->results_) by_name_.erase(v->name_);
  nodes_.erase(it);
  return true;
}

int Graph::remove_dead_nodes() {
  absl::flat_hash_set<const Value*> live(outputs_.begin(), outputs_.end());
  int removed = 0;
  for (auto it = nodes_.end(); it != nodes_.begin();) {
    --it;
    Node* n = it->get();
    bool used = std::any_of(n->results_.begin(), n->results_.end(),
                            [&](const Value* v) { return live.contains(v); });
    if (used) {
      for (Value* v : n->operands_) live.insert(v);
      continue;
    }
    if (!insert_at_end_ && insert_at_ == it) ++insert_at_;
    drop_uses(n);
    for (Value* v : n->results_) by_name_.erase(v->name_);
    it = nodes_.erase(it);
    ++removed;
  }
  return removed;
}

absl::Status Graph::set_symbol_bounds(const std::string& sym, SymbolInfo info) {
  if (info.max && *info.max < info.min)
    return invalid_argument("symbol ", sym, ": max ", *info.max, " < min ", info.min);
  if (info.min < 0) return invalid_argument("symbol ", sym, ": min must be >= 0");
  if (info == SymbolInfo{}) bounds_.erase(sym);
  else bounds_[sym] = info;
  return absl::OkStatus();
}

SymbolInfo Graph::symbol_info(const std::string& sym) const {
  auto it = bounds_.find(sym);
  return it == bounds_.end() ? SymbolInfo{} : it->second;
}

std::vector<std::string> Graph::symbols() const {
  std::set<std::string> s;
  for (const Value* v : args_)
    for (const Dim& d : v->shape()) d.collect_symbols(s);
  return {s.begin(), s.end()};
}

Graph Graph::clone() const {
  Graph g(name_);
  absl::flat_hash_map<const Value*, Value*> map;
  for (const Value* v : args_) {
    Value* c = g.new_value(v->name_);
    c->type_ = v->type_;
    c->role_ = v->role_;
    c->state_ = v->state_;
    c->data_ = v->data_;
    g.args_.push_back(c);
    map[v] = c;
  }
  for (const auto& n : nodes_) {
    auto c = std::make_unique<Node>();
    c->op_ = n->op_;
    c->attrs_ = n->attrs_;
    c->loc_ = n->loc_;
    for (Value* v : n->operands_) {
      c->operands_.push_back(map.at(v));
      c->operands_.back()->users_.push_back(c.get());
    }
    for (Value* v : n->results_) {
      Value* r = g.new_value(v->name_);
      r->type_ = v->type_;
      r->producer_ = c.get();
      r->index_ = v->index_;
      c->results_.push_back(r);
      map[v] = r;
    }
    Node* raw = c.get();
    raw->self_ = g.nodes_.insert(g.nodes_.end(), std::move(c));
  }
  for (const Value* v : outputs_) g.outputs_.push_back(map.at(v));
  g.name_counters_ = name_counters_;
  g.bounds_ = bounds_;
  return g;
}

absl::StatusOr<Bindings> bind_symbols(const Graph& g,
                                      const std::map<std::string, std::vector<int64_t>>& shapes) {
  Bindings b;
  auto fail = [](auto&&... parts) { return invalid_argument(parts...); };
  // Plain (or scaled: c*S) symbols bind first; then every dim (expressions included) must agree.
  for (const Value* v : g.args()) {
    auto it = shapes.find(v->name());
    if (it == shapes.end()) continue;
    if (it->second.size() != v->shape().size())
      return fail("%", v->name(), ": expected rank ", v->shape().size(), " (", v->type().to_string(),
                  "), got shape [", fmt::format("{}", fmt::join(it->second, ", ")), "]");
    for (size_t i = 0; i < it->second.size(); ++i) {
      std::optional<std::pair<int64_t, std::string>> cs = v->shape()[i].scaled_symbol();
      if (!cs) continue;
      auto [c, sym] = *cs;
      if (it->second[i] % c != 0)
        return fail("%", v->name(), " dim ", i, ": expected a multiple of ", c, " (", v->shape()[i].to_string(),
                    "), got ", it->second[i]);
      auto [pos, inserted] = b.emplace(sym, it->second[i] / c);
      if (!inserted && pos->second != it->second[i] / c)
        return fail("symbol ", sym, " is ", pos->second, " from an earlier argument but ",
                    it->second[i] / c, " from %", v->name(), " dim ", i);
    }
  }
  for (const Value* v : g.args()) {
    auto it = shapes.find(v->name());
    if (it == shapes.end()) continue;
    for (size_t i = 0; i < it->second.size(); ++i) {
      absl::StatusOr<int64_t> want = v->shape()[i].evaluate(b);
      if (!want.ok()) return fail("%", v->name(), " dim ", i, ": ", want.status().message());
      if (*want != it->second[i])
        return fail("%", v->name(), " dim ", i, ": expected ", v->shape()[i].to_string(), " = ", *want,
                    ", got ", it->second[i]);
    }
  }
  for (const auto& [sym, val] : b) {
    SymbolInfo info = g.symbol_info(sym);
    if (val < info.min || (info.max && val > *info.max))
      return fail("symbol ", sym, " = ", val, " is outside its bounds [", info.min, ", ",
                  info.max ? str_cat(*info.max) : std::string("inf"), "]");
  }
  for (const std::string& sym : g.symbols())
    if (!b.contains(sym)) return fail("symbol ", sym, " is not bound by any argument");
  return b;
}

}  // namespace kiln
