// Eight floats (GCC/Clang vector extensions) for the CPU's native routines (depthwise.cc,
// epilogue.cc): one AVX register where a routine is built for x86-64-v3 (AVX2, FMA; its
// KILN_VECTOR_CLONES clone chosen at load time where the CPU has them), two SSE registers
// otherwise. Vector code rather than left to the auto-vectorizer. V8s are loaded and stored
// by memcpy and never returned by value from a function that is not inlined (the default
// clone has no AVX, where GCC passes them differently). Sixteen floats and has_avx512 for the
// AVX-512 variants (depthwise.cc, conv_direct.cc).
#pragma once

#include <cstdint>
#include <cstring>

namespace kiln::cpu {

using V8 = float __attribute__((vector_size(32)));
using V4 = float __attribute__((vector_size(16)));
using V16 = float __attribute__((vector_size(64)));  // AVX-512 routines (target attributes)
using V8i = int32_t __attribute__((vector_size(32)));  // lane indices and masks beside a V8

// Whether the CPU has AVX-512F, for the routines that pick a sixteen-lane variant.
inline bool has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
#else
  return false;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#define KILN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KILN_VECTOR_CLONES
#endif

// v = (v + bias) clamped to [lo, hi]; a NaN fails both comparisons and stays, as maximum and
// minimum propagate it (a compare and a blend each).
__attribute__((always_inline)) inline void add_clamp(V8& v, const V8& bias, const V8& lo, const V8& hi) {
  v += bias;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
}

// add_clamp of sums into o[0..8).
__attribute__((always_inline)) inline void store_clamped(const V8& sums, const V8& bias, const V8& lo, const V8& hi,
                                                         float* o) {
  V8 v = sums;
  add_clamp(v, bias, lo, hi);
  std::memcpy(o, &v, sizeof v);
}

}  // namespace kiln::cpu
