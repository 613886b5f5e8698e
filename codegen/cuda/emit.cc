// The CUDA printer's entry forms (printer.h) and the emission API (emit.h).
#include "codegen/cuda/emit.h"

#include <algorithm>
#include <map>

#include "codegen/acc_buffer.h"
#include "codegen/cuda/printer.h"
#include "codegen/cuda/schedule.h"
#include "codegen/gemm.h"
#include "codegen/intrinsics.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln::cuda {
namespace {

using kir::Schedule;

void vars_of_stage(const kir::Stage& st, std::set<int>& outer, std::set<int>& inner) {
  auto from_expr = [&](const kir::Expr& e) {
    kir::visit_exprs(e, [&](const kir::Expr& x) {
      if (x.node().index.defined()) kir::collect_vars(x.node().index, outer, inner);
    });
  };
  for (const kir::Let& l : st.lets) from_expr(l.value);
  if (st.value.defined()) from_expr(st.value);
  for (const kir::Store& s : st.stores) {
    from_expr(s.value);
    if (s.mask.defined()) from_expr(s.mask);
    kir::collect_vars(s.index, outer, inner);
  }
}

struct Combine {
  std::string acc_t;     // value type of the accumulator
  std::string identity;  // its start value
  // a (+) b for accumulator expressions a, b (argmax moves positions too, written apart)
  std::function<std::string(const std::string&, const std::string&)> step;
};

Combine combine_of(const kir::Stage& st) {
  bool f = is_float(st.acc_dtype), u = st.acc_dtype == DType::u64;  // u64 max/min/argmax are unsigned
  Combine c;
  c.acc_t = f ? "float" : u ? "unsigned long long" : "long long";
  switch (st.combiner) {
    case kir::Combiner::Sum:
      c.identity = f ? "0.0f" : "0LL";
      c.step = [f](const std::string& a, const std::string& b) {
        return f ? str_cat("(", a, " + ", b, ")") : str_cat("kiln_iadd(", a, ", ", b, ")");
      };
      break;
    case kir::Combiner::Prod:
      c.identity = f ? "1.0f" : "1LL";
      c.step = [f](const std::string& a, const std::string& b) {
        return f ? str_cat("(", a, " * ", b, ")") : str_cat("kiln_imul(", a, ", ", b, ")");
      };
      break;
    case kir::Combiner::Max:
      c.identity = f ? "(-kiln_inf())" : u ? "0ULL" : "(-9223372036854775807LL - 1)";
      c.step = [f, u](const std::string& a, const std::string& b) {
        return str_cat(f ? "kiln_fmax(" : u ? "kiln_umax(" : "kiln_imax(", a, ", ", b, ")");
      };
      break;
    case kir::Combiner::Min:
      c.identity = f ? "kiln_inf()" : u ? "18446744073709551615ULL" : "9223372036854775807LL";
      c.step = [f, u](const std::string& a, const std::string& b) {
        return str_cat(f ? "kiln_fmin(" : u ? "kiln_umin(" : "kiln_imin(", a, ", ", b, ")");
      };
      break;
    case kir::Combiner::ArgMax:
      c.identity = f ? "(-kiln_inf())" : u ? "0ULL" : "(-9223372036854775807LL - 1)";
      break;
  }
  return c;
}

}  // namespace

EntryPrinter::EntryPrinter(const kir::Kernel& k, const Bindings& baked, bool vector)
    : k_(k),
      s_(*k.schedule),
      baked_(baked),
      width_(vector ? k.schedule->width : 1),
      streamed_(vector && k.schedule->streams_l2),
      row_cache_chunks_(vector ? k.schedule->row_cache_chunks : 0),
      warp_gemm_(warp_gemm_form(k, baked)) {
  if (!vector) return;
  for (size_t i = 0; i < s_.value_cache.size(); ++i) {
    cache_store_[s_.value_cache[i].let] = str_cat("ec", i);
    for (int reader : s_.value_cache[i].readers) cache_read_[reader] = str_cat("ec", i);
  }
}

std::string EntryPrinter::print() {
  switch (s_.launch) {
    case Schedule::Launch::Elementwise: elementwise(); break;
    case Schedule::Launch::Stages: stages(); break;
    case Schedule::Launch::Rows: rows(); break;
  }
  return w_.take();
}

std::string EntryPrinter::entry_name() const { return width_ > 1 ? str_cat(k_.name, "_v", width_) : k_.name; }

void EntryPrinter::signature(int max_threads) {
  std::vector<bool> written(k_.buffers.size(), false);
  for (const kir::Stage& st : k_.stages)
    for (const kir::Store& s : st.stores) written[s.buffer] = true;
  std::vector<std::string> params;
  for (size_t b = 0; b < k_.buffers.size(); ++b) {
    std::string t = storage_type(k_.buffers[b].dtype);
    params.push_back(written[b] ? str_cat(t, "* __restrict__ b", b) : str_cat("const ", t, "* __restrict__ b", b));
  }
  for (const std::string& s : k_.symbols)
    if (!baked_.contains(s)) params.push_back(str_cat("long long S_", s));
  params.push_back("int stream_l2");
  w_.line(str_cat("// ", entry_name(), ": ", str_join(k_.buffers, ", ", [](const kir::Buffer& b) {
                    return str_cat(b.role == kir::Buffer::Role::Input ? "in " : "out ", b.name, ": ", dtype_name(b.dtype),
                                   shape_to_string(b.shape));
                  })));
  w_.open(str_cat("extern \"C\" __global__ void __launch_bounds__(", max_threads, ") ", entry_name(), "(",
                  str_join(params, ", ", [](const std::string& p) { return p; }), ") {"));
  if (streamed_) w_.line("const unsigned long long kpol = kiln_policy(stream_l2);");
}

// Declares the vars of `extents` in `used`, decomposed from the flat index `flat`.
void EntryPrinter::decompose(const std::string& flat, const std::vector<Dim>& extents, bool outer,
                             const std::set<int>& used) {
  for (int d : used) {
    if (d >= static_cast<int>(extents.size())) continue;
    Dim stride = 1;
    for (size_t e = d + 1; e < extents.size(); ++e) stride = stride * extents[e];
    std::string v = flat;
    if (stride != Dim(1)) v = str_cat("(", v, " / ", dim(stride), ")");
    if (d > 0) v = str_cat("(", v, " % ", dim(extents[d]), ")");
    w_.line(str_cat("const long long ", outer ? "o" : "r", d, is_vector_var(outer, d) ? "_0" : "", " = ", v, ";"));
  }
}

void EntryPrinter::elementwise() {
  signature(1024);
  std::set<int> outer, inner;
  for (const kir::Stage& st : k_.stages) vars_of_stage(st, outer, inner);
  if (k_.gemm)
    for (const kir::GemmOperand* op : {&k_.gemm->a, &k_.gemm->b}) kir::collect_vars(op->index, outer, inner);
  if (warp_gemm_) {
    // 32 threads per output element; blockDim.x is a multiple of 32, so a warp's lanes share
    // one element in every round of the grid-stride loop.
    w_.line(str_cat("const long long n = ", dim(shape_numel(k_.domain)), " * 32;"));
    w_.open("for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < n; c += (long long)gridDim.x * blockDim.x) {");
    w_.line("const long long i = c >> 5;");
    decompose("i", k_.domain, true, outer);
    warp_gemm();
    w_.open("if ((threadIdx.x & 31) == 0) {");
    for (size_t si = 0; si < k_.stages.size(); ++si) body(k_.stages[si], si, 1, {});
    w_.close();
    w_.close();
    w_.close();
    return;
  }
  if (width_ > 1) outer.insert(s_.vector_var);
  std::string per_width = width_ > 1 ? str_cat(" / ", width_) : std::string();
  w_.line(str_cat("const long long n = ", dim(shape_numel(k_.domain)), per_width, ";"));
  w_.open("for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < n; c += (long long)gridDim.x * blockDim.x) {");
  w_.line(str_cat("const long long i = c", width_ > 1 ? str_cat(" * ", width_) : std::string(), ";"));
  decompose("i", k_.domain, true, outer);
  if (k_.gemm) naive_gemm();
  for (size_t si = 0; si < k_.stages.size(); ++si) body(k_.stages[si], si, width_, {});
  w_.close();
  w_.close();
}

// The accumulator of one output element, summed over k by this thread.
void EntryPrinter::naive_gemm() {
  const kir::GemmSpec& g = *k_.gemm;
  auto operand = [&](const kir::GemmOperand& o) {
    DType t = k_.buffers[o.buffer].dtype;
    return cast(from_storage(str_cat("b", o.buffer, "[", index(o.index, At{}), "]"), t), t, g.acc_dtype);
  };
  w_.line(str_cat(value_type(g.acc_dtype), " acc = 0;"));
  std::string loop = str_cat("for (long long r0 = 0; r0 < ", dim(g.k), "; ++r0) acc ");
  if (is_float(g.acc_dtype)) w_.line(str_cat(loop, "+= ", operand(g.a), " * ", operand(g.b), ";"));
  else w_.line(str_cat(loop, "= kiln_iadd(acc, kiln_imul(", operand(g.a), ", ", operand(g.b), "));"));
}

// The accumulator of this warp's output element: lane l sums k = l, l + 32, ..., then a
// butterfly gives every lane the total. Where B's index is k plus a multiple of 16 bytes'
// worth of elements (its rows contiguous in k, as a linear layer's weight [N, K] is) and B
// is 16-byte aligned, lane l reads 16 bytes of B at k = l * V (V elements), then 32 * V
// further: a warp moves 512 bytes per load instead of 64.
void EntryPrinter::warp_gemm() {
  const kir::GemmSpec& g = *k_.gemm;
  auto operand = [&](const kir::GemmOperand& o) {
    DType t = k_.buffers[o.buffer].dtype;
    return cast(from_storage(str_cat("b", o.buffer, "[", index(o.index, At{}), "]"), t), t, g.acc_dtype);
  };
  const DType bt = k_.buffers[g.b.buffer].dtype;
  const int64_t v = dtype_size(bt) == 2 || dtype_size(bt) == 4 ? 16 / dtype_size(bt) : 0;
  std::map<std::string, SymExpr> bake;
  for (const auto& [sym, x] : baked_) bake[sym] = SymExpr(x);
  auto multiple_of_v = [&](const Dim& d) {
    std::optional<int64_t> c = d.substitute(bake).constant();
    return c && *c % v == 0;
  };
  std::optional<kir::AffineIndex> b = kir::affine_index(g.b.index, k_.domain.size(), 1);
  const bool vector = v > 0 && b && b->inner.size() == 1 && b->inner[0] == Dim(1) && multiple_of_v(b->offset) &&
                      multiple_of_v(g.k) && std::all_of(b->outer.begin(), b->outer.end(), multiple_of_v);
  const std::string scalar_loop =
      str_cat("for (long long r0 = threadIdx.x & 31; r0 < ", dim(g.k), "; r0 += 32) acc += ", operand(g.a), " * ",
              operand(g.b), ";");
  w_.line(str_cat(value_type(g.acc_dtype), " acc = 0;"));
  if (vector) {
    w_.open(str_cat("if ((reinterpret_cast<unsigned long long>(b", g.b.buffer, ") & 15) == 0) {"));
    w_.line("#pragma unroll 2");
    w_.open(str_cat("for (long long kb = (threadIdx.x & 31) * ", v, "; kb < ", dim(g.k), "; kb += ", 32 * v, ") {"));
    w_.line("uint4 wv;");
    w_.line(str_cat("{ const long long r0 = kb; wv = *reinterpret_cast<const uint4*>(&b", g.b.buffer, "[",
                    index(g.b.index, At{}), "]); }"));
    w_.line(str_cat("const ", storage_type(bt), "* wp = reinterpret_cast<const ", storage_type(bt), "*>(&wv);"));
    w_.line("#pragma unroll");
    w_.line(str_cat("for (int j = 0; j < ", v, "; ++j) { const long long r0 = kb + j; acc += ", operand(g.a), " * ",
                    cast(from_storage("wp[j]", bt), bt, g.acc_dtype), "; }"));
    w_.close();
    w_.close();
    w_.open("else {");
    w_.line("#pragma unroll 8");
    w_.line(scalar_loop);
    w_.close();
  } else {
    w_.line("#pragma unroll 8");
    w_.line(scalar_loop);
  }
  w_.line("#pragma unroll");
  w_.line("for (int m = 16; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);");
}

void EntryPrinter::stages() {
  signature(1024);
  w_.line("const long long gs = (long long)gridDim.x * blockDim.x;");
  w_.line("const long long g0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;");
  for (size_t si = 0; si < k_.stages.size(); ++si) {
    const kir::Stage& st = k_.stages[si];
    std::set<int> outer, inner;
    vars_of_stage(st, outer, inner);
    w_.open(str_cat("for (long long q = g0; q < ", dim(shape_numel(st.extents)), "; q += gs) {"));
    decompose("q", st.extents, false, inner);
    body(st, si, 1, {});
    w_.close();
  }
  w_.close();
}

// The start of a loop over this thread's cached chunks of the row (chunk c, the j-th).
void EntryPrinter::cached_chunk_loop(const std::string& chunks) {
  // The stride stays blockDim.x even where it is row_threads: as a constant, ptxas hoists
  // more loads and spills layer_norm+gelu's registers under the 64 of 1024 threads.
  w_.line("#pragma unroll");
  w_.open(str_cat("for (int j = 0; j < ", row_cache_chunks_, "; ++j) {"));
  w_.line("const long long c = threadIdx.x + (long long)j * blockDim.x;");
  if (s_.row_threads == 0) w_.line(str_cat("if (c >= ", chunks, ") break;"));
}

// The row cache's registers (rc<n>[j]), loaded once per row.
void EntryPrinter::row_cache_preload() {
  std::set<int> outer, inner;
  for (int v : s_.row_cache) kir::collect_vars(s_.vector[v].access.index, outer, inner);
  inner.insert(s_.vector_var);
  for (size_t n = 0; n < s_.row_cache.size(); ++n) {
    DType t = k_.buffers[s_.vector[s_.row_cache[n]].access.buffer].dtype;
    w_.line(str_cat(vec_decl(t, width_, str_cat("rc", n, "[", row_cache_chunks_, "]")), ";"));
  }
  w_.open("if (active) {");
  cached_chunk_loop(str_cat(dim(shape_numel(s_.row)), " / ", width_));
  w_.line(str_cat("const long long q = c * ", width_, ";"));
  decompose("q", s_.row, false, inner);
  for (size_t n = 0; n < s_.row_cache.size(); ++n) {
    const kir::Schedule::VectorAccess& v = s_.vector[s_.row_cache[n]];
    DType t = k_.buffers[v.access.buffer].dtype;
    w_.line(str_cat(vec_load(t, width_, str_cat("b", v.access.buffer, " + ", index(v.access.index, At{nullptr, true})),
                             str_cat("rc", n, "[j]"), streamed_ && v.streamed),
                    ";"));
  }
  w_.close();
  w_.close();
}

// One row per (blockIdx.x, threadIdx.y); blockDim.x threads (a multiple of 32) share it.
void EntryPrinter::rows() {
  signature(1024);
  bool any_float = false, any_int = false, any_arg = false;
  for (const kir::Stage& st : k_.stages) {
    if (st.kind != kir::Stage::Kind::Reduce) continue;
    (is_float(st.acc_dtype) ? any_float : any_int) = true;
    any_arg |= st.combiner == kir::Combiner::ArgMax;
  }
  if (any_float) w_.line("__shared__ float red_f[32];");
  if (any_int) w_.line("__shared__ long long red_i[32];");
  if (any_arg) w_.line("__shared__ long long red_p[32];");
  w_.line(str_cat("const long long rows = ", dim(shape_numel(k_.domain)), ";"));
  // Where the kernel is written for one blockDim.x, the warps of a row are a constant and
  // the reads of their partial results below unroll into independent loads.
  int row_threads = width_ > 1 ? s_.row_threads : 0;
  w_.line(row_threads > 0 ? str_cat("constexpr int nw = ", row_threads / 32, ";") : "const int nw = blockDim.x >> 5;");
  w_.line("const int slot = threadIdx.y * nw + (threadIdx.x >> 5);");
  w_.open("for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {");
  w_.line("const long long row = base + threadIdx.y;");
  w_.line("const bool active = row < rows;");
  std::set<int> outer, inner_unused;
  for (const kir::Stage& st : k_.stages) vars_of_stage(st, outer, inner_unused);
  decompose("row", k_.domain, true, outer);
  if (row_cache_chunks_ > 0) row_cache_preload();
  if (width_ > 1)
    for (size_t i = 0; i < s_.value_cache.size(); ++i)
      w_.line(str_cat("float ec", i, "[", row_cache_chunks_, "][", width_, "];"));
  for (size_t si = 0; si < k_.stages.size(); ++si) {
    const kir::Stage& st = k_.stages[si];
    std::set<int> o, in;
    vars_of_stage(st, o, in);
    int w = st.extents.empty() ? 1 : width_;
    if (w > 1) in.insert(s_.vector_var);
    std::string chunks = str_cat(dim(shape_numel(st.extents)), w > 1 ? str_cat(" / ", w) : std::string());
    auto loop = [&] {
      if (row_cache_chunks_ > 0 && w > 1) cached_chunk_loop(chunks);
      else w_.open(str_cat("for (long long c = threadIdx.x; c < ", chunks, "; c += blockDim.x) {"));
      w_.line(str_cat("const long long q = c", w > 1 ? str_cat(" * ", w) : std::string(), ";"));
      decompose("q", st.extents, false, in);
    };
    if (st.kind == kir::Stage::Kind::Map) {
      if (st.extents.empty()) {
        w_.open("if (active && threadIdx.x == 0) {");
        body(st, si, 1, {});
        w_.close();
      } else {
        w_.open("if (active) {");
        loop();
        body(st, si, w, {});
        w_.close();
        w_.close();
      }
      continue;
    }
    Combine c = combine_of(st);
    bool arg = st.combiner == kir::Combiner::ArgMax;
    std::string red = is_float(st.acc_dtype) ? "red_f" : "red_i";
    w_.line(str_cat(c.acc_t, " s", si, ";"));
    if (arg) w_.line(str_cat("long long s", si, "_p;"));
    w_.open("{");
    w_.line(str_cat(c.acc_t, " a = ", c.identity, ";"));
    if (arg) w_.line("long long ap = 9223372036854775807LL;");
    // The loop over the row stays at the level of its `if (active)`.
    w_.line("if (active) {");
    loop();
    body(st, si, w, [&](const std::string& value, const std::string& lane) {
      std::string x = str_cat("{ const ", c.acc_t, " x = ", value, "; ");
      if (arg) w_.line(str_cat(x, "const long long p = q + ", lane, "; if (kiln_argmax_takes(x, p, a, ap)) { a = x; ap = p; } }"));
      else w_.line(str_cat(x, "a = ", c.step("a", "x"), "; }"));
    });
    w_.close();
    w_.line("}");
    // Butterfly within each warp: every lane ends with the warp's result.
    w_.line("#pragma unroll");
    w_.open("for (int m = 16; m > 0; m >>= 1) {");
    w_.line(str_cat("const ", c.acc_t, " y = __shfl_xor_sync(0xffffffffu, a, m);"));
    if (arg) {
      w_.line("const long long yp = __shfl_xor_sync(0xffffffffu, ap, m);");
      w_.line("if (kiln_argmax_takes(y, yp, a, ap)) { a = y; ap = yp; }");
    } else {
      w_.line(str_cat("a = ", c.step("a", "y"), ";"));
    }
    w_.close();
    // Across the warps of a row: lane 0 of each warp through shared memory.
    w_.open("if (nw > 1) {");
    w_.line(str_cat("if ((threadIdx.x & 31) == 0) { ", red, "[slot] = a;", arg ? " red_p[slot] = ap;" : "", " }"));
    w_.line("__syncthreads();");
    w_.line(str_cat("a = ", red, "[threadIdx.y * nw];"));
    if (arg) w_.line("ap = red_p[threadIdx.y * nw];");
    w_.open("for (int w2 = 1; w2 < nw; ++w2) {");
    w_.line(str_cat("const ", c.acc_t, " y = ", red, "[threadIdx.y * nw + w2];"));
    if (arg) {
      w_.line("const long long yp = red_p[threadIdx.y * nw + w2];");
      w_.line("if (kiln_argmax_takes(y, yp, a, ap)) { a = y; ap = yp; }");
    } else {
      w_.line(str_cat("a = ", c.step("a", "y"), ";"));
    }
    w_.close();
    w_.line("__syncthreads();");
    w_.close();
    w_.line(str_cat("s", si, " = a;"));
    if (arg) w_.line(str_cat("s", si, "_p = ap;"));
    w_.close();
  }
  w_.close();
  w_.close();
}

std::string program_source(std::span<const CudaKernel* const> kernels) {
  std::string s = cuda_prelude();
  for (const CudaKernel* k : kernels) s += k->source;
  return s;
}

std::string_view launch_kind_name(LaunchKind k) { return kir::launch_name(k); }

absl::StatusOr<CudaKernel> print_scheduled_kernel(const kir::Kernel& k, const Bindings& baked) {
  if (!k.schedule) return invalid_argument("CUDA printing of kernel ", k.name, ": it has no schedule");
  const Schedule& s = *k.schedule;
  CudaKernel out;
  out.name = k.name;
  out.launch = s.launch;
  out.work = s.work;
  if (s.launch == Schedule::Launch::Elementwise && warp_gemm_form(k, baked)) {
    out.warp_gemm = true;
    out.work = s.work * Dim(32);
  }
  if (s.launch == Schedule::Launch::Rows) out.row_length = shape_numel(s.row);
  out.buffers = static_cast<int>(k.buffers.size());
  for (const std::string& sym : k.symbols)
    if (!baked.contains(sym)) out.symbols.push_back(sym);
  for (const kir::Buffer& b : k.buffers) {
    // The printer computes floats in f32 (its math functions and literals are float's).
    if (b.dtype == DType::f64)
      return absl::UnimplementedError(str_cat("kernel ", k.name, ", buffer ", b.name, ": the CUDA backend has no f64 kernels"));
    out.bytes += shape_numel(b.shape) * dtype_size(b.dtype);
  }
  out.source = EntryPrinter(k, baked, false).print();
  if (s.width > 1) {
    out.width = s.width;
    out.divisible = s.divisible;
    out.aligned = s.aligned;
    out.streams_l2 = s.streams_l2;
    out.row_cache_chunks = s.row_cache_chunks;
    out.row_threads = s.row_threads;
    out.vector_name = str_cat(k.name, "_v", s.width);
    out.source += EntryPrinter(k, baked, true).print();
  }
  return out;
}

bool warp_gemm_form(const kir::Kernel& k, const Bindings& baked) {
  if (!k.gemm || !is_float(k.gemm->acc_dtype)) return false;
  std::optional<int64_t> rows = constant_gemm_rows(k, baked);
  return rows && *rows <= warp_gemm_max_rows();
}

absl::StatusOr<CudaKernel> emit_kernel(const kir::Kernel& k, const Bindings& baked, GemmForm gemm) {
  kir::Kernel scheduled = k.gemm && gemm == GemmForm::AccBuffer ? kir::with_accumulator_buffer(k) : k;
  kir::rewrite_intrinsics(scheduled);
  KILN_RETURN_IF_ERROR(schedule_kernel(scheduled));
  return print_scheduled_kernel(scheduled, baked);
}

}  // namespace kiln::cuda
