// Contract (runtime/cpu/attention.h): out = the reference's attention (ir/reference.cc) for
// every form supports_attention accepts, computed as FlashAttention-2 does. A task owns the
// rows (G query heads sharing kv head g) x (query block) of one sequence; per key block it
// gathers K^T and V as f32 tiles (through the block table when paged), scores the tile,
// masks it (kv_lens, causal, window: per row a contiguous key range; then the mask tensor),
// and folds it into running row maxima m, sums l and the accumulator (rescaled by
// exp(m_old - m_new)). The two tile products keep 4 rows x 16 (then 8) lanes of accumulators
// in registers (GCC vector types); the softmax runs over each tile row eight keys at a time
// (exp8); a task is compiled for AVX2 + FMA and for the baseline ISA (chosen at run time), at -O3.
#include "runtime/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ir/dtype.h"
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/cpu/vec8.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kKeys = 64;  // keys per tile
constexpr int64_t kRows = 64;  // query rows (heads x positions) per task when G allows
// One thread's time per multiply-add, for ThreadPool::threads_for (measured: the zoo's
// attention on the build machine).
constexpr double kNsPerMac = 0.5;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

[[gnu::always_inline]] inline float load(const void* p, int64_t i, DType t) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::boolean: return static_cast<const uint8_t*>(p)[i] != 0 ? 1.0f : 0.0f;
    default: return 0;
  }
}

[[gnu::always_inline]] inline void store(void* p, int64_t i, DType t, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16_bits(v); break;
    default: break;
  }
}

[[gnu::always_inline]] inline int64_t load_int(const void* p, int64_t i, DType t) {
  return t == DType::i64 ? static_cast<const int64_t*>(p)[i] : static_cast<const int32_t*>(p)[i];
}

// 8 f32 lanes (vec8.h's V8): AVX registers in the AVX2 build of a task, SSE pairs otherwise.
// Every helper is always inlined so that it compiles for the build that calls it.
[[gnu::always_inline]] inline V8 load8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store8(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }

[[gnu::always_inline]] inline V8 splat(float x) { return V8{} + x; }

// e^x in f32 on 8 lanes (Cephes' expf: x = n ln2 + r, a degree-6 polynomial for e^r, 2^n
// through the exponent bits; about 1 ulp), with lane-wise selects (a scalar loop's min, max
// and rounding compiled to branches, one element at a time); -inf gives 0.
[[gnu::always_inline]] inline V8 exp8(V8 x) {
  const V8 lo = splat(-87.33654f), hi = splat(88.37626f);
  V8 xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  V8 t = xc * 1.44269504088896341f;
  V8i n = __builtin_convertvector(t + (t >= 0 ? splat(0.5f) : splat(-0.5f)), V8i);
  V8 nf = __builtin_convertvector(n, V8);
  V8 r = xc - nf * 0.693359375f + nf * 2.12194440e-4f;
  V8 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  V8 scale = reinterpret_cast<V8>((n + 127) << 23);
  return x < lo ? splat(0.0f) : p * scale;
}
[[gnu::always_inline]] inline float exp_f32(float x) { return exp8(splat(x))[0]; }

// softcap * tanh(s / softcap), tanh(y) = 1 - 2 / (e^2y + 1).
[[gnu::always_inline]] inline V8 soft_cap8(V8 s, float cap) {
  return cap * (1.0f - 2.0f / (exp8(2.0f * s / cap) + 1.0f));
}

[[gnu::always_inline]] inline float max8(V8 x) {
  float m = x[0];
  for (int i = 1; i < 8; ++i) m = std::max(m, x[i]);
  return m;
}
[[gnu::always_inline]] inline float sum8(V8 x) {
  float s = 0;
  for (int i = 0; i < 8; ++i) s += x[i];
  return s;
}

constexpr int64_t kRowBlock = 4;  // rows per register block of the two tile products

// The rows of one task (padded to kRowBlock) and the f32 tiles it works in (one per thread,
// reused): q [rows, D] (scaled), acc [rows, D], s [rows, kKeys] (scores, then
// probabilities), kt [D, kKeys] (K^T), v [kKeys, D].
struct Tiles {
  std::vector<float> q, acc, s, kt, v, m, l;
  void reserve(int64_t rows, int64_t d) {
    rows = (rows + kRowBlock - 1) / kRowBlock * kRowBlock;
    q.resize(rows * d), acc.resize(rows * d), s.resize(rows * kKeys), kt.resize(d * kKeys), v.resize(kKeys * d);
    m.resize(rows), l.resize(rows);
  }
};

struct Task {
  int64_t b, g, i0, i1;  // sequence, kv head, query positions [i0, i1)
};

// s[r, 0:nk16] = q[r, :] . kt[:, 0:nk16] for rows [0, rows) (a multiple of kRowBlock), nk16 a
// multiple of 16: 4 rows x 16 keys of accumulators in registers.
[[gnu::always_inline]] inline void scores(const float* __restrict q, const float* __restrict kt, float* __restrict s, int64_t rows,
                   int64_t nk16, int64_t D) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock)
    for (int64_t c0 = 0; c0 < nk16; c0 += 16) {
      V8 a[kRowBlock][2] = {};
      for (int64_t d = 0; d < D; ++d) {
        V8 k0 = load8(kt + d * kKeys + c0), k1 = load8(kt + d * kKeys + c0 + 8);
        for (int64_t rr = 0; rr < kRowBlock; ++rr) {
          float qv = q[(r0 + rr) * D + d];
          a[rr][0] += qv * k0;
          a[rr][1] += qv * k1;
        }
      }
      for (int64_t rr = 0; rr < kRowBlock; ++rr) {
        store8(s + (r0 + rr) * kKeys + c0, a[rr][0]);
        store8(s + (r0 + rr) * kKeys + c0 + 8, a[rr][1]);
      }
    }
}

// acc[r, :] += s[r, 0:nk] . v[0:nk, :] for rows [0, rows): 4 rows x 16 dims in registers, then
// 4 rows x 8, the last D % 8 dims scalar.
[[gnu::always_inline]] inline void accumulate(const float* __restrict s, const float* __restrict v,
                                              float* __restrict acc, int64_t rows, int64_t nk, int64_t D) {
  const int64_t d16 = D / 16 * 16, d8 = D / 8 * 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    for (int64_t d0 = 0; d0 < d16; d0 += 16) {
      V8 a[kRowBlock][2];
      for (int64_t rr = 0; rr < kRowBlock; ++rr) {
        a[rr][0] = load8(acc + (r0 + rr) * D + d0);
        a[rr][1] = load8(acc + (r0 + rr) * D + d0 + 8);
      }
      for (int64_t j = 0; j < nk; ++j) {
        V8 v0 = load8(v + j * D + d0), v1 = load8(v + j * D + d0 + 8);
        for (int64_t rr = 0; rr < kRowBlock; ++rr) {
          float p = s[(r0 + rr) * kKeys + j];
          a[rr][0] += p * v0;
          a[rr][1] += p * v1;
        }
      }
      for (int64_t rr = 0; rr < kRowBlock; ++rr) {
        store8(acc + (r0 + rr) * D + d0, a[rr][0]);
        store8(acc + (r0 + rr) * D + d0 + 8, a[rr][1]);
      }
    }
    if (D - d16 >= 8) {  // one vector of 8 dims (heads of 8, 24, ...)
      V8 a[kRowBlock];
      for (int64_t rr = 0; rr < kRowBlock; ++rr) a[rr] = load8(acc + (r0 + rr) * D + d16);
      for (int64_t j = 0; j < nk; ++j) {
        V8 v0 = load8(v + j * D + d16);
        for (int64_t rr = 0; rr < kRowBlock; ++rr) a[rr] += s[(r0 + rr) * kKeys + j] * v0;
      }
      for (int64_t rr = 0; rr < kRowBlock; ++rr) store8(acc + (r0 + rr) * D + d16, a[rr]);
    }
    for (int64_t rr = 0; rr < kRowBlock; ++rr)
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = d8; d < D; ++d) acc[(r0 + rr) * D + d] += s[(r0 + rr) * kKeys + j] * v[j * D + d];
  }
}

// One task; compiled twice below (AVX2 + FMA, and the baseline), the helpers inlined into each.
[[gnu::always_inline]] inline void attend_task(const AttentionCall& c, const AttentionArgs& a, const int64_t* lens,
                                               const Task& t, Tiles& w) {
  const AttentionForm& f = c.form;
  const int64_t G = f.group(), D = f.head_dim, nq = t.i1 - t.i0, R = G * nq, b = t.b, g = t.g;
  const int64_t R4 = (R + kRowBlock - 1) / kRowBlock * kRowBlock;
  const int64_t L = lens[b], off = L - c.tq;  // query i's last causal key: i + off
  const float scale = static_cast<float>(f.scale), cap = static_cast<float>(f.softcap);
  auto lo_of = [&](int64_t i) { return f.window > 0 ? std::max<int64_t>(0, i + off - f.window + 1) : int64_t{0}; };
  auto hi_of = [&](int64_t i) { return f.causal ? std::clamp<int64_t>(i + off + 1, 0, L) : L; };
  float *q = w.q.data(), *acc = w.acc.data(), *s = w.s.data(), *kt = w.kt.data(), *vt = w.v.data();
  float *m = w.m.data(), *l = w.l.data();
  // Row r is query position i0 + r % nq of head g * G + r / nq; rows past R are zero padding.
  std::fill(q + R * D, q + R4 * D, 0.0f);
  for (int64_t r = 0; r < R; ++r) {
    int64_t base = b * c.qs[0] + (g * G + r / nq) * c.qs[1] + (t.i0 + r % nq) * c.qs[2];
    if (f.dtype == DType::f32 && c.qs[3] == 1) {
      const float* qr = static_cast<const float*>(a.q) + base;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) q[r * D + d] = qr[d] * scale;
    } else {
      for (int64_t d = 0; d < D; ++d) q[r * D + d] = load(a.q, base + d * c.qs[3], f.dtype) * scale;
    }
  }
  std::fill(acc, acc + R4 * D, 0.0f);
  std::fill(m, m + R4, kNegInf);
  std::fill(l, l + R4, 0.0f);
  const int64_t first = lo_of(t.i0), last = hi_of(t.i1 - 1);  // the keys any row sees
  for (int64_t j0 = first; j0 < last; j0 += kKeys) {
    const int64_t nk = std::min(kKeys, last - j0), nk16 = (nk + 15) / 16 * 16;
    for (int64_t jj = 0; jj < nk; ++jj) {  // K^T [D, kKeys] and V [kKeys, D] tiles
      int64_t j = j0 + jj, kb, vb;
      if (f.paged()) {
        int64_t blk = load_int(a.block_table, b * c.max_blocks + j / f.block_size, f.table_dtype), slot = j % f.block_size;
        kb = blk * c.ks[0] + slot * c.ks[1] + g * c.ks[2];
        vb = blk * c.vs[0] + slot * c.vs[1] + g * c.vs[2];
      } else {
        kb = b * c.ks[0] + g * c.ks[1] + j * c.ks[2];
        vb = b * c.vs[0] + g * c.vs[1] + j * c.vs[2];
      }
      if (f.dtype == DType::f32 && c.ks[3] == 1 && c.vs[3] == 1) {
        const float* kr = static_cast<const float*>(a.k) + kb;
        for (int64_t d = 0; d < D; ++d) kt[d * kKeys + jj] = kr[d];
        std::memcpy(vt + jj * D, static_cast<const float*>(a.v) + vb, sizeof(float) * D);
      } else {
        for (int64_t d = 0; d < D; ++d) {
          kt[d * kKeys + jj] = load(a.k, kb + d * c.ks[3], f.dtype);
          vt[jj * D + d] = load(a.v, vb + d * c.vs[3], f.dtype);
        }
      }
    }
    for (int64_t d = 0; d < D; ++d) std::fill(kt + d * kKeys + nk, kt + d * kKeys + nk16, 0.0f);
    scores(q, kt, s, R4, nk16, D);
    for (int64_t r = 0; r < R4; ++r) {
      float* __restrict sr = s + r * kKeys;
      const int64_t i = t.i0 + r % nq, hh = g * G + r / nq;
      // Keys [lo, hi) of the tile are the row's to see; the rest get probability 0.
      const int64_t lo = r < R ? std::max<int64_t>(lo_of(i) - j0, 0) : 0, hi = r < R ? std::min(hi_of(i) - j0, nk) : 0;
      // Eight keys at a time up to nk8 (<= nk16: the scores past nk are the zero columns of
      // kt, and they fall outside [lo, hi) like the rest the row does not see).
      const int64_t nk8 = (nk + 7) / 8 * 8;
      if (cap > 0)
        for (int64_t j8 = 0; j8 < nk8; j8 += 8) store8(sr + j8, soft_cap8(load8(sr + j8), cap));
      if (a.mask && lo < hi) {
        const int64_t mb = b * c.ms[0] + hh * c.ms[1] + i * c.ms[2] + j0 * c.ms[3], ms = c.ms[3];
        if (f.mask == AttentionForm::Mask::Bool) {
          const uint8_t* mk = static_cast<const uint8_t*>(a.mask) + mb;
          for (int64_t jj = lo; jj < hi; ++jj) sr[jj] = mk[jj * ms] ? sr[jj] : kNegInf;
        } else if (f.mask_dtype == DType::f32 && ms == 1) {
          const float* mk = static_cast<const float*>(a.mask) + mb;
#pragma omp simd
          for (int64_t jj = lo; jj < hi; ++jj) sr[jj] += mk[jj];
        } else {
          for (int64_t jj = lo; jj < hi; ++jj) sr[jj] += load(a.mask, mb + jj * ms, f.mask_dtype);
        }
      }
      const V8i lanes = {0, 1, 2, 3, 4, 5, 6, 7};
      V8 mxv = splat(kNegInf);
      for (int64_t j8 = 0; j8 < nk8; j8 += 8) {
        V8i jj = lanes + static_cast<int32_t>(j8);
        V8 x = jj >= static_cast<int32_t>(lo) && jj < static_cast<int32_t>(hi) ? load8(sr + j8) : splat(kNegInf);
        store8(sr + j8, x);
        mxv = x > mxv ? x : mxv;
      }
      const float m_new = std::max(m[r], max8(mxv));
      if (m_new == kNegInf) {  // nothing seen yet: no probability, the row stays as it is
        std::fill(sr, sr + nk, 0.0f);
        continue;
      }
      const float alpha = exp_f32(m[r] - m_new);
      V8 sumv = {};
      for (int64_t j8 = 0; j8 < nk8; j8 += 8) {
        V8 p = exp8(load8(sr + j8) - m_new);
        store8(sr + j8, p);
        sumv += p;
      }
      const float sum = sum8(sumv);
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      if (alpha != 1.0f) {
        float* __restrict ar = acc + r * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) ar[d] *= alpha;
      }
    }
    accumulate(s, vt, acc, R4, nk, D);
  }
  for (int64_t r = 0; r < R; ++r) {
    int64_t base = b * c.os[0] + (g * G + r / nq) * c.os[1] + (t.i0 + r % nq) * c.os[2];
    // No key seen (l = 0), or only -inf scores: NaN, as the reference.
    const float inv = l[r] > 0 ? 1.0f / l[r] : std::numeric_limits<float>::quiet_NaN();
    if (f.dtype == DType::f32 && c.os[3] == 1) {
      float* o = static_cast<float*>(a.out) + base;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] = acc[r * D + d] * inv;
    } else {
      for (int64_t d = 0; d < D; ++d) store(a.out, base + d * c.os[3], f.dtype, acc[r * D + d] * inv);
    }
  }
}

__attribute__((target("avx2,fma"))) void attend_avx2(const AttentionCall& c, const AttentionArgs& a, const int64_t* lens,
                                                     const Task& t, Tiles& w) {
  attend_task(c, a, lens, t, w);
}

void attend_baseline(const AttentionCall& c, const AttentionArgs& a, const int64_t* lens, const Task& t, Tiles& w) {
  attend_task(c, a, lens, t, w);
}

}  // namespace

bool supports_attention(const AttentionForm& f) {
  bool floats = f.dtype == DType::f32 || f.dtype == DType::f16 || f.dtype == DType::bf16;
  bool mask = f.mask != AttentionForm::Mask::Additive || f.mask_dtype == f.dtype || f.mask_dtype == DType::f32;
  return floats && mask && f.heads > 0 && f.kv_heads > 0 && f.heads % f.kv_heads == 0 && f.head_dim > 0;
}

absl::StatusOr<AttentionCall> bind_attention(const AttentionStep& s, const Bindings& b) {
  AttentionCall c;
  KILN_ASSIGN_OR_RETURN(static_cast<AttentionSizes&>(c), evaluate_sizes(s, b));
  c.form = s.form;
  return c;
}

absl::Status run_attention(const AttentionCall& c, const AttentionArgs& a, ThreadPool& pool) {
  const AttentionForm& f = c.form;
  std::vector<int64_t> lens(c.batch, c.tk);
  for (int64_t b = 0; b < c.batch && f.kv_lens; ++b) {
    // Clamped, as the decomposition's comparisons read it: a decode step whose cache write
    // was skipped (a position past the cache) still attends over the whole cache.
    lens[b] = std::clamp<int64_t>(load_int(a.kv_lens, b, f.index_dtype), 0, c.tk);
  }
  for (int64_t b = 0; b < c.batch && f.paged(); ++b)
    for (int64_t t = 0; t * f.block_size < lens[b]; ++t) {
      int64_t id = load_int(a.block_table, b * c.max_blocks + t, f.table_dtype);
      if (id < 0 || id >= c.num_blocks)
        return invalid_argument("attention: block_table[", b, ", ", t, "] = ", id, " is outside [0, ", c.num_blocks, ")");
    }
  const int64_t G = f.group(), nq = std::clamp<int64_t>(kRows / G, 1, std::max<int64_t>(c.tq, 1));
  const int64_t blocks = (c.tq + nq - 1) / nq, tasks = c.batch * f.kv_heads * blocks;
  if (tasks == 0) return absl::OkStatus();
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // Q.K and P.V multiply-adds (keys beyond a row's mask or kv_lens still counted).
  double macs = 2.0 * static_cast<double>(c.batch * f.heads * c.tq * c.tk * f.head_dim);
  pool.parallel_ranges(tasks, macs * kNsPerMac, [&](int64_t lo, int64_t hi) {
    thread_local Tiles w;
    w.reserve(G * nq, f.head_dim);
    for (int64_t i = lo; i < hi; ++i) {
      int64_t qb = i % blocks, bg = i / blocks;
      Task t{bg / f.kv_heads, bg % f.kv_heads, qb * nq, std::min(c.tq, (qb + 1) * nq)};
      (avx2 ? attend_avx2 : attend_baseline)(c, a, lens.data(), t, w);
    }
  });
  return absl::OkStatus();
}

}  // namespace kiln::cpu
