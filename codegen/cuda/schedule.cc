#include "codegen/cuda/schedule.h"

#include <algorithm>
#include <map>
#include <set>

#include "codegen/intrinsics.h"
#include "ir/str.h"

namespace kiln::cuda {
namespace {

using kir::Access;
using kir::Expr;
using kir::ExprKind;
using kir::Schedule;

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Whether every term of `d` is a multiple of `v` (so d is, for every symbol value).
bool surely_divisible(const Dim& d, int v) {
  for (const SymTerm& t : d.poly().terms)
    if (t.coeff % v != 0) return false;
  return true;
}

// Calls f(access, is_store) for every load of stage `st` (in its lets, then its reduce
// value, then each store's value, before that store) and every store, in that order.
void for_each_access(const kir::Stage& st, const std::function<void(const Access&, bool is_store)>& f) {
  auto loads = [&](const Expr& e) {
    kir::visit_exprs(e, [&](const Expr& x) {
      if (x.kind() == ExprKind::Load) f({x.node().id, x.node().index}, false);
    });
  };
  for (const kir::Let& l : st.lets) loads(l.value);
  if (st.value.defined()) loads(st.value);
  for (const kir::Store& s : st.stores) {
    loads(s.value);
    if (s.mask.defined()) loads(s.mask);
    f({s.buffer, s.index}, true);
  }
}

class Scheduler {
 public:
  explicit Scheduler(kir::Kernel& k) : k_(k), recomputed_(kir::recomputed_lets(k)) {}

  absl::Status run() {
    if (k_.schedule) return err("it has a schedule already");
    bool has_reduce = false;
    for (const kir::Stage& st : k_.stages) {
      has_reduce |= st.kind == kir::Stage::Kind::Reduce;
      if (!st.extents.empty() && !k_.domain.empty() && st.kind == kir::Stage::Kind::Map && !has_reduce)
        return err("a map stage with its own extents over a non-empty domain needs a reduce stage before it");
    }
    bool stages_form = !has_reduce && k_.domain.empty() &&
                       std::any_of(k_.stages.begin(), k_.stages.end(), [](const kir::Stage& s) { return !s.extents.empty(); });
    if (has_reduce && k_.gemm) return err("a GEMM kernel with reduce stages");
    if (has_reduce) {
      s_.launch = Schedule::Launch::Rows;
      s_.work = shape_numel(k_.domain);
      s_.row = k_.stages.front().extents;
      for (const kir::Stage& st : k_.stages)
        if (!st.extents.empty()) s_.row = st.extents;
      plan_vector(false);
      if (s_.width > 1) {
        plan_streaming();
        plan_row_cache();
        plan_value_cache();
      }
    } else if (stages_form) {
      s_.launch = Schedule::Launch::Stages;
      s_.work = stage_work_bound();
    } else {
      s_.launch = Schedule::Launch::Elementwise;
      s_.work = shape_numel(k_.domain);
      if (!k_.gemm) plan_vector(true);
    }
    if (s_.width > 1 && s_.width % 2 == 0) plan_pairs();
    k_.schedule = std::move(s_);
    return absl::OkStatus();
  }

 private:
  template <typename... A>
  absl::Status err(const A&... parts) const {
    return invalid_argument("CUDA scheduling of kernel ", k_.name, ": ", parts...);
  }

  // The Stages form launches for its longest stage; with symbolic extents any one may be the
  // longest, so the bound is their sum (threads past a stage's end skip it).
  Dim stage_work_bound() const {
    std::vector<Dim> seen;
    for (const kir::Stage& st : k_.stages) {
      Dim n = shape_numel(st.extents);
      if (std::find(seen.begin(), seen.end(), n) == seen.end()) seen.push_back(n);
    }
    if (std::all_of(seen.begin(), seen.end(), [](const Dim& d) { return d.is_constant(); })) {
      int64_t m = 1;
      for (const Dim& d : seen) m = std::max(m, *d.constant());
      return m;
    }
    Dim total(0);
    for (const Dim& d : seen) total = total + d;
    return total;
  }

  // The position of `a` in the vector accesses, or -1.
  int vector_position(const Access& a) const {
    for (size_t i = 0; i < s_.vector.size(); ++i)
      if (s_.vector[i].access.same_as(a)) return static_cast<int>(i);
    return -1;
  }

  bool masked_store(const Access& a) const {
    for (const kir::Stage& st : k_.stages)
      for (const kir::Store& s : st.stores)
        if (s.mask.defined() && a.same_as({s.buffer, s.index})) return true;
    return false;
  }

  // Chooses the vector width and the loads/stores that move `width` consecutive elements of
  // the vector var (the last outer var for elementwise kernels, the last row var for row
  // kernels) in one access: those whose index steps by 1 along it and whose other terms keep
  // `width`-element chunks 16-byte aligned, surely or under a runtime divisibility guard. The
  // width is what fills 16 bytes with the narrowest dtype accessed.
  void plan_vector(bool outer) {
    const std::vector<Dim>& ext = outer ? k_.domain : s_.row;
    if (ext.empty()) return;
    int var = static_cast<int>(ext.size()) - 1;
    size_t n_outer = k_.domain.size(), n_inner = outer ? 0 : s_.row.size();
    struct Candidate {
      Access access;
      kir::AffineIndex aff;
    };
    std::vector<Candidate> cands;
    for (const kir::Stage& st : k_.stages) {
      if (!outer && st.extents.empty()) continue;
      for_each_access(st, [&](const Access& a, bool is_store) {
        if (is_store && masked_store(a)) return;  // written lane by lane, under its mask
        std::optional<kir::AffineIndex> aff = kir::affine_index(a.index, n_outer, n_inner);
        if (aff && (outer ? aff->outer[var] : aff->inner[var]) == Dim(1)) cands.push_back({a, *aff});
      });
    }
    if (cands.empty()) return;
    int64_t min_size = 16;
    for (const Candidate& c : cands) min_size = std::min(min_size, dtype_size(k_.buffers[c.access.buffer].dtype));
    int w = static_cast<int>(std::min<int64_t>(16, 16 / min_size));
    const Dim& extent = ext[var];
    if (std::optional<int64_t> e = extent.constant())
      while (w > 1 && *e % w != 0) w /= 2;
    if (w < 2) return;
    std::vector<Dim> divisible;
    if (!extent.is_constant()) divisible.push_back(extent);
    std::set<int> aligned;
    for (const Candidate& c : cands) {
      std::vector<Dim> need = {c.aff.offset};
      for (size_t d = 0; d < n_outer; ++d)
        if (!(outer && static_cast<int>(d) == var)) need.push_back(c.aff.outer[d]);
      for (size_t d = 0; d < n_inner; ++d)
        if (!(!outer && static_cast<int>(d) == var)) need.push_back(c.aff.inner[d]);
      bool ok = true;
      std::vector<Dim> runtime;
      for (const Dim& d : need) {
        if (surely_divisible(d, w)) continue;
        if (d.is_constant()) ok = false;
        else runtime.push_back(d);
      }
      if (!ok) continue;
      for (const Dim& d : runtime)
        if (std::find(divisible.begin(), divisible.end(), d) == divisible.end()) divisible.push_back(d);
      if (vector_position(c.access) < 0) s_.vector.push_back({c.access, false});
      aligned.insert(c.access.buffer);
    }
    if (s_.vector.empty()) return;
    s_.width = w;
    s_.divisible = std::move(divisible);
    s_.aligned.assign(aligned.begin(), aligned.end());
    s_.vector_outer = outer;
    s_.vector_var = var;
  }

  // A row kernel's vector entry streams what it reads once and what it stores through L2
  // under kiln_policy. Elementwise kernels do not: on an H100, hinted accesses made
  // gelu*sigmoid over 2^26 f32 1.7% slower where they made layer_norm+gelu 2% faster
  // (bench/RESULTS.md, 2026-12-02). A load reads each element once when its index takes
  // every var of the domain and of the row.
  void plan_streaming() {
    s_.streams_l2 = true;
    std::vector<bool> stored(s_.vector.size(), false);
    for (const kir::Stage& st : k_.stages)
      for (const kir::Store& store : st.stores)
        if (int v = vector_position({store.buffer, store.index}); v >= 0) stored[v] = true;
    for (size_t v = 0; v < s_.vector.size(); ++v) {
      std::set<int> outer, inner;
      kir::collect_vars(s_.vector[v].access.index, outer, inner);
      s_.vector[v].streamed = stored[v] || (outer.size() == k_.domain.size() && inner.size() == s_.row.size());
    }
  }

  // The row cache of a vector row kernel: when the row length is static and every thread
  // holds at most 8 chunks, each vector load that several stages read is loaded from
  // global memory once per row into registers and the stages read it there, as a persistent
  // reduction does. A row takes at least four warps where it has 2 chunks or more for each
  // of their threads (the most chunks per thread, 8, 4 or 2, that fit with the value cache
  // in 48 registers); a shorter row takes one warp (no reduction through shared memory)
  // with 8 or 4 chunks per thread. On an H200, with the warp count a constant, layer_norm +
  // gelu ran 4% faster over rows of 4096 with 4 chunks in 4 warps than with 8 in 2, and 2%
  // faster over rows of 8192 with 8 chunks in 4 warps than with 4 in 8; on an H100, rows of
  // 2048 bf16 in 4 warps of 2 chunks instead of one of 8: softmax over 16384 rows 48.1-48.4
  // us either way, the decoder layer at T=512 (two RMS norms over 512 rows) 129 -> 125.6 us.
  // The launch uses blockDim.x = ceil(chunks / row_cache_chunks).
  // Where that many threads hold exactly the row's chunks (the usual case: 2048 or 4096
  // elements), the kernel is written for that blockDim.x (row_threads): no thread passes the
  // row's end, so the chunk loops need no guard and their loads issue ahead of the stores
  // before them (layer_norm+gelu 5% faster, softmax 2%, on an H200).
  void plan_row_cache() {
    const int width = s_.width;
    std::optional<int64_t> row = shape_numel(s_.row).constant();
    if (!row || *row < width) return;
    int64_t chunks = *row / width;
    std::vector<int> stages_reading(s_.vector.size(), 0);
    for (const kir::Stage& st : k_.stages) {
      if (st.extents.empty()) continue;
      std::set<int> here;
      for_each_access(st, [&](const Access& a, bool is_store) {
        if (int v = vector_position(a); v >= 0 && !is_store) here.insert(v);
      });
      for (int v : here) ++stages_reading[v];
    }
    std::vector<int> cached;
    for (size_t v = 0; v < s_.vector.size(); ++v)
      if (stages_reading[v] >= 2) cached.push_back(static_cast<int>(v));
    if (cached.empty()) return;
    // In buffer order (then in the order the stages first read them).
    std::stable_sort(cached.begin(), cached.end(),
                     [&](int a, int b) { return s_.vector[a].access.buffer < s_.vector[b].access.buffer; });
    int64_t words = 0;  // registers per chunk: the cached loads, then the value cache's floats
    for (int v : cached) words += (width * dtype_size(k_.buffers[s_.vector[v].access.buffer].dtype) + 3) / 4;
    std::set<int> recomputed;
    for (const auto& [later, src] : recomputed_) recomputed.insert(src);
    words += static_cast<int64_t>(recomputed.size()) * width;
    // Rows are few in inference (tokens), and a warp per row leaves SMs short of loads in
    // flight: an RMS norm over 512 rows of 2048 bf16 took 9.1 us in a warp per row, over 4x
    // the rows 11.9 us (H100).
    int64_t kc = 0, tpr = 0;
    auto fits = [&](int64_t per, bool wide) {
      tpr = std::clamp<int64_t>(next_pow2((chunks + per - 1) / per), 32, 1024);
      kc = (chunks + tpr - 1) / tpr;
      return kc * words <= 48 && (tpr >= 128 || (!wide && tpr == 32));
    };
    if (!fits(8, true) && !fits(4, true) && !fits(2, true) && !fits(8, false)) fits(4, false);
    if (kc > 8) return;
    s_.row_cache = std::move(cached);
    s_.row_cache_chunks = static_cast<int>(kc);
    if (tpr * kc == chunks) s_.row_threads = static_cast<int>(tpr);
  }

  // The value cache of a row-cached kernel: a costly value that a later stage recomputes
  // (kir::recomputed_lets) is kept in registers by the first stage computing it and read
  // there by the later ones, within a budget of 64 floats per thread.
  void plan_value_cache() {
    if (s_.row_cache_chunks == 0) return;
    std::map<int, size_t> slot;  // source let id -> position in value_cache
    for (const auto& [later, src] : recomputed_) {
      if (!slot.contains(src)) {
        if (static_cast<int>(s_.value_cache.size() + 1) * s_.row_cache_chunks * s_.width > 64) continue;
        slot[src] = s_.value_cache.size();
        s_.value_cache.push_back({src, {}});
      }
      s_.value_cache[slot[src]].readers.push_back(later);
    }
  }

  bool reads_value_cache(int let) const {
    for (const Schedule::CachedValue& c : s_.value_cache)
      if (std::find(c.readers.begin(), c.readers.end(), let) != c.readers.end()) return true;
    return false;
  }

  // Whether let `l` is computed two lanes at a time by a packed bf16x2 instruction: a bf16
  // add, sub or mul whose operands are bf16 values already (constants, loads, and lets
  // that round), so that the packed op gives the same bits as the f32 op and its rounding.
  bool packs(const kir::Let& l) const {
    const kir::ExprNode& n = l.value.node();
    if (n.kind != ExprKind::Binary || n.dtype != DType::bf16 || reads_value_cache(l.id)) return false;
    if (n.op != Op::Add && n.op != Op::Sub && n.op != Op::Mul) return false;
    auto operand = [&](const Expr& e) {
      return e.dtype() == DType::bf16 && (e.kind() == ExprKind::Const || rounded_to_bf16(k_, e));
    };
    return operand(n.a) && operand(n.b);
  }

  // The stages the vector entry runs `width` lanes at a time (a row kernel's once-per-row
  // stages go one lane) go two lanes at a time where a let packs: the packed lets, and as
  // 32-bit pairs also their let operands and the lets that vector stores of bf16 store.
  void plan_pairs() {
    s_.pairs.resize(k_.stages.size());
    for (size_t si = 0; si < k_.stages.size(); ++si) {
      const kir::Stage& st = k_.stages[si];
      if (s_.launch == Schedule::Launch::Rows && st.extents.empty()) continue;
      Schedule::Pairs& p = s_.pairs[si];
      std::set<int> paired;
      for (const kir::Let& l : st.lets) {
        if (!packs(l)) continue;
        p.packed.push_back(l.id);
        paired.insert(l.id);
        for (const Expr* o : {&l.value.node().a, &l.value.node().b})
          if (o->kind() == ExprKind::Let) paired.insert(o->node().id);
      }
      if (p.packed.empty()) continue;
      for (const kir::Store& store : st.stores)
        if (k_.buffers[store.buffer].dtype == DType::bf16 && vector_position({store.buffer, store.index}) >= 0 &&
            store.value.kind() == ExprKind::Let)
          paired.insert(store.value.node().id);
      p.paired.assign(paired.begin(), paired.end());
    }
  }

  kir::Kernel& k_;
  Schedule s_;
  const std::map<int, int> recomputed_;  // kir::recomputed_lets of k_, for both caches
};

}  // namespace

absl::Status schedule_kernel(kir::Kernel& k) { return Scheduler(k).run(); }

bool rounded_to_bf16(const kir::Kernel& k, const Expr& e) {
  if (e.dtype() != DType::bf16) return false;
  switch (e.kind()) {
    case ExprKind::Const: case ExprKind::Load: case ExprKind::Unary: case ExprKind::Binary: case ExprKind::Cast:
    case ExprKind::Intrinsic:
      return true;
    case ExprKind::Select: return rounded_to_bf16(k, e.node().b) && rounded_to_bf16(k, e.node().c);
    case ExprKind::Let: {
      const Expr* v = kir::let_value(k, e.node().id);
      return v && rounded_to_bf16(k, *v);
    }
    default: return false;
  }
}

absl::Status prepare_kernel(kir::Kernel& k) {
  kir::rewrite_intrinsics(k);
  return schedule_kernel(k);
}

}  // namespace kiln::cuda
