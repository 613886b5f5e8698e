#include "frontends/safetensors/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "ir/checked.h"
#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

namespace {

using nlohmann::json;

constexpr int64_t kMaxHeaderBytes = 100'000'000;  // the format's own limit

// The format's dtype names <-> kiln's.
constexpr std::pair<std::string_view, DType> kDTypes[] = {
    {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16}, {"F64", DType::f64},
    {"I64", DType::i64}, {"I32", DType::i32}, {"I16", DType::i16},   {"I8", DType::i8},
    {"U8", DType::u8},   {"BOOL", DType::boolean}};

std::optional<DType> parse_st_dtype(std::string_view s) {
  for (const auto& [name, t] : kDTypes)
    if (name == s) return t;
  return std::nullopt;
}

std::optional<std::string_view> st_dtype_name(DType t) {
  for (const auto& [name, d] : kDTypes)
    if (d == t) return name;
  return std::nullopt;
}

// One tensor's header entry, checked against the data section's size.
absl::StatusOr<SafetensorsEntry> parse_entry(const std::string& where, const std::string& name, const json& j,
                                             int64_t data_bytes) {
  auto bad = [&](const auto&... a) { return invalid_argument(where, ": tensor '", name, "': ", a...); };
  if (!j.is_object()) return bad("expected an object {dtype, shape, data_offsets}, got ", j.type_name());
  for (const auto& [key, _] : j.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") return bad("unknown field '", key, "'");
  SafetensorsEntry e;
  e.name = name;
  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) return bad("'dtype' must be a string");
  std::optional<DType> d = parse_st_dtype(dt->get<std::string>());
  if (!d) return bad("unsupported dtype '", dt->get<std::string>(), "' (kiln reads F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");
  e.dtype = *d;
  auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array()) return bad("'shape' must be an array of integers");
  for (const json& x : *sh) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || (x.is_number_unsigned() && x.get<uint64_t>() > INT64_MAX))
      return bad("'shape' ", sh->dump(), " must hold non-negative integers");
    e.shape.push_back(x.get<int64_t>());
  }
  auto off = j.find("data_offsets");
  if (off == j.end() || !off->is_array() || off->size() != 2) return bad("'data_offsets' must be [begin, end]");
  for (const json& x : *off)
    if (!x.is_number_unsigned() || x.get<uint64_t>() > static_cast<uint64_t>(data_bytes))
      return bad("data_offsets ", off->dump(), " outside the data section of ", data_bytes, " bytes");
  int64_t begin = (*off)[0].get<int64_t>(), end = (*off)[1].get<int64_t>();
  if (end < begin) return bad("data_offsets ", off->dump(), " end before begin");
  KILN_ASSIGN_OR_RETURN(int64_t want, checked_nbytes(e.dtype, e.shape, str_cat(where, ": tensor '", name, "'")));
  if (end - begin != want)
    return bad(dt->get<std::string>(), sh->dump(), " needs ", want, " bytes, data_offsets ", off->dump(), " hold ",
               end - begin);
  e.offset = begin;
  e.nbytes = want;
  return e;
}

}  // namespace

struct SafetensorsFile::Mapping {
  std::string path;
  const uint8_t* base = nullptr;
  size_t size = 0;
  int64_t data_start = 0;
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  ~Mapping() {
    if (base) ::munmap(const_cast<uint8_t*>(base), size);
  }
};

absl::StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto m = std::make_shared<Mapping>();
  m->path = path;
  {
    // O_NONBLOCK: a FIFO with no writer is refused below instead of hanging here.
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      std::string msg = str_cat(path, ": cannot open: ", std::strerror(e));
      return e == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
    }
    struct stat st;
    int r = ::fstat(fd, &st);
    if (r != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return invalid_argument(path, ": not a regular file");
    }
    if (st.st_size < 8) {
      ::close(fd);
      return invalid_argument(path, ": ", st.st_size, " bytes, too short for the 8-byte header length");
    }
    void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) return invalid_argument(path, ": cannot map: ", std::strerror(e));
    m->base = static_cast<const uint8_t*>(p);
    m->size = static_cast<size_t>(st.st_size);
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | m->base[i];
  const int64_t file_size = static_cast<int64_t>(m->size);
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes) || static_cast<int64_t>(header_len) > file_size - 8)
    return invalid_argument(path, ": byte 0: header length ", header_len, " does not fit the file of ", file_size,
                            " bytes (or the format's limit of ", kMaxHeaderBytes, ")");
  m->data_start = 8 + static_cast<int64_t>(header_len);
  const int64_t data_bytes = file_size - m->data_start;
  std::string_view text(reinterpret_cast<const char*>(m->base) + 8, header_len);

  // Duplicate top-level names would be silently merged by the parser: count them as they come.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth == 1 && ev == json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text, cb);
  } catch (const json::parse_error& e) {
    return invalid_argument(path, ": byte ", 8 + e.byte - (e.byte > 0 ? 1 : 0), ": header is not valid JSON: ", e.what());
  }
  if (!duplicate.empty()) return invalid_argument(path, ": header: tensor '", duplicate, "' appears twice");
  if (!header.is_object()) return invalid_argument(path, ": header: expected a JSON object, got ", header.type_name());
  const std::string where = str_cat(path, ": header");
  for (const auto& [name, val] : header.items()) {
    if (name == "__metadata__") {
      if (!val.is_object()) return invalid_argument(where, ": '__metadata__' must be an object of strings");
      for (const auto& [k, v] : val.items()) {
        if (!v.is_string()) return invalid_argument(where, ": '__metadata__' entry '", k, "' must be a string");
        m->metadata[k] = v.get<std::string>();
      }
      continue;
    }
    KILN_ASSIGN_OR_RETURN(SafetensorsEntry e, parse_entry(where, name, val, data_bytes));
    m->entries.push_back(std::move(e));
  }
  // The tensors tile the data section: sorted by offset, each starts where the last ended.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : m->entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  int64_t at = 0;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->offset != at)
      return invalid_argument(where, ": tensor '", e->name, "' starts at data offset ", e->offset, ", expected ", at,
                              e->offset < at ? " (it overlaps the tensor before it)" : " (a gap before it)");
    at = e->offset + e->nbytes;
  }
  if (at != data_bytes)
    return invalid_argument(path, ": the tensors end at data offset ", at, " but the data section holds ", data_bytes,
                            " bytes");
  std::sort(m->entries.begin(), m->entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  SafetensorsFile f;
  f.map_ = std::move(m);
  return f;
}

const std::string& SafetensorsFile::path() const { return map_->path; }
const std::vector<SafetensorsEntry>& SafetensorsFile::tensors() const { return map_->entries; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return map_->metadata; }

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(map_->entries.begin(), map_->entries.end(), name,
                             [](const SafetensorsEntry& e, std::string_view n) { return e.name < n; });
  return it != map_->entries.end() && it->name == name ? &*it : nullptr;
}

std::span<const uint8_t> SafetensorsFile::bytes(const SafetensorsEntry& e) const {
  return {map_->base + map_->data_start + e.offset, static_cast<size_t>(e.nbytes)};
}

absl::StatusOr<HostTensor> SafetensorsFile::read(std::string_view name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) return absl::NotFoundError(str_cat(map_->path, ": no tensor '", name, "'"));
  KILN_RETURN_IF_ERROR(check_allocation(e->nbytes, host_allocation_limit(), str_cat("tensor '", name, "'")));
  HostTensor t(e->dtype, e->shape);
  std::span<const uint8_t> b = bytes(*e);
  if (!b.empty()) std::memcpy(t.data(), b.data(), b.size());
  return t;
}

absl::StatusOr<HostTensor> SafetensorsFile::read_chunk(std::string_view name, int64_t axis, int64_t index,
                                                       int64_t count) const {
  const SafetensorsEntry* e = find(name);
  if (!e) return absl::NotFoundError(str_cat(map_->path, ": no tensor '", name, "'"));
  const int64_t rank = static_cast<int64_t>(e->shape.size());
  if (axis < 0 || axis >= rank || count < 1 || index < 0 || index >= count || e->shape[axis] % count != 0)
    return invalid_argument(map_->path, ": tensor '", name, "' of shape [",
                            str_join(e->shape, ", ", [](int64_t d) { return str_cat(d); }), "] has no chunk ", index,
                            " of ", count, " along axis ", axis);
  std::vector<int64_t> shape = e->shape;
  shape[axis] /= count;
  int64_t outer = 1, inner = dtype_size(e->dtype);
  for (int64_t a = 0; a < axis; ++a) outer *= e->shape[a];
  for (int64_t a = axis + 1; a < rank; ++a) inner *= e->shape[a];
  HostTensor t(e->dtype, shape);
  const int64_t piece = shape[axis] * inner, row = e->shape[axis] * inner;  // bytes
  std::span<const uint8_t> b = bytes(*e);
  for (int64_t o = 0; o < outer && piece > 0; ++o)
    std::memcpy(static_cast<uint8_t*>(t.data()) + o * piece, b.data() + o * row + index * piece,
                static_cast<size_t>(piece));
  return t;
}

absl::Status write_safetensors(const std::string& path, const std::map<std::string, HostTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  auto fail = [&](const auto&... a) { return invalid_argument(path, ": ", a...); };
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t at = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") return fail("'__metadata__' cannot name a tensor");
    std::optional<std::string_view> dt = st_dtype_name(t.dtype());
    if (!dt) return fail("tensor '", name, "': dtype ", dtype_name(t.dtype()), " has no safetensors name");
    int64_t end = at + t.nbytes();
    header[name] = {{"dtype", std::string(*dt)}, {"shape", t.shape()}, {"data_offsets", {at, end}}};
    at = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  return write_file_atomically(path, [&](std::FILE* f) {
    bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    for (const auto& [name, t] : tensors)
      ok = ok && std::fwrite(t.data(), 1, static_cast<size_t>(t.nbytes()), f) == static_cast<size_t>(t.nbytes());
    return ok;
  });
}

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint c;
  c.dir_ = dir;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  std::error_code ec;
  std::vector<std::string> shards;
  std::map<std::string, std::string> listed;  // tensor -> shard, from the index
  if (fs::exists(index_path, ec)) {
    KILN_ASSIGN_OR_RETURN(std::string text, read_regular_file(index_path, kMaxHeaderBytes));
    json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      return invalid_argument(index_path, ": expected a JSON object with a 'weight_map' object");
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) return invalid_argument(index_path, ": weight_map['", name, "'] must be a file name");
      std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "..")
        return invalid_argument(index_path, ": weight_map['", name, "'] = '", f, "' is not a file of the directory");
      listed[name] = f;
      if (std::find(shards.begin(), shards.end(), f) == shards.end()) shards.push_back(f);
    }
    std::sort(shards.begin(), shards.end());
  } else if (fs::exists(single_path, ec)) {
    shards.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(str_cat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  for (const std::string& s : shards) {
    KILN_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open((fs::path(dir) / s).string()));
    for (const SafetensorsEntry& e : f.tensors()) {
      auto [it, fresh] = c.where_.emplace(e.name, c.files_.size());
      if (!fresh)
        return invalid_argument(f.path(), ": tensor '", e.name, "' is also in ", c.files_[it->second].path());
    }
    c.files_.push_back(std::move(f));
  }
  for (const auto& [name, shard] : listed) {
    auto it = c.where_.find(name);
    if (it == c.where_.end() || fs::path(c.files_[it->second].path()).filename() != shard)
      return invalid_argument(index_path, ": tensor '", name, "' is listed in ", shard, " but is not there");
  }
  return c;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

absl::StatusOr<std::pair<const SafetensorsFile*, const SafetensorsEntry*>> SafetensorsCheckpoint::find(
    std::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(str_cat(dir_, ": no tensor '", name, "' in the checkpoint"));
  const SafetensorsFile& f = files_[it->second];
  return std::make_pair(&f, f.find(name));
}

absl::StatusOr<HostTensor> SafetensorsCheckpoint::read(std::string_view name) const {
  KILN_ASSIGN_OR_RETURN(auto fe, find(name));
  return fe.first->read(name);
}

absl::StatusOr<HostTensor> SafetensorsCheckpoint::read_chunk(std::string_view name, int64_t axis, int64_t index,
                                                             int64_t count) const {
  KILN_ASSIGN_OR_RETURN(auto fe, find(name));
  return fe.first->read_chunk(name, axis, index, count);
}

}  // namespace kiln
