// The ONNX importer's sampling and spectral ops on models built here, with a symbolic batch
// and fresh random inputs, against loops written here: GridSample (bilinear, every padding
// mode, both align_corners), MaxPool's Indices output, DFT (forward, inverse, one-sided).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "test/onnx/import_util.h"

namespace kiln {
namespace {

using testing::import_ok;
using testing::kF32;
using testing::kI64;
using testing::ModelBuilder;
using testing::random_tensor;
using testing::run;
using testing::set_attr;

TEST_CASE("GridSample bilinear with zeros, border and reflection padding on a symbolic batch", "[onnx][import]") {
  const int64_t c = 2, h = 3, w = 4, ho = 2, wo = 5;
  for (std::string pad : {"zeros", "border", "reflection"})
    for (int64_t align : {0, 1}) {
      ModelBuilder m(16);
      m.input("x", kF32, {"N", c, h, w}).input("grid", kF32, {"N", ho, wo, 2});
      onnx::NodeProto& n = m.node("GridSample", {"x", "grid"}, {"y"});
      set_attr(n, "padding_mode", pad);
      set_attr(n, "align_corners", align);
      m.output("y", kF32, {});
      Graph g = import_ok(m);
      for (int64_t b : {1, 3}) {
        HostTensor x = random_tensor(DType::f32, {b, c, h, w}, 90 + b), grid = random_tensor(DType::f32, {b, ho, wo, 2}, 95 + b);
        for (int64_t i = 0; i < grid.numel(); ++i) grid.set(i, grid.get(i) * 1.6);  // some points outside [-1, 1]
        HostTensor y = run(g, {{"x", x}, {"grid", grid}})[0];
        REQUIRE(y.shape() == std::vector<int64_t>{b, c, ho, wo});
        auto unnorm = [&](double v, int64_t size) { return align ? (v + 1) / 2 * (size - 1) : ((v + 1) * size - 1) / 2; };
        auto padded = [&](double v, int64_t size) {
          if (pad == "reflection") {
            double lo = align ? 0 : -0.5, hi = align ? size - 1 : size - 0.5, span = hi - lo;
            double d = std::fabs(v - lo);
            int64_t flips = static_cast<int64_t>(std::floor(d / span));
            double extra = d - static_cast<double>(flips) * span;
            v = flips % 2 == 0 ? lo + extra : hi - extra;
          }
          return pad == "zeros" ? v : std::clamp(v, 0.0, static_cast<double>(size - 1));
        };
        for (int64_t bi = 0; bi < b; ++bi)
          for (int64_t i = 0; i < ho; ++i)
            for (int64_t j = 0; j < wo; ++j) {
              double gx = grid.get(((bi * ho + i) * wo + j) * 2), gy = grid.get(((bi * ho + i) * wo + j) * 2 + 1);
              double px = padded(unnorm(gx, w), w), py = padded(unnorm(gy, h), h);
              double x0 = std::floor(px), y0 = std::floor(py);
              for (int64_t ch = 0; ch < c; ++ch) {
                double want = 0;
                for (int dy = 0; dy < 2; ++dy)
                  for (int dx = 0; dx < 2; ++dx) {
                    int64_t tx = static_cast<int64_t>(x0) + dx, ty = static_cast<int64_t>(y0) + dy;
                    double wt = (dx ? px - x0 : 1 - (px - x0)) * (dy ? py - y0 : 1 - (py - y0));
                    if (tx >= 0 && tx < w && ty >= 0 && ty < h) want += wt * x.get(((bi * c + ch) * h + ty) * w + tx);
                  }
                INFO(pad << " align_corners=" << align << " at " << bi << ", " << ch << ", " << i << ", " << j);
                CHECK(y.get(((bi * c + ch) * ho + i) * wo + j) == Approx(want).margin(1e-5));
              }
            }
      }
    }
}

TEST_CASE("MaxPool's Indices with pads and strides on a symbolic batch", "[onnx][import]") {
  for (int64_t order : {0, 1}) {
    ModelBuilder m(12);
    m.input("x", kF32, {"N", 2, 5, 6});
    onnx::NodeProto& n = m.node("MaxPool", {"x"}, {"y", "i"});
    set_attr(n, "kernel_shape", std::vector<int64_t>{3, 2});
    set_attr(n, "strides", std::vector<int64_t>{2, 2});
    set_attr(n, "pads", std::vector<int64_t>{1, 0, 1, 1});
    set_attr(n, "storage_order", order);
    m.output("y", kF32, {}).output("i", kI64, {});
    Graph g = import_ok(m);
    for (int64_t b : {1, 2}) {
      HostTensor x = random_tensor(DType::f32, {b, 2, 5, 6}, 100 + b);
      std::vector<HostTensor> out = run(g, {{"x", x}});
      REQUIRE(out[1].shape() == std::vector<int64_t>{b, 2, 3, 3});
      for (int64_t p = 0; p < b * 2; ++p)
        for (int64_t oh = 0; oh < 3; ++oh)
          for (int64_t ow = 0; ow < 3; ++ow) {
            double best = -INFINITY;
            int64_t at = -1;
            for (int64_t kh = 0; kh < 3; ++kh)
              for (int64_t kw = 0; kw < 2; ++kw) {
                int64_t hh = oh * 2 - 1 + kh, ww = ow * 2 + kw;
                if (hh < 0 || hh >= 5 || ww >= 6) continue;
                double v = x.get((p * 5 + hh) * 6 + ww);
                if (v > best) best = v, at = p * 30 + (order ? ww * 5 + hh : hh * 6 + ww);
              }
            CHECK(out[0].get((p * 3 + oh) * 3 + ow) == best);
            CHECK(out[1].get_int((p * 3 + oh) * 3 + ow) == at);
          }
    }
  }
}

TEST_CASE("DFT forward, inverse and one-sided along an inner axis on a symbolic batch", "[onnx][import]") {
  for (int64_t flags = 0; flags < 3; ++flags) {
    bool inverse = flags == 1, onesided = flags == 2;
    int64_t len = 6, other = 2, parts = onesided ? 1 : 2, bins = onesided ? len / 2 + 1 : len;
    ModelBuilder m(17);
    m.input("x", kF32, {"B", len, other, parts});
    onnx::NodeProto& n = m.node("DFT", {"x"}, {"y"});
    set_attr(n, "axis", int64_t{1});
    set_attr(n, "inverse", int64_t{inverse});
    set_attr(n, "onesided", int64_t{onesided});
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    for (int64_t b : {1, 3}) {
      HostTensor x = random_tensor(DType::f32, {b, len, other, parts}, 110 + b + flags);
      HostTensor y = run(g, {{"x", x}})[0];
      REQUIRE(y.shape() == std::vector<int64_t>{b, bins, other, 2});
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t o = 0; o < other; ++o)
          for (int64_t f = 0; f < bins; ++f) {
            double re = 0, im = 0;
            for (int64_t j = 0; j < len; ++j) {
              double theta = (inverse ? 2 : -2) * M_PI * static_cast<double>(j * f) / static_cast<double>(len);
              double xr = x.get(((bi * len + j) * other + o) * parts), xi = parts == 2 ? x.get(((bi * len + j) * other + o) * parts + 1) : 0;
              re += xr * std::cos(theta) - xi * std::sin(theta), im += xr * std::sin(theta) + xi * std::cos(theta);
            }
            if (inverse) re /= static_cast<double>(len), im /= static_cast<double>(len);
            CHECK(y.get(((bi * bins + f) * other + o) * 2) == Approx(re).margin(1e-5));
            CHECK(y.get(((bi * bins + f) * other + o) * 2 + 1) == Approx(im).margin(1e-5));
          }
    }
  }
}

}  // namespace
}  // namespace kiln
