#include "ir/npy.h"

#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <string_view>

#include "ir/checked.h"
#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

static_assert(std::endian::native == std::endian::little, ".npy data is read and written little-endian");

constexpr std::string_view kMagic = "\x93NUMPY";

struct NpyType {
  std::string_view descr;
  DType dtype;       // the HostTensor's dtype
  int64_t itemsize;  // in the file
};
// bf16 has no NumPy type and is written as <f4. Single bytes have no byte order: NumPy
// writes '|i1', and '<i1' is read too.
constexpr NpyType kTypes[] = {{"<f4", DType::f32, 4}, {"<f8", DType::f64, 8}, {"<f2", DType::f16, 2},
                              {"<i4", DType::i32, 4}, {"<i8", DType::i64, 8}, {"|b1", DType::boolean, 1},
                              {"|i1", DType::i8, 1},  {"|u1", DType::u8, 1},  {"<i2", DType::i16, 2},
                              {"<u2", DType::u16, 2}, {"<u4", DType::u32, 4}, {"<u8", DType::u64, 8},
                              {"<i1", DType::i8, 1},  {"<u1", DType::u8, 1}};

// The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view s) : s_(s) {}

  absl::Status parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool has_descr = false, has_order = false, has_shape = false;
    if (!eat('{')) return bad("expected '{'");
    while (!eat('}')) {
      std::optional<std::string> key = string();
      if (!key) return bad("expected a quoted key");
      if (!eat(':')) return bad("expected ':' after '", *key, "'");
      if (*key == "descr") {
        std::optional<std::string> d = string();
        if (!d) return bad("descr must be a string");
        descr = *d;
        has_descr = true;
      } else if (*key == "fortran_order") {
        if (word("True")) fortran = true;
        else if (word("False")) fortran = false;
        else return bad("fortran_order must be True or False");
        has_order = true;
      } else if (*key == "shape") {
        if (!eat('(')) return bad("shape must be a tuple");
        while (!eat(')')) {
          std::optional<int64_t> d = integer();
          if (!d) return bad("shape must hold non-negative integers");
          shape.push_back(*d);
          if (eat(',')) continue;
          if (eat(')')) break;
          return bad("expected ',' or ')' in shape");
        }
        has_shape = true;
      } else {
        return bad("unknown key '", *key, "'");
      }
      if (!eat(',')) {
        if (!eat('}')) return bad("expected ',' or '}'");
        break;
      }
    }
    skip_space();
    if (p_ != s_.size()) return bad("unexpected text after the dictionary");
    if (!has_descr || !has_order || !has_shape) return bad("needs the keys descr, fortran_order and shape");
    return absl::OkStatus();
  }

 private:
  template <typename... A>
  absl::Status bad(const A&... a) const {
    return invalid_argument("bad header (", a..., " at offset ", p_, ")");
  }
  void skip_space() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool eat(char c) {
    skip_space();
    if (p_ < s_.size() && s_[p_] == c) return ++p_, true;
    return false;
  }
  bool word(std::string_view w) {
    skip_space();
    if (s_.substr(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  std::optional<std::string> string() {
    skip_space();
    if (p_ >= s_.size() || (s_[p_] != '\'' && s_[p_] != '"')) return std::nullopt;
    size_t end = s_.find(s_[p_], p_ + 1);
    if (end == std::string_view::npos) return std::nullopt;
    std::string out(s_.substr(p_ + 1, end - p_ - 1));
    p_ = end + 1;
    return out;
  }
  std::optional<int64_t> integer() {
    skip_space();
    size_t start = p_;
    int64_t v = 0;
    while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) return std::nullopt;
      v = v * 10 + (s_[p_++] - '0');
    }
    if (p_ < s_.size() && s_[p_] == 'L') ++p_;  // Python 2 longs
    return p_ == start ? std::nullopt : std::optional(v);
  }

  std::string_view s_;
  size_t p_ = 0;
};

uint32_t read_le(std::string_view s, size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = bytes; i-- > 0;) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

}  // namespace

absl::StatusOr<HostTensor> read_npy(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_regular_file(path, max_input_file_bytes()));
  return parse_npy(bytes, path);
}

absl::StatusOr<HostTensor> parse_npy(std::string_view bytes, std::string_view path) {
  auto fail = [&](const auto&... a) { return invalid_argument(path, ": ", a...); };
  if (bytes.size() < 10 || std::string_view(bytes).substr(0, 6) != kMagic)
    return fail("not a .npy file (bad magic)");
  int major = static_cast<uint8_t>(bytes[6]), minor = static_cast<uint8_t>(bytes[7]);
  if (major != 1 && major != 2) return fail("unsupported .npy format version ", major, ".", minor, " (expected 1.0 or 2.0)");
  size_t start = major == 1 ? 10 : 12;
  if (bytes.size() < start) return fail("truncated header");
  size_t header_len = read_le(bytes, 8, major == 1 ? 2 : 4);
  if (bytes.size() - start < header_len) return fail("truncated header (", header_len, " bytes announced)");

  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  if (absl::Status s = HeaderParser(std::string_view(bytes).substr(start, header_len)).parse(descr, fortran, shape); !s.ok())
    return fail(s.message());
  if (fortran) return fail("Fortran-order arrays are not supported (save a C-contiguous array)");
  if (!descr.empty() && descr[0] == '>') return fail("big-endian data ('", descr, "') is not supported");
  const NpyType* type = nullptr;
  for (const NpyType& t : kTypes)
    if (t.descr == descr) type = &t;
  if (!type) return fail("unsupported dtype '", descr, "' (expected one of <f8 <f4 <f2 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)");

  absl::StatusOr<int64_t> nbytes = checked_nbytes(DType::i64, shape, "the shape");  // 8 bytes: the widest item
  if (!nbytes.ok()) return fail(nbytes.status().message());
  int64_t numel = *nbytes / 8;
  size_t data_at = start + header_len;
  uint64_t want = static_cast<uint64_t>(numel * type->itemsize), have = bytes.size() - data_at;
  if (have < want) return fail("truncated data: shape (", fmt::format("{}", fmt::join(shape, ", ")), ") of ", descr,
                               " needs ", want, " bytes, found ", have);
  if (have > want) return fail(have - want, " unexpected bytes after the array data");

  HostTensor t(type->dtype, shape);
  const char* data = bytes.data() + data_at;
  if (type->dtype == DType::boolean) {
    for (int64_t i = 0; i < numel; ++i) t.set_int(i, data[i] != 0);
  } else {
    std::memcpy(t.data(), data, want);
  }
  return t;
}

absl::Status write_npy(const std::string& path, const HostTensor& t) {
  std::string_view descr;
  for (const NpyType& nt : kTypes)
    if (nt.dtype == t.dtype() && descr.empty()) descr = nt.descr;
  if (t.dtype() == DType::bf16) descr = "<f4";

  std::string shape = t.rank() == 1 ? fmt::format("({},)", t.shape()[0])
                                    : fmt::format("({})", fmt::join(t.shape(), ", "));
  std::string dict = str_cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  // NumPy pads with spaces so that the data starts at a multiple of 64; the header ends in
  // '\n'. Version 2.0 (a 4-byte length) only for headers too long for 1.0's 2 bytes.
  auto padded = [&](size_t prefix) {
    std::string h = dict;
    h.append((64 - (prefix + h.size() + 1) % 64) % 64, ' ');
    return h + '\n';
  };
  std::string header = padded(10);
  bool v2 = header.size() > 65535;
  if (v2) header = padded(12);
  std::string out(kMagic);
  out += static_cast<char>(v2 ? 2 : 1);
  out += '\0';
  uint32_t len = static_cast<uint32_t>(header.size());
  for (int i = 0; i < (v2 ? 4 : 2); ++i) out += static_cast<char>((len >> (8 * i)) & 0xff);
  out += header;
  if (t.dtype() == DType::bf16) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      float f = static_cast<float>(t.get(i));
      out.append(reinterpret_cast<const char*>(&f), 4);
    }
  } else {
    out.append(reinterpret_cast<const char*>(t.data()), t.nbytes());
  }

  return write_file_atomically(path, [&](std::FILE* f) { return std::fwrite(out.data(), 1, out.size(), f) == out.size(); });
}

}  // namespace kiln
