// The fused attention step on the CPU (runtime/cpu/attention.h) against the reference and
// against the decomposition (CompileOptions::fused_attention = false) on fresh inputs: every
// form of ops.def's attention at Tq/Tk in {1, odd, 127, 128, 129}, causal with Tq < Tk, a
// long key sequence, GQA 1/4/8, ragged kv_lens, paged k/v through shuffled block tables,
// broadcast masks, f16/bf16 forms, the decoder layer example, q/k/v read through views of
// one fused projection and the output stored for the next GEMM (no copy kernel around the
// step); the printed program shows the step, and a bad block table is a located error.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/cpu/decoder_layer.h"

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

CompiledGraph compile_cpu(const Graph& g, bool fused) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu, .fused_attention = fused});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  return *std::move(cg);
}

absl::StatusOr<std::vector<HostTensor>> run(CompiledGraph& cg, const TensorMap& args) {
  std::vector<Tensor> in;
  for (const Value* a : cg.module().args) in.push_back(*Tensor::from_host(args.at(a->name())));
  KILN_ASSIGN_OR_RETURN(std::vector<Tensor> out, cg(in));
  std::vector<HostTensor> host;
  for (const Tensor& t : out) host.push_back(*t.to_host());
  return host;
}

// The program of the specialization built last, as `kiln compile` prints it.
std::string program_text(const CompiledGraph& cg) { return cg.specialization_info().back().program->to_string(); }

// Runs `g` fused and decomposed on `args`; both must match the reference, and the fused
// program must hold the attention step `step` (the decomposed one none).
void check_both(const Graph& g, CompiledGraph& fused, CompiledGraph& decomposed, const TensorMap& args,
                const std::string& step) {
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) FAIL(status_message(want.status()));
  for (CompiledGraph* cg : {&fused, &decomposed}) {
    absl::StatusOr<std::vector<HostTensor>> got = run(*cg, args);
    if (!got.ok()) FAIL(status_message(got.status()));
    for (size_t i = 0; i < want->size(); ++i) {
      Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
      INFO((cg == &fused ? "fused" : "decomposed") << ", output " << i << ": " << c.message);
      REQUIRE(c.ok);
    }
  }
  CHECK_THAT(program_text(fused), Catch::Contains(step));
  CHECK_THAT(program_text(decomposed), !Catch::Contains("attention "));
}

// A shuffled block table: sequence b's blocks a random choice of `blocks` ids, none shared.
std::vector<int64_t> block_table(int64_t b, int64_t per_seq, int64_t blocks, std::mt19937_64& rng) {
  std::vector<int64_t> ids(blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  return std::vector<int64_t>(ids.begin(), ids.begin() + b * per_seq);
}

}  // namespace

TEST_CASE("fused attention: every form on the CPU matches the reference and the decomposition", "[cpu][attention][fused]") {
  std::mt19937_64 rng(41);
  struct Form {
    const char* name;
    const char* dtype;
    const char* extra_args;  // after %q, %k, %v
    const char* call;        // the attention's operands and attributes after %q, %k, %v
    const char* step;        // what the printed step says after "H=.. KVH=.. D=16 scale="
  };
  const Form forms[] = {
      {"plain", "f32", "", "", "0.25\n"},
      {"causal", "f32", "", ", causal=true", "0.25 causal\n"},
      {"bool mask [B, 1, Tq, Tk]", "f32", ", %m: bool[B, 1, Tq, Tk]", ", %m", "0.25 mask=bool"},
      {"additive mask [Tq, Tk]", "f32", ", %m: f32[Tq, Tk]", ", %m, scale=0.2", "0.2 mask=add:f32"},
      {"additive mask [H, 1, Tk]", "f32", ", %m: f32[H, 1, Tk]", ", %m, causal=true", "0.25 causal mask=add:f32"},
      {"window", "f32", "", ", window=6", "0.25 window=6"},
      {"causal window softcap", "f32", "", ", causal=true, window=5, softcap=2", "0.25 causal window=5 softcap=2"},
      {"ragged i64 kv_lens", "f32", ", %l: i64[B]", ", %l, causal=true", "0.25 causal kv_lens:i64"},
      {"bf16 causal, bool mask", "bf16", ", %m: bool[B, 1, 1, Tk]", ", %m, causal=true", "0.25 causal mask=bool"},
      {"f16 softcap", "f16", "", ", softcap=3", "0.25 softcap=3"},
  };
  for (int64_t ratio : {1, 4, 8})
    for (const Form& f : forms) {
      int64_t h = 2 * ratio;
      std::string text = str_cat("graph a(%q: ", f.dtype, "[B, ", h, ", Tq, 16], %k: ", f.dtype, "[B, 2, Tk, 16], %v: ",
                                 f.dtype, "[B, 2, Tk, 16]", f.extra_args, ") {\n  %a = attention(%q, %k, %v", f.call,
                                 ")\n  return %a\n}\n");
      // The mask's H is q's head count.
      if (size_t p = text.find("[H, 1, Tk]"); p != std::string::npos) text.replace(p, 10, str_cat("[", h, ", 1, Tk]"));
      Graph g = parse_or_fail(text);
      CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
      DType dt = g.args()[0]->dtype();
      for (auto [tq, tk] : {std::pair<int64_t, int64_t>{1, 1}, {1, 129}, {7, 7}, {5, 128}, {127, 127}, {128, 128},
                            {129, 129}, {3, 127}}) {
        if (ratio == 8 && tq > 7) continue;  // the long rows once per form are enough
        INFO(f.name << ", GQA ratio " << ratio << ", Tq " << tq << ", Tk " << tk);
        TensorMap args{{"q", random(dt, {2, h, tq, 16}, rng)},
                       {"k", random(dt, {2, 2, tk, 16}, rng)},
                       {"v", random(dt, {2, 2, tk, 16}, rng)}};
        if (const Value* m = g.find("m")) {
          std::vector<int64_t> shape;
          for (const Dim& d : m->shape())
            shape.push_back(d == Dim(1) ? 1 : d.to_string() == "B" ? 2 : d.to_string() == "Tq" ? tq : d.to_string() == "Tk" ? tk : *d.constant());
          HostTensor r = random(DType::f32, shape, rng), mask(m->dtype(), shape);
          for (int64_t i = 0; i < r.numel(); ++i) {
            if (m->dtype() == DType::boolean) mask.set_int(i, r.get(i) > -0.6 || i % (tk + 1) == 0);
            else mask.set(i, r.get(i));
          }
          args["m"] = mask;
        }
        if (g.find("l")) args["l"] = ints(DType::i64, {2}, {tk, std::max<int64_t>(tq, (tk + 1) / 2)});
        check_both(g, fused, decomposed, args, str_cat("attention ", f.dtype, " H=", h, " KVH=2 D=16 scale=", f.step));
      }
    }
}

TEST_CASE("fused attention: a long key sequence and causal Tq < Tk", "[cpu][attention][fused]") {
  std::mt19937_64 rng(43);
  Graph g = parse_or_fail(R"(graph long(%q: f32[B, 4, Tq, 64], %k: f32[B, 1, Tk, 64], %v: f32[B, 1, Tk, 64]) {
  %a = attention(%q, %k, %v, causal=true)
  return %a
})");
  CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
  for (auto [tq, tk] : {std::pair<int64_t, int64_t>{5, 4096}, {1, 4096}, {129, 300}}) {
    INFO("Tq " << tq << ", Tk " << tk);
    TensorMap args{{"q", random(DType::f32, {1, 4, tq, 64}, rng)},
                   {"k", random(DType::f32, {1, 1, tk, 64}, rng)},
                   {"v", random(DType::f32, {1, 1, tk, 64}, rng)}};
    check_both(g, fused, decomposed, args, "attention f32 H=4 KVH=1 D=64 scale=0.125 causal");
  }
  // A head dim that is not a multiple of the routine's 16 lanes: its tail columns.
  Graph g40 = parse_or_fail(R"(graph d40(%q: f32[B, 2, Tq, 40], %k: f32[B, 2, Tk, 40], %v: f32[B, 2, Tk, 40]) {
  %a = attention(%q, %k, %v, window=70)
  return %a
})");
  CompiledGraph fused40 = compile_cpu(g40, true), decomposed40 = compile_cpu(g40, false);
  TensorMap args{{"q", random(DType::f32, {2, 2, 131, 40}, rng)},
                 {"k", random(DType::f32, {2, 2, 200, 40}, rng)},
                 {"v", random(DType::f32, {2, 2, 200, 40}, rng)}};
  check_both(g40, fused40, decomposed40, args, "attention f32 H=2 KVH=2 D=40");
}

TEST_CASE("fused attention: head dims around the routine's 16- and 8-lane blocks, with an additive mask",
          "[cpu][attention][fused]") {
  // T5's encoder heads are 8 wide: the P.V product's 8-lane block alone; 20: 16 lanes and 4
  // scalar columns; 24: 16 and 8. The mask [H, Tq, Tk] is added as T5's position bias is.
  std::mt19937_64 rng(53);
  for (int64_t d : {8, 20, 24}) {
    std::string text = str_cat("graph t(%q: f32[B, 4, T, ", d, "], %k: f32[B, 4, T, ", d, "], %v: f32[B, 4, T, ", d,
                               "], %m: f32[4, T, T]) {\n  %a = attention(%q, %k, %v, %m, scale=1)\n  return %a\n}\n");
    Graph g = parse_or_fail(text);
    CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {3, 16}, {2, 7}, {1, 70}}) {
      INFO("D " << d << ", B " << b << ", T " << t);
      TensorMap args{{"q", random(DType::f32, {b, 4, t, d}, rng)},
                     {"k", random(DType::f32, {b, 4, t, d}, rng)},
                     {"v", random(DType::f32, {b, 4, t, d}, rng)},
                     {"m", random(DType::f32, {4, t, t}, rng)}};
      check_both(g, fused, decomposed, args, str_cat("attention f32 H=4 KVH=4 D=", d, " scale=1 mask=add:f32"));
    }
  }
}

TEST_CASE("fused attention: paged k/v through shuffled block tables", "[cpu][attention][fused]") {
  std::mt19937_64 rng(47);
  Graph g = parse_or_fail(R"(graph p(%q: f32[B, 8, Tq, 32], %k: f32[NB, 16, 2, 32], %v: f32[NB, 16, 2, 32], %l: i32[B], %t: i64[B, MB]) {
  %a = attention(%q, %k, %v, %l, %t, causal=true, window=40)
  return %a
})");
  CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
  for (auto [b, tq, mb] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 1, 9}, {2, 5, 8}, {2, 17, 3}}) {
    int64_t blocks = b * mb + 3;
    std::vector<int64_t> lens;
    for (int64_t i = 0; i < b; ++i) lens.push_back(std::max<int64_t>(tq, mb * 16 - 7 * i - (i == 1 ? 10 : 0)));
    INFO("B " << b << ", Tq " << tq << ", max_blocks " << mb);
    TensorMap args{{"q", random(DType::f32, {b, 8, tq, 32}, rng)},
                   {"k", random(DType::f32, {blocks, 16, 2, 32}, rng)},
                   {"v", random(DType::f32, {blocks, 16, 2, 32}, rng)},
                   {"l", ints(DType::i32, {b}, lens)},
                   {"t", ints(DType::i64, {b, mb}, block_table(b, mb, blocks, rng))}};
    check_both(g, fused, decomposed, args, "attention f32 H=8 KVH=2 D=32 scale=0.17677669529663687 causal window=40 kv_lens:i32 paged(16):i64");
  }
  SECTION("a block id outside the cache is a located error, not a read out of bounds") {
    TensorMap args{{"q", random(DType::f32, {2, 8, 1, 32}, rng)},
                   {"k", random(DType::f32, {6, 16, 2, 32}, rng)},
                   {"v", random(DType::f32, {6, 16, 2, 32}, rng)},
                   {"l", ints(DType::i32, {2}, {20, 3})},
                   {"t", ints(DType::i64, {2, 2}, {0, 9, 1, 2})}};
    absl::StatusOr<std::vector<HostTensor>> got = run(fused, args);
    REQUIRE_FALSE(got.ok());
    CHECK_THAT(std::string(got.status().message()), Catch::Contains("block_table[0, 1] = 9 is outside [0, 6)"));
  }
}

TEST_CASE("fused attention: the decoder layer example, fused against decomposed", "[cpu][attention][fused][examples]") {
  Graph g = parse_or_fail(kiln::testing::decoder_layer_text(64, 4, 16, 160));
  CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 7}}, {{"B", 1}, {"T", 129}}};
  for (size_t i = 0; i < bs.size(); ++i) {
    INFO("B " << bs[i].at("B") << ", T " << bs[i].at("T"));
    check_both(g, fused, decomposed, kiln::testing::layer_args(g, bs[i], 51 + i), "attention bf16 H=4 KVH=4 D=16 scale=0.25 causal");
  }
  // One launch for attention where the decomposition has GEMM -> softmax -> GEMM; v read
  // from the fused QKV projection's output in place (q and k are RoPE kernels' outputs), the
  // output stored as [B, T, H, D] for the o-projection (no gather of its A operand).
  CHECK(fused.stats().launches_per_call < decomposed.stats().launches_per_call);
  CHECK_THAT(program_text(fused), Catch::Contains("v b") && Catch::Contains(" at +128 strides [192*T, 16, 192, 1] -> out b") &&
                                      Catch::Contains(" at +0 strides [64*T, 16, 64, 1]; B=B Tq=T Tk=T") &&
                                      !Catch::Contains("A gathered") && !Catch::Contains("_permute("));
}

namespace {

// q, k and v as slices of one fused projection x [B, T, (H + 2 KVH) * D], each reshaped to
// heads and permuted to [B, heads, T, D]; the output merged back to [B, T, H*D] for a
// linear, as a Llama layer without RoPE writes it.
std::string fused_qkv_text(const char* dtype, int64_t h, int64_t kvh, int64_t d, bool causal) {
  const int64_t w = (h + 2 * kvh) * d;
  auto head = [&](const char* name, int64_t start, int64_t heads) {
    return str_cat("  %", name, "0 = slice(%x, axis=-1, start=", start, ", end=", start + heads * d, ")\n  %", name,
                   "1 = reshape(%", name, "0, shape=[B, T, ", heads, ", ", d, "])\n  %", name, " = permute(%", name,
                   "1, dims=[0, 2, 1, 3])\n");
  };
  return str_cat("graph qkv(%x: ", dtype, "[B, T, ", w, "], %wo: ", dtype, "[32, ", h * d, "]) {\n", head("q", 0, h),
                 head("k", h * d, kvh), head("v", (h + kvh) * d, kvh), "  %a = attention(%q, %k, %v",
                 causal ? ", causal=true" : "", ")\n  %p = permute(%a, dims=[0, 2, 1, 3])\n  %r = reshape(%p, shape=[B, T, ",
                 h * d, "])\n  %o = linear(%r, %wo)\n  return %o\n}\n");
}

}  // namespace

TEST_CASE("fused attention: q, k, v read through views of one fused projection, out stored for the next GEMM",
          "[cpu][attention][fused]") {
  std::mt19937_64 rng(53);
  for (const char* dtype : {"f32", "bf16"})
    for (int64_t ratio : {1, 4, 8})
      for (int64_t d : {64, 128})
        for (bool causal : {false, true}) {
          if (std::string(dtype) == "bf16" && d == 64 && ratio == 4) continue;  // the other forms cover it
          const int64_t kvh = ratio == 1 ? 2 : 1, h = kvh * ratio;
          Graph g = parse_or_fail(fused_qkv_text(dtype, h, kvh, d, causal));
          CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
          DType dt = g.args()[0]->dtype();
          for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {2, 7}, {1, 127}, {1, 129}}) {
            INFO(dtype << " H " << h << " KVH " << kvh << " D " << d << (causal ? " causal" : "") << ", B " << b
                       << ", T " << t);
            TensorMap args{{"x", random(dt, {b, t, (h + 2 * kvh) * d}, rng)}, {"wo", random(dt, {32, h * d}, rng)}};
            for (int64_t i = 0; i < args["wo"].numel(); ++i)
              args["wo"].set(i, args["wo"].get(i) / std::sqrt(static_cast<double>(h * d)));
            // q, k and v at their offsets in x's buffer (b0), strided over [B, heads, T, D];
            // out stored as [B, T, H, D].
            const int64_t w = (h + 2 * kvh) * d;
            auto strides = [&](int64_t at, int64_t heads) {  // (one head: its stride is 0)
              return str_cat(" at +", at, " strides [", w, "*T, ", heads == 1 ? 0 : d, ", ", w, ", 1]");
            };
            check_both(g, fused, decomposed, args,
                       str_cat("q b0", strides(0, h), ", k b0", strides(h * d, kvh), ", v b0",
                               strides((h + kvh) * d, kvh), " -> out b1 at +0 strides [", h * d, "*T, ", d, ", ",
                               h * d, ", 1]"));
          }
          // No kernel copies q, k, v or the output: the attention step and the linear alone.
          std::string text = program_text(fused);
          CHECK_THAT(text, !Catch::Contains("permute(") && !Catch::Contains("gathered"));
          CHECK(fused.stats().launches_per_call == 2);
        }
}

TEST_CASE("fused attention: views that no aligned strided view replaces are still copied", "[cpu][attention][fused]") {
  // A head dim of 12: the rows of q, k and v in x are not 8-element aligned.
  std::mt19937_64 rng(59);
  Graph g = parse_or_fail(fused_qkv_text("f32", 4, 2, 12, true));
  CompiledGraph fused = compile_cpu(g, true), decomposed = compile_cpu(g, false);
  TensorMap args{{"x", random(DType::f32, {2, 9, 96}, rng)}, {"wo", random(DType::f32, {32, 48}, rng)}};
  check_both(g, fused, decomposed, args, "attention f32 H=4 KVH=2 D=12");
  CHECK_THAT(program_text(fused), Catch::Contains("permute("));
}
