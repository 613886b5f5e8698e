#include "ir/str.h"
#include "ir/host_tensor.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ir/checked.h"


namespace kiln {

namespace {

// A broken invariant of the caller (sizes are checked before a HostTensor is made; indices
// come from loops over numel()): stop with the reason rather than write out of bounds.
[[noreturn]] void fail_invariant(const std::string& what) {
  std::fprintf(stderr, "kiln: internal error: HostTensor %s\n", what.c_str());
  std::abort();
}

}  // namespace

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  absl::StatusOr<int64_t> bytes = checked_nbytes(dtype_, shape_, "a HostTensor");
  if (!bytes.ok()) fail_invariant(status_message(bytes.status()));
  numel_ = *bytes / dtype_size(dtype_);
  bytes_.assign(static_cast<size_t>(*bytes), 0);
}

uint8_t* HostTensor::at(int64_t i) {
  if (i < 0 || i >= numel_) fail_invariant(str_cat("element ", i, " of ", type_string(), " is out of bounds"));
  return bytes_.data() + i * dtype_size(dtype_);
}

double HostTensor::get(int64_t i) const {
  const uint8_t* p = const_cast<HostTensor*>(this)->at(i);
  switch (dtype_) {
    case DType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::f16: { uint16_t b; std::memcpy(&b, p, 2); return f16_bits_to_float(b); }
    case DType::bf16: { uint16_t b; std::memcpy(&b, p, 2); return bf16_bits_to_float(b); }
    case DType::f64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::u64: return static_cast<double>(static_cast<uint64_t>(get_int(i)));
    default: return static_cast<double>(get_int(i));
  }
}

int64_t HostTensor::get_int(int64_t i) const {
  const uint8_t* p = const_cast<HostTensor*>(this)->at(i);
  switch (dtype_) {
    case DType::i32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::i64: case DType::u64: { int64_t v; std::memcpy(&v, p, 8); return v; }
    case DType::u32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::i16: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case DType::u16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case DType::i8: return static_cast<int8_t>(*p);
    case DType::u8: return *p;
    case DType::boolean: return *p != 0;
    default: return float_to_int(get(i), DType::i64);
  }
}

void HostTensor::set(int64_t i, double v) {
  uint8_t* p = at(i);
  switch (dtype_) {
    case DType::f32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); return; }
    case DType::f16: { uint16_t b = float_to_f16_bits(static_cast<float>(v)); std::memcpy(p, &b, 2); return; }
    case DType::bf16: { uint16_t b = float_to_bf16_bits(static_cast<float>(v)); std::memcpy(p, &b, 2); return; }
    case DType::f64: std::memcpy(p, &v, 8); return;
    case DType::boolean: *p = v != 0; return;  // as round_to_dtype: 0.5 and NaN are true
    default: set_int(i, float_to_int(v, dtype_));
  }
}

void HostTensor::set_int(int64_t i, int64_t v) {
  uint8_t* p = at(i);
  switch (dtype_) {
    case DType::i64: case DType::u64: std::memcpy(p, &v, 8); return;
    case DType::i32: case DType::u32: { uint32_t x = static_cast<uint32_t>(v); std::memcpy(p, &x, 4); return; }
    case DType::i16: case DType::u16: { uint16_t x = static_cast<uint16_t>(v); std::memcpy(p, &x, 2); return; }
    case DType::i8: case DType::u8: *p = static_cast<uint8_t>(v); return;
    case DType::boolean: *p = v != 0; return;
    default: set(i, static_cast<double>(v));
  }
}

void HostTensor::fill_random(std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < numel_; ++i) {
    if (dtype_ == DType::boolean) set_int(i, rng() & 1);
    else if (is_integer(dtype_)) set_int(i, static_cast<int64_t>(std::floor(u(rng))));
    else set(i, u(rng));
  }
}

HostTensor HostTensor::converted(DType t) const {
  HostTensor out(t, shape_);
  for (int64_t i = 0; i < numel_; ++i) out.set(i, get(i));
  return out;
}

HostTensor HostTensor::chunk(int64_t axis, int64_t index, int64_t count) const {
  if (axis < 0 || axis >= rank() || count < 1 || shape_[axis] % count != 0 || index < 0 || index >= count)
    fail_invariant(str_cat("chunk ", index, " of ", count, " along axis ", axis, " of ", type_string()));
  std::vector<int64_t> part = shape_;
  part[axis] /= count;
  HostTensor out(dtype_, part);
  int64_t outer = 1, inner = dtype_size(dtype_);  // inner: bytes of one index along the axis
  for (int64_t d = 0; d < axis; ++d) outer *= shape_[d];
  for (int64_t d = axis + 1; d < rank(); ++d) inner *= shape_[d];
  const int64_t n = part[axis];
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(out.data() + o * n * inner, data() + (o * shape_[axis] + index * n) * inner,
                static_cast<size_t>(n * inner));
  return out;
}

std::string HostTensor::type_string() const {
  return str_cat(dtype_name(dtype_), "[", fmt::format("{}", fmt::join(shape_, ", ")), "]");
}

}  // namespace kiln
