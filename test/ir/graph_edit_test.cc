// Graph edits keep every value's use list (Value::users) equal to what a scan of the node
// list finds (Graph::uses), through add_node, replace_operand, replace_all_uses, erase,
// remove_dead_nodes and clone: erase and replace_all_uses rely on the lists (O(uses)).
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "ir/graph.h"
#include "ir/str.h"

using namespace kiln;

namespace {

Node* add(Graph& g, Op op, std::vector<Value*> operands) {
  absl::StatusOr<Node*> n = g.add_node(op, std::move(operands));
  if (!n.ok()) FAIL(std::string(n.status().message()));
  return *n;
}

// Every value's users() against the node scan of Graph::uses(), as multisets.
void require_consistent(const Graph& g) {
  absl::flat_hash_map<const Value*, std::vector<Node*>> scan = g.uses();
  std::vector<const Value*> values(g.args().begin(), g.args().end());
  for (const auto& n : g.nodes())
    for (const Value* r : n->results()) values.push_back(r);
  for (const Value* v : values) {
    std::vector<Node*> want = scan.contains(v) ? scan.at(v) : std::vector<Node*>{};
    std::vector<Node*> got = v->users();
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    INFO("%" << v->name());
    REQUIRE(got == want);
  }
}

}  // namespace

TEST_CASE("use lists follow every edit", "[graph]") {
  Graph g("uses");
  Value* x = *g.add_input("x", TensorType{DType::f32, {Dim(4)}});
  Node* a = add(g, Op::Add, {x, x});
  Node* b = add(g, Op::Mul, {a->result(), x});
  Node* c = add(g, Op::Neg, {a->result()});
  g.set_outputs({b->result()});
  REQUIRE(x->users().size() == 3);  // add reads it twice, mul once
  REQUIRE(a->result()->users().size() == 2);
  require_consistent(g);

  REQUIRE(!g.erase(a));  // still read by mul
  REQUIRE(!g.erase(b));  // an output
  REQUIRE(g.erase(c));
  REQUIRE(a->result()->users() == std::vector<Node*>{b});
  require_consistent(g);

  g.replace_all_uses(a->result(), x);  // mul(x, x)
  REQUIRE(a->result()->users().empty());
  REQUIRE(b->operand(0) == x);
  REQUIRE(g.erase(a));
  REQUIRE(x->users() == std::vector<Node*>{b, b});
  require_consistent(g);

  Node* d = add(g, Op::Exp, {x});
  g.replace_operand(b, 1, d->result());  // mul(x, exp(x))
  REQUIRE(d->result()->users() == std::vector<Node*>{b});
  require_consistent(g);

  g.replace_all_uses(b->result(), d->result());  // the output too
  REQUIRE(g.outputs() == std::vector<Value*>{d->result()});
  REQUIRE(g.remove_dead_nodes() == 1);  // mul
  REQUIRE(x->users() == std::vector<Node*>{d});
  require_consistent(g);

  Graph h = g.clone();
  require_consistent(h);
  REQUIRE(h.args()[0]->users().size() == 1);
  REQUIRE(h.args()[0]->users()[0] != d);  // the clone's own node
}

TEST_CASE("use lists stay consistent through random rewrites", "[graph]") {
  std::mt19937_64 rng(21);
  for (int round = 0; round < 20; ++round) {
    Graph g(str_cat("r", round));
    std::vector<Value*> vals = {*g.add_input("x", TensorType{DType::f32, {Dim(3)}}),
                                *g.add_input("y", TensorType{DType::f32, {Dim(3)}})};
    for (int i = 0; i < 60; ++i) {
      Value* p = vals[rng() % vals.size()];
      Value* q = vals[rng() % vals.size()];
      vals.push_back(add(g, rng() % 2 ? Op::Add : Op::Mul, {p, q})->result());
    }
    g.set_outputs({vals.back(), vals[vals.size() / 2]});
    for (int edit = 0; edit < 80; ++edit) {
      // Rewire a node's operand to an earlier value, or a value's uses to an earlier value,
      // or erase a node (refused while its result is read).
      std::vector<Node*> nodes;
      for (const auto& n : g.nodes()) nodes.push_back(n.get());
      if (nodes.empty()) break;
      Node* n = nodes[rng() % nodes.size()];
      size_t at = static_cast<size_t>(std::find(vals.begin(), vals.end(), n->result()) - vals.begin());
      Value* earlier = vals[rng() % at];
      switch (rng() % 3) {
        case 0: g.replace_operand(n, rng() % n->num_operands(), earlier); break;
        case 1: g.replace_all_uses(n->result(), earlier); break;
        default: {
          bool read = !n->result()->users().empty() ||
                      std::find(g.outputs().begin(), g.outputs().end(), n->result()) != g.outputs().end();
          REQUIRE(g.erase(n) == !read);
          if (!read) vals.erase(vals.begin() + static_cast<std::ptrdiff_t>(at));
        }
      }
      require_consistent(g);
    }
    g.remove_dead_nodes();
    require_consistent(g);
    require_consistent(g.clone());
  }
}
