// safetensors checkpoints, the format Hugging Face models ship in: an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
// then the tensors' bytes. Files are mapped, not read, and nothing in them is trusted.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/host_tensor.h"

namespace kiln {

// One tensor of a file: where its bytes are, relative to the start of the data section.
struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  int64_t offset = 0, nbytes = 0;
};

// A mapped .safetensors file. Opening checks the whole header: a regular file, the header
// length within the file (and at most 100 MB, as the format says), JSON that is an object,
// each tensor's dtype (F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL), shape and data_offsets
// (checked int64 arithmetic: end - begin == numel * dtype size), and the tensors covering the
// data section exactly, with no gap or overlap. Errors name the file, the byte offset or the
// tensor, and what was expected. Movable; views stay valid while the file object lives.
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const;
  const std::vector<SafetensorsEntry>& tensors() const;  // by name
  const std::map<std::string, std::string>& metadata() const;  // "__metadata__"
  const SafetensorsEntry* find(std::string_view name) const;    // null when absent
  // The tensor's bytes in the mapping (no copy; little-endian, row-major, maybe unaligned).
  std::span<const uint8_t> bytes(const SafetensorsEntry& e) const;
  // A copy as a HostTensor; NotFound naming the file when absent.
  absl::StatusOr<HostTensor> read(std::string_view name) const;
  // Chunk `index` of `count` equal chunks along `axis` (HostTensor::chunk's), copying only
  // its bytes: a tensor-parallel rank reads its shard and never touches (maps in) the other
  // ranks'. Errors: no such tensor, no such axis, or an axis that does not divide into
  // `count` chunks, naming the file and tensor.
  absl::StatusOr<HostTensor> read_chunk(std::string_view name, int64_t axis, int64_t index, int64_t count) const;

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> map_;
};

// Writes `tensors` (any kiln dtype above) and string metadata to `path` through a temporary
// file and a rename, so a failure leaves nothing behind. Names are stored in sorted order.
absl::Status write_safetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

// A checkpoint directory as Hugging Face saves one: model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor: file}}). Every shard is opened and
// checked up front; a tensor listed in the index must be in its shard, and no tensor may be
// in two shards.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<SafetensorsCheckpoint> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // every tensor, sorted
  // The file holding `name` and its entry; NotFound naming the directory when absent.
  absl::StatusOr<std::pair<const SafetensorsFile*, const SafetensorsEntry*>> find(std::string_view name) const;
  absl::StatusOr<HostTensor> read(std::string_view name) const;
  absl::StatusOr<HostTensor> read_chunk(std::string_view name, int64_t axis, int64_t index, int64_t count) const;

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> where_;  // tensor -> index in files_
};

}  // namespace kiln
