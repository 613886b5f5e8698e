// kiln fused attention: FlashAttention-2's algorithm on mma.sync m16n8k16 (sm_80+).
// codegen/cuda/attention.cc puts the form's #defines (KD, KG, KKVH, KWM, KMT, KWN, KBN, KTYPE,
// KCAUSAL, KWINDOW, KHAS_SOFTCAP, KSOFTCAP, KSCALE, KMASK, KMASK_T, KKVLENS, KPAGED, KBS, KIDX64, KTAB64) above
// this text; runtime/cuda/attention.cc fills KilnAttnArgs (same layout on the host).
//
// Rows: the G = H / KVH query heads that share a kv head are the rows of one tile, row
// r = t * G + g for query position t and head kvh * G + g, so a K/V tile in shared memory
// serves all of them (GQA reads each K/V row once per row tile). A CTA holds KWM * KMT * 16 rows
// and KWN warps along the keys: warp (wm, wn) owns KMT m-tiles of 16 rows from wm*KMT*16
// (each K/V fragment read from shared memory feeds KMT MMAs) and keys wn*KBN/KWN.. of
// every key tile, with its own running max, sum and accumulator, merged at the end through
// shared memory (KWN > 1 is flash-decoding inside the CTA). blockIdx.z splits the key tiles
// across CTAs: each writes a normalized partial and its log-sum-exp, and
// kiln_attention_combine merges them. Scores live in registers only, in the log2 domain.
typedef unsigned short kelem;
#define KBM (KWM * KMT * 16)
#define KNW (KBN / KWN)
#define KNT (KNW / 8)
#define KSD (KD + 8)
#define KTHREADS (KWM * KWN * 32)
#define KLOG2E 1.4426950408889634f
#if KIDX64
typedef long long kidx;  // kv_lens
#else
typedef int kidx;
#endif
#if KTAB64
typedef long long ktab;  // the block table
#else
typedef int ktab;
#endif

struct KilnAttnArgs {
  const kelem* q;
  const kelem* k;
  const kelem* v;
  kelem* out;
  const void* mask;
  const kidx* kv_lens;
  const ktab* block_table;
  float* part_o;    // [splits, B*KVH, row_tiles*KBM, KD]
  float* part_lse;  // [splits, B*KVH, row_tiles*KBM]
  long long batch, tq, tk, max_blocks, num_blocks, row_tiles;
  long long qs[4], ks[4], vs[4], os[4], ms[4];
  int splits, tiles_per_split;
};

#define KA static __device__ __forceinline__
KA unsigned ka_smem(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}
KA void ka_cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}
KA void ka_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
KA void ka_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
KA void ka_ldsm4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
KA void ka_ldsm4t(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// Register-only: not volatile, so the compiler may interleave MMAs with the next fragments'
// shared-memory loads (ldmatrix stays volatile: ordered with the barriers and cp.async waits).
KA void ka_mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32." KTYPE "." KTYPE
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
KA float ka_exp2(float x) { float r; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
KA float ka_ninf() { return __int_as_float(0xff800000); }
KA unsigned ka_pack(float lo, float hi) {
  unsigned r;
  asm("cvt.rn." KTYPE "x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#if KMASK
KA float ka_mask_value(const void* m, long long i) {
#if KMASK_T == 0
  return ((const float*)m)[i];
#elif KMASK_T == 1
  return __uint_as_float(((unsigned)((const unsigned short*)m)[i]) << 16);
#elif KMASK_T == 2
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(((const unsigned short*)m)[i]));
  return f;
#else
  return ((const unsigned char*)m)[i] ? 0.0f : ka_ninf();
#endif
}
#endif

// Key tile [kb, kb + KBN) of k and v into shared memory (KBN x KD each, rows KSD apart);
// keys at or past L, and keys whose block id is outside the cache, are zeros (never read).
// Thread i copies 16-byte piece i % (KD / 8) of rows i / (KD / 8) + j * KROWSTEP: its column
// and first row are fixed, so a piece's address is one multiply-add per tile; one
// block-table lookup serves a row of both k and v.
#define KROWSTEP (KTHREADS / (KD / 8))
static_assert(KTHREADS % (KD / 8) == 0 && KBN % KROWSTEP == 0, "tile copy shape");
// kb0/vb0: k and v at this thread's column and the CTA's sequence (contiguous) or kv head
// (paged); tab: the sequence's block-table row (paged).
KA void ka_load_kv(const KilnAttnArgs& a, const kelem* kb0, const kelem* vb0, const ktab* tab, int kb, int L, kelem* dk,
                   kelem* dv) {
  const int r0 = threadIdx.x / (KD / 8), dc = threadIdx.x % (KD / 8);
#pragma unroll
  for (int j = 0; j < KBN / KROWSTEP; ++j) {
    const int r = r0 + j * KROWSTEP, key = kb + r;
    bool ok = key < L;
    long long ko = 0, vo = 0;
    if (ok) {
#if KPAGED
      const long long blk = (long long)tab[key / KBS];
      ok = blk >= 0 && blk < a.num_blocks;
      ko = blk * a.ks[0] + (key % KBS) * a.ks[1];
      vo = blk * a.vs[0] + (key % KBS) * a.vs[1];
#else
      ko = (long long)key * a.ks[2];
      vo = (long long)key * a.vs[2];
#endif
    }
    ka_cp16(ka_smem(dk + r * KSD + dc * 8), ok ? kb0 + ko : a.k, ok);
    ka_cp16(ka_smem(dv + r * KSD + dc * 8), ok ? vb0 + vo : a.v, ok);
  }
}

extern "C" __global__ void __launch_bounds__(KTHREADS) kiln_attention(const KilnAttnArgs a) {
  extern __shared__ __align__(16) unsigned char ka_sm[];
  kelem* sQ = (kelem*)ka_sm;
  kelem* sK = sQ + KBM * KSD;
  kelem* sV = sK + 2 * KBN * KSD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = warp % KWM, wn = warp / KWM;
  const long long bh = blockIdx.y, b = bh / KKVH, kvh = bh % KKVH;
  // The last row blocks see the most keys under a causal mask: they go first.
  // Positions, rows and keys fit in 32 bits (runtime/cuda/attention.cc checks): only
  // addresses are 64-bit, which keeps registers for the pipeline.
  const int rows = KG * (int)a.tq, r0 = (int)(gridDim.x - 1 - blockIdx.x) * KBM;
  int L = (int)a.tk;
#if KKVLENS
  {
    const long long l = (long long)a.kv_lens[b];
    L = l < 0 ? 0 : l < L ? (int)l : L;
  }
#endif
  // Query t sees key j when j < L, j <= t + diag (causal), j > t + diag - KWINDOW (window).
  const int diag = L - (int)a.tq, t_lo = r0 / KG;
  int t_hi = (r0 + KBM - 1) / KG;
  if (t_hi > a.tq - 1) t_hi = a.tq - 1;
  int kbeg = 0, kend = L;
#if KCAUSAL
  if (t_hi + diag + 1 < kend) kend = t_hi + diag + 1;
#endif
#if KWINDOW > 0
  if (t_lo + diag - KWINDOW + 1 > kbeg) kbeg = t_lo + diag - KWINDOW + 1;
#endif
  const int first_tile = kbeg / KBN;
  const int n_tiles = kend > kbeg ? (kend - 1) / KBN - first_tile + 1 : 0;
  const int my_first = (int)blockIdx.z * a.tiles_per_split;
  int my_tiles = n_tiles - my_first;
  if (my_tiles > a.tiles_per_split) my_tiles = a.tiles_per_split;

  // Q tile: rows past the last query are zeros.
  const long long q_base = b * a.qs[0] + kvh * KG * a.qs[1];
  for (int c = threadIdx.x; c < KBM * (KD / 8); c += KTHREADS) {
    const int r = c / (KD / 8), dc = c % (KD / 8);
    const int row = r0 + r;
    const bool ok = row < rows;
    const kelem* src = a.q + q_base + (row % KG) * a.qs[1] + (row / KG) * a.qs[2] + dc * 8;
    ka_cp16(ka_smem(sQ + r * KSD + dc * 8), ok ? src : a.q, ok);
  }
  ka_commit();
  const int dc = threadIdx.x % (KD / 8);
#if KPAGED
  const ktab* tab = a.block_table + b * a.max_blocks;
  const kelem* kb0 = a.k + kvh * a.ks[2] + dc * 8;
  const kelem* vb0 = a.v + kvh * a.vs[2] + dc * 8;
#else
  const ktab* tab = nullptr;
  const kelem* kb0 = a.k + b * a.ks[0] + kvh * a.ks[1] + dc * 8;
  const kelem* vb0 = a.v + b * a.vs[0] + kvh * a.vs[1] + dc * 8;
#endif
  if (my_tiles > 0) {
    const int kb = (first_tile + my_first) * KBN;
    ka_load_kv(a, kb0, vb0, tab, kb, L, sK, sV);
  }
  ka_commit();

  // Warp (wm, wn) holds KMT m-tiles of 16 rows: row wm*KMT*16 + mt*16 + lane/4 (+8).
  float o[KMT][KD / 8][4];
#pragma unroll
  for (int mt = 0; mt < KMT; ++mt)
#pragma unroll
    for (int i = 0; i < KD / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  float m[KMT][2], l[KMT][2];
#pragma unroll
  for (int mt = 0; mt < KMT; ++mt) m[mt][0] = m[mt][1] = ka_ninf(), l[mt][0] = l[mt][1] = 0.0f;
#define KQREG (KD <= 128 && KMT == 1)  // Q's fragments stay in registers, else are reloaded per tile
#if KQREG
  unsigned qf[KD / 16][4];
#endif
  const kelem* wq = sQ + wm * KMT * 16 * KSD;

  for (int it = 0; it < my_tiles; ++it) {
    const int buf = (int)(it & 1);
    if (it + 1 < my_tiles) {
      const int kb = (first_tile + my_first + it + 1) * KBN;
      ka_load_kv(a, kb0, vb0, tab, kb, L, sK + (buf ^ 1) * KBN * KSD, sV + (buf ^ 1) * KBN * KSD);
      ka_commit();
      ka_wait<1>();
    } else {
      ka_wait<0>();
    }
    __syncthreads();
    const int kb = (first_tile + my_first + it) * KBN;

    // S = Q K^T for the warp's rows and KNW keys; each K fragment serves the KMT m-tiles.
    float s[KMT][KNT][4];
#pragma unroll
    for (int mt = 0; mt < KMT; ++mt)
#pragma unroll
      for (int i = 0; i < KNT; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
    const kelem* wk = sK + buf * KBN * KSD + wn * KNW * KSD;
#if KQREG
    if (it == 0) {
#pragma unroll
      for (int kd = 0; kd < KD / 16; ++kd)
        ka_ldsm4(ka_smem(wq + (lane % 16) * KSD + kd * 16 + (lane / 16) * 8), qf[kd][0], qf[kd][1], qf[kd][2], qf[kd][3]);
    }
#endif
#pragma unroll
    for (int kd = 0; kd < KD / 16; ++kd) {
      unsigned qa[KMT][4];
#if KQREG
#pragma unroll
      for (int i = 0; i < 4; ++i) qa[0][i] = qf[kd][i];
#else
#pragma unroll
      for (int mt = 0; mt < KMT; ++mt)
        ka_ldsm4(ka_smem(wq + (mt * 16 + lane % 16) * KSD + kd * 16 + (lane / 16) * 8), qa[mt][0], qa[mt][1], qa[mt][2],
                 qa[mt][3]);
#endif
#pragma unroll
      for (int nt = 0; nt < KNT; nt += 2) {
        unsigned b0, b1, b2, b3;
        ka_ldsm4(ka_smem(wk + (nt * 8 + (lane / 16) * 8 + (lane % 8)) * KSD + kd * 16 + ((lane / 8) % 2) * 8), b0, b1,
                 b2, b3);
#pragma unroll
        for (int mt = 0; mt < KMT; ++mt) {
          ka_mma(s[mt][nt], qa[mt], b0, b1);
          ka_mma(s[mt][nt + 1], qa[mt], b2, b3);
        }
      }
    }

    // Scores stay unscaled here (softcap and the mask divided by the scale): the scale to the
    // log2 domain is folded into the exponent's multiply-add. Visibility and the mask only
    // where a tile needs them.
    bool edge = kb + KBN > L || KMASK != 0;
#if KCAUSAL
    edge = edge || kb + KBN - 1 > t_lo + diag;
#endif
#if KWINDOW > 0
    edge = edge || kb <= t_hi + diag - KWINDOW;
#endif
#if KHAS_SOFTCAP
#pragma unroll
    for (int mt = 0; mt < KMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < KNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = (KSOFTCAP / KSCALE) * tanhf(s[mt][nt][e] * (KSCALE / KSOFTCAP));
#endif
    if (edge) {  // one branch per tile: interior tiles skip the index arithmetic entirely
#pragma unroll
      for (int mt = 0; mt < KMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < KNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = r0 + (wm * KMT + mt) * 16 + lane / 4 + (e >> 1) * 8, t = row / KG;
            const int j = kb + wn * KNW + nt * 8 + (lane % 4) * 2 + (e & 1);
            bool vis = j < L && row < rows;
#if KCAUSAL
            vis = vis && j <= t + diag;
#endif
#if KWINDOW > 0
            vis = vis && j > t + diag - KWINDOW;
#endif
#if KMASK
            if (vis) {
              const long long h = kvh * KG + row % KG;
              s[mt][nt][e] += (1.0f / KSCALE) * ka_mask_value(a.mask, b * a.ms[0] + h * a.ms[1] + t * a.ms[2] + (long long)j * a.ms[3]);
            }
#endif
            if (!vis) s[mt][nt][e] = ka_ninf();
          }
    }

    // Online softmax: rows lane/4 (i = 0) and lane/4 + 8 (i = 1) of each m-tile, shared by a
    // quad of lanes.
#pragma unroll
    for (int mt = 0; mt < KMT; ++mt) {
      float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
      for (int nt = 0; nt < KNT; ++nt) {
        mx[0] = fmaxf(mx[0], fmaxf(s[mt][nt][0], s[mt][nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[mt][nt][2], s[mt][nt][3]));
      }
      // m and mx are raw scores; p = 2^(s * c - max * c) with c = scale * log2(e).
      float mu[2], corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        mu[i] = mx[i] == ka_ninf() ? 0.0f : mx[i] * (KSCALE * KLOG2E);
        corr[i] = m[mt][i] == mx[i] ? 1.0f : ka_exp2(m[mt][i] * (KSCALE * KLOG2E) - mu[i]);
        m[mt][i] = mx[i];
        l[mt][i] *= corr[i];
      }
      if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {  // a row's max moved
#pragma unroll
        for (int dn = 0; dn < KD / 8; ++dn) {
          o[mt][dn][0] *= corr[0];
          o[mt][dn][1] *= corr[0];
          o[mt][dn][2] *= corr[1];
          o[mt][dn][3] *= corr[1];
        }
      }
#pragma unroll
      for (int nt = 0; nt < KNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[mt][nt][e] = ka_exp2(fmaf(s[mt][nt][e], KSCALE * KLOG2E, -mu[e >> 1]));
          sum[e >> 1] += s[mt][nt][e];
        }
      }
      l[mt][0] += sum[0];
      l[mt][1] += sum[1];
    }

    // O += P V: P's accumulator layout is the A operand's (two n-tiles per k-step); each V
    // fragment serves the KMT m-tiles.
    const kelem* wv = sV + buf * KBN * KSD + wn * KNW * KSD;
#pragma unroll
    for (int kk = 0; kk < KNW / 16; ++kk) {
      unsigned pa[KMT][4];
#pragma unroll
      for (int mt = 0; mt < KMT; ++mt) {
        pa[mt][0] = ka_pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = ka_pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = ka_pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = ka_pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dn = 0; dn < KD / 8; dn += 2) {
        unsigned b0, b1, b2, b3;
        ka_ldsm4t(ka_smem(wv + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * KSD + dn * 8 + (lane / 16) * 8), b0, b1, b2,
                  b3);
#pragma unroll
        for (int mt = 0; mt < KMT; ++mt) {
          ka_mma(o[mt][dn], pa[mt], b0, b1);
          ka_mma(o[mt][dn + 1], pa[mt], b2, b3);
        }
      }
    }
    __syncthreads();
  }

  // Merge the KWN warps of each row block through shared memory (over the K/V tiles).
  ka_wait<0>();
  __syncthreads();
  float* cO = (float*)(sQ + KBM * KSD);      // [KWN][KBM][KD]
  float* cM = cO + KWN * KBM * KD;           // [KWN][KBM]
  float* cL = cM + KWN * KBM;                // [KWN][KBM]
#pragma unroll
  for (int mt = 0; mt < KMT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float li = l[mt][i];
      li += __shfl_xor_sync(0xffffffffu, li, 1);
      li += __shfl_xor_sync(0xffffffffu, li, 2);
      const int r = (wm * KMT + mt) * 16 + lane / 4 + i * 8;
      if (lane % 4 == 0) {
        cM[wn * KBM + r] = m[mt][i] * (KSCALE * KLOG2E);  // -inf stays -inf
        cL[wn * KBM + r] = li;
      }
#pragma unroll
      for (int dn = 0; dn < KD / 8; ++dn) {
        float* p = cO + ((long long)wn * KBM + r) * KD + dn * 8 + (lane % 4) * 2;
        p[0] = o[mt][dn][2 * i];
        p[1] = o[mt][dn][2 * i + 1];
      }
    }
  __syncthreads();
  const long long bhs = a.batch * KKVH, rows_pad = a.row_tiles * KBM;
  for (int c = threadIdx.x; c < KBM * (KD / 2); c += KTHREADS) {
    const int r = c / (KD / 2), d = (c % (KD / 2)) * 2;
    const int row = r0 + r;
    if (row >= rows) continue;
    float M = ka_ninf();
#pragma unroll
    for (int w = 0; w < KWN; ++w) M = fmaxf(M, cM[w * KBM + r]);
    const float mu = M == ka_ninf() ? 0.0f : M;
    float sl = 0.0f, o0 = 0.0f, o1 = 0.0f;
#pragma unroll
    for (int w = 0; w < KWN; ++w) {
      const float f = ka_exp2(cM[w * KBM + r] - mu);
      sl += f * cL[w * KBM + r];
      o0 += f * cO[((long long)w * KBM + r) * KD + d];
      o1 += f * cO[((long long)w * KBM + r) * KD + d + 1];
    }
    if (a.splits == 1) {  // normalized: a row that saw no key is 0 / 0 = NaN, as the reference
      const long long t = row / KG, h = kvh * KG + row % KG;
      *(unsigned*)(a.out + b * a.os[0] + h * a.os[1] + t * a.os[2] + d) = ka_pack(o0 / sl, o1 / sl);
    } else {  // a partial: 0 and lse -inf where this split saw no key
      const long long at = ((long long)blockIdx.z * bhs + bh) * rows_pad + row;
      const float inv = sl > 0.0f ? 1.0f / sl : 0.0f;
      a.part_o[at * KD + d] = o0 * inv;
      a.part_o[at * KD + d + 1] = o1 * inv;
      if (d == 0) a.part_lse[at] = sl > 0.0f ? M + __log2f(sl) : ka_ninf();
    }
  }
}

// Merges the splits' partials: one thread per (kv head row block, row, two dims).
extern "C" __global__ void kiln_attention_combine(const KilnAttnArgs a) {
  const long long rows = (long long)KG * a.tq, bhs = a.batch * KKVH, rows_pad = a.row_tiles * KBM;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= bhs * rows * (KD / 2)) return;
  const int d = (int)(i % (KD / 2)) * 2;
  const long long row = (i / (KD / 2)) % rows, bh = i / (KD / 2) / rows;
  float M = ka_ninf();
  for (int s = 0; s < a.splits; ++s) M = fmaxf(M, a.part_lse[((long long)s * bhs + bh) * rows_pad + row]);
  float w = 0.0f, o0 = 0.0f, o1 = 0.0f;
  for (int s = 0; s < a.splits; ++s) {
    const long long at = ((long long)s * bhs + bh) * rows_pad + row;
    const float f = ka_exp2(a.part_lse[at] - M);  // NaN when no split saw a key: the row is NaN
    w += f;
    o0 += f * a.part_o[at * KD + d];
    o1 += f * a.part_o[at * KD + d + 1];
  }
  const long long b = bh / KKVH, kvh = bh % KKVH, t = row / KG, h = kvh * KG + row % KG;
  *(unsigned*)(a.out + b * a.os[0] + h * a.os[1] + t * a.os[2] + d) = ka_pack(o0 / w, o1 / w);
}
