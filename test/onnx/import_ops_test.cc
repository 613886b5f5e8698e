// The ONNX importer's convolution, pooling and image ops on models built here, with symbolic
// batch and spatial dims: Conv, BatchNormalization (folded by simplify), pools, Pad, Resize,
// GroupNormalization, CumSum, Einsum and TopK, against loops written here; their located errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <variant>

#include "compiler/compile.h"
#include "ir/str.h"
#include "passes/decompose.h"
#include "passes/simplify.h"
#include "test/onnx/import_util.h"

namespace kiln {
namespace {

using testing::check_ir;
using testing::import_error;
using testing::import_ok;
using testing::kF32;
using testing::kI64;
using testing::ModelBuilder;
using testing::random_tensor;
using testing::run;
using testing::set_attr;

TEST_CASE("Conv, BatchNormalization, MaxPool and AveragePool with symbolic batch and spatial dims", "[onnx][import]") {
  ModelBuilder m(17);
  m.input("x", kF32, {"N", 3, "H", "W"});
  m.initializer("w", random_tensor(DType::f32, {8, 3, 3, 3}, 30)).initializer("b", random_tensor(DType::f32, {8}, 31));
  m.initializer("scale", random_tensor(DType::f32, {8}, 32)).initializer("shift", random_tensor(DType::f32, {8}, 33));
  m.initializer("mean", random_tensor(DType::f32, {8}, 34));
  HostTensor var = random_tensor(DType::f32, {8}, 35);
  for (int64_t i = 0; i < 8; ++i) var.set(i, std::fabs(var.get(i)) + 0.5);
  m.initializer("var", var);
  onnx::NodeProto& conv = m.node("Conv", {"x", "w", "b"}, {"c"});
  set_attr(conv, "auto_pad", std::string("SAME_UPPER"));
  m.node("BatchNormalization", {"c", "scale", "shift", "mean", "var"}, {"bn"});
  m.node("Relu", {"bn"}, {"r"});
  onnx::NodeProto& pool = m.node("MaxPool", {"r"}, {"p"});
  set_attr(pool, "kernel_shape", std::vector<int64_t>{3, 3});
  set_attr(pool, "strides", std::vector<int64_t>{2, 2});
  set_attr(pool, "pads", std::vector<int64_t>{1, 1, 1, 1});
  onnx::NodeProto& avg = m.node("AveragePool", {"x"}, {"a"});
  set_attr(avg, "kernel_shape", std::vector<int64_t>{2, 2});
  set_attr(avg, "strides", std::vector<int64_t>{2, 2});
  set_attr(avg, "ceil_mode", int64_t{1});
  m.output("p", kF32, {}).output("a", kF32, {});
  Graph g = import_ok(m);
  check_ir(g, R"(
    CHECK: %c = conv(%x, %w, %b, strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], groups=1) : f32[N, 8, H, W]
    CHECK: %p = max_pool(%r, kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], ceil_mode=false
    CHECK-SAME: : f32[N, 8, (H + 1) // 2, (W + 1) // 2]
    CHECK: %a = avg_pool(%x, kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=true
    CHECK-SAME: : f32[N, 3, (H + 1) // 2, (W + 1) // 2]
  )");
  for (auto [n, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 2}, {2, 7, 6}}) {
    std::vector<HostTensor> out = run(g, {{"x", random_tensor(DType::f32, {n, 3, h, w}, 36)}});
    CHECK(out[0].shape() == std::vector<int64_t>{n, 8, (h - 1) / 2 + 1, (w - 1) / 2 + 1});
    CHECK(out[1].shape() == std::vector<int64_t>{n, 3, (h + 1) / 2, (w + 1) / 2});
  }
}

TEST_CASE("Pad: constant on symbolic dims (crop and pad), edge and reflect", "[onnx][import]") {
  for (std::string mode : {"constant", "edge", "reflect"}) {
    ModelBuilder m(13);
    bool constant = mode == "constant";
    if (constant) m.input("x", kF32, {"B", 5});
    else m.input("x", kF32, {2, 5});
    m.initializer("pads", []() {
      HostTensor p(DType::i64, {4});
      for (int64_t i = 0; i < 4; ++i) p.set_int(i, std::vector<int64_t>{1, 2, 0, -1}[i]);
      return p;
    }());
    m.initializer("value", []() {
      HostTensor v(DType::f32, {});
      v.set(0, 7.5);
      return v;
    }());
    set_attr(m.node("Pad", {"x", "pads", "value"}, {"y"}), "mode", mode);
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    int64_t rows = constant ? 3 : 2;
    HostTensor x = random_tensor(DType::f32, {rows, 5}, 40);
    HostTensor y = run(g, {{"x", x}})[0];
    REQUIRE(y.shape() == std::vector<int64_t>{rows + 1, 6});
    for (int64_t i = 0; i < rows + 1; ++i)
      for (int64_t j = 0; j < 6; ++j) {
        // rows: one before; columns: two before, the last one cropped.
        int64_t si = i - 1, sj = j - 2;
        double want;
        if (constant) {
          want = si < 0 || sj < 0 ? 7.5 : x.get(si * 5 + sj);
        } else {
          auto fix = [&](int64_t v, int64_t n) {
            if (mode == "edge") return std::clamp<int64_t>(v, 0, n - 1);
            return v < 0 ? -v : v > n - 1 ? 2 * (n - 1) - v : v;
          };
          want = x.get(fix(si, rows) * 5 + fix(sj, 5));
        }
        INFO(mode << " " << i << " " << j);
        CHECK(y.get(i * 6 + j) == want);
      }
  }
}

TEST_CASE("Resize as torch exports upsampling: nearest (asymmetric, floor) and bilinear (pytorch_half_pixel)", "[onnx][import]") {
  for (std::string mode : {"nearest", "linear"}) {
    ModelBuilder m(13);
    m.input("x", kF32, {"N", 2, 3, 4});
    m.initializer("scales", []() {
      HostTensor t(DType::f32, {4});
      for (int64_t i = 0; i < 4; ++i) t.set(i, i < 2 ? 1.0 : 2.0);
      return t;
    }());
    onnx::NodeProto& n = m.node("Resize", {"x", "", "scales"}, {"y"});
    set_attr(n, "mode", mode);
    set_attr(n, "coordinate_transformation_mode", std::string(mode == "nearest" ? "asymmetric" : "pytorch_half_pixel"));
    if (mode == "nearest") set_attr(n, "nearest_mode", std::string("floor"));
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    for (int64_t batch : {1, 3}) {
      HostTensor x = random_tensor(DType::f32, {batch, 2, 3, 4}, 41 + batch);
      HostTensor y = run(g, {{"x", x}})[0];
      REQUIRE(y.shape() == std::vector<int64_t>{batch, 2, 6, 8});
      // 1-D interpolation weights along one axis of size n at output o (scale 2).
      auto taps = [&](int64_t o, int64_t n) {
        if (mode == "nearest") return std::vector<std::pair<int64_t, double>>{{o / 2, 1.0}};
        double src = std::max(0.0, (static_cast<double>(o) + 0.5) / 2 - 0.5);
        int64_t i0 = static_cast<int64_t>(std::floor(src)), i1 = std::min(i0 + 1, n - 1);
        double f = src - static_cast<double>(i0);
        return std::vector<std::pair<int64_t, double>>{{i0, 1 - f}, {i1, f}};
      };
      for (int64_t p = 0; p < batch * 2; ++p)
        for (int64_t i = 0; i < 6; ++i)
          for (int64_t j = 0; j < 8; ++j) {
            double want = 0;
            for (auto [si, wi] : taps(i, 3))
              for (auto [sj, wj] : taps(j, 4)) want += wi * wj * x.get((p * 3 + si) * 4 + sj);
            INFO(mode << " at " << p << ", " << i << ", " << j);
            CHECK(y.get((p * 6 + i) * 8 + j) == Approx(want).margin(1e-6));
          }
    }
  }
}

TEST_CASE("GroupNormalization (per-channel and per-group affine) and CumSum on symbolic dims", "[onnx][import]") {
  for (int64_t affine : {4, 2}) {
    ModelBuilder m(18);
    m.input("x", kF32, {"N", 4, "S"});
    m.initializer("scale", random_tensor(DType::f32, {affine}, 50)).initializer("bias", random_tensor(DType::f32, {affine}, 51));
    set_attr(m.node("GroupNormalization", {"x", "scale", "bias"}, {"y"}), "num_groups", int64_t{2});
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    HostTensor sc = random_tensor(DType::f32, {affine}, 50), bi = random_tensor(DType::f32, {affine}, 51);
    for (int64_t s : {1, 5}) {
      HostTensor x = random_tensor(DType::f32, {2, 4, s}, 52 + s);
      HostTensor y = run(g, {{"x", x}})[0];
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t grp = 0; grp < 2; ++grp) {
          double mean = 0, var = 0, cnt = static_cast<double>(2 * s);
          for (int64_t i = 0; i < 2 * s; ++i) mean += x.get((b * 4 + grp * 2) * s + i) / cnt;
          for (int64_t i = 0; i < 2 * s; ++i) var += std::pow(x.get((b * 4 + grp * 2) * s + i) - mean, 2) / cnt;
          for (int64_t i = 0; i < 2 * s; ++i) {
            int64_t c = grp * 2 + i / s, a = affine == 4 ? c : grp;
            double want = (x.get((b * 4 + grp * 2) * s + i) - mean) / std::sqrt(var + 1e-5) * sc.get(a) + bi.get(a);
            CHECK(y.get((b * 4 + grp * 2) * s + i) == Approx(want).margin(1e-5));
          }
        }
    }
  }
  for (int64_t flags = 0; flags < 4; ++flags) {
    bool exclusive = flags & 1, reverse = flags & 2;
    ModelBuilder m(14);
    m.input("x", onnx::TensorProto::INT32, {2, "T"});
    m.int_scalar("axis", -1);
    onnx::NodeProto& n = m.node("CumSum", {"x", "axis"}, {"y"});
    set_attr(n, "exclusive", int64_t{exclusive});
    set_attr(n, "reverse", int64_t{reverse});
    m.output("y", onnx::TensorProto::INT32, {});
    Graph g = import_ok(m);
    for (int64_t t : {1, 6}) {
      HostTensor x(DType::i32, {2, t});
      for (int64_t i = 0; i < 2 * t; ++i) x.set_int(i, (i * 37) % 11 - 5);
      HostTensor y = run(g, {{"x", x}})[0];
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t i = 0; i < t; ++i) {
          int64_t want = 0;
          for (int64_t j = 0; j < t; ++j)
            if (reverse ? (exclusive ? j > i : j >= i) : (exclusive ? j < i : j <= i)) want += x.get_int(r * t + j);
          CHECK(y.get_int(r * t + i) == want);
        }
    }
  }
}

TEST_CASE("GroupNorm as opset 17 exports it: Reshape [N, G, -1], InstanceNormalization, Reshape back, Mul, Add", "[onnx][import]") {
  ModelBuilder m(17);
  m.input("x", kF32, {"N", 4, "H", "W"});
  HostTensor ones(DType::f32, {2}), zeros(DType::f32, {2});
  for (int64_t i = 0; i < 2; ++i) ones.set(i, 1.0);
  m.initializer("ones", ones).initializer("zeros", zeros);
  m.initializer("gamma", random_tensor(DType::f32, {4, 1, 1}, 80)).initializer("beta", random_tensor(DType::f32, {4, 1, 1}, 81));
  m.ints("grouped", {0, 2, -1});
  m.node("Shape", {"x"}, {"shape"});
  m.node("Reshape", {"x", "grouped"}, {"g"});
  m.node("InstanceNormalization", {"g", "ones", "zeros"}, {"n"});
  m.node("Reshape", {"n", "shape"}, {"back"});
  m.node("Mul", {"back", "gamma"}, {"scaled"});
  m.node("Add", {"scaled", "beta"}, {"y"});
  m.output("y", kF32, {});
  Graph g = import_ok(m);
  HostTensor gamma = random_tensor(DType::f32, {4, 1, 1}, 80), beta = random_tensor(DType::f32, {4, 1, 1}, 81);
  for (auto [n, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {2, 3, 5}}) {
    HostTensor x = random_tensor(DType::f32, {n, 4, h, w}, 82 + n);
    HostTensor y = run(g, {{"x", x}})[0];
    REQUIRE(y.shape() == std::vector<int64_t>{n, 4, h, w});
    int64_t per = 2 * h * w;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t grp = 0; grp < 2; ++grp) {
        const int64_t base = (b * 2 + grp) * per;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < per; ++i) mean += x.get(base + i) / static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) var += std::pow(x.get(base + i) - mean, 2) / static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) {
          int64_t c = grp * 2 + i / (h * w);
          double want = (x.get(base + i) - mean) / std::sqrt(var + 1e-5) * gamma.get(c) + beta.get(c);
          CHECK(y.get(base + i) == Approx(want).margin(1e-5));
        }
      }
  }
}

TEST_CASE("a ResNet stem from ONNX: batch norm folds into the conv's weight and bias on the host", "[onnx][import]") {
  ModelBuilder m(17);
  m.input("x", kF32, {"N", 3, "H", "W"});
  m.initializer("w", random_tensor(DType::f32, {8, 3, 3, 3}, 60));
  for (auto [name, seed] : {std::pair<const char*, uint64_t>{"scale", 61}, {"shift", 62}, {"mean", 63}}) m.initializer(name, random_tensor(DType::f32, {8}, seed));
  HostTensor var = random_tensor(DType::f32, {8}, 64);
  for (int64_t i = 0; i < 8; ++i) var.set(i, std::fabs(var.get(i)) + 0.25);
  m.initializer("var", var);
  onnx::NodeProto& conv = m.node("Conv", {"x", "w"}, {"c"});
  set_attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  set_attr(conv, "strides", std::vector<int64_t>{2, 2});
  m.node("BatchNormalization", {"c", "scale", "shift", "mean", "var"}, {"bn"});
  m.node("Relu", {"bn"}, {"r"});
  onnx::NodeProto& pool = m.node("MaxPool", {"r"}, {"p"});
  set_attr(pool, "kernel_shape", std::vector<int64_t>{3, 3});
  set_attr(pool, "strides", std::vector<int64_t>{2, 2});
  set_attr(pool, "pads", std::vector<int64_t>{1, 1, 1, 1});
  m.node("GlobalAveragePool", {"p"}, {"y"});
  m.output("y", kF32, {});
  Graph g = import_ok(m);
  Graph opt = g.clone();
  REQUIRE(decompose(opt).ok());
  REQUIRE(simplify(opt).ok());
  REQUIRE(verify(opt).ok());
  // The batch norm's sub and div are gone: folded into one weight and one bias parameter.
  check_ir(opt, R"(
    CHECK: = window(%x
    CHECK-NOT: {{(sub|div|mul)}}(
    CHECK: = matmul(
    CHECK-NEXT: = add(%matmul
    CHECK-NEXT: = relu(
    CHECK-NOT: {{(sub|div|mul)}}(
    CHECK: return
  )");
  for (auto [n, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 5, 4}, {2, 9, 12}}) {
    HostTensor x = random_tensor(DType::f32, {n, 3, h, w}, 65 + n);
    HostTensor want = run(g, {{"x", x}})[0], got = run(opt, {{"x", x}})[0];
    REQUIRE(got.shape() == want.shape());
    for (int64_t i = 0; i < want.numel(); ++i) CHECK(got.get(i) == Approx(want.get(i)).margin(1e-5));
  }
}

TEST_CASE("Einsum: batched matmuls, transposes, contractions to a scalar, implicit output", "[onnx][import]") {
  struct Case {
    std::string eq;
    std::vector<std::vector<int64_t>> shapes;
  };
  // Sizes per letter: b=2, h=3, i=4, j=5, d=6, k=3.
  std::map<char, int64_t> size{{'b', 2}, {'h', 3}, {'i', 4}, {'j', 5}, {'d', 6}, {'k', 3}};
  for (const Case& c : {Case{"bhid,bhjd->bhij", {}}, Case{"bij,bjk->bik", {}}, Case{"ij->ji", {}}, Case{"i,i->", {}},
                        Case{"ij,j->i", {}}, Case{"ik,kj", {}}, Case{"bi,bj->ij", {}}, Case{"ij->i", {}}}) {
    size_t arrow = c.eq.find("->");
    std::string lhs = c.eq.substr(0, arrow), out;
    std::vector<std::string> terms;
    for (size_t at = 0;;) {
      size_t comma = lhs.find(',', at);
      terms.push_back(lhs.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    if (arrow != std::string::npos) out = c.eq.substr(arrow + 2);
    else out = "ij";  // the letters used once, sorted (the case above)
    ModelBuilder m(12);
    std::vector<std::string> names;
    std::vector<HostTensor> ins;
    for (size_t t = 0; t < terms.size(); ++t) {
      std::vector<int64_t> shape;
      for (char ch : terms[t]) shape.push_back(size[ch]);
      names.push_back(str_cat("x", t));
      std::vector<std::variant<int64_t, std::string>> dims(shape.begin(), shape.end());
      m.input(names.back(), kF32, dims);
      ins.push_back(random_tensor(DType::f32, shape, 70 + t));
    }
    set_attr(m.node("Einsum", names, {"y"}), "equation", c.eq);
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    TensorMap args;
    for (size_t t = 0; t < ins.size(); ++t) args[names[t]] = ins[t];
    HostTensor y = run(g, args)[0];
    // Loops over every letter.
    std::string letters;
    for (const std::string& t : terms)
      for (char ch : t)
        if (letters.find(ch) == std::string::npos) letters.push_back(ch);
    std::vector<int64_t> idx(letters.size(), 0), out_shape;
    for (char ch : out) out_shape.push_back(size[ch]);
    REQUIRE(y.shape() == out_shape);
    std::vector<double> want(y.numel(), 0.0);
    auto offset = [&](const std::string& t) {
      int64_t o = 0;
      for (char ch : t) o = o * size[ch] + idx[letters.find(ch)];
      return o;
    };
    for (;;) {
      double p = 1;
      for (size_t t = 0; t < terms.size(); ++t) p *= ins[t].get(offset(terms[t]));
      want[offset(out)] += p;
      size_t k = letters.size();
      while (k-- > 0 && ++idx[k] == size[letters[k]]) idx[k] = 0;
      if (k == static_cast<size_t>(-1)) break;
    }
    INFO(c.eq);
    for (int64_t e = 0; e < y.numel(); ++e) CHECK(y.get(e) == Approx(want[e]).margin(1e-5));
  }
}

TEST_CASE("auto_pad SAME with a stride on a symbolic dim, and MaxPool's Indices, are located errors", "[onnx][import][errors]") {
  ModelBuilder m(17);
  m.input("x", kF32, {"N", 3, "H", 8}).initializer("w", random_tensor(DType::f32, {4, 3, 3, 3}, 37));
  onnx::NodeProto& conv = m.node("Conv", {"x", "w"}, {"c"}, "conv0");
  set_attr(conv, "auto_pad", std::string("SAME_LOWER"));
  set_attr(conv, "strides", std::vector<int64_t>{2, 2});
  m.output("c", kF32, {});
  absl::Status s = import_error(m);
  CHECK(s.code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(status_message(s), Catch::Contains("node 'conv0' (Conv, opset 17): auto_pad SAME_LOWER with stride 2 needs static spatial sizes"));

  ModelBuilder p(17);
  p.input("x", kF32, {1, 3, "H", 4});
  set_attr(p.node("MaxPool", {"x"}, {"y", "i"}, "pool0"), "kernel_shape", std::vector<int64_t>{2, 2});
  p.output("y", kF32, {}).output("i", kI64, {});
  CHECK_THAT(status_message(import_error(p)), Catch::Contains("node 'pool0' (MaxPool, opset 17): the Indices output needs static channel and spatial dims"));
}


// One Resize of x [N, 2, H, W] by scale k along H and W (or, with `sizes`, to Concat(Shape)
// arithmetic giving k*H), imported with H and W symbolic or static.
ModelBuilder resize_model(const std::vector<std::variant<int64_t, std::string>>& dims, int64_t k,
                          const std::map<std::string, std::string>& attrs, bool sizes) {
  ModelBuilder m(13);
  m.input("x", kF32, dims);
  if (sizes) {
    m.node("Shape", {"x"}, {"s"});
    m.initializer("k", [&] {
      HostTensor t(DType::i64, {4});
      for (int64_t i = 0; i < 4; ++i) t.set_int(i, i < 2 ? 1 : k);
      return t;
    }());
    m.node("Mul", {"s", "k"}, {"sz"});
  } else {
    m.initializer("scales", [&] {
      HostTensor t(DType::f32, {4});
      for (int64_t i = 0; i < 4; ++i) t.set(i, i < 2 ? 1.0 : static_cast<double>(k));
      return t;
    }());
  }
  onnx::NodeProto& n = sizes ? m.node("Resize", {"x", "", "", "sz"}, {"y"}) : m.node("Resize", {"x", "", "scales"}, {"y"});
  for (const auto& [name, value] : attrs) set_attr(n, name, value);
  m.output("y", kF32, {});
  return m;
}


TEST_CASE("Resize of symbolic dims by an integer factor matches the same Resize on static dims", "[onnx][import]") {
  const std::vector<std::map<std::string, std::string>> cases = {
      {{"mode", "nearest"}, {"coordinate_transformation_mode", "asymmetric"}, {"nearest_mode", "floor"}},
      {{"mode", "nearest"}, {"coordinate_transformation_mode", "half_pixel"}, {"nearest_mode", "round_prefer_floor"}},
      {{"mode", "nearest"}, {"coordinate_transformation_mode", "tf_half_pixel_for_nn"}, {"nearest_mode", "ceil"}},
      {{"mode", "nearest"}, {"coordinate_transformation_mode", "pytorch_half_pixel"}, {"nearest_mode", "round_prefer_ceil"}},
      {{"mode", "linear"}, {"coordinate_transformation_mode", "half_pixel"}},
      {{"mode", "linear"}, {"coordinate_transformation_mode", "pytorch_half_pixel"}},
      {{"mode", "linear"}, {"coordinate_transformation_mode", "asymmetric"}},
      {{"mode", "cubic"}, {"coordinate_transformation_mode", "half_pixel"}},
  };
  for (const auto& attrs : cases)
    for (int64_t k : {2, 3})
      for (bool sizes : {false, true}) {
        Graph sym = import_ok(resize_model({"N", 2, "H", "W"}, k, attrs, sizes));
        for (auto [n, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {2, 5, 3}, {1, 8, 13}}) {
          if (attrs.at("mode") == "cubic" && (h < 2 || w < 2)) continue;  // cubic's taps reach 2 away
          Graph fixed = import_ok(resize_model({n, 2, h, w}, k, attrs, sizes));
          HostTensor x = random_tensor(DType::f32, {n, 2, h, w}, 60 + h);
          HostTensor got = run(sym, {{"x", x}})[0], want = run(fixed, {{"x", x}})[0];
          INFO(attrs.at("mode") << " " << attrs.at("coordinate_transformation_mode") << " k=" << k << " sizes=" << sizes
                                << " at " << n << "x" << h << "x" << w);
          REQUIRE(got.shape() == want.shape());
          for (int64_t i = 0; i < got.numel(); ++i) CHECK(got.get(i) == Approx(want.get(i)).margin(1e-5));
        }
      }
  // align_corners' weights depend on the dim's value.
  absl::Status s = import_error(resize_model({"N", 2, "H", "W"}, 2, {{"mode", "linear"}, {"coordinate_transformation_mode", "align_corners"}}, false));
  CHECK(s.code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(s.message()), Catch::Contains("align_corners"));
}

TEST_CASE("A Concat of H // 4 * 4 with H makes the import declare H a multiple of 4; other sizes are rejected", "[onnx][import]") {
  // A U-Net skip: x [N, 1, H] pooled twice by 2, upsampled by 4, concatenated with x.
  ModelBuilder m(13);
  m.input("x", kF32, {"N", 1, "H"});
  for (const char* p : {"p1", "p2"}) {
    onnx::NodeProto& pool = m.node("MaxPool", {p == std::string("p1") ? "x" : "p1"}, {p});
    set_attr(pool, "kernel_shape", std::vector<int64_t>{2});
    set_attr(pool, "strides", std::vector<int64_t>{2});
  }
  m.initializer("scales", [] {
    HostTensor t(DType::f32, {3});
    for (int64_t i = 0; i < 3; ++i) t.set(i, i < 2 ? 1.0 : 4.0);
    return t;
  }());
  onnx::NodeProto& up = m.node("Resize", {"p2", "", "scales"}, {"u"});
  set_attr(up, "nearest_mode", std::string("floor"));
  set_attr(up, "coordinate_transformation_mode", std::string("asymmetric"));
  set_attr(m.node("Concat", {"u", "x"}, {"y"}), "axis", int64_t{1});
  m.output("y", kF32, {});
  Graph g = import_ok(m);
  check_ir(g, "CHECK: graph {{.*}}(%x: f32[N, 1, 4*H_div4])");
  for (int64_t h : {4, 12}) {
    HostTensor x = random_tensor(DType::f32, {2, 1, h}, 70 + h);
    HostTensor y = run(g, {{"x", x}})[0];
    REQUIRE(y.shape() == std::vector<int64_t>{2, 2, h});
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < h; ++i) {
        int64_t q = i / 4 * 4;
        double want = std::max({x.get(b * h + q), x.get(b * h + q + 1), x.get(b * h + q + 2), x.get(b * h + q + 3)});
        CHECK(y.get((b * 2) * h + i) == want);
        CHECK(y.get((b * 2 + 1) * h + i) == x.get(b * h + i));
      }
  }
  absl::StatusOr<std::vector<HostTensor>> bad = evaluate(g, {{"x", random_tensor(DType::f32, {1, 1, 10}, 80)}});
  REQUIRE(!bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("expected a multiple of 4"));
#if KILN_WITH_LLVM
  // The compiled graph binds H_div4 from the call's dim and rejects a non-multiple the same way.
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  INFO(status_message(cg.status()));
  REQUIRE(cg.ok());
  TensorMap ok_args{{"x", random_tensor(DType::f32, {3, 1, 8}, 81)}};
  absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, ok_args);
  INFO(status_message(cpu.status()));
  REQUIRE(cpu.ok());
  std::vector<HostTensor> ref = run(g, ok_args);
  for (int64_t i = 0; i < ref[0].numel(); ++i) CHECK((*cpu)[0].get(i) == ref[0].get(i));
  absl::StatusOr<std::vector<HostTensor>> rejected = run_host(*cg, {{"x", random_tensor(DType::f32, {1, 1, 10}, 82)}});
  REQUIRE(!rejected.ok());
  CHECK_THAT(status_message(rejected.status()), Catch::Contains("expected a multiple of 4 (4*H_div4), got 10"));
#endif
}

// TopK's expected results: each slice's indices ordered NaN first, then by value (descending
// for largest), equal values in index order; the first k.
void check_top_k(const HostTensor& x, const HostTensor& values, const HostTensor& indices, int64_t axis, int64_t k,
                 bool largest) {
  const std::vector<int64_t>& s = x.shape();
  int64_t n = s[axis], inner = 1;
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
  int64_t outer = x.numel() / (n * inner);
  REQUIRE(values.numel() == outer * k * inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      auto at = [&](int64_t i) { return x.get((o * n + i) * inner + in); };
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (std::isnan(at(a)) || std::isnan(at(b))) return std::isnan(at(a)) && !std::isnan(at(b));
        return largest ? at(a) > at(b) : at(a) < at(b);
      });
      for (int64_t j = 0; j < k; ++j) {
        int64_t r = (o * k + j) * inner + in;
        INFO("slice " << o << ", " << in << ", rank " << j);
        CHECK(indices.get_int(r) == order[j]);
        if (std::isnan(at(order[j]))) CHECK(std::isnan(values.get(r)));
        else CHECK(values.get(r) == at(order[j]));
      }
    }
}

TEST_CASE(
    "TopK: largest and smallest along either axis, ties in index order, NaN, infinities and int32 extremes, on the "
    "reference and the CPU",
    "[onnx][import]") {
  struct Case {
    int32_t type;
    int64_t axis, k;
    bool largest;
  };
  for (Case c : {Case{kF32, -1, 3, true}, Case{kF32, -1, 0, true}, Case{kF32, 0, 1, false}, Case{kF32, 1, 4, false},
                 Case{onnx::TensorProto::INT32, 1, 4, true}, Case{onnx::TensorProto::INT32, -1, 2, false}}) {
    DType t = c.type == kF32 ? DType::f32 : DType::i32;
    INFO("dtype " << dtype_name(t) << ", axis " << c.axis << ", k " << c.k << ", largest " << c.largest);
    ModelBuilder m(11);
    m.input("x", c.type, {"N", "S"});
    m.ints("k", {c.k});
    onnx::NodeProto& n = m.node("TopK", {"x", "k"}, {"v", "i"});
    set_attr(n, "axis", c.axis);
    set_attr(n, "largest", int64_t{c.largest});
    m.output("v", c.type, {}).output("i", kI64, {});
    Graph g = import_ok(m);
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 4}, {3, 9}, {2, 300}}) {
      if (c.axis == 0 && rows < c.k) continue;
      HostTensor x(t, {rows, cols});
      std::mt19937_64 rng(rows * 1000 + cols);
      for (int64_t i = 0; i < x.numel(); ++i) {
        double v = static_cast<double>(rng() % 9) * 0.5 - 2;  // ties in every row
        if (t == DType::i32)
          x.set_int(i, i % 7 == 3   ? std::numeric_limits<int32_t>::min()
                       : i % 7 == 5 ? std::numeric_limits<int32_t>::max()
                                    : static_cast<int64_t>(v * 2));
        else x.set(i, i % 11 == 4 ? std::nan("") : i % 11 == 7 ? -INFINITY : i % 11 == 9 ? INFINITY : v);
      }
      INFO("x " << rows << "x" << cols);
      std::vector<HostTensor> ref = run(g, {{"x", x}});
      check_top_k(x, ref[0], ref[1], c.axis < 0 ? c.axis + 2 : c.axis, c.k, c.largest);
#if KILN_WITH_LLVM
      absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
      INFO(status_message(cg.status()));
      REQUIRE(cg.ok());
      absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, {{"x", x}});
      INFO(status_message(cpu.status()));
      REQUIRE(cpu.ok());
      check_top_k(x, (*cpu)[0], (*cpu)[1], c.axis < 0 ? c.axis + 2 : c.axis, c.k, c.largest);
#endif
    }
  }
}

TEST_CASE("TopK's located errors: K not a constant, beyond the dim, beyond the cap; a symbolic dim guarded to hold K",
          "[onnx][import][errors]") {
  auto model = [](std::optional<int64_t> k, std::vector<testing::OnnxDim> dims) {
    ModelBuilder m(11);
    m.input("x", kF32, dims);
    if (k) m.ints("k", {*k});
    else m.input("k", kI64, {1});
    m.node("TopK", {"x", "k"}, {"v", "i"}, "top");
    m.output("v", kF32, {}).output("i", kI64, {});
    return m;
  };
  CHECK_THAT(std::string(import_error(model(std::nullopt, {2, 8})).message()), Catch::Contains("node 'top' (TopK"));
  CHECK_THAT(std::string(import_error(model(9, {2, 8})).message()), Catch::Contains("K = 9 is outside [0, 8]"));
  CHECK_THAT(std::string(import_error(model(300, {2, "S"})).message()),
             Catch::Contains("K = 300: TopK runs as K rounds of reductions, at most 256"));
  // On a symbolic dim, K is a guard: S >= 3.
  Graph g = import_ok(model(3, {2, "S"}));
  CHECK(g.symbol_info("S").min == 3);
  absl::StatusOr<std::vector<HostTensor>> short_row = evaluate(g, {{"x", random_tensor(DType::f32, {2, 2}, 90)}});
  REQUIRE(!short_row.ok());
  INFO(status_message(short_row.status()));
  CHECK_THAT(std::string(short_row.status().message()), Catch::Contains("symbol S = 2 is outside its bounds [3, inf]"));
}

}  // namespace
}  // namespace kiln
