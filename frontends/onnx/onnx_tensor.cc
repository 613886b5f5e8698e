#include "frontends/onnx/onnx_tensor.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

std::optional<DType> dtype_from_onnx(int32_t elem_type) {
  switch (elem_type) {
    case onnx::TensorProto::FLOAT: return DType::f32;
    case onnx::TensorProto::FLOAT16: return DType::f16;
    case onnx::TensorProto::BFLOAT16: return DType::bf16;
    case onnx::TensorProto::INT32: return DType::i32;
    case onnx::TensorProto::INT64: return DType::i64;
    case onnx::TensorProto::BOOL: return DType::boolean;
    case onnx::TensorProto::DOUBLE: return DType::f64;
    case onnx::TensorProto::INT8: return DType::i8;
    case onnx::TensorProto::UINT8: return DType::u8;
    case onnx::TensorProto::INT16: return DType::i16;
    case onnx::TensorProto::UINT16: return DType::u16;
    case onnx::TensorProto::UINT32: return DType::u32;
    case onnx::TensorProto::UINT64: return DType::u64;
    default: return std::nullopt;
  }
}

int32_t dtype_to_onnx(DType t) {
  switch (t) {
    case DType::f32: return onnx::TensorProto::FLOAT;
    case DType::f16: return onnx::TensorProto::FLOAT16;
    case DType::bf16: return onnx::TensorProto::BFLOAT16;
    case DType::i32: return onnx::TensorProto::INT32;
    case DType::i64: return onnx::TensorProto::INT64;
    case DType::boolean: return onnx::TensorProto::BOOL;
    case DType::f64: return onnx::TensorProto::DOUBLE;
    case DType::i8: return onnx::TensorProto::INT8;
    case DType::u8: return onnx::TensorProto::UINT8;
    case DType::i16: return onnx::TensorProto::INT16;
    case DType::u16: return onnx::TensorProto::UINT16;
    case DType::u32: return onnx::TensorProto::UINT32;
    case DType::u64: return onnx::TensorProto::UINT64;
  }
  return onnx::TensorProto::UNDEFINED;
}

std::string onnx_type_name(int32_t elem_type) {
  if (!onnx::TensorProto_DataType_IsValid(elem_type)) return str_cat("type ", elem_type);
  return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(elem_type));
}

absl::StatusOr<HostTensor> tensor_from_onnx(const onnx::TensorProto& t) {
  std::string what = t.name().empty() ? std::string("tensor") : str_cat("tensor '", t.name(), "'");
  std::optional<DType> dtype = dtype_from_onnx(t.data_type());
  if (!dtype)
    return absl::UnimplementedError(
        str_cat(what, ": unsupported ONNX element type ", onnx_type_name(t.data_type())));
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    return absl::UnimplementedError(str_cat(what, ": external data is not supported"));
  std::vector<int64_t> shape;
  int64_t numel = 1;
  auto dims_text = [&] { return str_join(t.dims(), ", ", [](int64_t d) { return str_cat(d); }); };
  for (int64_t d : t.dims()) {
    // Bounds the allocation below: a corrupt proto must not ask for petabytes.
    if (d < 0 || (d > 0 && numel > (int64_t{1} << 40) / d))
      return invalid_argument(what, ": invalid dims [", dims_text(), "]");
    numel *= d;
    shape.push_back(d);
  }
  int64_t elem = dtype_size(*dtype);
  if (t.has_raw_data()) {
    if (static_cast<int64_t>(t.raw_data().size()) != numel * elem)
      return invalid_argument(what, ": raw_data holds ", t.raw_data().size(), " bytes, dims [",
                              dims_text(), "] of ", onnx_type_name(t.data_type()),
                              " need ", numel * elem);
    HostTensor out(*dtype, shape);
    if (numel > 0) std::memcpy(out.data(), t.raw_data().data(), numel * elem);
    if (*dtype == DType::boolean)  // any nonzero byte is true; kiln stores 0 or 1
      for (int64_t i = 0; i < numel; ++i) out.set_int(i, out.data()[i] != 0);
    return out;
  }
  // The typed field each dtype uses; ONNX stores bool, the 8-, 16- and 32-bit signed
  // integers, u8, u16 and the 16-bit float patterns in int32_data, u32 and u64 in uint64_data.
  int64_t count = 0;
  std::string_view field;
  switch (*dtype) {
    case DType::f32: count = t.float_data_size(), field = "float_data"; break;
    case DType::f64: count = t.double_data_size(), field = "double_data"; break;
    case DType::i64: count = t.int64_data_size(), field = "int64_data"; break;
    case DType::u32:
    case DType::u64: count = t.uint64_data_size(), field = "uint64_data"; break;
    case DType::i32:
    case DType::i8:
    case DType::u8:
    case DType::i16:
    case DType::u16:
    case DType::boolean:
    case DType::f16:
    case DType::bf16: count = t.int32_data_size(), field = "int32_data"; break;
  }
  // Checked before allocating: a corrupt proto must not ask for memory it does not hold.
  if (count != numel)
    return invalid_argument(what, ": ", field, " holds ", count, " values, dims [", dims_text(), "] need ", numel);
  HostTensor out(*dtype, shape);
  for (int64_t i = 0; i < numel; ++i) {
    switch (*dtype) {
      case DType::f32: out.set(i, t.float_data(i)); break;
      case DType::f64: out.set(i, t.double_data(i)); break;
      case DType::i64: out.set_int(i, t.int64_data(i)); break;
      case DType::u32:
      case DType::u64: out.set_int(i, static_cast<int64_t>(t.uint64_data(i))); break;
      case DType::i32:
      case DType::i8:
      case DType::u8:
      case DType::i16:
      case DType::u16:
      case DType::boolean: out.set_int(i, t.int32_data(i)); break;
      case DType::f16:
      case DType::bf16: {
        uint16_t bits = static_cast<uint16_t>(t.int32_data(i));
        std::memcpy(out.data() + 2 * i, &bits, 2);
        break;
      }
    }
  }
  return out;
}

onnx::TensorProto tensor_to_onnx(const HostTensor& t, const std::string& name) {
  onnx::TensorProto p;
  p.set_name(name);
  p.set_data_type(dtype_to_onnx(t.dtype()));
  for (int64_t d : t.shape()) p.add_dims(d);
  p.set_raw_data(std::string(reinterpret_cast<const char*>(t.data()), t.numel() * dtype_size(t.dtype())));
  return p;
}

absl::StatusOr<HostTensor> read_onnx_tensor_file(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_regular_file(path, max_input_file_bytes()));
  onnx::TensorProto t;
  if (!t.ParseFromString(bytes)) return invalid_argument(path, ": not a valid ONNX TensorProto");
  absl::StatusOr<HostTensor> out = tensor_from_onnx(t);
  if (!out.ok()) return prefix_error(out.status(), path, ": ");
  return out;
}

}  // namespace kiln
