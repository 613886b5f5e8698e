// The traced sampler (models/sample.h) against a straightforward sort-based sampler in
// double precision, through the reference evaluator and compiled on the CPU.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "ir/reference.h"
#include "models/sample.h"
#include "test/common/catch_helpers.h"

namespace kiln::models {
namespace {

using testing::require_ok;

// The token the sampler's contract picks for one row.
int64_t expected_token(const HostTensor& logits, int64_t row, double temp, int64_t top_k, double top_p, double u) {
  const int64_t V = logits.shape()[1];
  std::vector<double> z(V);
  for (int64_t i = 0; i < V; ++i) z[i] = logits.get(row * V + i);
  if (temp <= 0) return std::max_element(z.begin(), z.end()) - z.begin();
  double m = *std::max_element(z.begin(), z.end());
  std::vector<double> e(V);
  for (int64_t i = 0; i < V; ++i) e[i] = std::exp((z[i] - m) / temp);
  std::vector<double> sorted = e;
  std::sort(sorted.rbegin(), sorted.rend());
  if (top_k > 0 && top_k < V)
    for (double& x : e) x = x >= sorted[top_k - 1] ? x : 0;
  sorted = e;
  std::sort(sorted.rbegin(), sorted.rend());
  double total = std::accumulate(e.begin(), e.end(), 0.0), mass = 0, cut = 0;
  for (double x : sorted) {
    mass += x;
    cut = x;
    if (mass >= top_p * total) break;
  }
  for (double& x : e) x = x >= cut ? x : 0;
  double target = u * std::accumulate(e.begin(), e.end(), 0.0), run = 0;
  for (int64_t i = 0; i < V; ++i)
    if ((run += e[i]) > target) return i;
  return V - 1;
}

TEST_CASE("sampling: temperature, top-k and top-p pick the tokens a sort-based sampler picks") {
  const int64_t B = 6, V = 37;
  trace::Tracer t("sampler");
  auto logits = t.input("logits", DType::f32, {"B", V});
  auto temp = t.input("temperature", DType::f32, {"B"});
  auto top_k = t.input("top_k", DType::i32, {"B"});
  auto top_p = t.input("top_p", DType::f32, {"B"});
  auto u = t.input("uniform", DType::f32, {"B"});
  t.output(sample_tokens(logits, temp, top_k, top_p, u), "token");
  Graph g = t.finish();
  auto cg = compile(g, {.device = Device::Cpu});
  require_ok(cg.status());

  // Per row: greedy, plain sampling, top-k, top-p, both, and top_k 1 (greedy again).
  const double temps[B] = {0, 1.0, 0.7, 1.3, 0.9, 2.0};
  const int64_t ks[B] = {0, 0, 5, 0, 8, 1};
  const double ps[B] = {1, 1, 1, 0.6, 0.8, 1};
  std::mt19937_64 rng(17);
  TensorMap args{{"logits", HostTensor(DType::f32, {B, V})}, {"temperature", HostTensor(DType::f32, {B})},
                 {"top_k", HostTensor(DType::i32, {B})}, {"top_p", HostTensor(DType::f32, {B})},
                 {"uniform", HostTensor(DType::f32, {B})}};
  args["logits"].fill_random(rng, -4, 4);
  for (int64_t b = 0; b < B; ++b) {
    args["temperature"].set(b, temps[b]);
    args["top_k"].set_int(b, ks[b]);
    args["top_p"].set(b, ps[b]);
  }
  std::vector<std::set<int64_t>> seen(B);
  for (int i = 0; i < 64; ++i) {
    for (int64_t b = 0; b < B; ++b) args["uniform"].set(b, (i + 0.37) / 64);
    auto want = evaluate(g, args);
    require_ok(want.status());
    auto got = run_host(*cg, args);
    require_ok(got.status());
    for (int64_t b = 0; b < B; ++b) {
      INFO("row " << b << ", uniform " << args["uniform"].get(b));
      int64_t expected = expected_token(args["logits"], b, temps[b], ks[b], ps[b], args["uniform"].get(b));
      CHECK((*want)[0].get_int(b) == expected);
      CHECK((*got)[0].get_int(b) == expected);
      seen[b].insert(expected);
    }
  }
  CHECK(seen[0].size() == 1);  // greedy
  CHECK(seen[5].size() == 1);  // top_k 1
  CHECK(seen[2].size() <= 5);
  CHECK(seen[1].size() > 5);   // plain sampling spreads over the vocabulary
}

}  // namespace
}  // namespace kiln::models
