// Contract (runtime/cpu/attention.h): out = the reference's attention (ir/reference.cc) for
// every form supports_attention accepts, computed as FlashAttention-2 does. A task owns the
// rows (G query heads sharing kv head g) x (query block) of one sequence; per key block it
// gathers K^T and V as f32 tiles (through the block table when paged), scores the tile,
// masks it (kv_lens, causal, window: per row a contiguous key range; then the mask tensor),
// and folds it into running row maxima m, sums l and the accumulator (rescaled by
// exp(m_old - m_new)). The inner loops run over contiguous tile rows (keys, or head dim):
// plain loops over restrict pointers, compiled at -O3 with OpenMP SIMD reductions and
// cloned for AVX2+FMA (target_clones), so the compiler vectorizes them.
#include "runtime/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ir/dtype.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kKeys = 64;  // keys per tile
constexpr int64_t kRows = 64;  // query rows (heads x positions) per task when G allows
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float load(const void* p, int64_t i, DType t) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::boolean: return static_cast<const uint8_t*>(p)[i] != 0 ? 1.0f : 0.0f;
    default: return 0;
  }
}

inline void store(void* p, int64_t i, DType t, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16_bits(v); break;
    default: break;
  }
}

inline int64_t load_int(const void* p, int64_t i, DType t) {
  return t == DType::i64 ? static_cast<const int64_t*>(p)[i] : static_cast<const int32_t*>(p)[i];
}

// e^x in f32 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial for e^r, 2^n through the
// exponent bits; about 1 ulp), branch-free so that loops over it vectorize; -inf gives 0.
inline float exp_f32(float x) {
  const float lo = -87.33654f, hi = 88.37626f;
  float xc = std::min(std::max(x, lo), hi);
  float t = xc * 1.44269504088896341f;
  int32_t n = static_cast<int32_t>(t + (t >= 0 ? 0.5f : -0.5f));
  float nf = static_cast<float>(n);
  float r = xc - nf * 0.693359375f + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < lo ? 0.0f : p * scale;
}

// softcap * tanh(s / softcap), tanh(y) = 1 - 2 / (e^2y + 1).
inline float soft_cap(float s, float cap) { return cap * (1.0f - 2.0f / (exp_f32(2.0f * s / cap) + 1.0f)); }

// The rows of one task and the f32 tiles it works in (one per thread, reused).
struct Tiles {
  std::vector<float> q, acc, s, kt, v, m, l;
  void reserve(int64_t rows, int64_t d) {
    q.resize(rows * d), acc.resize(rows * d), s.resize(rows * kKeys), kt.resize(d * kKeys), v.resize(kKeys * d);
    m.resize(rows), l.resize(rows);
  }
};

struct Task {
  int64_t b, g, i0, i1;  // sequence, kv head, query positions [i0, i1)
};

__attribute__((target_clones("arch=haswell", "default")))
void attend(const AttentionCall& c, const AttentionArgs& a, const int64_t* lens, const Task& t, Tiles& w) {
  const AttentionForm& f = c.form;
  const int64_t G = f.group(), D = f.head_dim, nq = t.i1 - t.i0, R = G * nq, b = t.b, g = t.g;
  const int64_t L = lens[b], off = L - c.tq;  // query i's last causal key: i + off
  const float scale = static_cast<float>(f.scale), cap = static_cast<float>(f.softcap);
  auto lo_of = [&](int64_t i) { return f.window > 0 ? std::max<int64_t>(0, i + off - f.window + 1) : int64_t{0}; };
  auto hi_of = [&](int64_t i) { return f.causal ? std::clamp<int64_t>(i + off + 1, 0, L) : L; };
  float* __restrict q = w.q.data();
  float* __restrict acc = w.acc.data();
  float* __restrict s = w.s.data();
  float* __restrict kt = w.kt.data();
  float* __restrict vt = w.v.data();
  float* __restrict m = w.m.data();
  float* __restrict l = w.l.data();
  // Row r is query position i0 + r % nq of head g * G + r / nq.
  for (int64_t r = 0; r < R; ++r) {
    int64_t base = b * c.q[0] + (g * G + r / nq) * c.q[1] + (t.i0 + r % nq) * c.q[2];
    for (int64_t d = 0; d < D; ++d) q[r * D + d] = load(a.q, base + d * c.q[3], f.dtype) * scale;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.0f);
    m[r] = kNegInf, l[r] = 0;
  }
  const int64_t first = lo_of(t.i0), last = hi_of(t.i1 - 1);  // the keys any row sees
  for (int64_t j0 = first; j0 < last; j0 += kKeys) {
    const int64_t nk = std::min(kKeys, last - j0);
    for (int64_t jj = 0; jj < nk; ++jj) {  // K^T [D, kKeys] and V [kKeys, D] tiles
      int64_t j = j0 + jj, kb, vb;
      if (f.paged()) {
        int64_t blk = load_int(a.block_table, b * c.max_blocks + j / f.block_size, f.table_dtype), slot = j % f.block_size;
        kb = blk * c.k[0] + slot * c.k[1] + g * c.k[2];
        vb = blk * c.v[0] + slot * c.v[1] + g * c.v[2];
      } else {
        kb = b * c.k[0] + g * c.k[1] + j * c.k[2];
        vb = b * c.v[0] + g * c.v[1] + j * c.v[2];
      }
      if (f.dtype == DType::f32 && c.k[3] == 1 && c.v[3] == 1) {
        const float* kr = static_cast<const float*>(a.k) + kb;
        const float* vr = static_cast<const float*>(a.v) + vb;
        for (int64_t d = 0; d < D; ++d) kt[d * kKeys + jj] = kr[d];
        std::memcpy(vt + jj * D, vr, sizeof(float) * D);
      } else {
        for (int64_t d = 0; d < D; ++d) {
          kt[d * kKeys + jj] = load(a.k, kb + d * c.k[3], f.dtype);
          vt[jj * D + d] = load(a.v, vb + d * c.v[3], f.dtype);
        }
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      const int64_t i = t.i0 + r % nq, hh = g * G + r / nq;
      const int64_t lo = std::max<int64_t>(lo_of(i) - j0, 0), hi = std::min(hi_of(i) - j0, nk);
      if (hi <= lo) continue;  // this row sees no key of the tile
      float* __restrict sr = s + r * kKeys;
      const float* __restrict qr = q + r * D;
      for (int64_t jj = lo; jj < hi; ++jj) sr[jj] = 0;
      for (int64_t d = 0; d < D; ++d) {
        const float qd = qr[d];
        const float* __restrict kr = kt + d * kKeys;
        for (int64_t jj = lo; jj < hi; ++jj) sr[jj] += qd * kr[jj];
      }
      if (cap > 0)
        for (int64_t jj = lo; jj < hi; ++jj) sr[jj] = soft_cap(sr[jj], cap);
      if (a.mask) {
        const int64_t mb = b * c.mask[0] + hh * c.mask[1] + i * c.mask[2] + j0 * c.mask[3], ms = c.mask[3];
        if (f.mask == AttentionForm::Mask::Bool) {
          const uint8_t* mk = static_cast<const uint8_t*>(a.mask) + mb;
          for (int64_t jj = lo; jj < hi; ++jj) sr[jj] = mk[jj * ms] ? sr[jj] : kNegInf;
        } else {
          for (int64_t jj = lo; jj < hi; ++jj) sr[jj] += load(a.mask, mb + jj * ms, f.mask_dtype);
        }
      }
      float mx = kNegInf;
#pragma omp simd reduction(max : mx)
      for (int64_t jj = lo; jj < hi; ++jj) mx = std::max(mx, sr[jj]);
      const float m_new = std::max(m[r], mx);
      if (m_new == kNegInf) continue;  // nothing seen yet
      const float alpha = exp_f32(m[r] - m_new);
      float sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t jj = lo; jj < hi; ++jj) {
        float p = exp_f32(sr[jj] - m_new);
        sr[jj] = p;
        sum += p;
      }
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      float* __restrict ar = acc + r * D;
      if (alpha != 1.0f)
        for (int64_t d = 0; d < D; ++d) ar[d] *= alpha;
      for (int64_t jj = lo; jj < hi; ++jj) {
        const float p = sr[jj];
        const float* __restrict vr = vt + jj * D;
        for (int64_t d = 0; d < D; ++d) ar[d] += p * vr[d];
      }
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    int64_t base = b * c.out[0] + (g * G + r / nq) * c.out[1] + (t.i0 + r % nq) * c.out[2];
    // No key seen (l = 0), or only -inf scores: NaN, as the reference.
    const float inv = l[r] > 0 ? 1.0f / l[r] : std::numeric_limits<float>::quiet_NaN();
    for (int64_t d = 0; d < D; ++d) store(a.out, base + d * c.out[3], f.dtype, acc[r * D + d] * inv);
  }
}

}  // namespace

bool supports_attention(const AttentionForm& f) {
  bool floats = f.dtype == DType::f32 || f.dtype == DType::f16 || f.dtype == DType::bf16;
  bool mask = f.mask != AttentionForm::Mask::Additive || f.mask_dtype == f.dtype || f.mask_dtype == DType::f32;
  return floats && mask && f.heads > 0 && f.kv_heads > 0 && f.heads % f.kv_heads == 0 && f.head_dim > 0;
}

absl::StatusOr<AttentionCall> bind_attention(const AttentionStep& s, const Bindings& b) {
  AttentionCall c;
  c.form = s.form;
  auto eval = [&](const Dim& d, int64_t& out) -> absl::Status {
    KILN_ASSIGN_OR_RETURN(out, d.evaluate(b));
    return absl::OkStatus();
  };
  KILN_RETURN_IF_ERROR(eval(s.batch, c.batch));
  KILN_RETURN_IF_ERROR(eval(s.tq, c.tq));
  KILN_RETURN_IF_ERROR(eval(s.tk, c.tk));
  if (s.form.paged()) {
    KILN_RETURN_IF_ERROR(eval(s.max_blocks, c.max_blocks));
    KILN_RETURN_IF_ERROR(eval(s.num_blocks, c.num_blocks));
  }
  for (auto [from, to] : {std::pair{&s.q_strides, &c.q}, {&s.k_strides, &c.k}, {&s.v_strides, &c.v},
                          {&s.out_strides, &c.out}, {&s.mask_strides, &c.mask}})
    for (size_t i = 0; i < 4; ++i) KILN_RETURN_IF_ERROR(eval((*from)[i], (*to)[i]));
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
  pool.parallel_for(tasks, [&](int64_t i) {
    thread_local Tiles w;
    w.reserve(G * nq, f.head_dim);
    int64_t qb = i % blocks, bg = i / blocks;
    Task t{bg / f.kv_heads, bg % f.kv_heads, qb * nq, std::min(c.tq, (qb + 1) * nq)};
    attend(c, a, lens.data(), t, w);
  });
  return absl::OkStatus();
}

}  // namespace kiln::cpu
