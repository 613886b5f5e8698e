#include "runtime/cuda/attention.h"

#include <algorithm>
#include <cstdlib>

#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cuda/device.h"
#include "runtime/nvrtc.h"

namespace kiln::cuda {
namespace {

// attention.cuh's KilnAttnArgs, field for field.
struct KernelArgs {
  CUdeviceptr q, k, v, out, mask, kv_lens, block_table, part_o, part_lse;
  long long batch, tq, tk, max_blocks, num_blocks, row_tiles;
  long long qs[4], ks[4], vs[4], os[4], ms[4];
  int splits, tiles_per_split;
};
static_assert(sizeof(KernelArgs) == 9 * 8 + 6 * 8 + 20 * 8 + 8);

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string AttentionPlan::to_string() const {
  if (cudnn) return cudnn->engine();
  return str_cat("config ", config, " grid ", grid[0], "x", grid[1], "x", grid[2], " splits ", splits);
}

AttentionKernels::AttentionKernels(const Context* ctx, std::string arch, AttentionForm f,
                                   std::vector<AttentionConfig> c, std::optional<DumpWriter> dump)
    : ctx_(ctx), arch_(std::move(arch)), form_(f), configs_(std::move(c)), dump_(std::move(dump)),
      sms_(ctx ? ctx->device().properties().sm_count : 132), loaded_(configs_.size()) {}

absl::StatusOr<std::unique_ptr<AttentionKernels>> AttentionKernels::build(const Context* ctx, const std::string& arch,
                                                                           const AttentionForm& f,
                                                                           const std::optional<DumpWriter>& dump,
                                                                           bool lazily) {
  KILN_RETURN_IF_ERROR(cuda_attention_supported(f));
  std::unique_ptr<AttentionKernels> k(new AttentionKernels(ctx, arch, f, attention_configs(f), dump));
  if (ctx && lazily) return k;
  std::vector<int> all(k->configs_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  KILN_RETURN_IF_ERROR(k->ensure(all));
  return k;
}

int AttentionKernels::compiled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(loaded_.begin(), loaded_.end(), [](const Loaded& l) { return l.compiled; }));
}

absl::Status AttentionKernels::ensure(const std::vector<int>& which) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> todo;
  std::vector<NvrtcProgram> programs;
  for (int i : which) {
    if (loaded_[i].compiled) continue;
    todo.push_back(i);
    programs.push_back({str_cat("kiln_attention_", configs_[i].name()), attention_source(form_, configs_[i]), arch_, {}});
  }
  auto compiled = nvrtc_compile_cached(kernel_cache(), programs);
  for (size_t j = 0; j < todo.size(); ++j) {
    if (!compiled[j].ok()) return prefix_error(compiled[j].status(), "attention ", form_.to_string(), ": ");
    if (dump_) {
      KILN_RETURN_IF_ERROR(dump_->write(programs[j].name + ".cu", programs[j].source));
      KILN_RETURN_IF_ERROR(dump_->write(programs[j].name + ".ptx", (*compiled[j])->ptx));
    }
    Loaded& l = loaded_[todo[j]];
    if (ctx_) {
      KILN_ASSIGN_OR_RETURN(const DriverApi* api, driver());
      KILN_ASSIGN_OR_RETURN(Module m, Module::load(*ctx_, (*compiled[j])->cubin));
      KILN_ASSIGN_OR_RETURN(l.main, m.function("kiln_attention"));
      KILN_ASSIGN_OR_RETURN(l.combine, m.function("kiln_attention_combine"));
      l.module.emplace(std::move(m));
      l.shared_bytes = attention_shared_bytes(form_, configs_[todo[j]]);
      KILN_RETURN_IF_ERROR(check(api->cuFuncSetAttribute(l.main, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                         l.shared_bytes),
                                 "cuFuncSetAttribute(attention shared memory)"));
    }
    l.compiled = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<AttentionPlan> AttentionKernels::plan(const AttentionCall& c, std::optional<int> config,
                                                     std::optional<int> splits) const {
  const int64_t rows = form_.group() * c.tq, bhs = c.batch * form_.kv_heads;
  if (rows <= 0 || bhs <= 0) return invalid_argument("attention with no rows: batch ", c.batch, ", Tq ", c.tq);
  if (rows + 256 > INT32_MAX || c.tk + 256 > INT32_MAX)  // the kernel counts rows and keys in 32 bits
    return invalid_argument("attention: ", rows, " query rows or ", c.tk, " keys exceed the kernel's 32-bit positions");
  // The kernel copies rows of q, k and v in 16-byte pieces and writes out in pairs.
  for (auto [name, st] : {std::pair{"q", c.qs}, {"k", c.ks}, {"v", c.vs}, {"out", c.os}}) {
    if (st[3] != 1) return invalid_argument("attention: ", name, "'s last dim must be contiguous, its stride is ", st[3]);
    if (st[0] % 8 != 0 || st[1] % 8 != 0 || st[2] % 8 != 0)
      return invalid_argument("attention: ", name, "'s strides must be multiples of 8 elements, not ", st[0], ", ",
                              st[1], ", ", st[2]);
  }
  AttentionPlan p;
  // Few rows per kv head (decode): split each key tile between the CTA's warps.
  // Else the larger row tile, unless it leaves most SMs idle (short prompts).
  p.config = config.value_or(rows <= 16 ? 2 : ceil_div(rows, configs_[0].rows()) * bhs >= sms_ ? 0 : 1);
  if (p.config < 0 || p.config >= static_cast<int>(configs_.size()))
    return invalid_argument("attention config ", p.config, " of ", configs_.size());
  const AttentionConfig& cf = configs_[p.config];
  p.row_tiles = ceil_div(rows, cf.rows());
  const int64_t key_tiles = ceil_div(std::max<int64_t>(c.tk, 1), cf.bn) + 1;  // +1: a window's unaligned start
  const int64_t ctas = p.row_tiles * bhs;
  // Decode: enough CTAs for two waves. Prefill: only splits that fill SMs one wave leaves
  // idle (a causal row tile's keys end at its diagonal: splits of early tiles are mostly
  // empty, and the combine costs a pass over the partials; H100, T=512 H=16: 0.026 ms
  // unsplit against 0.040 ms in two). Each split keeps at least 4 key tiles.
  const int64_t want = rows <= 16 ? ceil_div(2 * sms_, ctas) : sms_ / ctas;
  int64_t s = splits.value_or(std::clamp<int64_t>(want, 1, std::max<int64_t>(key_tiles / 4, 1)));
  s = std::clamp<int64_t>(s, 1, key_tiles);
  p.tiles_per_split = static_cast<int>(ceil_div(key_tiles, s));
  p.splits = static_cast<int>(ceil_div(key_tiles, p.tiles_per_split));
  if (p.row_tiles > 0x7fffffff || bhs > 65535 || p.splits > 65535)
    return invalid_argument("attention grid too large: ", p.row_tiles, " x ", bhs, " x ", p.splits);
  p.grid[0] = static_cast<unsigned>(p.row_tiles);
  p.grid[1] = static_cast<unsigned>(bhs);
  p.grid[2] = static_cast<unsigned>(p.splits);
  if (p.splits > 1) p.workspace_bytes = int64_t{p.splits} * bhs * p.row_tiles * cf.rows() * (form_.head_dim + 1) * 4;
  KILN_RETURN_IF_ERROR(ensure({p.config}));
  return p;
}

absl::StatusOr<AttentionPlan> AttentionKernels::cudnn_plan(const AttentionCall& c) const {
  if (!ctx_) return absl::FailedPreconditionError("cuDNN attention needs a device");
  if (const char* e = std::getenv("KILN_ATTENTION"); e && std::string_view(e) == "kiln")
    return absl::FailedPreconditionError("KILN_ATTENTION=kiln: kiln's kernels only");
  KILN_RETURN_IF_ERROR(cudnn_attention_supported(form_, c));
  const auto join = [](const std::array<int64_t, 4>& s) { return str_cat(s[0], ",", s[1], ",", s[2], ",", s[3]); };
  const std::string key =
      str_cat(c.batch, " ", c.tq, " ", c.tk, " ", join(c.qs), " ", join(c.ks), " ", join(c.vs), " ", join(c.os));
  AttentionPlan p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cudnn_.find(key);
    if (it != cudnn_.end()) p.cudnn = it->second;
  }
  if (!p.cudnn) {
    KILN_ASSIGN_OR_RETURN(p.cudnn, CudnnAttention::build(*ctx_, form_, c));
    std::lock_guard<std::mutex> lock(mu_);
    p.cudnn = cudnn_.emplace(key, p.cudnn).first->second;
  }
  p.workspace_bytes = p.cudnn->workspace_bytes();
  return p;
}

absl::Status AttentionKernels::launch(const AttentionPlan& p, const AttentionCall& c, CUdeviceptr workspace,
                                      CUstream stream) const {
  if (!ctx_) return absl::FailedPreconditionError("attention kernels compiled only (no device): they cannot run");
  for (auto [name, ptr] : {std::pair{"q", c.q}, {"k", c.k}, {"v", c.v}, {"out", c.out}})
    if (ptr % 16 != 0) return invalid_argument("attention: ", name, " must start 16-byte aligned, not at ", ptr);
  if (p.cudnn) return p.cudnn->run(c, workspace, stream);
  const AttentionConfig& cf = configs_[p.config];
  CUfunction main = nullptr, combine = nullptr;
  int shared_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (p.config < 0 || p.config >= static_cast<int>(loaded_.size()) || !loaded_[p.config].compiled)
      return absl::FailedPreconditionError(str_cat("attention config ", p.config, " is not loaded: launch a plan from plan()"));
    main = loaded_[p.config].main, combine = loaded_[p.config].combine, shared_bytes = loaded_[p.config].shared_bytes;
  }
  KernelArgs a{};
  a.q = c.q, a.k = c.k, a.v = c.v, a.out = c.out, a.mask = c.mask, a.kv_lens = c.kv_lens, a.block_table = c.block_table;
  const int64_t partials = int64_t{p.splits} * p.grid[1] * p.row_tiles * cf.rows();
  a.part_o = p.splits > 1 ? workspace : 0;
  a.part_lse = p.splits > 1 ? workspace + partials * form_.head_dim * 4 : 0;
  a.batch = c.batch, a.tq = c.tq, a.tk = c.tk, a.max_blocks = c.max_blocks, a.num_blocks = c.num_blocks;
  a.row_tiles = p.row_tiles;
  for (int i = 0; i < 4; ++i) a.qs[i] = c.qs[i], a.ks[i] = c.ks[i], a.vs[i] = c.vs[i], a.os[i] = c.os[i], a.ms[i] = c.ms[i];
  a.splits = p.splits, a.tiles_per_split = p.tiles_per_split;
  void* args[] = {&a};
  LaunchDims d;
  for (int i = 0; i < 3; ++i) d.grid[i] = p.grid[i];
  d.block[0] = static_cast<unsigned>(cf.threads());
  d.shared_bytes = static_cast<unsigned>(shared_bytes);
  KILN_RETURN_IF_ERROR(cuda::launch(main, d, args, stream));
  if (p.splits == 1) return absl::OkStatus();
  const int64_t threads = c.batch * form_.kv_heads * form_.group() * c.tq * (form_.head_dim / 2);
  LaunchDims cd;
  cd.grid[0] = static_cast<unsigned>(ceil_div(threads, 256));
  cd.block[0] = 256;
  return cuda::launch(combine, cd, args, stream);
}

}  // namespace kiln::cuda
