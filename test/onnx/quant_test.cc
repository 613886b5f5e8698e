// Quantization and bit shifts through the ONNX importer, on the reference evaluator, against
// the ONNX formulas written out here on fresh random inputs: QuantizeLinear (per tensor and
// per axis, u8 and i8, ties to even, saturation), DequantizeLinear, DynamicQuantizeLinear,
// MatMulInteger with zero points, QLinearMatMul and BitShift.
#include <catch2/catch.hpp>

#include <cmath>

#include "ir/str.h"
#include "test/onnx/import_util.h"

namespace kiln::testing {
namespace {

constexpr int32_t kU8 = onnx::TensorProto::UINT8, kI8 = onnx::TensorProto::INT8, kI32 = onnx::TensorProto::INT32;

HostTensor scalar_f32(float v) {
  HostTensor t(DType::f32, {});
  t.set(0, v);
  return t;
}

HostTensor ints(DType t, std::vector<int64_t> shape, std::vector<int64_t> v) {
  HostTensor h(t, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) h.set_int(static_cast<int64_t>(i), v[i]);
  return h;
}

int64_t saturate(double v, DType t) {
  double lo = t == DType::u8 ? 0 : -128, hi = t == DType::u8 ? 255 : 127;
  return static_cast<int64_t>(std::clamp(v, lo, hi));
}

}  // namespace

TEST_CASE("QuantizeLinear and DequantizeLinear, per tensor and per axis", "[onnx][quant]") {
  for (auto [elem, t] : {std::pair{kU8, DType::u8}, {kI8, DType::i8}}) {
    INFO(dtype_name(t));
    ModelBuilder m;
    m.input("x", kF32, {"N", 3}).output("q", elem, {"N", 3}).output("d", kF32, {"N", 3}).output("qa", elem, {"N", 3});
    m.initializer("s", scalar_f32(0.25f)).initializer("z", ints(t, {}, {t == DType::u8 ? 100 : -3}));
    HostTensor sa(DType::f32, {3});
    for (int i = 0; i < 3; ++i) sa.set(i, 0.5 * (i + 1));
    m.initializer("sa", sa).initializer("za", ints(t, {3}, {1, 2, 3}));
    m.node("QuantizeLinear", {"x", "s", "z"}, {"q"});
    m.node("DequantizeLinear", {"q", "s", "z"}, {"d"});
    set_attr(m.node("QuantizeLinear", {"x", "sa", "za"}, {"qa"}), "axis", int64_t{1});
    Graph g = import_ok(m);
    for (int64_t n : {1, 7, 300}) {
      HostTensor x(DType::f32, {n, 3});
      std::mt19937_64 rng(n);
      x.fill_random(rng, -60, 60);
      // Exact ties: x / 0.25 = k + 0.5 must round to even.
      x.set(0, 0.125);
      if (n > 1) x.set(3, -0.375);
      std::vector<HostTensor> out = run(g, {{"x", x}});
      double z = t == DType::u8 ? 100 : -3;
      for (int64_t i = 0; i < x.numel(); ++i) {
        float xf = static_cast<float>(x.get(i));
        int64_t q = saturate(std::nearbyint(xf / 0.25f) + z, t);
        INFO("element " << i << " x " << xf);
        CHECK(out[0].get_int(i) == q);
        CHECK(out[1].get(i) == static_cast<float>((static_cast<float>(q) - static_cast<float>(z)) * 0.25f));
        int c = static_cast<int>(i % 3);
        CHECK(out[2].get_int(i) == saturate(std::nearbyint(xf / static_cast<float>(0.5 * (c + 1))) + (c + 1), t));
      }
    }
  }
}

TEST_CASE("DynamicQuantizeLinear maps the range widened to 0 onto [0, 255]", "[onnx][quant]") {
  ModelBuilder m;
  m.input("x", kF32, {"N"}).output("y", kU8, {"N"}).output("s", kF32, {}).output("z", kU8, {});
  m.node("DynamicQuantizeLinear", {"x"}, {"y", "s", "z"});
  Graph g = import_ok(m);
  for (int64_t n : {1, 9, 500}) {
    HostTensor x(DType::f32, {n});
    std::mt19937_64 rng(n + 10);
    x.fill_random(rng, -3, 7);
    std::vector<HostTensor> out = run(g, {{"x", x}});
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) lo = std::min(lo, static_cast<float>(x.get(i))), hi = std::max(hi, static_cast<float>(x.get(i)));
    float scale = (hi - lo) / 255.0f;
    double zp = std::clamp(std::nearbyint(0.0f - lo / scale), 0.0f, 255.0f);
    CHECK(out[1].get(0) == scale);
    CHECK(out[2].get_int(0) == static_cast<int64_t>(zp));
    for (int64_t i = 0; i < n; ++i)
      CHECK(out[0].get_int(i) == saturate(std::nearbyint(static_cast<float>(x.get(i)) / scale) + zp, DType::u8));
  }
}

TEST_CASE("MatMulInteger and QLinearMatMul are exact integer products", "[onnx][quant]") {
  ModelBuilder m;
  m.input("a", kU8, {"M", 5}).input("b", kI8, {5, 3}).output("y", kI32, {"M", 3}).output("q", kU8, {"M", 3});
  m.initializer("az", ints(DType::u8, {}, {128})).initializer("bz", ints(DType::i8, {3}, {0, -1, 4}));
  m.initializer("as", scalar_f32(0.02f)).initializer("bs", scalar_f32(0.5f));
  m.initializer("ys", scalar_f32(0.75f)).initializer("yz", ints(DType::u8, {}, {120}));
  m.node("MatMulInteger", {"a", "b", "az", "bz"}, {"y"});
  m.node("QLinearMatMul", {"a", "as", "az", "b", "bs", "bz", "ys", "yz"}, {"q"});
  Graph g = import_ok(m);
  for (int64_t rows : {1, 7, 64}) {
    HostTensor a(DType::u8, {rows, 5}), b(DType::i8, {5, 3});
    std::mt19937_64 rng(rows + 20);
    a.fill_random(rng, 0, 256);
    b.fill_random(rng, -128, 128);
    std::vector<HostTensor> out = run(g, {{"a", a}, {"b", b}});
    const int64_t bz[3] = {0, -1, 4};
    double factor = static_cast<double>(0.02f * 0.5f / 0.75f);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < 3; ++j) {
        int64_t acc = 0;
        for (int64_t k = 0; k < 5; ++k) acc += (a.get_int(i * 5 + k) - 128) * (b.get_int(k * 3 + j) - bz[j]);
        CHECK(out[0].get_int(i * 3 + j) == acc);
        CHECK(out[1].get_int(i * 3 + j) == saturate(std::nearbyint(static_cast<double>(acc) * factor) + 120, DType::u8));
      }
  }
}

TEST_CASE("BitShift shifts unsigned integers; a shift past the width is an error", "[onnx][quant]") {
  for (auto [elem, t] : {std::pair{int32_t{onnx::TensorProto::UINT8}, DType::u8},
                         {int32_t{onnx::TensorProto::UINT32}, DType::u32},
                         {int32_t{onnx::TensorProto::UINT64}, DType::u64}}) {
    INFO(dtype_name(t));
    ModelBuilder m;
    m.input("x", elem, {4}).input("s", elem, {4}).output("l", elem, {4}).output("r", elem, {4});
    set_attr(m.node("BitShift", {"x", "s"}, {"l"}), "direction", std::string("LEFT"));
    set_attr(m.node("BitShift", {"x", "s"}, {"r"}), "direction", std::string("RIGHT"));
    Graph g = import_ok(m);
    int64_t bits = dtype_bits(t);
    HostTensor x = ints(t, {4}, {wrap_int(-1, t), 5, 200, 1});
    HostTensor s = ints(t, {4}, {1, 0, 3, bits - 1});
    std::vector<HostTensor> out = run(g, {{"x", x}, {"s", s}});
    for (int i = 0; i < 4; ++i) {
      uint64_t xv = static_cast<uint64_t>(x.get_int(i)), sv = static_cast<uint64_t>(s.get_int(i));
      CHECK(out[0].get_int(i) == wrap_int(static_cast<int64_t>(xv << sv), t));
      CHECK(out[1].get_int(i) == wrap_int(static_cast<int64_t>(xv >> sv), t));
    }
    s.set_int(2, bits);
    absl::StatusOr<std::vector<HostTensor>> bad = evaluate(g, {{"x", x}, {"s", s}});
    REQUIRE(!bad.ok());
    CHECK(status_message(bad.status()).find("out of range") != std::string::npos);
  }
}

}  // namespace kiln::testing
