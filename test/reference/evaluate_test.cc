// Whole-graph evaluation: symbolic dims under several bindings, parameters, argument errors,
// result-shape checks and random_args.
#include <memory>

#include "test/reference/util.h"

namespace kiln::test {
namespace {

Dim sym(const char* s) { return SymExpr::symbol(s); }

Value* input(Graph& g, const std::string& name, DType t, Shape s) {
  absl::StatusOr<Value*> v = g.add_input(name, TensorType{t, std::move(s)});
  REQUIRE(v.ok());
  return *v;
}

Node* node(Graph& g, Op op, std::vector<Value*> in, Attrs attrs = {}) {
  absl::StatusOr<Node*> n = g.add_node(op, std::move(in), std::move(attrs));
  INFO(n.status().message());
  REQUIRE(n.ok());
  return *n;
}

// y = sum(x * b + 1, axes=[-1]) with x: f32[B, T], b: f32[T]; and a reshape to [T, B].
struct SymGraph {
  Graph g{"sym"};
  SymGraph() {
    Value* x = input(g, "x", DType::f32, {sym("B"), sym("T")});
    Value* b = input(g, "b", DType::f32, {sym("T")});
    Value* one = node(g, Op::Constant, {}, {{"value", 1.0}})->result();
    Value* t = node(g, Op::Add, {node(g, Op::Mul, {x, b})->result(), one})->result();
    Value* s = node(g, Op::Sum, {t}, {{"axes", std::vector<int64_t>{-1}}})->result();
    Value* r = node(g, Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{sym("T"), -1}}})->result();
    Value* sl = node(g, Op::Slice, {x}, {{"axis", int64_t{1}}, {"start", int64_t{1}}})->result();
    g.set_outputs({s, r, sl});
  }
};

TEST_CASE("symbolic dims bound to 1, odd and larger sizes") {
  SymGraph sg;
  for (auto [bn, tn] : {std::pair<int64_t, int64_t>{1, 1}, {1, 5}, {3, 1}, {3, 7}, {8, 33}}) {
    INFO("B=" << bn << " T=" << tn);
    TensorMap args = random_args(sg.g, {{"B", bn}, {"T", tn}}, 7);
    REQUIRE(args.size() == 2);
    const HostTensor &x = args.at("x"), &b = args.at("b");
    absl::StatusOr<std::vector<HostTensor>> out = evaluate(sg.g, args);
    INFO(out.status().message());
    REQUIRE(out.ok());
    std::vector<double> want;
    for (int64_t i = 0; i < bn; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < tn; ++j)
        acc += static_cast<double>(static_cast<float>(static_cast<float>(x.get(i * tn + j) * b.get(j)) + 1.0f));
      want.push_back(static_cast<float>(acc));
    }
    check_exact((*out)[0], DType::f32, {bn}, want);
    check_exact((*out)[1], DType::f32, {tn, bn}, doubles_of(x));
    std::vector<double> sliced;
    for (int64_t i = 0; i < bn; ++i)
      for (int64_t j = 1; j < tn; ++j) sliced.push_back(x.get(i * tn + j));
    check_exact((*out)[2], DType::f32, {bn, tn - 1}, sliced);
  }
}

TEST_CASE("iota holds each element's index along its axis, for symbolic shapes and every dtype") {
  Graph g;
  Value* x = input(g, "x", DType::f32, {sym("B"), 3});
  Value* rows = node(g, Op::Iota, {}, {{"shape", std::vector<SymExpr>{sym("B"), 3}}, {"axis", int64_t{0}}})->result();
  Value* cols = node(g, Op::Iota, {}, {{"shape", std::vector<SymExpr>{sym("B"), 3}}, {"axis", int64_t{-1}}})->result();
  Value* f = node(g, Op::Iota, {}, {{"shape", std::vector<SymExpr>{2, sym("B")}}, {"axis", int64_t{1}}, {"dtype", DType::f32}})
                 ->result();
  Value* h = node(g, Op::Iota, {}, {{"shape", std::vector<SymExpr>{1, 4}}, {"axis", int64_t{1}}, {"dtype", DType::bf16}})
                 ->result();
  Value* i = node(g, Op::Iota, {}, {{"shape", std::vector<SymExpr>{3}}, {"axis", int64_t{0}}, {"dtype", DType::i32}})
                 ->result();
  g.set_outputs({rows, cols, f, h, i, x});
  for (int64_t b : {1, 4}) {
    INFO("B=" << b);
    absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, {{"x", HostTensor(DType::f32, {b, 3})}});
    INFO(out.status().message());
    REQUIRE(out.ok());
    std::vector<int64_t> want_rows, want_cols;
    std::vector<double> want_f;
    for (int64_t r = 0; r < b; ++r)
      for (int64_t c = 0; c < 3; ++c) want_rows.push_back(r), want_cols.push_back(c);
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = 0; c < b; ++c) want_f.push_back(static_cast<double>(c));
    check_ints((*out)[0], DType::i64, {b, 3}, want_rows);
    check_ints((*out)[1], DType::i64, {b, 3}, want_cols);
    check_exact((*out)[2], DType::f32, {2, b}, want_f);
    check_exact((*out)[3], DType::bf16, {1, 4}, {0, 1, 2, 3});
    check_ints((*out)[4], DType::i32, {3}, {0, 1, 2});
  }
}

TEST_CASE("squeeze without axes keeps a symbol bound to 1") {
  Graph g;
  Value* x = input(g, "x", DType::f32, {sym("B"), 1});
  g.set_outputs({node(g, Op::Squeeze, {x})->result()});
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, {{"x", tensor(DType::f32, {1, 1}, {2})}});
  REQUIRE(out.ok());
  check_exact((*out)[0], DType::f32, {1}, {2});
}

TEST_CASE("split and reshape with symbolic sizes; concat of symbolic parts") {
  Graph g;
  Value* x = input(g, "x", DType::f32, {sym("T") * 2 + 1});
  Node* sp = node(g, Op::Split, {x}, {{"axis", int64_t{0}}, {"sizes", std::vector<SymExpr>{sym("T") + 1, sym("T")}}});
  Value* cat = node(g, Op::Concat, {sp->result(1), sp->result(0)}, {{"axis", int64_t{0}}})->result();
  g.set_outputs({cat});
  // T is not bound by any argument (x's dim is an expression): that is an argument error.
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, {{"x", tensor(DType::f32, {5}, {0, 1, 2, 3, 4})}});
  REQUIRE(!out.ok());
  CHECK(contains(out.status(), "symbol T"));

  Graph g2;
  Value* tv = input(g2, "t", DType::f32, {sym("T")});
  Value* x2 = input(g2, "x", DType::f32, {sym("T") * 2 + 1});
  Node* sp2 = node(g2, Op::Split, {x2}, {{"axis", int64_t{0}}, {"sizes", std::vector<SymExpr>{sym("T") + 1, sym("T")}}});
  Value* cat2 = node(g2, Op::Concat, {sp2->result(1), sp2->result(0), tv}, {{"axis", int64_t{0}}})->result();
  g2.set_outputs({cat2});
  for (int64_t t : {1, 2, 5}) {
    HostTensor xs(DType::f32, {2 * t + 1}), ts(DType::f32, {t});
    std::vector<double> want;
    for (int64_t i = 0; i < 2 * t + 1; ++i) xs.set(i, static_cast<double>(i));
    for (int64_t i = 0; i < t; ++i) ts.set(i, -1.0 - static_cast<double>(i));
    for (int64_t i = t + 1; i < 2 * t + 1; ++i) want.push_back(static_cast<double>(i));
    for (int64_t i = 0; i <= t; ++i) want.push_back(static_cast<double>(i));
    for (int64_t i = 0; i < t; ++i) want.push_back(-1.0 - static_cast<double>(i));
    absl::StatusOr<std::vector<HostTensor>> r = evaluate(g2, {{"x", xs}, {"t", ts}});
    INFO(r.status().message());
    REQUIRE(r.ok());
    check_exact((*r)[0], DType::f32, {3 * t + 1}, want);
  }
}

TEST_CASE("a symbolic slice whose bounds clamp at run time is an error naming the node") {
  Graph g;
  Value* x = input(g, "x", DType::f32, {sym("T")});
  g.set_outputs({node(g, Op::Slice, {x}, {{"axis", int64_t{0}}, {"start", int64_t{0}}, {"end", int64_t{5}}})->result()});
  absl::StatusOr<std::vector<HostTensor>> ok = evaluate(g, {{"x", tensor(DType::f32, {7}, {0, 1, 2, 3, 4, 5, 6})}});
  REQUIRE(ok.ok());
  check_exact((*ok)[0], DType::f32, {5}, {0, 1, 2, 3, 4});
  absl::StatusOr<std::vector<HostTensor>> bad = evaluate(g, {{"x", tensor(DType::f32, {3}, {0, 1, 2})}});
  REQUIRE(!bad.ok());
  INFO(bad.status().message());
  CHECK(contains(bad.status(), "%slice = slice"));
  CHECK(contains(bad.status(), "slice [0, 5) is outside dim 0 of f32[3]"));
}

TEST_CASE("parameters with data come from the graph; others are arguments") {
  Graph g;
  Value* x = input(g, "x", DType::f32, {2});
  auto data = std::make_shared<HostTensor>(tensor(DType::f32, {2}, {10, 20}));
  absl::StatusOr<Value*> w = g.add_param("w", TensorType{DType::f32, {2}}, data);
  absl::StatusOr<Value*> v = g.add_param("v", TensorType{DType::f32, {2}});
  REQUIRE((w.ok() && v.ok()));
  Value* s = node(g, Op::Add, {node(g, Op::Mul, {x, *w})->result(), *v})->result();
  g.set_outputs({s, x});
  TensorMap args = {{"x", tensor(DType::f32, {2}, {1, 2})}, {"v", tensor(DType::f32, {2}, {0.5, 0.25})}};
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(g, args);
  REQUIRE(out.ok());
  check_exact((*out)[0], DType::f32, {2}, {10.5, 40.25});
  check_exact((*out)[1], DType::f32, {2}, {1, 2});  // an input returned directly

  // random_args leaves out the parameter with data.
  TensorMap r = random_args(g, {}, 1);
  CHECK(r.size() == 2);
  CHECK(r.count("w") == 0);

  auto fails_with = [&](TensorMap a, std::vector<std::string> parts) {
    absl::StatusOr<std::vector<HostTensor>> e = evaluate(g, a);
    REQUIRE(!e.ok());
    INFO(e.status().message());
    for (const std::string& p : parts) CHECK(contains(e.status(), p));
  };
  TensorMap missing = args;
  missing.erase("v");
  fails_with(missing, {"missing argument %v", "f32[2]"});
  TensorMap extra = args;
  extra["z"] = tensor(DType::f32, {2}, {1, 2});
  fails_with(extra, {"unknown argument 'z'"});
  TensorMap with_data = args;
  with_data["w"] = tensor(DType::f32, {2}, {1, 2});
  fails_with(with_data, {"'w'", "already has data"});
  TensorMap wrong_dtype = args;
  wrong_dtype["x"] = tensor(DType::bf16, {2}, {1, 2});
  fails_with(wrong_dtype, {"%x", "expected f32[2]", "got bf16[2]"});
  TensorMap wrong_rank = args;
  wrong_rank["x"] = tensor(DType::f32, {2, 1}, {1, 2});
  fails_with(wrong_rank, {"%x", "rank"});
  TensorMap wrong_dim = args;
  wrong_dim["v"] = tensor(DType::f32, {3}, {1, 2, 3});
  fails_with(wrong_dim, {"%v", "dim 0"});
}

TEST_CASE("inconsistent symbol bindings are argument errors") {
  SymGraph sg;
  TensorMap args = {{"x", tensor(DType::f32, {2, 3}, {1, 2, 3, 4, 5, 6})}, {"b", tensor(DType::f32, {4}, {1, 2, 3, 4})}};
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(sg.g, args);
  REQUIRE(!out.ok());
  INFO(out.status().message());
  CHECK(contains(out.status(), "symbol T"));
  CHECK(contains(out.status(), "%b"));
}

TEST_CASE("random_args: deterministic per seed, ranges by dtype") {
  Graph g;
  input(g, "f", DType::bf16, {sym("N"), 3});
  input(g, "i", DType::i32, {sym("N")});
  input(g, "m", DType::boolean, {sym("N"), 2});
  Bindings b = {{"N", 41}};
  TensorMap a = random_args(g, b, 5), a2 = random_args(g, b, 5), c = random_args(g, b, 6), d = random_args(g, b, 5, 100);
  REQUIRE(a.size() == 3);
  CHECK(a.at("f").shape() == Dims{41, 3});
  bool same = true, differs = false, any_nonzero = false, both_bools = false;
  for (int64_t k = 0; k < a.at("f").numel(); ++k) {
    double v = a.at("f").get(k);
    CHECK((v >= -1 && v < 1));
    any_nonzero |= v != 0;
    same &= v == a2.at("f").get(k);
    differs |= v != c.at("f").get(k);
  }
  CHECK(same);
  CHECK(differs);
  CHECK(any_nonzero);
  int64_t max_i = 0;
  for (int64_t k = 0; k < 41; ++k) {
    CHECK((a.at("i").get_int(k) >= 0 && a.at("i").get_int(k) < 2));
    CHECK((d.at("i").get_int(k) >= 0 && d.at("i").get_int(k) < 100));
    max_i = std::max(max_i, d.at("i").get_int(k));
  }
  CHECK(max_i > 50);
  int64_t ones = 0;
  for (int64_t k = 0; k < 82; ++k) ones += a.at("m").get_int(k);
  both_bools = ones > 10 && ones < 72;
  CHECK(both_bools);
  // An unbound symbol: the argument is left out, and evaluate says it is missing.
  TensorMap u = random_args(g, {}, 1);
  CHECK(u.empty());
  absl::StatusOr<std::vector<HostTensor>> e = evaluate(g, u);
  REQUIRE(!e.ok());
  CHECK(contains(e.status(), "missing argument %f"));
}

}  // namespace
}  // namespace kiln::test
