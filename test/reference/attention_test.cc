// The reference semantics of cache_write (rows written through positions and block tables,
// out-of-range and repeated rows as errors) and attention (every form against sdpa, against
// the same attention on rearranged operands, or against values derived here).
#include <limits>
#include <random>

#include "ir/status.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

HostTensor random(DType t, Dims shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostTensor h(t, std::move(shape));
  h.fill_random(rng);
  return h;
}

// cache_write(%c state, %x, %p[, %t]) on the reference evaluator.
absl::StatusOr<HostTensor> write(const HostTensor& cache, const HostTensor& x, const HostTensor& pos,
                                 const HostTensor* table = nullptr) {
  Graph g("w");
  TensorMap args{{"c", cache}, {"x", x}, {"p", pos}};
  std::vector<Value*> ops{*g.add_input("c", {cache.dtype(), static_shape(cache.shape())}, true),
                          *g.add_input("x", {x.dtype(), static_shape(x.shape())}),
                          *g.add_input("p", {pos.dtype(), static_shape(pos.shape())})};
  if (table) {
    ops.push_back(*g.add_input("t", {table->dtype(), static_shape(table->shape())}));
    args["t"] = *table;
  }
  absl::StatusOr<Node*> n = g.add_node(Op::CacheWrite, ops);
  REQUIRE(n.ok());
  g.set_outputs({(*n)->result()});
  KILN_ASSIGN_OR_RETURN(std::vector<HostTensor> out, evaluate(g, args));
  return out[0];
}

// Element (b, h, t, d) of a contiguous [B, H, T, D] tensor.
double at(const HostTensor& x, int64_t b, int64_t h, int64_t t, int64_t d) {
  const Dims& s = x.shape();
  return x.get(((b * s[1] + h) * s[2] + t) * s[3] + d);
}

// A paged copy of contiguous k [B, KVH, Tk, D]: sequence b's row j in block table[b][j / bs]
// at slot j % bs of [num_blocks, bs, KVH, D]; every other element NaN.
HostTensor paged(const HostTensor& k, const std::vector<std::vector<int64_t>>& table, int64_t blocks, int64_t bs) {
  const Dims& s = k.shape();
  HostTensor p(k.dtype(), {blocks, bs, s[1], s[3]});
  for (int64_t i = 0; i < p.numel(); ++i) p.set(i, kNaN);
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t j = 0; j < s[2]; ++j)
      for (int64_t h = 0; h < s[1]; ++h)
        for (int64_t d = 0; d < s[3]; ++d)
          p.set(((table[b][j / bs] * bs + j % bs) * s[1] + h) * s[3] + d, at(k, b, h, j, d));
  return p;
}

HostTensor table_tensor(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return int_tensor(DType::i32, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, flat);
}

// Sequence b of x [B, ...] with its third dim cut to `len`.
HostTensor sequence(const HostTensor& x, int64_t b, int64_t len) {
  const Dims& s = x.shape();
  HostTensor out(x.dtype(), {1, s[1], len, s[3]});
  for (int64_t h = 0; h < s[1]; ++h)
    for (int64_t t = 0; t < len; ++t)
      for (int64_t d = 0; d < s[3]; ++d) out.set((h * len + t) * s[3] + d, at(x, b, h, t, d));
  return out;
}

void check_same(const HostTensor& got, const HostTensor& want, double rel = 1e-6) {
  check_close(got, want.shape(), doubles_of(want), rel, 1e-7);
}

TEST_CASE("cache_write puts rows at positions, contiguous", "[state]") {
  HostTensor cache = random(DType::f32, {2, 2, 5, 3}, 1), x = random(DType::f32, {2, 2, 2, 3}, 2);
  HostTensor pos = int_tensor(DType::i64, {2}, {3, 0});
  absl::StatusOr<HostTensor> got = write(cache, x, pos);
  REQUIRE(got.ok());
  std::vector<double> want = doubles_of(cache);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t t = 0; t < 2; ++t)
        for (int64_t d = 0; d < 3; ++d) want[((b * 2 + h) * 5 + pos.get_int(b) + t) * 3 + d] = at(x, b, h, t, d);
  check_exact(*got, DType::f32, {2, 2, 5, 3}, want);

  absl::StatusOr<HostTensor> out = write(cache, x, int_tensor(DType::i64, {2}, {4, 0}));
  CHECK(contains(out.status(), "sequence 0, token 1: row 5 is outside the cache's 5 rows"));
  out = write(cache, x, int_tensor(DType::i64, {2}, {0, -1}));
  CHECK(contains(out.status(), "sequence 1, token 0: row -1 is outside"));
  CHECK(contains(out.status(), "cache_write"));  // the node is named
}

TEST_CASE("cache_write through a shuffled block table", "[state]") {
  HostTensor cache = random(DType::bf16, {6, 4, 2, 3}, 3), x = random(DType::bf16, {2, 2, 3, 3}, 4);
  std::vector<std::vector<int64_t>> rows{{5, 0, 3}, {1, 4, 2}};
  HostTensor table = table_tensor(rows), pos = int_tensor(DType::i32, {2}, {5, 2});
  absl::StatusOr<HostTensor> got = write(cache, x, pos, &table);
  REQUIRE(got.ok());
  std::vector<double> want = doubles_of(cache);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 3; ++t) {
      int64_t p = pos.get_int(b) + t, blk = rows[b][p / 4];
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t d = 0; d < 3; ++d) want[((blk * 4 + p % 4) * 2 + h) * 3 + d] = at(x, b, h, t, d);
    }
  check_exact(*got, DType::bf16, {6, 4, 2, 3}, want);

  // Two sequences whose tables share a block write one row twice.
  HostTensor shared = table_tensor({{5, 0, 3}, {0, 4, 2}});
  absl::StatusOr<HostTensor> out = write(cache, x, int_tensor(DType::i32, {2}, {5, 1}), &shared);
  CHECK(contains(out.status(), "sequence 1, token 0: row 1 is also written by sequence 0, token 0"));
  HostTensor bad = table_tensor({{5, 9, 3}, {1, 4, 2}});
  out = write(cache, x, pos, &bad);
  CHECK(contains(out.status(), "block_table[0, 1] = 9 is outside the cache's 6 blocks"));
  out = write(cache, x, int_tensor(DType::i32, {2}, {10, 0}), &table);
  CHECK(contains(out.status(), "row 12 is outside the cache's 12 rows"));
}

TEST_CASE("attention without its extras is sdpa", "[attention]") {
  for (DType t : {DType::f32, DType::bf16}) {
    HostTensor q = random(t, {2, 3, 5, 4}, 5), k = random(t, {2, 3, 5, 4}, 6), v = random(t, {2, 3, 5, 4}, 7);
    double rel = t == DType::f32 ? 1e-6 : 0;  // bf16: both round the same f64 value once
    check_same(run(Op::Attention, {q, k, v}), run(Op::Sdpa, {q, k, v}), rel);
    check_same(run(Op::Attention, {q, k, v}, {{"causal", true}, {"scale", 0.3}}),
               run(Op::Sdpa, {q, k, v}, {{"causal", true}, {"scale", 0.3}}), rel);
    HostTensor bm = random(DType::f32, {1, 1, 5, 5}, 8), fm = random(t, {5, 5}, 9);
    HostTensor keep(DType::boolean, {1, 1, 5, 5});
    for (int64_t i = 0; i < 25; ++i) keep.set_int(i, bm.get(i) > -0.5 || i % 6 == 0);
    check_same(run(Op::Attention, {q, k, v, keep}), run(Op::Sdpa, {q, k, v, keep}), rel);
    check_same(run(Op::Attention, {q, k, v, fm}), run(Op::Sdpa, {q, k, v, fm}), rel);
  }
}

TEST_CASE("attention: GQA reads kv head h / (H / KVH)", "[attention]") {
  for (int64_t ratio : {1, 4, 8}) {
    int64_t kvh = 2, h = kvh * ratio;
    HostTensor q = random(DType::f32, {2, h, 3, 4}, 10), k = random(DType::f32, {2, kvh, 6, 4}, 11),
               v = random(DType::f32, {2, kvh, 6, 4}, 12);
    HostTensor kr(DType::f32, {2, h, 6, 4}), vr(DType::f32, {2, h, 6, 4});
    for (int64_t i = 0; i < kr.numel(); ++i) {
      int64_t d = i % 4, t = i / 4 % 6, hh = i / 24 % h, b = i / (24 * h);
      kr.set(i, at(k, b, hh / ratio, t, d));
      vr.set(i, at(v, b, hh / ratio, t, d));
    }
    INFO("ratio " << ratio);
    check_same(run(Op::Attention, {q, k, v}, {{"causal", true}}), run(Op::Attention, {q, kr, vr}, {{"causal", true}}));
  }
}

TEST_CASE("attention: kv_lens, causal bottom-right, paged caches", "[attention]") {
  HostTensor q = random(DType::f32, {3, 4, 2, 8}, 13), k = random(DType::f32, {3, 2, 9, 8}, 14),
             v = random(DType::f32, {3, 2, 9, 8}, 15);
  std::vector<int64_t> lens{9, 2, 5};
  HostTensor len = int_tensor(DType::i32, {3}, lens);
  for (bool causal : {false, true}) {
    HostTensor got = run(Op::Attention, {q, k, v, len}, {{"causal", causal}});
    // Each sequence alone, its k and v cut to its length: causal is bottom-right aligned.
    for (int64_t b = 0; b < 3; ++b) {
      HostTensor one = run(Op::Attention, {sequence(q, b, 2), sequence(k, b, lens[b]), sequence(v, b, lens[b])},
                           {{"causal", causal}});
      INFO("sequence " << b << " causal " << causal);
      HostTensor mine = sequence(got, b, 2);
      check_same(mine, one);
    }
    // The same through a shuffled block table (block size 4, 3 blocks per sequence); rows
    // past kv_lens and unused blocks hold NaN, which must not reach the output.
    std::vector<std::vector<int64_t>> rows{{7, 2, 4}, {0, 8, 5}, {3, 1, 6}};
    HostTensor table = table_tensor(rows), kp = paged(k, rows, 9, 4), vp = paged(v, rows, 9, 4);
    for (int64_t b = 1; b < 3; ++b)  // stale rows past the length
      for (int64_t j = lens[b]; j < 9; ++j)
        for (int64_t i = 0; i < 16; ++i) vp.set(((rows[b][j / 4] * 4 + j % 4) * 2) * 8 + i, kNaN);
    check_same(run(Op::Attention, {q, kp, vp, len, table}, {{"causal", causal}}), got);
  }
  // A decode step (Tq = 1) sees every key, causal or not.
  HostTensor q1 = random(DType::f32, {3, 4, 1, 8}, 16);
  check_same(run(Op::Attention, {q1, k, v, len}, {{"causal", true}}), run(Op::Attention, {q1, k, v, len}));
  // A query that sees no key is NaN; a length outside the cache is an error.
  HostTensor empty = run(Op::Attention, {q1, k, v, int_tensor(DType::i64, {3}, {0, 1, 1})});
  CHECK(std::isnan(empty.get(0)));
  CHECK_FALSE(std::isnan(empty.get(4 * 8)));
  absl::StatusOr<std::vector<HostTensor>> bad = try_run(Op::Attention, {q1, k, v, int_tensor(DType::i64, {3}, {0, 10, 1})});
  CHECK(contains(bad.status(), "kv_lens[1] = 10 is outside [0, 9]"));
}

TEST_CASE("attention: sliding window and logit soft-capping", "[attention]") {
  HostTensor q = random(DType::f32, {1, 2, 4, 4}, 17), k = random(DType::f32, {1, 2, 7, 4}, 18),
             v = random(DType::f32, {1, 2, 7, 4}, 19);
  for (int64_t w : {1, 2, 5}) {
    // Query i sees keys j with last - w < j <= last, last = i + Tk - Tq.
    HostTensor keep(DType::boolean, {4, 7});
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 7; ++j) keep.set_int(i * 7 + j, j <= i + 3 && j > i + 3 - w);
    INFO("window " << w);
    check_same(run(Op::Attention, {q, k, v}, {{"causal", true}, {"window", w}}), run(Op::Attention, {q, k, v, keep}));
  }
  // softcap * tanh(s / softcap) on the scaled scores, by hand for one query and two keys.
  HostTensor q1 = tensor(DType::f32, {1, 1, 1, 1}, {2}), k2 = tensor(DType::f32, {1, 1, 2, 1}, {3, -1}),
             v2 = tensor(DType::f32, {1, 1, 2, 1}, {10, 20});
  double s0 = 5 * std::tanh(6 * 0.5 / 5), s1 = 5 * std::tanh(-2 * 0.5 / 5);
  double p0 = 1 / (1 + std::exp(s1 - s0));
  check_close(run(Op::Attention, {q1, k2, v2}, {{"scale", 0.5}, {"softcap", 5.0}}), {1, 1, 1, 1},
              {10 * p0 + 20 * (1 - p0)}, 1e-6);
}

}  // namespace
}  // namespace kiln::test
