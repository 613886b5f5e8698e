// safetensors files: round trips of every dtype through the writer and the mapped reader,
// sharded checkpoint directories, and malformed files refused with located errors.
#include <cstring>
#include <fstream>
#include <random>

#include <catch2/catch.hpp>

#include "frontends/safetensors/safetensors.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/scratch_dir.h"

namespace kiln {
namespace {

using testing::require_ok;
using testing::ScratchDir;

HostTensor random_tensor(DType t, std::vector<int64_t> shape, std::mt19937_64& rng) {
  HostTensor h(t, std::move(shape));
  h.fill_random(rng, is_float(t) ? -2.0 : -100.0, is_float(t) ? 2.0 : 100.0);
  return h;
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// A file made of an 8-byte length, `header` and `data` bytes.
void write_raw(const std::filesystem::path& p, const std::string& header, size_t data_bytes, int64_t len = -1) {
  std::ofstream f(p, std::ios::binary);
  uint64_t n = len < 0 ? header.size() : static_cast<uint64_t>(len);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header << std::string(data_bytes, '\x01');
}

std::string open_error(const std::filesystem::path& p) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::open(p.string());
  REQUIRE_FALSE(f.ok());
  return status_message(f.status());
}

TEST_CASE("safetensors: every dtype round-trips through the writer and the mapped reader") {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path());
  std::mt19937_64 rng(7);
  std::map<std::string, HostTensor> ts;
  ts["a.f32"] = random_tensor(DType::f32, {3, 5}, rng);
  ts["b.bf16"] = random_tensor(DType::bf16, {7}, rng);
  ts["c.f16"] = random_tensor(DType::f16, {2, 1, 3}, rng);
  ts["d.i64"] = random_tensor(DType::i64, {4}, rng);
  ts["e.i32"] = random_tensor(DType::i32, {1, 9}, rng);
  ts["f.scalar"] = random_tensor(DType::f32, {}, rng);
  ts["g.empty"] = HostTensor(DType::bf16, {0, 4});
  ts["h.bool"] = random_tensor(DType::boolean, {5}, rng);
  std::string path = (dir.path() / "m.safetensors").string();
  require_ok(write_safetensors(path, ts, {{"format", "pt"}}));
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::open(path);
  require_ok(f.status());
  REQUIRE(f->tensors().size() == ts.size());
  REQUIRE(f->metadata().at("format") == "pt");
  for (const auto& [name, t] : ts) {
    absl::StatusOr<HostTensor> got = f->read(name);
    require_ok(got.status());
    CHECK(same_bytes(*got, t));
    const SafetensorsEntry* e = f->find(name);
    REQUIRE(e != nullptr);
    CHECK(e->nbytes == t.nbytes());
    CHECK(std::memcmp(f->bytes(*e).data(), t.data(), t.nbytes()) == 0);  // the view, no copy
  }
  CHECK(f->find("nope") == nullptr);
  CHECK(f->read("nope").status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("safetensors: a sharded checkpoint directory loads through its index") {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path());
  std::mt19937_64 rng(3);
  std::map<std::string, HostTensor> s1, s2;
  s1["x"] = random_tensor(DType::bf16, {4, 4}, rng);
  s2["y"] = random_tensor(DType::f32, {3}, rng);
  s2["z"] = random_tensor(DType::i64, {2}, rng);
  require_ok(write_safetensors((dir.path() / "model-00001-of-00002.safetensors").string(), s1));
  require_ok(write_safetensors((dir.path() / "model-00002-of-00002.safetensors").string(), s2));
  auto write_index = [&](const std::string& body) { std::ofstream(dir.path() / "model.safetensors.index.json") << body; };
  write_index(R"({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
      "y": "model-00002-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}})");
  absl::StatusOr<SafetensorsCheckpoint> c = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(c.status());
  CHECK(c->names() == std::vector<std::string>{"x", "y", "z"});
  CHECK(same_bytes(*c->read("y"), s2["y"]));
  CHECK(same_bytes(*c->read("x"), s1["x"]));
  CHECK(c->read("w").status().code() == absl::StatusCode::kNotFound);

  write_index(R"({"weight_map": {"x": "model-00002-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})");
  absl::StatusOr<SafetensorsCheckpoint> bad = SafetensorsCheckpoint::open(dir.path().string());
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("tensor 'x' is listed in model-00002-of-00002"));
  write_index(R"({"weight_map": {"x": "../model.safetensors"}})");
  CHECK_THAT(status_message(SafetensorsCheckpoint::open(dir.path().string()).status()),
             Catch::Contains("is not a file of the directory"));
  write_index(R"({"weight_map": 3})");
  CHECK_THAT(status_message(SafetensorsCheckpoint::open(dir.path().string()).status()),
             Catch::Contains("'weight_map' object"));
  // The same tensor in two shards.
  require_ok(write_safetensors((dir.path() / "model-00002-of-00002.safetensors").string(), s1));
  write_index(R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})");
  CHECK_THAT(status_message(SafetensorsCheckpoint::open(dir.path().string()).status()),
             Catch::Contains("tensor 'x' is also in"));
  ScratchDir empty;
  std::filesystem::create_directories(empty.path());
  CHECK(SafetensorsCheckpoint::open(empty.path().string()).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("safetensors: malformed files are refused with the place and the reason") {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path());
  auto p = dir.path() / "bad.safetensors";
  struct Case {
    std::string header;
    size_t data;
    std::string want;
  };
  const Case cases[] = {
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8, ""},  // the good one
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})", 8, "byte 68: header is not valid JSON"},
      {R"([1, 2])", 0, "expected a JSON object, got array"},
      {R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8, "tensor 'a': unsupported dtype 'Q4'"},
      {R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8, "must hold non-negative integers"},
      {R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8, "F32[3] needs 12 bytes"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", 8, "outside the data section of 8 bytes"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 16, "end before begin"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", 8, "'data_offsets' must be [begin, end]"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}})", 8, "unknown field 'x'"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 12, "data section holds 12 bytes"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12, "a gap before it"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12, "overlaps the tensor before it"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8, "tensor 'a' appears twice"},
      {R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}})", 8, "overflow"},
      {R"({"__metadata__": {"k": 3}})", 0, "'__metadata__' entry 'k' must be a string"},
  };
  for (const Case& c : cases) {
    INFO(c.header);
    write_raw(p, c.header, c.data);
    absl::StatusOr<SafetensorsFile> f = SafetensorsFile::open(p.string());
    if (c.want.empty()) {
      require_ok(f.status());
      continue;
    }
    REQUIRE_FALSE(f.ok());
    CHECK_THAT(status_message(f.status()), Catch::Contains(p.string()) && Catch::Contains(c.want));
  }
  write_raw(p, "{}", 0, 1000);  // a header length past the end of the file
  CHECK_THAT(open_error(p), Catch::Contains("byte 0: header length 1000 does not fit the file of 10 bytes"));
  { std::ofstream(p, std::ios::binary) << "abc"; }
  CHECK_THAT(open_error(p), Catch::Contains("too short for the 8-byte header length"));
  CHECK_THAT(open_error(dir.path()), Catch::Contains("not a regular file"));
  CHECK(SafetensorsFile::open((dir.path() / "missing").string()).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("safetensors: truncations and byte flips of a valid file never crash the reader") {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path());
  std::mt19937_64 rng(11);
  std::map<std::string, HostTensor> ts{{"w", random_tensor(DType::bf16, {3, 4}, rng)},
                                       {"b", random_tensor(DType::f32, {4}, rng)}};
  auto good = dir.path() / "good.safetensors";
  require_ok(write_safetensors(good.string(), ts));
  std::string bytes;
  {
    std::ifstream f(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto p = dir.path() / "mutated.safetensors";
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    std::ofstream(p, std::ios::binary) << bytes.substr(0, cut);
    CHECK_FALSE(SafetensorsFile::open(p.string()).ok());  // every truncation loses bytes the header counts
  }
  for (int i = 0; i < 200; ++i) {
    std::string m = bytes;
    m[rng() % m.size()] = static_cast<char>(rng());
    std::ofstream(p, std::ios::binary) << m;
    absl::StatusOr<SafetensorsFile> f = SafetensorsFile::open(p.string());
    if (f.ok())
      for (const SafetensorsEntry& e : f->tensors()) CHECK(f->read(e.name).ok());  // in bounds when accepted
  }
}

}  // namespace
}  // namespace kiln
