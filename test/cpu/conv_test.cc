// Convolutions and pools on the CPU backend through the default pipeline (decompose: an
// im2col window, a GEMM, reductions), against the reference evaluator on fresh inputs at
// several batch and spatial sizes.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ir/parser.h"
#include "runtime/cpu/conv_direct.h"
#include "runtime/cpu/depthwise.h"
#include "test/common/catch_helpers.h"
#include "test/cpu/cpu_check.h"

using namespace kiln;
using kiln::testing::check_cpu_matches_reference;
using kiln::testing::make_module;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;

namespace {

void check(std::string_view text, const std::vector<Bindings>& bs, uint64_t seed) {
  Graph g = parse_or_fail(text);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  require_ok(check_cpu_matches_reference(g, *m, bs, seed));
}

std::vector<Bindings> batches(std::initializer_list<int64_t> values) {
  std::vector<Bindings> out;
  for (int64_t v : values) out.push_back(Bindings{{"B", v}});
  return out;
}

}  // namespace

TEST_CASE("cpu conv: 1-D and 2-D, strided, dilated, padded, with bias and relu", "[cpu][conv]") {
  check(R"(graph g(%x: f32[B, 4, 9, 7], %w: f32[6, 4, 3, 3] param, %b: f32[6] param, %x1: f32[B, 3, 11], %w1: f32[5, 3, 3] param) {
  %c = conv(%x, %w, %b, strides=[2, 1], pads=[1, 0, 1, 2], dilations=[1, 2])
  %r = relu(%c)
  %c1 = conv(%x1, %w1, dilations=[2])
  %p = conv(%x, %w, %b, pads=[1, 1, 1, 1])
  return %r, %c1, %p
})",
        batches({1, 3, 16}), 1);
}

TEST_CASE("cpu conv: grouped and depthwise, pointwise (1x1), patch embedding (stride = kernel)", "[cpu][conv]") {
  check(R"(graph g(%x: f32[B, 6, 8, 5], %wg: f32[4, 3, 2, 3] param, %wd: f32[6, 1, 3, 3] param, %bd: f32[6] param, %wp: f32[7, 6, 1, 1] param, %we: f32[5, 6, 4, 4] param) {
  %g = conv(%x, %wg, groups=2, pads=[0, 1, 1, 0])
  %d = conv(%x, %wd, %bd, groups=6, pads=[1, 1, 1, 1], strides=[2, 2])
  %dr = relu(%d)
  %p = conv(%x, %wp)
  %e = conv(%x, %we, strides=[4, 4])
  return %g, %dr, %p, %e
})",
        batches({1, 2, 7}), 2);
}

TEST_CASE("cpu conv: symbolic spatial sizes, a residual block, bf16", "[cpu][conv]") {
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 3}, {"W", 4}}, {{"B", 2}, {"H", 9}, {"W", 5}}, {{"B", 3}, {"H", 16}, {"W", 17}}};
  check(R"(graph g(%x: f32[B, 4, H, W], %w1: f32[4, 4, 3, 3] param, %b1: f32[4] param, %w2: f32[4, 4, 3, 3] param, %b2: f32[4] param) {
  %c1 = conv(%x, %w1, %b1, pads=[1, 1, 1, 1])
  %r1 = relu(%c1)
  %c2 = conv(%r1, %w2, %b2, pads=[1, 1, 1, 1])
  %s = add(%c2, %x)
  %y = relu(%s)
  %d = conv(%x, %w1, strides=[2, 2], pads=[1, 1, 1, 1])
  return %y, %d
})",
        bs, 3);
  check(R"(graph g(%x: bf16[B, 3, 6, 5], %w: bf16[4, 3, 3, 3] param, %b: bf16[4] param) {
  %c = conv(%x, %w, %b, pads=[1, 1, 1, 1])
  %m = max_pool(%x, kernel=[2, 2], strides=[2, 2], ceil_mode=true)
  %a = avg_pool(%x, kernel=[3, 3], pads=[1, 1, 1, 1])
  return %c, %m, %a
})",
        batches({1, 5}), 4);
}

TEST_CASE("cpu pools: max and avg, padding counted or not, ceil_mode; conv_transpose", "[cpu][conv]") {
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 5}}, {{"B", 2}, {"H", 8}}, {{"B", 3}, {"H", 13}}};
  check(R"(graph g(%x: f32[B, 3, H, 7], %x1: f32[B, 2, 9], %wt: f32[3, 2, 3, 2] param, %bt: f32[4] param, %wt1: f32[2, 3, 4] param) {
  %m = max_pool(%x, kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
  %a = avg_pool(%x, kernel=[2, 3], strides=[2, 2], pads=[1, 1, 0, 1], ceil_mode=true)
  %ai = avg_pool(%x, kernel=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1], count_include_pad=true)
  %m1 = max_pool(%x1, kernel=[3], strides=[2], dilations=[2], ceil_mode=true)
  %t = conv_transpose(%x, %wt, strides=[2, 1], pads=[1, 0, 0, 1])
  %t1 = conv_transpose(%x1, %wt1, strides=[3], output_padding=[1], pads=[1, 2])
  return %m, %a, %ai, %m1, %t, %t1
})",
        bs, 5);
  check(R"(graph g(%x: f32[B, 4, 6, 5], %wt: f32[4, 3, 3, 3] param, %bt: f32[6] param) {
  %t = conv_transpose(%x, %wt, %bt, strides=[2, 2], groups=2, dilations=[1, 2], output_padding=[1, 0])
  %a = avg_pool(%x, kernel=[4, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=true, count_include_pad=true)
  return %t, %a
})",
        batches({1, 2}), 6);
}

TEST_CASE("cpu conv: batch norm folded into the weight and bias, a grouped conv's scale in its epilogue", "[cpu][conv]") {
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 3}}, {{"B", 2}, {"H", 9}}, {{"B", 4}, {"H", 12}}};
  check(R"(graph g(%x: f32[B, 3, H, 8], %w: f32[8, 3, 3, 3] param, %mean: f32[8, 1, 1] param, %sd: f32[8, 1, 1] param, %scale: f32[8, 1, 1] param, %shift: f32[8, 1, 1] param, %wg: f32[6, 4, 3, 3] param, %sg: f32[6, 1, 1] param) {
  %c = conv(%x, %w, pads=[1, 1, 1, 1], strides=[2, 1])
  %s = sub(%c, %mean)
  %d = div(%s, %sd)
  %m = mul(%d, %scale)
  %a = add(%m, %shift)
  %y = relu(%a)
  %g = conv(%y, %wg, groups=2, pads=[1, 1, 1, 1])
  %gm = mul(%g, %sg)
  %r = add(%gm, %g)
  return %y, %r
})",
        bs, 7);
}

TEST_CASE("cpu conv: depthwise (the direct form) with bias, relu6 and a residual; a channel multiplier; 1-D; bf16; conv_transpose", "[cpu][conv]") {
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 1}}, {{"B", 2}, {"H", 7}, {"W", 9}}, {{"B", 3}, {"H", 20}, {"W", 33}}};
  check(R"(graph g(%x: f32[B, 6, H, W], %w: f32[6, 1, 3, 3] param, %b: f32[6] param, %w2: f32[12, 1, 3, 3] param, %w5: f32[6, 1, 5, 5] param, %lo: f32[] param, %hi: f32[] param) {
  %d = conv(%x, %w, %b, groups=6, pads=[1, 1, 1, 1])
  %r = maximum(%d, %lo)
  %c = minimum(%r, %hi)
  %s = add(%c, %x)
  %m = conv(%x, %w2, groups=6, strides=[2, 2], pads=[1, 1, 1, 1])
  %l = conv(%x, %w5, %b, groups=6, strides=[1, 2], pads=[4, 2, 5, 3], dilations=[2, 1])
  return %s, %m, %l
})",
        bs, 8);
  std::vector<Bindings> bl = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 9}}, {{"B", 4}, {"T", 40}}};
  check(R"(graph g(%x: f32[B, 5, T], %w: f32[5, 1, 3] param, %wt: f32[5, 1, 4] param, %bt: f32[5] param) {
  %d = conv(%x, %w, groups=5, strides=[2], pads=[2, 2], dilations=[2])
  %t = conv_transpose(%x, %wt, %bt, groups=5, strides=[2], pads=[1, 1])
  return %d, %t
})",
        bl, 9);
  check(R"(graph g(%x: bf16[B, 4, 6, 5], %w: bf16[4, 1, 3, 3] param, %b: bf16[4] param) {
  %d = conv(%x, %w, %b, groups=4, pads=[1, 1, 1, 1], strides=[2, 1])
  %r = relu(%d)
  return %r
})",
        batches({1, 3, 8}), 10);
}

TEST_CASE("cpu conv: im2col windows run as native copies (after a GEMM's reshape, 1-D, 3-D, padding wider than the input, bf16; short and long rows)", "[cpu][conv]") {
  const char* text = R"(graph g(%x: f32[B, 3, H, W], %w1: f32[5, 3, 3, 3] param, %w2: f32[4, 5, 2, 3] param, %x1: f32[B, 2, H], %wl: f32[3, 2, 4] param, %x3: f32[B, 2, 3, H, 4], %w3: f32[2, 2, 2, 3, 3] param, %xb: bf16[B, 2, H, W], %wb: bf16[3, 2, 3, 3] param) {
  %c1 = conv(%x, %w1, pads=[1, 1, 1, 1])
  %r1 = relu(%c1)
  %c2 = conv(%r1, %w2, strides=[2, 3], pads=[3, 4, 2, 5], dilations=[2, 1])
  %l = conv(%x1, %wl, strides=[3], pads=[5, 6], dilations=[2])
  %v = conv(%x3, %w3, strides=[1, 2, 1], pads=[1, 0, 2, 0, 1, 1])
  %b = conv(%xb, %wb, strides=[2, 2], pads=[2, 2, 2, 2])
  return %c2, %l, %v, %b
})";
  Graph g = parse_or_fail(text);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  std::string program = (*exe)->program().to_string();
  INFO(program);
  size_t copies = 0;
  for (size_t at = program.find("(native window copy)"); at != std::string::npos;
       at = program.find("(native window copy)", at + 1))
    ++copies;
  CHECK(copies == 5);
  // Short rows go through the copy's table, long ones (16 columns or more: every conv at the
  // last size) are copied row by row.
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 1}}, {{"B", 2}, {"H", 7}, {"W", 5}}, {{"B", 3}, {"H", 24}, {"W", 19}},
                              {{"B", 2}, {"H", 50}, {"W", 53}}};
  require_ok(check_cpu_matches_reference(g, *m, bs, 11));
}

TEST_CASE("cpu conv: a window over computed values (SiLU, concat) computes them once, then copies, natively", "[cpu][conv]") {
  const char* text = R"(graph g(%x: f32[B, 4, H, W], %y: f32[B, 2, H, W], %w: f32[5, 6, 3, 3] param, %b: f32[5] param) {
  %s = sigmoid(%x)
  %a = mul(%x, %s)
  %c = concat(%a, %y, axis=1)
  %v = conv(%c, %w, %b, pads=[1, 1, 1, 1])
  %m = max_pool(%a, kernel=[2, 2], strides=[2, 2])
  return %v, %m
})";
  Graph g = parse_or_fail(text);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  std::string program = (*exe)->program().to_string();
  INFO(program);
  CHECK(program.find("(native window copy)") != std::string::npos);
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 2}}, {{"B", 2}, {"H", 7}, {"W", 5}}, {{"B", 3}, {"H", 24}, {"W", 19}}};
  require_ok(check_cpu_matches_reference(g, *m, bs, 12));
}

TEST_CASE("cpu conv: depthwise convs run natively with their bias and ReLU6 / ReLU (strided, dilated, 1-D, padding wider than the input)", "[cpu][conv]") {
  const char* text = R"(graph g(%x: f32[B, 6, H, W], %w: f32[6, 1, 3, 3] param, %b: f32[6] param, %w5: f32[6, 1, 5, 5] param, %x1: f32[B, 5, W], %w1: f32[5, 1, 3] param) {
  %zero = constant(value=0.0, dtype=f32)
  %six = constant(value=6.0, dtype=f32)
  %d = conv(%x, %w, %b, groups=6, pads=[1, 1, 1, 1])
  %r = maximum(%d, %zero)
  %c = minimum(%r, %six)
  %s = conv(%x, %w, groups=6, strides=[2, 2], pads=[1, 1, 1, 1])
  %sr = relu(%s)
  %l = conv(%x, %w5, %b, groups=6, strides=[1, 2], pads=[4, 2, 5, 3], dilations=[2, 1])
  %t = conv(%x1, %w1, groups=5, strides=[2], pads=[2, 2], dilations=[2])
  %u = conv(%x1, %w1, groups=5, pads=[1, 1])
  %ua = add(%u, %x1)
  return %c, %sr, %l, %t, %ua
})";
  Graph g = parse_or_fail(text);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  std::string program = (*exe)->program().to_string();
  INFO(program);
  size_t native = 0;
  for (size_t at = program.find("(native depthwise conv)"); at != std::string::npos;
       at = program.find("(native depthwise conv)", at + 1))
    ++native;
  CHECK(native == 4);  // all but %u, whose residual add is not a clamp: a generated kernel
  // Widths for each part of the stride-2 column split: sixteen and eight columns at a time,
  // one at a time at the edges (mobilenet_v2's 20 and 10 among them).
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 1}},   {{"B", 2}, {"H", 7}, {"W", 9}},
                              {{"B", 3}, {"H", 20}, {"W", 37}}, {{"B", 2}, {"H", 10}, {"W", 20}},
                              {{"B", 1}, {"H", 6}, {"W", 10}},  {{"B", 1}, {"H", 3}, {"W", 16}}};
  require_ok(check_cpu_matches_reference(g, *m, bs, 13));
}

TEST_CASE("cpu conv: stride-1 convs run directly from their input (conv_direct.h), with bias, SiLU and residual epilogues, beside strided and small ones", "[cpu][conv]") {
  const char* text = R"(graph g(%x: f32[B, 5, H, W], %w1: f32[9, 5, 3, 3] param, %b1: f32[9] param, %w2: f32[5, 9, 3, 3] param, %w3: f32[3, 5, 2, 3] param, %x1: f32[B, 4, W], %wl: f32[7, 4, 5] param, %ws: f32[4, 5, 3, 3] param) {
  %c1 = conv(%x, %w1, %b1, pads=[1, 1, 1, 1])
  %s1 = sigmoid(%c1)
  %a1 = mul(%c1, %s1)
  %c2 = conv(%a1, %w2, pads=[1, 1, 1, 1])
  %r = add(%c2, %x)
  %c3 = conv(%r, %w3, pads=[0, 2, 1, 0], dilations=[2, 1])
  %l = conv(%x1, %wl, pads=[4, 5], dilations=[2])
  %s = conv(%x, %ws, strides=[2, 2], pads=[1, 1, 1, 1])
  return %c3, %l, %s
})";
  Graph g = parse_or_fail(text);
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  // The four stride-1 convs' windows are made by their GEMMs (which convolve directly where
  // the call's planes have 64 positions or more), the strided one's by its own copy.
  int claimed = 0, copies = 0;
  for (size_t k = 0; k < (*exe)->program().kernels.size(); ++k) {
    std::string d = (*exe)->describe_kernel(static_cast<int>(k));
    INFO(d);
    claimed += d.find("made by its GEMM") != std::string::npos;
    copies += d.find("native window copy") != std::string::npos;
  }
  CHECK(claimed == 4);
  CHECK(copies == 5);
  // Planes below 64 positions (1x1, 3x5), then direct ones: odd, and large with several tiles.
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 1}}, {{"B", 2}, {"H", 3}, {"W", 5}}, {{"B", 1}, {"H", 9}, {"W", 11}},
                              {{"B", 3}, {"H", 17}, {"W", 13}}, {{"B", 2}, {"H", 40}, {"W", 37}}};
  require_ok(check_cpu_matches_reference(g, *m, bs, 21));
}

TEST_CASE("cpu conv: the direct conv routine against a plain loop (odd channel counts, strides, dilation, uneven and wide padding, 1-D, batches)", "[cpu][conv]") {
  using kiln::cpu::DirectConv;
  // (batch, channels, m, h, w, kh, kw, dh, dw, ph, pw, pads at the end (h, w), strides (h, w))
  struct Case {
    int64_t n, c, m, h, w, kh, kw, dh, dw, ph, pw, eh, ew, sh, sw;
  };
  std::vector<Case> cases = {{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1},    {1, 3, 5, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
                             {3, 4, 6, 9, 7, 3, 3, 2, 1, 1, 0, 1, 2, 1, 1},    {2, 5, 9, 5, 4, 3, 3, 1, 1, 3, 3, 3, 3, 1, 1},
                             {1, 3, 17, 1, 11, 1, 3, 1, 2, 0, 1, 0, 0, 1, 1},  {2, 16, 16, 40, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
                             {1, 7, 13, 23, 31, 5, 3, 1, 2, 2, 1, 0, 3, 1, 1}, {2, 3, 8, 40, 40, 7, 7, 1, 1, 3, 3, 3, 3, 2, 2},
                             {1, 5, 9, 12, 9, 3, 2, 2, 1, 1, 0, 2, 1, 2, 1},   {3, 2, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2},
                             {1, 4, 11, 1, 17, 1, 4, 1, 2, 0, 3, 0, 2, 1, 2}};
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  kiln::cpu::ThreadPool one(1), three(3);
  for (const Case& s : cases) {
    DirectConv g{s.n, s.c, s.m, s.h, s.w, 0, 0, s.kh, s.kw, s.dh, s.dw, s.ph, s.pw, s.sh, s.sw};
    g.oh = (s.h + s.ph + s.eh - (s.kh - 1) * s.dh - 1) / s.sh + 1;
    g.ow = (s.w + s.pw + s.ew - (s.kw - 1) * s.dw - 1) / s.sw + 1;
    int64_t k = g.k(), ld = k + 2;  // weight rows with a gap, as a view's leading dimension
    std::vector<float> x(static_cast<size_t>(s.n * s.c * s.h * s.w)), w(static_cast<size_t>(s.m * ld));
    for (float& v : x) v = normal(rng);
    for (float& v : w) v = normal(rng);
    std::vector<double> want(static_cast<size_t>(s.n * s.m * g.oh * g.ow), 0.0);
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t m = 0; m < s.m; ++m)
        for (int64_t oy = 0; oy < g.oh; ++oy)
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            double acc = 0;
            for (int64_t c = 0; c < s.c; ++c)
              for (int64_t i = 0; i < s.kh; ++i)
                for (int64_t j = 0; j < s.kw; ++j) {
                  int64_t iy = oy * s.sh + i * s.dh - s.ph, ix = ox * s.sw + j * s.dw - s.pw;
                  if (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w)
                    acc += double(w[m * ld + (c * s.kh + i) * s.kw + j]) * x[((n * s.c + c) * s.h + iy) * s.w + ix];
                }
            want[((n * s.m + m) * g.oh + oy) * g.ow + ox] = acc;
          }
    std::vector<float> packed(static_cast<size_t>(kiln::cpu::packed_conv_weight_floats(g)));
    kiln::cpu::pack_conv_weight(g, w.data(), ld, packed.data());
    for (kiln::cpu::ThreadPool* pool : {&one, &three}) {
      std::vector<float> out(want.size(), -7.0f), scratch;
      kiln::cpu::direct_conv(g, x.data(), packed.data(), out.data(), scratch, *pool);
      for (size_t i = 0; i < out.size(); ++i) {
        INFO("case n " << s.n << " c " << s.c << " m " << s.m << " " << s.h << "x" << s.w << ", element " << i);
        REQUIRE(std::abs(out[i] - want[i]) <= 1e-4 * (1 + std::abs(want[i])) * std::sqrt(double(k)));
      }
    }
  }
  // The strategy's contract: strides up to kMaxDirectStride, f32, 1-D or 2-D, planes of
  // kMinDirectPlane or more.
  using kiln::cpu::ConvStrategy;
  using kiln::cpu::choose_conv_strategy;
  CHECK(choose_conv_strategy(kiln::cpu::kMaxDirectStride + 1, 2, true, 1600) == ConvStrategy::Im2colBlas);
  CHECK(choose_conv_strategy(1, 2, false, 1600) == ConvStrategy::Im2colBlas);
  CHECK(choose_conv_strategy(1, 3, true, 1600) == ConvStrategy::Im2colBlas);
  CHECK(choose_conv_strategy(1, 2, true, kiln::cpu::kMinDirectPlane - 1) == ConvStrategy::Im2colBlas);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    CHECK(choose_conv_strategy(1, 1, true, kiln::cpu::kMinDirectPlane) == ConvStrategy::Direct);
    CHECK(choose_conv_strategy(kiln::cpu::kMaxDirectStride, 2, true, kiln::cpu::kMinDirectPlane) == ConvStrategy::Direct);
  }
}

TEST_CASE(
    "cpu conv: the native depthwise routine's methods against a plain loop and each other (plane counts around "
    "eight and sixteen, strides, dilation, wide padding, 1-D, clamps, NaN)",
    "[cpu][conv]") {
  using kiln::cpu::Depthwise;
  using kiln::cpu::DepthwiseMethod;
  struct Case {
    int64_t planes, channels, h, w, kh, kw, sh, sw, dh, dw, ph, pw;
    float lo, hi;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, -inf, inf},    {7, 7, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0, 6},
      {8, 4, 10, 10, 3, 3, 2, 2, 1, 1, 1, 1, 0, inf},     {18, 6, 3, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 6},
      {13, 13, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, -inf, inf}, {17, 17, 20, 20, 3, 3, 2, 2, 1, 1, 1, 1, 0, 6},
      {9, 3, 6, 7, 5, 5, 1, 2, 2, 1, 4, 2, -1, 1},        {10, 5, 1, 37, 1, 3, 1, 2, 1, 2, 0, 2, -inf, inf},
      {16, 16, 4, 4, 3, 3, 3, 3, 1, 1, 2, 2, 0, 6},       {5, 5, 2, 2, 3, 3, 1, 1, 1, 1, 3, 3, -inf, inf},
      {33, 11, 14, 13, 3, 3, 1, 1, 2, 2, 2, 2, 0, 6},     {20, 20, 13, 15, 3, 3, 1, 2, 1, 1, 1, 1, -inf, inf}};
  std::mt19937_64 rng(29);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  kiln::cpu::ThreadPool one(1), three(3);
  for (const Case& s : cases) {
    Depthwise g{.planes = s.planes,
                .channels = s.channels,
                .h = s.h,
                .w = s.w,
                .kh = s.kh,
                .kw = s.kw,
                .sh = s.sh,
                .sw = s.sw,
                .dh = s.dh,
                .dw = s.dw,
                .ph = s.ph,
                .pw = s.pw,
                .lo = s.lo,
                .hi = s.hi};
    g.oh = (s.h + 2 * s.ph - s.dh * (s.kh - 1) - 1) / s.sh + 1;
    g.ow = (s.w + 2 * s.pw - s.dw * (s.kw - 1) - 1) / s.sw + 1;
    std::vector<float> x(static_cast<size_t>(s.planes * s.h * s.w)), w(static_cast<size_t>(s.channels * s.kh * s.kw)),
        b(static_cast<size_t>(s.channels));
    for (std::vector<float>* v : {&x, &w, &b})
      for (float& e : *v) e = normal(rng);
    x[x.size() / 2] = std::nanf("");  // propagates through the clamp to the outputs whose window holds it
    std::vector<float> want(static_cast<size_t>(s.planes * g.oh * g.ow));
    for (int64_t p = 0; p < s.planes; ++p)
      for (int64_t oy = 0; oy < g.oh; ++oy)
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          const int64_t c = p % s.channels;
          float acc = 0;
          for (int64_t i = 0; i < s.kh; ++i)
            for (int64_t j = 0; j < s.kw; ++j) {
              int64_t iy = oy * s.sh + i * s.dh - s.ph, ix = ox * s.sw + j * s.dw - s.pw;
              float v = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w ? x[(p * s.h + iy) * s.w + ix] : 0.0f;
              acc += w[(c * s.kh + i) * s.kw + j] * v;
            }
          float v = acc + b[c];
          want[(p * g.oh + oy) * g.ow + ox] = std::isnan(v) ? v : std::min(std::max(v, s.lo), s.hi);
        }
    std::vector<std::vector<float>> got;
    for (DepthwiseMethod m : {DepthwiseMethod::Planes, DepthwiseMethod::Interleaved, DepthwiseMethod::Interleaved8})
      for (kiln::cpu::ThreadPool* pool : {&one, &three}) {
        std::vector<float>& out = got.emplace_back(want.size(), -7.0f);
        kiln::cpu::depthwise_conv(g, x.data(), w.data(), b.data(), out.data(), *pool, m);
        for (size_t i = 0; i < out.size(); ++i) {
          INFO("planes " << s.planes << " " << s.h << "x" << s.w << " -> " << g.oh << "x" << g.ow << ", method "
                         << int(m) << ", element " << i);
          if (std::isnan(want[i])) REQUIRE(std::isnan(out[i]));
          else REQUIRE(std::abs(out[i] - want[i]) <= 1e-5f * (1 + std::abs(want[i])) * float(s.kh * s.kw));
        }
      }
    // All sum the taps in the same order: identical bits, NaNs included.
    for (size_t k = 1; k < got.size(); ++k) CHECK(std::memcmp(got[k].data(), got[0].data(), got[0].size() * 4) == 0);
  }
  CHECK(kiln::cpu::choose_depthwise({.planes = 8, .h = 10, .w = 10, .oh = 5, .ow = 5}) == DepthwiseMethod::Interleaved);
  // 10x10 and 14x14 outputs: interleaved sixteen planes at a time where the CPU has AVX-512, else planes.
  CHECK((kiln::cpu::choose_depthwise({.planes = 8, .h = 10, .w = 10, .oh = 10, .ow = 10}) ==
         DepthwiseMethod::Interleaved) == static_cast<bool>(__builtin_cpu_supports("avx512f")));
  CHECK((kiln::cpu::choose_depthwise({.planes = 8, .h = 14, .w = 14, .oh = 14, .ow = 14}) ==
         DepthwiseMethod::Interleaved) == static_cast<bool>(__builtin_cpu_supports("avx512f")));
  CHECK(kiln::cpu::choose_depthwise({.planes = 8, .h = 20, .w = 20, .oh = 20, .ow = 20}) == DepthwiseMethod::Planes);
}

TEST_CASE(
    "cpu: sums and means over trailing axes run natively (global average pools over 1x1 to 9x9 maps, rows of 1 to 81); "
    "others stay generated",
    "[cpu][conv]") {
  Graph g = parse_or_fail(R"(graph p(%x: f32[B, 6, H, W], %y: f32[B, 5, W]) {
  %gap = mean(%x, axes=[2, 3], keepdim=true)
  %s = sum(%y, axes=[2])
  %m = mean(%x, axes=[3])
  %c = sum(%x, axes=[1])
  %e = exp(%y)
  %f = mean(%e, axes=[2])
  %r = reshape(%x, shape=[B, 6, H*W])
  %rm = mean(%r, axes=[2])
  return %gap, %s, %m, %c, %f, %rm
})");
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  absl::StatusOr<std::unique_ptr<kiln::Executor>> exe = kiln::testing::build_cpu(*m);
  if (!exe.ok()) FAIL(status_message(exe.status()));
  int native = 0;
  for (size_t k = 0; k < (*exe)->program().kernels.size(); ++k)
    native += (*exe)->describe_kernel(static_cast<int>(k)).find("(native row reduction)") != std::string::npos;
  INFO((*exe)->program().to_string());
  CHECK(native == 4);  // not the sum over axis 1 (not trailing), nor the mean of exp (a fused prologue)
  std::vector<Bindings> bs = {{{"B", 1}, {"H", 1}, {"W", 1}},
                              {{"B", 2}, {"H", 2}, {"W", 2}},
                              {{"B", 3}, {"H", 9}, {"W", 9}},
                              {{"B", 1}, {"H", 4}, {"W", 17}}};
  require_ok(check_cpu_matches_reference(g, *m, bs, 37));
}
