#include "runtime/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>

#include "codegen/gemm.h"
#include "ir/status.h"
#include "ir/str.h"

// OpenBLAS's own (driver/others/dynamic.c of a DYNAMIC_ARCH build, global in its archive):
// quit forgets the core's kernel table; init picks one again (OPENBLAS_CORETYPE's if set,
// else by CPUID) and runs its init(), which sets the table's own blocking sizes. Buffers
// are sized at compile time for every core (memory.c's BUFFER_SIZE), and a call reads the
// table afresh, so swapping it while no BLAS call runs is safe.
extern "C" void gotoblas_dynamic_init(void);
extern "C" void gotoblas_dynamic_quit(void);
// OpenBLAS's (driver/others/blas_server.c, pthreads build): stops the worker threads its
// load-time init started (one per core but one); a later call that wants more than one
// thread starts them again (exec_blas), which kiln's calls never do (one thread each).
extern "C" int blas_thread_shutdown_(void);

namespace kiln::cpu {
namespace {

// One thread's time per multiply-add, for ThreadPool::threads_for (measured: the zoo's
// GEMMs through OpenBLAS's SkylakeX kernels on the build machine).
constexpr double kNsPerMac = 0.025;

// Up to this many rows of C, a weight B of [N, K] runs from a kept [K, N] copy: OpenBLAS's
// sgemm (0.3.21, znver4, one thread) took 1.5-2.3x less time for m = 2..32 and 1.1-1.3x
// for m = 64 with k = n = 1024 (about even beyond 128 rows, where the copy would only cost
// memory). One row runs sgemv, which took 0.8-1.7x as long on either layout (no winner).
constexpr int64_t kKnCopyMaxRows = 64;


// Calls f(flat, offset) for every point of `dims` (row-major), offset = sum index * stride.
template <typename F>
void for_each_offset(const std::vector<std::pair<int64_t, int64_t>>& dims, F f) {
  std::vector<int64_t> idx(dims.size(), 0);
  int64_t total = 1;
  for (auto [e, s] : dims) total *= e;
  int64_t off = 0;
  for (int64_t flat = 0; flat < total; ++flat) {
    f(flat, off);
    for (size_t d = dims.size(); d-- > 0;) {
      off += dims[d].second;
      if (++idx[d] < dims[d].first) break;
      off -= dims[d].second * dims[d].first;
      idx[d] = 0;
    }
  }
}

// Outer dims merged where they are one strided run (size-1 dims dropped).
std::vector<std::pair<int64_t, int64_t>> collapse(const std::vector<std::pair<int64_t, int64_t>>& dims) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (auto [e, s] : dims) {
    if (e == 1) continue;
    if (!out.empty() && out.back().second == s * e) out.back() = {out.back().first * e, s};
    else out.push_back({e, s});
  }
  return out;
}

// The layout BLAS sees for an operand with `rows_outer` outer elements (m for A, n for B):
// in place when f32 and one strided run, else a dense packed copy.
void choose_layout(GemmRunner::Operand& op, int64_t outer, int64_t k, int64_t batches) {
  auto run = collapse(op.outer);
  if (op.dtype == DType::f32 && run.size() <= 1) {
    int64_t so = run.empty() ? 0 : run[0].second;
    if ((k <= 1 || op.k_stride == 1) && (outer <= 1 || so >= std::max<int64_t>(k, 1))) {
      op.k_contiguous = true;
      op.ld = outer <= 1 ? std::max<int64_t>(k, 1) : so;
      return;
    }
    if ((outer <= 1 || so == 1) && (k <= 1 || op.k_stride >= std::max<int64_t>(outer, 1))) {
      op.k_contiguous = false;
      op.ld = k <= 1 ? std::max<int64_t>(outer, 1) : op.k_stride;
      return;
    }
  }
  op.pack = true;
  op.k_contiguous = op.k_stride == 1;  // keep the source's fast index fast
  op.ld = std::max<int64_t>(op.k_contiguous ? k : outer, 1);
  op.pack_elems = batches * outer * k;
}

template <typename T, typename Conv>
void pack_as(const GemmRunner::Operand& op, int64_t k, const void* src, float* dst, Conv conv) {
  const T* s = static_cast<const T*>(src);
  int64_t outer = 1;
  for (auto [e, st] : op.outer) outer *= e;
  for_each_offset(op.batch, [&](int64_t bi, int64_t boff) {
    float* block = dst + bi * outer * k;
    for_each_offset(op.outer, [&](int64_t oi, int64_t ooff) {
      const T* p = s + op.offset + boff + ooff;
      if (op.k_contiguous)
        for (int64_t kk = 0; kk < k; ++kk) block[oi * k + kk] = conv(p[kk * op.k_stride]);
      else
        for (int64_t kk = 0; kk < k; ++kk) block[kk * outer + oi] = conv(p[kk * op.k_stride]);
    });
  });
}

}  // namespace

std::optional<GemmRunner> GemmRunner::make(const kir::Kernel& k) {
  if (!k.gemm || k.gemm->acc_dtype != DType::f32 || !blas_reads_in_place(k, false) || !blas_reads_in_place(k, true))
    return std::nullopt;
  const kir::GemmSpec& g = *k.gemm;
  GemmRunner r;
  r.m_dims_ = static_cast<size_t>(g.m_dims);
  r.kernel_ = k.name;
  r.spec_ = g;
  r.domain_ = k.domain;
  r.a_dtype_ = k.buffers[g.a.buffer].dtype;
  r.b_dtype_ = k.buffers[g.b.buffer].dtype;
  return r;
}

absl::StatusOr<GemmRunner::Bound> GemmRunner::bind(const Bindings& b, bool stable_b) const {
  auto eval = [&](const Dim& d) -> absl::StatusOr<int64_t> {
    absl::StatusOr<int64_t> v = d.evaluate(b);
    if (!v.ok()) return invalid_argument("kernel ", kernel_, ": GEMM: ", v.status().message());
    return v;
  };
  Bound out;
  absl::StatusOr<std::vector<int64_t>> dom = evaluate_shape(domain_, b);
  if (!dom.ok()) return invalid_argument("kernel ", kernel_, ": GEMM: ", dom.status().message());
  for (auto [dst, d] : {std::pair{&out.m, &spec_.m}, {&out.n, &spec_.n}, {&out.k, &spec_.k}}) {
    KILN_ASSIGN_OR_RETURN(*dst, eval(*d));
  }
  size_t nb = spec_.batch.size();
  for (size_t d = 0; d < nb; ++d) out.batches *= (*dom)[d];
  for (auto [op, src, dt] : {std::tuple{&out.a, &spec_.a, a_dtype_}, {&out.b, &spec_.b, b_dtype_}}) {
    bool is_a = op == &out.a;
    op->buffer = src->buffer;
    op->dtype = dt;
    KILN_ASSIGN_OR_RETURN(op->offset, eval(src->strides->offset));
    KILN_ASSIGN_OR_RETURN(op->k_stride, eval(src->strides->k));
    for (size_t d = 0; d < domain_.size(); ++d) {
      bool is_m = d >= nb && d < nb + m_dims_, is_n = d >= nb + m_dims_;
      if ((is_a && is_n) || (!is_a && is_m)) continue;
      KILN_ASSIGN_OR_RETURN(int64_t s, eval(src->strides->outer[d]));
      (d < nb ? op->batch : op->outer).push_back({(*dom)[d], s});
    }
  }
  // A B shared by every batch (a linear on [B, S, H]: the weight's batch strides are 0) makes
  // the batches more rows of one GEMM, C being dense over [batches, m]: one BLAS call with
  // B*S rows instead of B calls, where A's batch and row dims are one strided run (or A is
  // packed anyway).
  auto shared = [](const std::vector<std::pair<int64_t, int64_t>>& dims) {
    return std::all_of(dims.begin(), dims.end(), [](auto d) { return d.first == 1 || d.second == 0; });
  };
  if (out.batches > 1 && shared(out.b.batch)) {
    std::vector<std::pair<int64_t, int64_t>> rows = out.a.batch;
    rows.insert(rows.end(), out.a.outer.begin(), out.a.outer.end());
    if (out.a.dtype != DType::f32 || collapse(rows).size() <= 1) {
      out.a.outer = std::move(rows);
      out.a.batch.clear();
      out.b.batch.clear();
      out.m *= out.batches;
      out.batches = 1;
    }
  }
  choose_layout(out.a, out.m, out.k, out.batches);
  choose_layout(out.b, out.n, out.k, out.batches);
  // A weight's packed copy (kept while the weights stay) is laid out [K, N], whatever m is,
  // so that one copy serves every call; an f32 weight read in place as [N, K] gets one
  // where few rows make it pay.
  Operand& w = out.b;
  bool small = out.m >= 2 && out.m <= kKnCopyMaxRows;
  if (stable_b && out.k > 1 && out.n > 1 && (w.pack || (w.k_contiguous && small))) {
    w.pack = true;
    w.k_contiguous = false;
    w.ld = out.n;
    w.pack_elems = out.batches * out.n * out.k;
  }
  for (int64_t v : {out.m, out.n, out.k, out.a.ld, out.b.ld})
    if (v > INT_MAX)
      return invalid_argument("kernel ", kernel_, ": GEMM of m ", out.m, " n ", out.n, " k ", out.k,
                              " exceeds BLAS's 32-bit sizes");
  return out;
}

uint64_t GemmRunner::fingerprint(const Operand& op, int64_t k, const void* src) {
  // 16 elements spread over the operand (index d of each dim stepped by a different odd
  // multiplier), their bytes hashed FNV-1a. An operand with no elements (k or an extent of
  // 0) has no bytes to sample: its allocation may be a single placeholder byte.
  const int64_t size = dtype_size(op.dtype);
  uint64_t h = 1469598103934665603ull;
  bool empty = k == 0;
  for (const auto* dims : {&op.batch, &op.outer})
    for (const auto& d : *dims) empty = empty || d.first == 0;
  if (empty) return h;
  for (int64_t s = 0; s < 16; ++s) {
    int64_t at = op.offset + (k > 0 ? (s * 7 + 3) % k : 0) * op.k_stride, mul = 11;
    for (const auto* dims : {&op.batch, &op.outer})
      for (auto [extent, stride] : *dims) {
        if (extent > 0) at += (s * mul + 5) % extent * stride;
        mul += 6;
      }
    const auto* bytes = static_cast<const unsigned char*>(src) + at * size;
    for (int64_t i = 0; i < size; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  }
  return h;
}

void GemmRunner::pack(const Operand& op, int64_t k, const void* src, float* dst) {
  switch (op.dtype) {
    case DType::f32: pack_as<float>(op, k, src, dst, [](float v) { return v; }); break;
    case DType::bf16:
      pack_as<uint16_t>(op, k, src, dst, [](uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); });
      break;
    case DType::f16: pack_as<uint16_t>(op, k, src, dst, [](uint16_t v) { return f16_bits_to_float(v); }); break;
    case DType::i32: pack_as<int32_t>(op, k, src, dst, [](int32_t v) { return static_cast<float>(v); }); break;
    case DType::i64: pack_as<int64_t>(op, k, src, dst, [](int64_t v) { return static_cast<float>(v); }); break;
    case DType::boolean: pack_as<uint8_t>(op, k, src, dst, [](uint8_t v) { return v ? 1.0f : 0.0f; }); break;
  }
}

void GemmRunner::run(const Bound& g, const void* a, const void* b, float* acc, ThreadPool& pool) {
  if (g.acc_elems() == 0) return;
  if (g.k == 0) {
    std::memset(acc, 0, static_cast<size_t>(g.acc_elems()) * sizeof(float));
    return;
  }
  // Per batch, where each operand's matrix starts (in floats).
  auto starts = [&](const Operand& op, int64_t outer) {
    std::vector<int64_t> s(g.batches);
    if (op.pack) {
      for (int64_t i = 0; i < g.batches; ++i) s[i] = i * outer * g.k;
    } else {
      for_each_offset(op.batch, [&](int64_t i, int64_t off) { s[i] = op.offset + off; });
    }
    return s;
  };
  std::vector<int64_t> as = starts(g.a, g.m), bs = starts(g.b, g.n);
  const float* af = static_cast<const float*>(a);
  const float* bf = static_cast<const float*>(b);
  // Tasks: whole batches when there are enough for the threads the GEMM is worth, else
  // blocks of rows (or of columns, for the few-rows GEMMs of decoding) of each batch's C.
  const double ns = static_cast<double>(g.acc_elems()) * static_cast<double>(g.k) * kNsPerMac;
  const int threads = pool.threads_for(ns);
  int64_t splits = threads <= 1 || g.batches >= threads ? 1 : 2 * threads;
  bool by_rows = g.m >= g.n;
  int64_t extent = by_rows ? g.m : g.n;
  // Column blocks stay multiples of 16 floats (whole cache lines of C), rounded up so that
  // there are at most `splits` blocks.
  int64_t grain = by_rows ? 1 : 16;
  int64_t block = ((extent + splits - 1) / splits + grain - 1) / grain * grain;
  int64_t blocks = (extent + block - 1) / block;
  int64_t tasks = g.batches * blocks;
  auto task = [&](int64_t t) {
    int64_t bi = t / blocks, lo = (t % blocks) * block, hi = std::min(extent, lo + block);
    const float* ap = af + as[bi];
    const float* bp = bf + bs[bi];
    float* cp = acc + bi * g.m * g.n;
    int64_t m = g.m, n = g.n;
    if (by_rows) {
      ap += g.a.k_contiguous ? lo * g.a.ld : lo;
      cp += lo * g.n;
      m = hi - lo;
    } else {
      bp += g.b.k_contiguous ? lo * g.b.ld : lo;
      cp += lo;
      n = hi - lo;
    }
    if (m == 1) {
      // One row of C (decoding): a matrix-vector product reads B once, where sgemm would
      // first copy B into its packed panels on every call.
      int incx = g.a.k_contiguous ? 1 : static_cast<int>(g.a.ld);
      if (g.b.k_contiguous)  // B is [n, k]
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(g.k), 1.0f, bp,
                    static_cast<int>(g.b.ld), ap, incx, 0.0f, cp, 1);
      else  // B is [k, n]
        cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(g.k), static_cast<int>(n), 1.0f, bp,
                    static_cast<int>(g.b.ld), ap, incx, 0.0f, cp, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, g.a.k_contiguous ? CblasNoTrans : CblasTrans, g.b.k_contiguous ? CblasTrans : CblasNoTrans,
                static_cast<int>(m), static_cast<int>(n), static_cast<int>(g.k), 1.0f, ap, static_cast<int>(g.a.ld), bp,
                static_cast<int>(g.b.ld), 0.0f, cp, static_cast<int>(std::max<int64_t>(g.n, 1)));
  };
  pool.parallel_ranges(tasks, ns, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) task(t);
  });
}

namespace {

std::string openblas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

// The instruction set an OpenBLAS 0.3.21 core's kernels are written for: 0 SSE, 1 AVX, 2 AVX2,
// 3 AVX-512. A name not listed (a later OpenBLAS's) counts as the best: kiln leaves it alone.
int core_tier(std::string_view core) {
  static constexpr std::string_view tiers[] = {
      " Katmai Coppermine Northwood Prescott Banias Atom Core2 Penryn Dunnington Nehalem Athlon Opteron"
      " Opteron_SSE3 Barcelona Nano Bobcat ",
      " Sandybridge Bulldozer Piledriver Steamroller ", " Haswell Excavator Zen ", " SkylakeX Cooperlake "};
  std::string word = str_cat(" ", core, " ");
  for (int t = 0; t < 4; ++t)
    if (tiers[t].find(word) != std::string_view::npos) return t;
  return 4;
}

std::string& core_line() {  // blas_core()'s text, set once by init_blas
  static std::string line;
  return line;
}

}  // namespace

std::string blas_core_for_cpu() {
  __builtin_cpu_init();
  // SkylakeX for AVX-512 with BF16 too: Cooperlake's sgemm and sgemv kernels are SkylakeX's
  // (0.3.21 adds only BF16 ones, which kiln does not call; its sgemm blocking differs a
  // little), and 0.3.21 cannot select Cooperlake by name: its lookup stops one short of it
  // and falls back to its own CPUID checks, which a CPU it does not know may fail again.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  if (__builtin_cpu_supports("avx")) return "Sandybridge";
  return "";
}

std::string choose_blas_core() {
  std::string picked = openblas_core();
  if (std::getenv("OPENBLAS_CORETYPE")) return str_cat(picked, " (set by OPENBLAS_CORETYPE)");
  std::string want = blas_core_for_cpu();
  if (want.empty() || core_tier(picked) >= core_tier(want)) return picked;
  setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
  // Another core than asked for where an OpenBLAS build lacks its kernels (DYNAMIC_LIST).
  std::string now = openblas_core();
  if (now != want) return str_cat(now, " (kiln asked for ", want, ": OpenBLAS picked ", picked, ")");
  return str_cat(now, " (chosen by kiln: OpenBLAS picked ", picked, ")");
}

void init_blas() {
  static std::once_flag once;
  std::call_once(once, [] {
    openblas_set_num_threads(1);
    // Its idle workers otherwise wake and spin (sched_yield) beside kiln's calls: measured on
    // the 2-core build machine, about a tenth of a single-thread zoo run's CPU samples on the
    // worker; on a 16-core VM, 15 of them.
    blas_thread_shutdown_();
    core_line() = choose_blas_core();
  });
}

std::string blas_core() {
  init_blas();
  return core_line();
}

}  // namespace kiln::cpu
