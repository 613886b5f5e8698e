// The attention op and in-place KV-cache writes compiled for the CPU against the reference
// evaluator: every attention form (causal, masks, window, softcap, GQA 1/4/8, ragged
// kv_lens, paged caches with shuffled block tables) at lengths 1, odd, 127/128/129, and a
// decode step that writes its caches in place and attends over them, called twice.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <random>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"

using namespace kiln;
using kiln::testing::parse_or_fail;

namespace {

HostTensor random(DType t, std::vector<int64_t> shape, std::mt19937_64& rng) {
  HostTensor h(t, std::move(shape));
  h.fill_random(rng);
  return h;
}

HostTensor ints(DType t, std::vector<int64_t> shape, const std::vector<int64_t>& v) {
  HostTensor h(t, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) h.set_int(static_cast<int64_t>(i), v[i]);
  return h;
}

CompiledGraph compile_cpu(const Graph& g) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  return *std::move(cg);
}

void require_close(const HostTensor& want, const HostTensor& got, const std::string& what) {
  Comparison c = compare_tensors(want, got, default_tolerance(want.dtype()));
  INFO(what << ": " << c.message);
  REQUIRE(c.ok);
}

// Calls `cg` with `args` (the graph's arguments by name, as tensors kept in `held` so that a
// later call can see what this one wrote into state) and compares every output with the
// reference's; returns the reference's outputs.
std::vector<HostTensor> call_and_check(CompiledGraph& cg, const Graph& g, const TensorMap& args,
                                       std::map<std::string, Tensor>& held) {
  std::vector<Tensor> in;
  for (const Value* a : cg.module().args) {
    if (!held.contains(a->name()) || !a->is_state()) held[a->name()] = *Tensor::from_host(args.at(a->name()));
    in.push_back(held.at(a->name()));
  }
  absl::StatusOr<std::vector<Tensor>> got = cg(in);
  if (!got.ok()) FAIL(status_message(got.status()));
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) FAIL(status_message(want.status()));
  REQUIRE(got->size() == want->size());
  for (size_t i = 0; i < want->size(); ++i)
    require_close((*want)[i], *(*got)[i].to_host(), str_cat("output %", g.outputs()[i]->name()));
  return *std::move(want);
}

// A shuffled block table: sequence b's blocks are a random choice of the `blocks` ids, no two
// sequences sharing one.
std::vector<int64_t> block_table(int64_t b, int64_t per_seq, int64_t blocks, std::mt19937_64& rng) {
  std::vector<int64_t> ids(blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  return std::vector<int64_t>(ids.begin(), ids.begin() + b * per_seq);
}

}  // namespace

TEST_CASE("attention forms compiled for the CPU match the reference", "[cpu][attention]") {
  std::mt19937_64 rng(17);
  struct Form {
    const char* name;
    const char* extra_args;  // after %q, %k, %v
    const char* call;        // the attention node's operands and attributes after %q, %k, %v
  };
  const Form forms[] = {
      {"plain", "", ""},
      {"causal", "", ", causal=true"},
      {"bool mask", ", %m: bool[B, 1, Tq, Tk]", ", %m"},
      {"float mask", ", %m: f32[Tq, Tk]", ", %m, scale=0.2"},
      {"window and softcap", "", ", causal=true, window=5, softcap=2"},
      {"ragged", ", %l: i32[B]", ", %l, causal=true"},
  };
  for (int64_t ratio : {1, 4, 8})
    for (const Form& f : forms) {
      std::string text = str_cat("graph a(%q: f32[B, ", 2 * ratio, ", Tq, 16], %k: f32[B, 2, Tk, 16], %v: f32[B, 2, Tk, 16]",
                                 f.extra_args, ") {\n  %a = attention(%q, %k, %v", f.call, ")\n  return %a\n}\n");
      Graph g = parse_or_fail(text);
      CompiledGraph cg = compile_cpu(g);
      for (auto [tq, tk] : {std::pair<int64_t, int64_t>{1, 1}, {1, 129}, {7, 7}, {3, 128}, {127, 127}}) {
        if (ratio == 8 && tq > 7) continue;  // the long rows once per form are enough
        INFO(f.name << ", GQA ratio " << ratio << ", Tq " << tq << ", Tk " << tk);
        TensorMap args{{"q", random(DType::f32, {2, 2 * ratio, tq, 16}, rng)},
                       {"k", random(DType::f32, {2, 2, tk, 16}, rng)},
                       {"v", random(DType::f32, {2, 2, tk, 16}, rng)}};
        if (const Value* m = g.find("m")) {  // bool [B, 1, Tq, Tk] or f32 [Tq, Tk]
          bool keep = m->dtype() == DType::boolean;
          HostTensor r = random(DType::f32, keep ? std::vector<int64_t>{2, 1, tq, tk} : std::vector<int64_t>{tq, tk}, rng);
          HostTensor mask(m->dtype(), r.shape());
          for (int64_t i = 0; i < r.numel(); ++i) {
            if (keep) mask.set_int(i, r.get(i) > -0.6 || i % (tk + 1) == 0);
            else mask.set(i, r.get(i));
          }
          args["m"] = mask;
        }
        if (g.find("l")) args["l"] = ints(DType::i32, {2}, {tk, std::max<int64_t>(tq, (tk + 1) / 2)});
        std::map<std::string, Tensor> held;
        call_and_check(cg, g, args, held);
      }
    }
}

TEST_CASE("paged attention through shuffled block tables on the CPU", "[cpu][attention]") {
  std::mt19937_64 rng(23);
  Graph g = parse_or_fail(R"(graph p(%q: bf16[B, 8, Tq, 32], %k: bf16[NB, 16, 2, 32], %v: bf16[NB, 16, 2, 32], %l: i32[B], %t: i32[B, MB]) {
  %a = attention(%q, %k, %v, %l, %t, causal=true)
  return %a
})");
  CompiledGraph cg = compile_cpu(g);
  for (auto [b, tq, mb] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 1, 9}, {2, 5, 8}}) {
    int64_t blocks = b * mb + 3;
    std::vector<int64_t> lens;
    for (int64_t i = 0; i < b; ++i) lens.push_back(std::max<int64_t>(tq, mb * 16 - 7 * i - (i == 1 ? 10 : 0)));
    INFO("B " << b << ", Tq " << tq << ", max_blocks " << mb << ", lengths " << str_join(lens, ",", [](int64_t x) { return str_cat(x); }));
    TensorMap args{{"q", random(DType::bf16, {b, 8, tq, 32}, rng)},
                   {"k", random(DType::bf16, {blocks, 16, 2, 32}, rng)},
                   {"v", random(DType::bf16, {blocks, 16, 2, 32}, rng)},
                   {"l", ints(DType::i32, {b}, lens)},
                   {"t", ints(DType::i32, {b, mb}, block_table(b, mb, blocks, rng))}};
    std::map<std::string, Tensor> held;
    call_and_check(cg, g, args, held);
  }
}

TEST_CASE("a decode step writes its KV caches in place and attends over them", "[cpu][attention][state]") {
  std::mt19937_64 rng(29);
  Graph g = parse_or_fail(R"(graph decode(%q: f32[B, 8, T, 16], %kn: f32[B, 2, T, 16], %vn: f32[B, 2, T, 16], %pos: i32[B], %kc: f32[B, 2, S, 16] state, %vc: f32[B, 2, S, 16] state) {
  %kc1 = cache_write(%kc, %kn, %pos)
  %vc1 = cache_write(%vc, %vn, %pos)
  %one = constant(value=1, dtype=i32)
  %lens = add(%pos, %one)
  %a = attention(%q, %kc1, %vc1, %lens, causal=true)
  return %a, %kc1, %vc1
})");
  CompiledGraph cg = compile_cpu(g);
  int64_t b = 3, s = 130;
  TensorMap args{{"kc", random(DType::f32, {b, 2, s, 16}, rng)}, {"vc", random(DType::f32, {b, 2, s, 16}, rng)}};
  std::map<std::string, Tensor> held;
  // Lengths 1, odd, 127/128/129 across the calls: the second call sees the first one's rows.
  for (const std::vector<int64_t>& pos : {std::vector<int64_t>{0, 6, 126}, std::vector<int64_t>{1, 127, 128}}) {
    INFO("positions " << pos[0] << ", " << pos[1] << ", " << pos[2]);
    args["q"] = random(DType::f32, {b, 8, 1, 16}, rng);
    args["kn"] = random(DType::f32, {b, 2, 1, 16}, rng);
    args["vn"] = random(DType::f32, {b, 2, 1, 16}, rng);
    args["pos"] = ints(DType::i32, {b}, pos);
    std::vector<HostTensor> want = call_and_check(cg, g, args, held);
    // The caches were updated where the caller keeps them, and returned as those tensors.
    require_close(want[1], *held.at("kc").to_host(), "the k cache argument after the call");
    require_close(want[2], *held.at("vc").to_host(), "the v cache argument after the call");
    args["kc"] = want[1];
    args["vc"] = want[2];
  }
  // The attention runs as the CPU's fused step, over the caches the call wrote in place.
  std::string program = cg.specialization_info().back().program->to_string();
  CHECK_THAT(program, Catch::Contains("attention f32 H=8 KVH=2 D=16 scale=0.25 causal kv_lens:i32\n    q b"));
  std::vector<Tensor> in;
  for (const Value* a : cg.module().args) in.push_back(held.at(a->name()));
  absl::StatusOr<std::vector<Tensor>> out = cg(in);
  REQUIRE(out.ok());
  CHECK((*out)[1].data() == held.at("kc").data());
  CHECK((*out)[2].data() == held.at("vc").data());
  // A position past the cache skips the write (the reference reports it): rows stay as they were.
  HostTensor before = *held.at("kc").to_host();
  args["pos"] = ints(DType::i32, {b}, {s, 0, 0});
  absl::StatusOr<std::vector<HostTensor>> ref = evaluate(g, args);
  CHECK_THAT(std::string(ref.status().message()), Catch::Contains("sequence 0, token 0: row 130 is outside the cache's 130 rows"));
  in.clear();
  held["pos"] = *Tensor::from_host(args.at("pos"));
  for (const Value* a : cg.module().args) in.push_back(held.at(a->name()));
  REQUIRE(cg(in).ok());
  HostTensor after = *held.at("kc").to_host();
  for (int64_t i = 0; i < 2 * s * 16; ++i) REQUIRE(after.get(i) == before.get(i));  // sequence 0 untouched
}

TEST_CASE("a paged decode step writes through the block table", "[cpu][attention][state]") {
  std::mt19937_64 rng(31);
  Graph g = parse_or_fail(R"(graph decode(%q: bf16[B, 4, 1, 32], %kn: bf16[B, 1, 1, 32], %pos: i32[B], %kc: bf16[NB, 16, 1, 32] state, %t: i32[B, MB]) {
  %kc1 = cache_write(%kc, %kn, %pos, %t)
  %one = constant(value=1, dtype=i32)
  %lens = add(%pos, %one)
  %a = attention(%q, %kc1, %kc1, %lens, %t)
  return %a, %kc1
})");
  CompiledGraph cg = compile_cpu(g);
  int64_t b = 4, mb = 9, blocks = 40;
  TensorMap args{{"kc", random(DType::bf16, {blocks, 16, 1, 32}, rng)},
                 {"t", ints(DType::i32, {b, mb}, block_table(b, mb, blocks, rng))}};
  std::map<std::string, Tensor> held;
  for (const std::vector<int64_t>& pos : {std::vector<int64_t>{0, 6, 126, 128}, std::vector<int64_t>{1, 7, 127, 143}}) {
    args["q"] = random(DType::bf16, {b, 4, 1, 32}, rng);
    args["kn"] = random(DType::bf16, {b, 1, 1, 32}, rng);
    args["pos"] = ints(DType::i32, {b}, pos);
    std::vector<HostTensor> want = call_and_check(cg, g, args, held);
    require_close(want[1], *held.at("kc").to_host(), "the paged cache argument after the call");
    args["kc"] = want[1];
  }
}

TEST_CASE("cache_write with one position per token (PyTorch's index_put along the sequence)", "[cpu][attention][state]") {
  std::mt19937_64 rng(37);
  // The positions are shared by the batch (gpt-fast's k_cache[:, :, input_pos] = k), broadcast.
  Graph g = parse_or_fail(R"(graph write(%kn: f32[B, 2, T, 8], %pos: i64[T], %kc: f32[B, 2, S, 8] state) {
  %p1 = unsqueeze(%pos, axes=[0])
  %p2 = expand(%p1, shape=[B, T])
  %kc1 = cache_write(%kc, %kn, %p2)
  %s = sum(%kc1, axes=[3])
  return %s, %kc1
})");
  CompiledGraph cg = compile_cpu(g);
  for (int64_t b : {1, 3}) {
    int64_t s = 37;
    TensorMap args{{"kc", random(DType::f32, {b, 2, s, 8}, rng)}};
    std::map<std::string, Tensor> held;
    // A prefill of 5 rows out of order, then single tokens, then rows at both ends of the cache.
    for (const std::vector<int64_t>& pos : {std::vector<int64_t>{4, 0, 2, 1, 3}, std::vector<int64_t>{5},
                                            std::vector<int64_t>{36, 17, 0}}) {
      int64_t t = static_cast<int64_t>(pos.size());
      INFO("B " << b << ", T " << t);
      args["kn"] = random(DType::f32, {b, 2, t, 8}, rng);
      args["pos"] = ints(DType::i64, {t}, pos);
      std::vector<HostTensor> want = call_and_check(cg, g, args, held);
      require_close(want[1], *held.at("kc").to_host(), "the cache argument after the call");
      args["kc"] = want[1];
    }
    args["pos"] = ints(DType::i64, {1}, {s});
    args["kn"] = random(DType::f32, {b, 2, 1, 8}, rng);
    absl::StatusOr<std::vector<HostTensor>> ref = evaluate(g, args);
    CHECK_THAT(std::string(ref.status().message()), Catch::Contains("token 0: row 37 is outside the cache's 37 rows"));
  }
}
