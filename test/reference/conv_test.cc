// conv, conv_transpose, max_pool, avg_pool and window: hand-computed cases, and random
// cases against a direct loop over an explicitly padded input written here.
#include <random>

#include "ir/parser.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

using Ints = std::vector<int64_t>;

HostTensor random_tensor(DType t, Dims shape, uint64_t seed) {
  HostTensor h(t, std::move(shape));
  std::mt19937_64 rng(seed);
  h.fill_random(rng);
  return h;
}

// conv over 2-D spatial dims the textbook way: zero-pad x into a larger array, then
// y[n, co, i, j] = bias[co] + sum over the group's channels and the kernel of
// xp[n, c, i*s + ki*d, j*s + kj*d] * w[co, c, ki, kj].
std::vector<double> naive_conv2d(const HostTensor& x, const HostTensor& w, const std::vector<double>& bias, Ints s,
                                 Ints pads, Ints d, int64_t groups, Dims& out_shape) {
  int64_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], wi = x.shape()[3];
  int64_t co = w.shape()[0], cg = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3];
  int64_t hp = h + pads[0] + pads[2], wp = wi + pads[1] + pads[3];
  std::vector<double> xp(n * c * hp * wp, 0.0);
  for (int64_t a = 0; a < n * c; ++a)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < wi; ++j) xp[(a * hp + i + pads[0]) * wp + j + pads[1]] = x.get((a * h + i) * wi + j);
  int64_t oh = (hp - d[0] * (kh - 1) - 1) / s[0] + 1, ow = (wp - d[1] * (kw - 1) - 1) / s[1] + 1;
  out_shape = {n, co, oh, ow};
  std::vector<double> y;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = bias.empty() ? 0 : bias[o];
          for (int64_t ci = 0; ci < cg; ++ci) {
            int64_t ch = o / (co / groups) * cg + ci;
            for (int64_t ki = 0; ki < kh; ++ki)
              for (int64_t kj = 0; kj < kw; ++kj)
                acc += xp[((b * c + ch) * hp + i * s[0] + ki * d[0]) * wp + j * s[1] + kj * d[1]] *
                       w.get(((o * cg + ci) * kh + ki) * kw + kj);
          }
          y.push_back(acc);
        }
  return y;
}

TEST_CASE("conv 1-D by hand: padding and bias") {
  HostTensor x = tensor(DType::f32, {1, 1, 5}, {1, 2, 3, 4, 5});
  HostTensor w = tensor(DType::f32, {1, 1, 3}, {1, 0, -1});
  HostTensor b = tensor(DType::f32, {1}, {0.5});
  check_exact(run(Op::Conv, {x, w}, {{"pads", Ints{1, 1}}}), DType::f32, {1, 1, 5}, {-2, -2, -2, -2, 4});
  check_exact(run(Op::Conv, {x, w, b}, {{"pads", Ints{1, 1}}}), DType::f32, {1, 1, 5}, {-1.5, -1.5, -1.5, -1.5, 4.5});
  // Dilation 2 reaches x[o], x[o + 4]: one output.
  check_exact(run(Op::Conv, {x, w}, {{"dilations", Ints{2}}}), DType::f32, {1, 1, 1}, {1 - 5});
}

TEST_CASE("conv 2-D by hand: stride with asymmetric padding") {
  std::vector<double> v(9);
  for (int i = 0; i < 9; ++i) v[i] = i;
  HostTensor x = tensor(DType::f32, {1, 1, 3, 3}, v);
  HostTensor w = tensor(DType::f32, {1, 1, 2, 2}, {1, 1, 1, 1});
  check_exact(run(Op::Conv, {x, w}, {{"strides", Ints{2, 2}}}), DType::f32, {1, 1, 1, 1}, {8});
  check_exact(run(Op::Conv, {x, w}, {{"strides", Ints{2, 2}}, {"pads", Ints{0, 0, 1, 1}}}), DType::f32, {1, 1, 2, 2},
              {8, 7, 13, 8});
}

TEST_CASE("conv against a direct loop: groups, depthwise, strides, dilations, pads, bias") {
  struct Case {
    Dims x, w;
    Ints s, pads, d;
    int64_t groups;
    bool bias;
  };
  for (const Case& c : {Case{{2, 4, 7, 6}, {6, 4, 3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, true},
                        Case{{1, 4, 9, 5}, {6, 2, 3, 2}, {2, 1}, {1, 0, 2, 1}, {1, 2}, 2, false},
                        Case{{3, 3, 5, 5}, {3, 1, 3, 3}, {1, 2}, {1, 1, 1, 1}, {2, 1}, 3, true},
                        Case{{1, 2, 8, 8}, {5, 2, 4, 4}, {4, 4}, {0, 0, 0, 0}, {1, 1}, 1, true}}) {
    HostTensor x = random_tensor(DType::f32, c.x, 1), w = random_tensor(DType::f32, c.w, 2);
    HostTensor b = random_tensor(DType::f32, {c.w[0]}, 3);
    std::vector<HostTensor> in{x, w};
    if (c.bias) in.push_back(b);
    Dims shape;
    std::vector<double> want = naive_conv2d(x, w, c.bias ? doubles_of(b) : std::vector<double>{}, c.s, c.pads, c.d,
                                            c.groups, shape);
    HostTensor y = run(Op::Conv, in, {{"strides", c.s}, {"pads", c.pads}, {"dilations", c.d}, {"groups", c.groups}});
    check_close(y, shape, want, 1e-6, 1e-6);
  }
}

TEST_CASE("conv in bf16 rounds the f64 sum once") {
  HostTensor x = random_tensor(DType::bf16, {1, 3, 5, 4}, 4), w = random_tensor(DType::bf16, {2, 3, 3, 3}, 5);
  Dims shape;
  std::vector<double> want = naive_conv2d(x, w, {}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, shape);
  HostTensor y = run(Op::Conv, {x, w}, {{"pads", Ints{1, 1, 1, 1}}});
  HostTensor rounded(DType::bf16, shape);
  for (size_t i = 0; i < want.size(); ++i) rounded.set(i, want[i]);  // f64 -> float -> bf16: exact enough here
  check_close(y, shape, doubles_of(rounded), 1e-2, 0);
  REQUIRE(y.dtype() == DType::bf16);
}

TEST_CASE("conv_transpose by hand, and as the adjoint of conv") {
  HostTensor x = tensor(DType::f32, {1, 1, 3}, {1, 2, 3});
  HostTensor w = tensor(DType::f32, {1, 1, 2}, {1, 10});
  check_exact(run(Op::ConvTranspose, {x, w}, {{"strides", Ints{2}}}), DType::f32, {1, 1, 6}, {1, 10, 2, 20, 3, 30});
  check_exact(run(Op::ConvTranspose, {x, w}, {{"strides", Ints{2}}, {"pads", Ints{1, 0}}, {"output_padding", Ints{1}}}),
              DType::f32, {1, 1, 6}, {10, 2, 20, 3, 30, 0});
  // <conv(u, w), v> == <u, conv_transpose(v, w)> for any u, v (w [Cout, Cin, k] read as [C, Cout, k]).
  HostTensor u = random_tensor(DType::f32, {1, 4, 7, 6}, 6), k = random_tensor(DType::f32, {6, 2, 3, 2}, 7);
  Attrs a{{"strides", Ints{2, 1}}, {"pads", Ints{1, 0, 1, 1}}, {"dilations", Ints{1, 2}}, {"groups", int64_t{2}}};
  HostTensor cu = run(Op::Conv, {u, k}, a);
  HostTensor v = random_tensor(DType::f32, cu.shape(), 8);
  Attrs t = a;
  t.set("output_padding", Ints{0, 0});
  HostTensor tv = run(Op::ConvTranspose, {v, k}, t);
  REQUIRE(tv.shape() == u.shape());
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < cu.numel(); ++i) lhs += cu.get(i) * v.get(i);
  for (int64_t i = 0; i < u.numel(); ++i) rhs += u.get(i) * tv.get(i);
  CHECK(std::fabs(lhs - rhs) <= 1e-4 * (1 + std::fabs(lhs)));
}

TEST_CASE("max_pool and avg_pool by hand: padding counted or not, ceil_mode") {
  std::vector<double> v(16);
  for (int i = 0; i < 16; ++i) v[i] = i;
  HostTensor x = tensor(DType::f32, {1, 1, 4, 4}, v);
  Attrs k2{{"kernel", Ints{2, 2}}, {"strides", Ints{2, 2}}};
  check_exact(run(Op::MaxPool, {x}, k2), DType::f32, {1, 1, 2, 2}, {5, 7, 13, 15});
  check_exact(run(Op::AvgPool, {x}, k2), DType::f32, {1, 1, 2, 2}, {2.5, 4.5, 10.5, 12.5});
  HostTensor r = tensor(DType::f32, {1, 1, 3}, {1, 2, 3});
  Attrs padded{{"kernel", Ints{3}}, {"pads", Ints{1, 1}}};
  check_exact(run(Op::AvgPool, {r}, padded), DType::f32, {1, 1, 3}, {1.5, 2, 2.5});
  padded.set("count_include_pad", true);
  check_close(run(Op::AvgPool, {r}, padded), {1, 1, 3}, {1, 2, 5.0 / 3});
  check_exact(run(Op::MaxPool, {tensor(DType::f32, {1, 1, 3}, {-1, -2, -3})}, padded), DType::f32, {1, 1, 3}, {-1, -1, -2});
  HostTensor five = tensor(DType::f32, {1, 1, 5}, {1, 2, 3, 4, 5});
  Attrs ceil{{"kernel", Ints{2}}, {"strides", Ints{2}}, {"ceil_mode", true}};
  check_exact(run(Op::MaxPool, {five}, ceil), DType::f32, {1, 1, 3}, {2, 4, 5});
  check_exact(run(Op::AvgPool, {five}, ceil), DType::f32, {1, 1, 3}, {1.5, 3.5, 5});
  // count_include_pad counts the end pad but not ceil_mode's overhang: [1 2 3][3 4 5][5 pad overhang]
  Attrs both{{"kernel", Ints{3}}, {"strides", Ints{2}}, {"pads", Ints{0, 1}}, {"ceil_mode", true}};
  check_exact(run(Op::AvgPool, {five}, both), DType::f32, {1, 1, 3}, {2, 4, 5});
  both.set("count_include_pad", true);
  check_exact(run(Op::AvgPool, {five}, both), DType::f32, {1, 1, 3}, {2, 4, 2.5});
  // A window that would start in the end padding is dropped: [pad 1][2 3][4 5], not [pad ..].
  Attrs dropped{{"kernel", Ints{2}}, {"strides", Ints{2}}, {"pads", Ints{1, 1}}, {"ceil_mode", true}};
  check_exact(run(Op::MaxPool, {five}, dropped), DType::f32, {1, 1, 3}, {1, 3, 5});
  // NaN propagates through max.
  HostTensor nan = tensor(DType::f32, {1, 1, 2}, {std::nan(""), 1});
  check_exact(run(Op::MaxPool, {nan}, {{"kernel", Ints{2}}}), DType::f32, {1, 1, 1}, {std::nan("")});
}

TEST_CASE("window: [lead, k, o] reads x at o*stride + k*dilation - pad, pad_value outside") {
  HostTensor x = tensor(DType::f32, {1, 4}, {1, 2, 3, 4});
  check_exact(run(Op::Window, {x}, {{"kernel", Ints{2}}, {"pads", Ints{1, 0}}, {"pad_value", 9.0}}), DType::f32, {1, 2, 4},
              {9, 1, 2, 3, 1, 2, 3, 4});
  HostTensor i = int_tensor(DType::i32, {2, 3}, {1, 2, 3, 4, 5, 6});
  check_ints(run(Op::Window, {i}, {{"kernel", Ints{2, 2}}, {"strides", Ints{1, 2}}, {"pads", Ints{0, 1, 0, 1}}}), DType::i32,
             {2, 2, 1, 2}, {0, 2, 1, 3, 0, 5, 4, 6});
}

TEST_CASE("conv and pool shapes are symbolic: floor division of the padded size") {
  absl::StatusOr<Graph> parsed = parse_graph(R"(graph g(%x: f32[B, 3, H, W], %w: f32[8, 3, 3, 3] param) {
  %c = conv(%x, %w, strides=[2, 2], pads=[1, 1, 1, 1])
  %m = max_pool(%c, kernel=[3, 3], strides=[2, 2], ceil_mode=true)
  return %c, %m
})");
  INFO(parsed.status());
  REQUIRE(parsed.ok());
  const Graph& g = *parsed;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{1, 1}, {7, 8}, {224, 225}}) {
    Bindings b{{"B", 2}, {"H", h}, {"W", w}};
    absl::StatusOr<std::vector<int64_t>> c = evaluate_shape(g.outputs()[0]->shape(), b);
    absl::StatusOr<std::vector<int64_t>> m = evaluate_shape(g.outputs()[1]->shape(), b);
    REQUIRE(c.ok());
    REQUIRE(m.ok());
    int64_t ch = (h + 2 - 3) / 2 + 1, cw = (w + 2 - 3) / 2 + 1;
    CHECK(*c == std::vector<int64_t>{2, 8, ch, cw});
    if (ch >= 3 && cw >= 3) CHECK(*m == std::vector<int64_t>{2, 8, (ch - 3 + 1) / 2 + 1, (cw - 3 + 1) / 2 + 1});
  }
}

TEST_CASE("conv and pool errors name what is wrong") {
  auto fails_to_build = [](std::string_view text, std::string_view what) {
    absl::StatusOr<Graph> g = parse_graph(text, "<test>");
    INFO((g.ok() ? std::string("parsed") : status_message(g.status())));
    CHECK(!g.ok());
    if (!g.ok()) CHECK(contains(g.status(), what));
  };
  fails_to_build("graph g(%x: f32[1, 4, 5, 5], %w: f32[6, 3, 3, 3]) {\n  %y = conv(%x, %w)\n  return %y\n}",
                 "channels");
  fails_to_build("graph g(%x: f32[1, 4, 5, 5], %w: f32[6, 2, 3, 3]) {\n  %y = conv(%x, %w, groups=2, strides=[1])\n  return %y\n}",
                 "strides has 1 entries, expected 2");
  fails_to_build("graph g(%x: f32[1, 4, 2, 2]) {\n  %y = max_pool(%x, kernel=[3, 3])\n  return %y\n}", "does not fit");
  fails_to_build("graph g(%x: f32[1, 4, H, 2]) {\n  %y = avg_pool(%x, kernel=[1, 1], strides=[3, 1], ceil_mode=true)\n  return %y\n}",
                 "needs a static spatial size");
  fails_to_build("graph g(%x: f32[1, 4, 5]) {\n  %y = window(%x, kernel=[2], dilations=[0])\n  return %y\n}",
                 "dilations must be >= 1");
  fails_to_build("graph g(%x: f32[1, 4, 5], %w: f32[4, 2, 3], %b: f32[4]) {\n  %y = conv_transpose(%x, %w, %b)\n  return %y\n}",
                 "bias must have shape [2]");
}

}  // namespace
}  // namespace kiln::test
