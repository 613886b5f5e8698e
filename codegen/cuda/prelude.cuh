// kiln prelude
#define KI static __device__ __forceinline__
KI float kiln_bf2f(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }
KI unsigned short kiln_f2bf(float f) { unsigned short r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f)); return r; }
KI float kiln_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
KI unsigned short kiln_f2h(float f) { unsigned short r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f)); return r; }
// Rounding to bf16 in one instruction: the pair conversion puts f's bf16 in the upper half
// and 0's in the lower, which is the rounded value as an f32 bit pattern.
KI float kiln_rbf(float f) { unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(f), "f"(0.0f)); return __uint_as_float(r); }
// The bf16 bits of a value already rounded to bf16.
KI unsigned short kiln_bf_bits(float f) { return (unsigned short)(__float_as_uint(f) >> 16); }
KI float kiln_rh(float f) { return kiln_h2f(kiln_f2h(f)); }
// Element v of bf16 values held as 32-bit pairs (even elements in the low half): one
// instruction for either half.
KI float kiln_bf_lo(unsigned w) { return __uint_as_float(w << 16); }
KI float kiln_bf_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
template <int N> KI float kiln_bf2f_at(const unsigned (&w)[N], int v) { return v & 1 ? kiln_bf_hi(w[v >> 1]) : kiln_bf_lo(w[v >> 1]); }
// Sum, difference and product of two bf16 pairs, lane by lane, in one instruction. Each is
// the exact result rounded to bf16 once, which is what the f32 op and the rounding after it
// give (24 bits >= 2 * 8 + 2: rounding twice is rounding once).
KI unsigned kiln_add_bf16x2(unsigned a, unsigned b) { unsigned r; asm("add.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
KI unsigned kiln_sub_bf16x2(unsigned a, unsigned b) { unsigned r; asm("sub.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
KI unsigned kiln_mul_bf16x2(unsigned a, unsigned b) { unsigned r; asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
// Two floats rounded to bf16 (or f16) as a pair in one instruction, lo in the low half.
KI unsigned kiln_pack_bf16x2(float lo, float hi) { unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
KI unsigned kiln_pack_f16x2(float lo, float hi) { unsigned r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
KI float kiln_nan() { return __int_as_float(0x7fc00000); }
KI float kiln_inf() { return __int_as_float(0x7f800000); }
KI long long kiln_f2i(float v) {
  if (isnan(v) || isinf(v)) return 0;
  float t = truncf(v);
  return (t >= 9.2e18f || t <= -9.2e18f) ? 0 : (long long)t;
}
// u64 from float: as kiln_f2i, but [9.2e18, 1.8e19) converts too (kiln::float_to_int).
KI unsigned long long kiln_f2u64(float v) {
  float t = truncf(v);
  return (t >= 9.2e18f && t < 1.8e19f) ? (unsigned long long)t : (unsigned long long)kiln_f2i(v);
}
KI long long kiln_iadd(long long a, long long b) { return (long long)((unsigned long long)a + (unsigned long long)b); }
KI long long kiln_isub(long long a, long long b) { return (long long)((unsigned long long)a - (unsigned long long)b); }
KI long long kiln_imul(long long a, long long b) { return (long long)((unsigned long long)a * (unsigned long long)b); }
KI long long kiln_ineg(long long a) { return (long long)(0ull - (unsigned long long)a); }
KI long long kiln_idiv(long long a, long long b) { return b == 0 ? 0 : b == -1 ? kiln_ineg(a) : a / b; }
KI long long kiln_imax(long long a, long long b) { return a > b ? a : b; }
KI long long kiln_imin(long long a, long long b) { return a < b ? a : b; }
// The unsigned types: zero-extended to 64 bits, so unsigned 64-bit division and order serve all.
KI unsigned long long kiln_udiv(unsigned long long a, unsigned long long b) { return b == 0 ? 0 : a / b; }
KI unsigned long long kiln_umax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
KI unsigned long long kiln_umin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
// NaN-propagating max/min in one instruction (sm_80+).
KI float kiln_fmax(float a, float b) { float r; asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
KI float kiln_fmin(float a, float b) { float r; asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
// exp as the hardware's 2^x (two instructions; Triton's exp is the same): relative error
// within 2 + 1.2|x| ulp (CUDA's bound for __expf), results below 2^-126 flushed to 0.
KI float kiln_exp(float x) { float r; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.44269504f)); return r; }
// sigmoid's denominator is >= 1 (or inf): the hardware reciprocal is within 1 ulp of 1/d.
KI float kiln_sigmoid(float x) { float r; asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + kiln_exp(-x))); return r; }
KI float kiln_silu(float x) { return x * kiln_sigmoid(x); }
// erf by the CPU backend's [13/8] rational approximation on [-4, 4] (beyond it erf rounds to
// +-1 in f32, returned exactly; NaN passes through): within 4.5e-7 of erf, in 16 instructions where CUDA's
// erff selects between two polynomials at about 25.
KI float kiln_erf(float x) {
  const float xc = kiln_fmin(kiln_fmax(x, -4.0f), 4.0f), x2 = xc * xc;
  float p = -2.72614225801306e-10f;
  p = fmaf(p, x2, 2.77068142495902e-08f);
  p = fmaf(p, x2, -2.10102402082508e-06f);
  p = fmaf(p, x2, -5.69250639462346e-05f);
  p = fmaf(p, x2, -7.34990630326855e-04f);
  p = fmaf(p, x2, -2.95459980854025e-03f);
  p = fmaf(p, x2, -1.60960333262415e-02f);
  float q = -1.45660718464996e-05f;
  q = fmaf(q, x2, -2.13374055278905e-04f);
  q = fmaf(q, x2, -1.68282697438203e-03f);
  q = fmaf(q, x2, -7.37332916720468e-03f);
  q = fmaf(q, x2, -1.42647390514189e-02f);
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(q));  // q <= -0.0142
  // From |x| = 4 on, exactly +-1 (the approximation at the clamp is 1 ulp short, which made
  // gelu(-inf) = -inf * 0.5 * (1 + erf) -inf instead of NaN).
  return fabsf(x) >= 4.0f ? copysignf(1.0f, x) : p * xc * r;
}
// (1 + tanh(u)) / 2 as sigmoid(2u) = 1 / (1 + 2^(-2u log2(e))): one exp and one
// reciprocal, no cancellation where tanh(u) is near -1.
KI float kiln_half_one_plus_tanh(float u) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(u * -2.88539008f));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
  return r;
}
// Tanh gelu x (1 + tanh(u)) / 2 with u = c (x + k x^3): x * sigmoid(2u), the exponent
// -2u log2(e) written x (k0 + k1 x^2) with the constants folded (k0 = -2 c log2(e), k1 = k0 k),
// three operations where u and its scaling take six.
KI float kiln_gelu_tanh(float x, float k1, float k0) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * fmaf(k1, x * x, k0)));
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
  return x * r;
}
KI long long kiln_fdiv(long long a, long long b) { long long q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
KI long long kiln_fmod(long long a, long long b) { return a - kiln_fdiv(a, b) * b; }
// The first NaN, else the largest value, else the first position: the reference's argmax.
KI bool kiln_argmax_takes(float v, long long p, float bv, long long bp) {
  if (isnan(v)) return !isnan(bv) || p < bp;
  return !isnan(bv) && (v > bv || (v == bv && p < bp));
}
KI bool kiln_argmax_takes(long long v, long long p, long long bv, long long bp) { return v > bv || (v == bv && p < bp); }
KI bool kiln_argmax_takes(unsigned long long v, long long p, unsigned long long bv, long long bp) {
  return v > bv || (v == bv && p < bp);
}
// V consecutive elements in one to four 16-byte (or 8/4-byte) accesses; p is aligned to them.
template <typename T, int V> KI void kiln_ldv(const T* __restrict__ p, T (&o)[V]) {
  constexpr int B = int(sizeof(T)) * V;
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) reinterpret_cast<uint4*>(o)[c] = __ldg(reinterpret_cast<const uint4*>(p) + c);
  } else if constexpr (B % 8 == 0) {
#pragma unroll
    for (int c = 0; c < B / 8; ++c) reinterpret_cast<uint2*>(o)[c] = __ldg(reinterpret_cast<const uint2*>(p) + c);
  } else if constexpr (B % 4 == 0) {
#pragma unroll
    for (int c = 0; c < B / 4; ++c) reinterpret_cast<unsigned*>(o)[c] = __ldg(reinterpret_cast<const unsigned*>(p) + c);
  } else {
#pragma unroll
    for (int c = 0; c < V; ++c) o[c] = p[c];
  }
}
template <typename T, int V> KI void kiln_stv(T* __restrict__ p, const T (&o)[V]);
// V floats as bf16 (F16 false) or f16 (F16 true) pairs, rounded two at a time.
template <bool F16, int V> KI void kiln_pack_pairs(const float (&f)[V], unsigned (&w)[V / 2]) {
#pragma unroll
  for (int i = 0; i < V / 2; ++i) w[i] = F16 ? kiln_pack_f16x2(f[2 * i], f[2 * i + 1]) : kiln_pack_bf16x2(f[2 * i], f[2 * i + 1]);
}
template <bool F16, int V> KI void kiln_stv_pairs(unsigned short* __restrict__ p, const float (&f)[V]) {
  unsigned w[V / 2];
  kiln_pack_pairs<F16, V>(f, w);
  kiln_stv<unsigned, V / 2>(reinterpret_cast<unsigned*>(p), w);
}
// The L2 eviction priority of a row kernel's streamed accesses (the _once helpers):
// evict-first where the host found the kernel's data larger than the L2 cache (stream_l2),
// so that they leave the cache to the data read again, as a weight every row reads; else
// normal.
KI unsigned long long kiln_policy(int stream_l2) {
  unsigned long long first, normal;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(first));
  asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(normal));
  return stream_l2 ? first : normal;
}
// kiln_ldv and kiln_stv of elements the kernel touches once: 16-byte accesses under the L2
// policy pol (kiln_policy).
template <typename T, int V> KI void kiln_ldv_once(const T* __restrict__ p, T (&o)[V], unsigned long long pol) {
  constexpr int B = int(sizeof(T)) * V;
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) {
      uint4 r;
      asm("ld.global.nc.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
          : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(reinterpret_cast<const uint4*>(p) + c), "l"(pol));
      reinterpret_cast<uint4*>(o)[c] = r;
    }
  } else {
    kiln_ldv(p, o);
  }
}
template <typename T, int V> KI void kiln_stv_once(T* __restrict__ p, const T (&o)[V], unsigned long long pol) {
  constexpr int B = int(sizeof(T)) * V;
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) {
      const uint4 r = reinterpret_cast<const uint4*>(o)[c];
      asm volatile("st.global.L2::cache_hint.v4.b32 [%0], {%1,%2,%3,%4}, %5;"
                   :: "l"(reinterpret_cast<uint4*>(p) + c), "r"(r.x), "r"(r.y), "r"(r.z), "r"(r.w), "l"(pol) : "memory");
    }
  } else {
    kiln_stv(p, o);
  }
}
template <bool F16, int V> KI void kiln_stv_pairs_once(unsigned short* __restrict__ p, const float (&f)[V], unsigned long long pol) {
  unsigned w[V / 2];
  kiln_pack_pairs<F16, V>(f, w);
  kiln_stv_once<unsigned, V / 2>(reinterpret_cast<unsigned*>(p), w, pol);
}
template <typename T, int V> KI void kiln_stv(T* __restrict__ p, const T (&o)[V]) {
  constexpr int B = int(sizeof(T)) * V;
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int c = 0; c < B / 16; ++c) reinterpret_cast<uint4*>(p)[c] = reinterpret_cast<const uint4*>(o)[c];
  } else if constexpr (B % 8 == 0) {
#pragma unroll
    for (int c = 0; c < B / 8; ++c) reinterpret_cast<uint2*>(p)[c] = reinterpret_cast<const uint2*>(o)[c];
  } else if constexpr (B % 4 == 0) {
#pragma unroll
    for (int c = 0; c < B / 4; ++c) reinterpret_cast<unsigned*>(p)[c] = reinterpret_cast<const unsigned*>(o)[c];
  } else {
#pragma unroll
    for (int c = 0; c < V; ++c) p[c] = o[c];
  }
}
