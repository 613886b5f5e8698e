#include "compiler/package.h"

#include <cstring>
#include <map>
#include <optional>

#include "ir/checked.h"
#include "ir/file_io.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/status.h"
#include "ir/str.h"
#include "kiln_git.h"
#include "runtime/sha256.h"
#if KILN_WITH_LLVM
#include "runtime/cpu/jit.h"
#endif
#if KILN_WITH_CUDA_BACKEND
#include "runtime/cuda/device.h"
#include "runtime/nvrtc.h"
#endif

namespace kiln {
namespace {

template <typename... A>
absl::Status failed_precondition(const A&... a) {
  return absl::FailedPreconditionError(str_cat(a...));
}

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'P', 'K', 'G', '\0'};
constexpr uint64_t kFormatVersion = 1;

class Writer {
 public:
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_ += static_cast<char>(uint8_t(v >> (8 * i)));
  }
  void str(std::string_view s) {
    u64(s.size());
    out_.append(s);
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Bounded reads of a package's fields: past the end is an error naming the field.
class Reader {
 public:
  Reader(std::string_view bytes, const std::string& name) : b_(bytes), name_(name) {}
  absl::StatusOr<uint64_t> u64(std::string_view what) {
    if (b_.size() - at_ < 8) return truncated(what);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(b_[at_ + i])) << (8 * i);
    at_ += 8;
    return v;
  }
  absl::StatusOr<std::string> str(std::string_view what) {
    KILN_ASSIGN_OR_RETURN(uint64_t n, u64(what));
    if (n > b_.size() - at_) return truncated(what);
    std::string s(b_.substr(at_, n));
    at_ += n;
    return s;
  }
  // A count of items of at least `min_bytes` each: no larger than what is left can hold.
  absl::StatusOr<uint64_t> count(std::string_view what, uint64_t min_bytes) {
    KILN_ASSIGN_OR_RETURN(uint64_t n, u64(what));
    if (n > (b_.size() - at_) / min_bytes) return truncated(what);
    return n;
  }
  bool done() const { return at_ == b_.size(); }

 private:
  absl::Status truncated(std::string_view what) const {
    return invalid_argument(name_, ": malformed kiln package: ", what, " at byte ", at_, " runs past the end");
  }
  std::string_view b_;
  const std::string& name_;
  size_t at_ = 0;
};

std::string_view device_word(DeviceId d) { return d.type == DeviceType::cuda ? "cuda" : "cpu"; }

// The process-wide kernel cache that compile() uses for `d`, and what it compiles for
// (the part of every kernel's cache key that depends on the build and the machine).
struct DeviceCache {
  KernelCache* cache = nullptr;
  std::string target;
};
absl::StatusOr<DeviceCache> device_cache(std::string_view device, const DeviceAdapter& adapter) {
#if KILN_WITH_CUDA_BACKEND
  if (device == "cuda") return DeviceCache{&cuda::kernel_cache(), str_cat(adapter.arch(), ", NVRTC ", cuda::nvrtc_version())};
#endif
#if KILN_WITH_LLVM
  if (device == "cpu") return DeviceCache{&cpu::CpuJit::instance().kernel_cache(), cpu::CpuJit::instance().target()};
#endif
  return failed_precondition("this kiln has no ", device, " backend");
}

}  // namespace

absl::StatusOr<Graph> package_graph(const Graph& g) {
  KILN_ASSIGN_OR_RETURN(Graph out, parse_graph(print_graph(g), g.name()));
  for (const Value* v : g.params())
    if (v->data()) KILN_RETURN_IF_ERROR(out.set_param_data(out.find(v->name()), v->data()));
  return out;
}

absl::Status save_compiled(const Graph& source, const CompiledGraph& cg, const std::string& path) {
  if (source.name() != cg.graph().name())
    return invalid_argument("save_compiled: graph ", source.name(), " is not the graph compiled (", cg.graph().name(), ")");
  std::string_view device = device_word(cg.device());
  const CompileOptions& o = cg.options();
  // The graph as the loader will compile it, its specializations built (compile only): kernels
  // that `cg` built are cache hits, those whose value names differ are compiled here.
  KILN_ASSIGN_OR_RETURN(Graph canonical, package_graph(source));
  CompileOptions co = o;
  co.device = *parse_device(device);
  co.compile_only = true;
  co.dump_dir.clear();
  KILN_ASSIGN_OR_RETURN(CompiledGraph built, compile(canonical, co));
  std::vector<CompiledGraph::SpecializationInfo> specs = cg.specialization_info();
  for (const CompiledGraph::SpecializationInfo& s : specs)
    KILN_RETURN_IF_ERROR(prefix_error(built.warm_up(s.bindings), "save_compiled: specialization ", s.guards, ": "));
  KILN_ASSIGN_OR_RETURN(DeviceCache dc, device_cache(device, built.device_adapter()));
  Writer w;
  w.bytes().append(kMagic, 8);
  w.u64(kFormatVersion);
  for (std::string_view s : {std::string_view(KILN_VERSION), std::string_view(KILN_GIT_HASH), device,
                             std::string_view(dc.target), mode_name(o.mode)})
    w.str(s);
  w.u64(o.dynamic);
  w.u64(o.fused_attention);
  w.str(print_graph(canonical));
  std::vector<const Value*> with_data;
  for (const Value* v : canonical.params())
    if (v->data()) with_data.push_back(v);
  w.u64(with_data.size());
  for (const Value* v : with_data) {
    w.str(v->name());
    w.str(std::string_view(reinterpret_cast<const char*>(v->data()->data()), v->data()->nbytes()));
  }
  w.u64(specs.size());
  for (const CompiledGraph::SpecializationInfo& s : specs) {
    w.str(s.guards);
    std::map<std::string, int64_t> sorted(s.bindings.begin(), s.bindings.end());
    w.u64(sorted.size());
    for (const auto& [sym, value] : sorted) {
      w.str(sym);
      w.u64(static_cast<uint64_t>(value));
    }
  }
  auto kernels = dc.cache->entries();
  w.u64(kernels.size());
  for (const auto& [key, k] : kernels) {
    w.str(key);
    w.str(k->cubin);
    w.str(k->ptx);
  }
  std::vector<TuneStore::Record> tune = TuneStore::instance().records();
  w.u64(tune.size());
  for (const TuneStore::Record& r : tune) {
    w.str(r.key);
    w.str(r.choice);
    w.str(r.note);
  }
  Sha256::Digest sum = Sha256::hash(w.bytes());
  w.bytes().append(reinterpret_cast<const char*>(sum.data()), sum.size());
  const std::string& bytes = w.bytes();
  return write_file_atomically(path, [&](std::FILE* f) { return std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(); });
}

absl::StatusOr<Package> parse_package(std::string_view bytes, const std::string& name) {
  if (bytes.size() < 16 + 32 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    return invalid_argument(name, ": not a kiln package (no KILNPKG header)");
  std::string_view body = bytes.substr(0, bytes.size() - 32);
  Reader header(body.substr(8), name);
  KILN_ASSIGN_OR_RETURN(uint64_t version, header.u64("the format version"));
  if (version != kFormatVersion)
    return failed_precondition(name, ": kiln package format ", version, "; this kiln reads format ", kFormatVersion);
  Sha256::Digest sum = Sha256::hash(body);
  if (std::memcmp(sum.data(), bytes.data() + body.size(), 32) != 0)
    return invalid_argument(name, ": corrupted kiln package: its SHA-256 checksum does not match (",
                            bytes.size(), " bytes; truncated or changed)");

  Reader r(body.substr(16), name);
  Package p;
  KILN_ASSIGN_OR_RETURN(p.kiln_version, r.str("the kiln version"));
  KILN_ASSIGN_OR_RETURN(p.git, r.str("the git hash"));
  KILN_ASSIGN_OR_RETURN(p.device, r.str("the device"));
  KILN_ASSIGN_OR_RETURN(p.target, r.str("the target"));
  KILN_ASSIGN_OR_RETURN(std::string mode, r.str("the mode"));
  std::optional<Device> device = parse_device(p.device);
  std::optional<Mode> m = parse_mode(mode);
  if (!device || *device == Device::Auto || !m)
    return invalid_argument(name, ": malformed kiln package: device '", p.device, "', mode '", mode, "'");
  p.options.device = *device;
  p.options.mode = *m;
  KILN_ASSIGN_OR_RETURN(uint64_t dynamic, r.u64("the dynamic flag"));
  KILN_ASSIGN_OR_RETURN(uint64_t fused, r.u64("the fused-attention flag"));
  p.options.dynamic = dynamic != 0;
  p.options.fused_attention = fused != 0;
  KILN_ASSIGN_OR_RETURN(std::string text, r.str("the graph"));
  KILN_ASSIGN_OR_RETURN(p.graph, parse_graph(text, str_cat(name, ": graph")));

  KILN_ASSIGN_OR_RETURN(uint64_t n_params, r.count("the parameter count", 16));
  for (uint64_t i = 0; i < n_params; ++i) {
    KILN_ASSIGN_OR_RETURN(std::string pname, r.str("a parameter's name"));
    KILN_ASSIGN_OR_RETURN(std::string data, r.str(str_cat("parameter ", pname, "'s data")));
    Value* v = p.graph.find(pname);
    if (v == nullptr || !v->is_param())
      return invalid_argument(name, ": malformed kiln package: data for %", pname, ", which is no parameter of the graph");
    std::vector<int64_t> shape;
    for (const SymExpr& d : v->shape()) {
      std::optional<int64_t> c = d.constant();
      if (!c) return invalid_argument(name, ": malformed kiln package: data for %", pname, " of symbolic shape");
      shape.push_back(*c);
    }
    KILN_ASSIGN_OR_RETURN(int64_t nbytes, checked_nbytes(v->dtype(), shape, str_cat("parameter %", pname)));
    if (nbytes != static_cast<int64_t>(data.size()))
      return invalid_argument(name, ": malformed kiln package: %", pname, " (", v->type().to_string(), ") needs ", nbytes,
                              " bytes, the package holds ", data.size());
    auto t = std::make_shared<HostTensor>(v->dtype(), shape);
    std::memcpy(t->data(), data.data(), data.size());
    KILN_RETURN_IF_ERROR(p.graph.set_param_data(v, std::move(t)));
  }

  KILN_ASSIGN_OR_RETURN(uint64_t n_specs, r.count("the specialization count", 16));
  for (uint64_t i = 0; i < n_specs; ++i) {
    Package::Specialization s;
    KILN_ASSIGN_OR_RETURN(s.guards, r.str("a specialization's guards"));
    KILN_ASSIGN_OR_RETURN(uint64_t n, r.count("a binding count", 16));
    for (uint64_t j = 0; j < n; ++j) {
      KILN_ASSIGN_OR_RETURN(std::string sym, r.str("a symbol"));
      KILN_ASSIGN_OR_RETURN(uint64_t value, r.u64("a symbol's value"));
      s.bindings[sym] = static_cast<int64_t>(value);
    }
    p.specializations.push_back(std::move(s));
  }
  KILN_ASSIGN_OR_RETURN(uint64_t n_kernels, r.count("the kernel count", 24));
  for (uint64_t i = 0; i < n_kernels; ++i) {
    KILN_ASSIGN_OR_RETURN(std::string key, r.str("a kernel's key"));
    auto k = std::make_shared<CompiledKernel>();
    KILN_ASSIGN_OR_RETURN(k->cubin, r.str("a kernel's code"));
    KILN_ASSIGN_OR_RETURN(k->ptx, r.str("a kernel's text"));
    p.kernels.emplace_back(std::move(key), std::move(k));
  }
  KILN_ASSIGN_OR_RETURN(uint64_t n_tune, r.count("the tune record count", 24));
  for (uint64_t i = 0; i < n_tune; ++i) {
    TuneStore::Record t;
    KILN_ASSIGN_OR_RETURN(t.key, r.str("a tune record's key"));
    KILN_ASSIGN_OR_RETURN(t.choice, r.str("a tune record's choice"));
    KILN_ASSIGN_OR_RETURN(t.note, r.str("a tune record's note"));
    p.tune.push_back(std::move(t));
  }
  if (!r.done()) return invalid_argument(name, ": malformed kiln package: bytes after the last field");
  p.name = name;
  return p;
}

absl::StatusOr<Package> read_package(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_regular_file(path, max_input_file_bytes()));
  return parse_package(bytes, path);
}

absl::StatusOr<CompiledGraph> load_compiled(const Package& p, const PackageOptions& options) {
  if (p.kiln_version != KILN_VERSION)
    return failed_precondition(p.name, ": built by kiln ", p.kiln_version, " (git ", p.git, "); this is kiln ",
                               KILN_VERSION, " (git ", KILN_GIT_HASH, "): compile the graph again");
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<DeviceAdapter> adapter,
                        make_device_adapter(p.options.device, options.cuda_device, options.compile_only));
  KILN_ASSIGN_OR_RETURN(DeviceCache dc, device_cache(p.device, *adapter));
  if (dc.target != p.target)
    return failed_precondition(p.name, ": compiled for ", p.device, " ", p.target, "; this machine compiles for ",
                               p.device, " ", dc.target, ": compile the graph again");
  for (const auto& [key, k] : p.kernels)
    if (absl::Status s = dc.cache->insert(key, k); !s.ok()) return prefix_error(s, p.name, ": ");
  for (const TuneStore::Record& r : p.tune) TuneStore::instance().insert(r);
  CompileOptions o = p.options;
  o.cuda_device = options.cuda_device;
  o.dump_dir = options.dump_dir;
  o.compile_only = options.compile_only;
  KILN_ASSIGN_OR_RETURN(CompiledGraph cg, compile(p.graph, std::move(adapter), o));
  for (const Package::Specialization& s : p.specializations)
    if (absl::Status st = cg.warm_up(s.bindings); !st.ok())
      return prefix_error(st, p.name, ": specialization ", s.guards, ": ");
  return cg;
}

absl::StatusOr<CompiledGraph> load_compiled(const std::string& path, const PackageOptions& options) {
  KILN_ASSIGN_OR_RETURN(Package p, read_package(path));
  return load_compiled(p, options);
}

}  // namespace kiln
