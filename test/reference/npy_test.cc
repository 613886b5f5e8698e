// .npy round trips for every dtype and an error for each kind of malformed file.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ir/npy.h"
#include "test/reference/util.h"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string temp_dir() {
  fs::path d = fs::temp_directory_path() / str_cat("kiln_npy_test_", ::getpid());
  fs::create_directories(d);
  return d.string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A version 1.0 file with the given header dict and data bytes, padded as NumPy does.
std::string npy_bytes(const std::string& dict, const std::string& data, char major = 1) {
  std::string h = dict;
  size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out("\x93NUMPY", 6);
  out += major;
  out += '\0';
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>(h.size() >> 8);
  if (major != 1) out += std::string(2, '\0');
  return out + h + data;
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

TEST_CASE("npy round trip of every dtype and rank") {
  std::string dir = temp_dir();
  std::vector<HostTensor> ts = {
      tensor(DType::f32, {2, 3}, {1.5, -2, kNaN, kInf, -kInf, 1e-40}),
      tensor(DType::f16, {3}, {0.5, -65504, kNaN}),
      int_tensor(DType::i32, {1, 2, 2}, {std::numeric_limits<int32_t>::min(), -1, 0, 7}),
      int_tensor(DType::i64, {2}, {std::numeric_limits<int64_t>::max(), (int64_t{1} << 60) + 1}),
      int_tensor(DType::boolean, {2, 2}, {1, 0, 0, 1}),
      tensor(DType::f32, {}, {3.25}),
      tensor(DType::f32, {0, 4}, {}),
      tensor(DType::f64, {2}, {0.1, -1e300}),
      int_tensor(DType::i8, {2}, {-128, 127}),
      int_tensor(DType::u8, {3}, {0, 255, 7}),
      int_tensor(DType::i16, {2}, {-32768, 5}),
      int_tensor(DType::u16, {1}, {65535}),
      int_tensor(DType::u32, {2}, {4294967295LL, 1}),
      int_tensor(DType::u64, {1}, {-1}),
  };
  for (size_t k = 0; k < ts.size(); ++k) {
    const HostTensor& t = ts[k];
    INFO(t.type_string());
    std::string path = str_cat(dir, "/t", k, ".npy");
    REQUIRE(write_npy(path, t).ok());
    for (const fs::directory_entry& e : fs::directory_iterator(dir))  // no temporary file left
      CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
    CHECK(read_file(path).size() % 64 == static_cast<size_t>(t.nbytes()) % 64);
    absl::StatusOr<HostTensor> back = read_npy(path);
    INFO(back.status().message());
    REQUIRE(back.ok());
    REQUIRE(back->dtype() == t.dtype());
    REQUIRE(back->shape() == t.shape());
    // An empty tensor's data() may be null, which memcmp must not be given even for 0 bytes.
    CHECK((t.nbytes() == 0 || std::memcmp(back->data(), t.data(), t.nbytes()) == 0));
  }
  fs::remove_all(dir);
}

TEST_CASE("bf16 is written as float32; f64 loads as f32") {
  std::string dir = temp_dir();
  HostTensor b = tensor(DType::bf16, {3}, {1.0078125, -3, kNaN});
  REQUIRE(write_npy(dir + "/b.npy", b).ok());
  CHECK(read_file(dir + "/b.npy").find("'descr': '<f4'") != std::string::npos);
  absl::StatusOr<HostTensor> back = read_npy(dir + "/b.npy");
  REQUIRE(back.ok());
  check_exact(*back, DType::f32, {3}, {1.0078125, -3, kNaN});

  write_file(dir + "/d.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", raw(std::vector<double>{0.1, -1e300})));
  absl::StatusOr<HostTensor> d = read_npy(dir + "/d.npy");
  INFO(d.status().message());
  REQUIRE(d.ok());
  check_exact(*d, DType::f64, {2}, {0.1, -1e300});
  // Version 2.0 headers and other key orders are accepted.
  write_file(dir + "/v2.npy", npy_bytes("{'shape': (1, 2), 'fortran_order': False, 'descr': '<i4'}", raw(std::vector<int32_t>{5, -6}), 2));
  absl::StatusOr<HostTensor> v2 = read_npy(dir + "/v2.npy");
  INFO(v2.status().message());
  REQUIRE(v2.ok());
  check_ints(*v2, DType::i32, {1, 2}, {5, -6});
  fs::remove_all(dir);
}

TEST_CASE("malformed .npy files give errors naming the file") {
  std::string dir = temp_dir();
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string two_floats = raw(std::vector<float>{1, 2});
  struct Case {
    std::string name, bytes, expect;
  };
  std::string bad_version = npy_bytes(ok_dict, two_floats);
  bad_version[6] = 3;
  std::vector<Case> cases = {
      {"magic", "NOTNUMPY" + std::string(100, ' '), "bad magic"},
      {"empty", "", "bad magic"},
      {"version", bad_version, "version 3.0"},
      {"fortran", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", two_floats), "Fortran"},
      {"bigendian", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", two_floats), "big-endian"},
      {"dtype", npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "ab"), "unsupported dtype '<c8'"},
      {"truncated", npy_bytes(ok_dict, two_floats.substr(0, 5)), "truncated data"},
      {"trailing", npy_bytes(ok_dict, two_floats + "xx"), "unexpected bytes"},
      {"header_cut", npy_bytes(ok_dict, "").substr(0, 30), "truncated header"},
      {"header_syntax", npy_bytes("{'descr' '<f4', 'fortran_order': False, 'shape': (2,), }", two_floats), "bad header"},
      {"header_key", npy_bytes("{'descr': '<f4', 'shape': (2,), }", two_floats), "bad header"},
      {"header_shape", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", two_floats), "bad header"},
      {"header_unknown", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", two_floats), "bad header"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    std::string path = str_cat(dir, "/", c.name, ".npy");
    write_file(path, c.bytes);
    absl::StatusOr<HostTensor> r = read_npy(path);
    REQUIRE(!r.ok());
    INFO(r.status().message());
    CHECK(contains(r.status(), path));
    CHECK(contains(r.status(), c.expect));
  }
  absl::StatusOr<HostTensor> missing = read_npy(dir + "/none.npy");
  REQUIRE(!missing.ok());
  CHECK(contains(missing.status(), "none.npy"));
  // Writing where the directory does not exist fails and leaves nothing behind.
  absl::Status w = write_npy(dir + "/no/such/dir/x.npy", tensor(DType::f32, {1}, {1}));
  REQUIRE(!w.ok());
  CHECK(contains(w, "x.npy"));
  CHECK(!fs::exists(dir + "/no"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln::test
