// ONNX TensorProto <-> HostTensor: every kiln dtype through raw_data and the typed fields,
// and the errors for payloads that do not match their dims.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "frontends/onnx/onnx_tensor.h"
#include "ir/str.h"

namespace kiln {
namespace {

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

TEST_CASE("every kiln dtype round-trips through raw_data", "[onnx][tensor]") {
  std::mt19937_64 rng(1);
  for (DType t : kAllDTypes) {
    HostTensor h(t, {2, 3});
    h.fill_random(rng, -50, 50);
    onnx::TensorProto p = tensor_to_onnx(h, "w");
    CHECK(p.data_type() == dtype_to_onnx(t));
    CHECK(dtype_from_onnx(p.data_type()) == t);
    absl::StatusOr<HostTensor> back = tensor_from_onnx(p);
    REQUIRE(back.ok());
    CHECK(same_bytes(h, *back));
  }
}

TEST_CASE("typed fields: float_data, int64_data, int32_data for i32, bool and 16-bit floats", "[onnx][tensor]") {
  onnx::TensorProto p;
  p.add_dims(3);
  SECTION("f32") {
    p.set_data_type(onnx::TensorProto::FLOAT);
    for (float v : {1.5f, -2.0f, 1e30f}) p.add_float_data(v);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->get(0) == 1.5);
    CHECK(h->get(2) == static_cast<double>(1e30f));
  }
  SECTION("i64") {
    p.set_data_type(onnx::TensorProto::INT64);
    for (int64_t v : {int64_t{1} << 40, int64_t{-7}, int64_t{0}}) p.add_int64_data(v);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->get_int(0) == int64_t{1} << 40);
    CHECK(h->get_int(1) == -7);
  }
  SECTION("bool") {
    p.set_data_type(onnx::TensorProto::BOOL);
    for (int v : {0, 1, 1}) p.add_int32_data(v);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->type_string() == "bool[3]");
    CHECK(h->get_int(0) == 0);
    CHECK(h->get_int(2) == 1);
  }
  SECTION("f16 and bf16 bit patterns") {
    p.set_data_type(onnx::TensorProto::FLOAT16);
    for (int v : {0x3C00, 0xC000, 0x7C00}) p.add_int32_data(v);  // 1, -2, inf
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->get(0) == 1.0);
    CHECK(h->get(1) == -2.0);
    CHECK(std::isinf(h->get(2)));
    p.set_data_type(onnx::TensorProto::BFLOAT16);
    h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->get(0) == bf16_bits_to_float(0x3C00));
  }
  SECTION("f64 in double_data") {
    p.set_data_type(onnx::TensorProto::DOUBLE);
    for (double v : {0.1, -1e300, 2.0}) p.add_double_data(v);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->type_string() == "f64[3]");
    CHECK(h->get(0) == 0.1);
    CHECK(h->get(1) == -1e300);
  }
  SECTION("8- and 16-bit integers in int32_data") {
    for (auto [t, name, vals, want] :
         {std::tuple{onnx::TensorProto::INT8, "i8[3]", std::vector<int>{-128, 127, -1}, std::vector<int64_t>{-128, 127, -1}},
          {onnx::TensorProto::UINT8, "u8[3]", {0, 255, 7}, {0, 255, 7}},
          {onnx::TensorProto::INT16, "i16[3]", {-32768, 32767, 5}, {-32768, 32767, 5}},
          {onnx::TensorProto::UINT16, "u16[3]", {65535, 0, 9}, {65535, 0, 9}}}) {
      onnx::TensorProto q;
      q.add_dims(3);
      q.set_data_type(t);
      for (int v : vals) q.add_int32_data(v);
      absl::StatusOr<HostTensor> h = tensor_from_onnx(q);
      REQUIRE(h.ok());
      CHECK(h->type_string() == name);
      for (int i = 0; i < 3; ++i) CHECK(h->get_int(i) == want[i]);
    }
  }
  SECTION("u32 and u64 in uint64_data") {
    p.set_data_type(onnx::TensorProto::UINT64);
    for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 63, uint64_t{3}}) p.add_uint64_data(v);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(static_cast<uint64_t>(h->get_int(0)) == ~uint64_t{0});
    CHECK(h->get(1) == 0x1p63);
    p.set_data_type(onnx::TensorProto::UINT32);
    p.clear_uint64_data();
    for (uint64_t v : {4294967295ull, 0ull, 12ull}) p.add_uint64_data(v);
    h = tensor_from_onnx(p);
    REQUIRE(h.ok());
    CHECK(h->type_string() == "u32[3]");
    CHECK(h->get_int(0) == 4294967295LL);
  }
}

TEST_CASE("raw bool bytes other than 0 and 1 read as true", "[onnx][tensor]") {
  onnx::TensorProto p;
  p.set_data_type(onnx::TensorProto::BOOL);
  p.add_dims(3);
  p.set_raw_data(std::string("\x00\x02\xff", 3));
  absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
  REQUIRE(h.ok());
  CHECK(h->data()[0] == 0);
  CHECK(h->data()[1] == 1);
  CHECK(h->data()[2] == 1);
}

TEST_CASE("payloads that do not match their dims, and what kiln lacks, are errors", "[onnx][tensor]") {
  onnx::TensorProto p;
  p.set_name("w");
  p.set_data_type(onnx::TensorProto::FLOAT);
  p.add_dims(2);
  p.add_dims(2);
  SECTION("too few values") {
    p.add_float_data(1);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    CHECK(h.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(status_message(h.status()) == "tensor 'w': float_data holds 1 values, dims [2, 2] need 4");
  }
  SECTION("raw_data of the wrong size") {
    p.set_raw_data(std::string(15, '\0'));
    CHECK(status_message(tensor_from_onnx(p).status()) == "tensor 'w': raw_data holds 15 bytes, dims [2, 2] of FLOAT need 16");
  }
  SECTION("a negative dim") {
    p.set_dims(1, -3);
    CHECK(status_message(tensor_from_onnx(p).status()) == "tensor 'w': invalid dims [2, -3]");
  }
  SECTION("dims too large to allocate, with no data behind them") {
    p.set_dims(0, int64_t{1} << 30);
    p.set_dims(1, int64_t{1} << 30);
    CHECK(status_message(tensor_from_onnx(p).status()) == "tensor 'w': invalid dims [1073741824, 1073741824]");
    p.set_dims(1, 1 << 9);
    CHECK(status_message(tensor_from_onnx(p).status()) ==
          "tensor 'w': float_data holds 0 values, dims [1073741824, 512] need 549755813888");
  }
  SECTION("an element type kiln lacks") {
    p.set_data_type(onnx::TensorProto::COMPLEX64);
    absl::StatusOr<HostTensor> h = tensor_from_onnx(p);
    CHECK(h.status().code() == absl::StatusCode::kUnimplemented);
    CHECK(status_message(h.status()) == "tensor 'w': unsupported ONNX element type COMPLEX64");
    p.set_data_type(1234);
    CHECK(status_message(tensor_from_onnx(p).status()) == "tensor 'w': unsupported ONNX element type type 1234");
  }
  SECTION("external data") {
    p.set_data_location(onnx::TensorProto::EXTERNAL);
    CHECK(tensor_from_onnx(p).status().code() == absl::StatusCode::kUnimplemented);
  }
}

TEST_CASE("tensor files: read back, garbage and missing files", "[onnx][tensor]") {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / str_cat("kiln_onnx_tensor_", ::getpid());
  std::filesystem::create_directories(dir);
  HostTensor h(DType::i32, {4});
  for (int i = 0; i < 4; ++i) h.set_int(i, i * 1000 - 1);
  std::string good = (dir / "good.pb").string(), garbage = (dir / "garbage.pb").string();
  std::ofstream(good, std::ios::binary) << tensor_to_onnx(h, "t").SerializeAsString();
  std::ofstream(garbage, std::ios::binary) << std::string("\xff\xff\xff\xff\x0f", 5);
  absl::StatusOr<HostTensor> back = read_onnx_tensor_file(good);
  REQUIRE(back.ok());
  CHECK(same_bytes(h, *back));
  CHECK(status_message(read_onnx_tensor_file(garbage).status()) == garbage + ": not a valid ONNX TensorProto");
  CHECK(read_onnx_tensor_file((dir / "missing.pb").string()).status().code() == absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln
