#include "runtime/cpu/im2col.h"

#include <algorithm>
#include <climits>

#include "ir/status.h"
#include "ir/str.h"

namespace kiln::cpu {
namespace {

// Below this many output elements the copy runs on the calling thread.
constexpr int64_t kMinParallelElements = 1 << 15;

int64_t product(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t x : v) n *= x;
  return n;
}

// Planes [lo, hi). The feature maps of small nets have rows of a few positions, where a
// row-by-row copy spends its time on each row's bounds; one table lookup per element has
// no such cost.
template <typename T>
void gather(const Im2col& g, const T* __restrict in, T* __restrict out, int64_t lo, int64_t hi) {
  const int32_t* t = g.table.data();
  int64_t n = static_cast<int64_t>(g.table.size());
  for (int64_t p = lo; p < hi; ++p) {
    const T* src = in + p * g.in_plane;
    T* dst = out + p * n;
    for (int64_t j = 0; j < n; ++j) dst[j] = t[j] >= 0 ? src[t[j]] : T{0};
  }
}

template <typename T>
void run(const Im2col& g, const void* in, void* out, ThreadPool& pool) {
  const T* src = static_cast<const T*>(in);
  T* dst = static_cast<T*>(out);
  int threads = pool.threads();
  if (threads <= 1 || g.planes * static_cast<int64_t>(g.table.size()) < kMinParallelElements || g.planes < 2) {
    gather(g, src, dst, 0, g.planes);
    return;
  }
  int64_t chunks = std::min<int64_t>(g.planes, 4 * threads);
  pool.parallel_for(chunks, [&](int64_t c) { gather(g, src, dst, g.planes * c / chunks, g.planes * (c + 1) / chunks); });
}

}  // namespace

absl::StatusOr<Im2col> make_im2col(int64_t planes, int elem_size, const std::vector<int64_t>& in,
                                   const std::vector<int64_t>& out, const std::vector<int64_t>& kernel,
                                   const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                                   const std::vector<int64_t>& pads_begin) {
  Im2col g;
  g.planes = planes;
  g.elem_size = elem_size;
  g.in_plane = product(in);
  if (g.in_plane > INT32_MAX)
    return invalid_argument("window copy: an input plane of ", g.in_plane, " elements exceeds 2^31 - 1");
  size_t r = in.size();
  int64_t kn = product(kernel), on = product(out);
  g.table.resize(static_cast<size_t>(kn * on));
  std::vector<int64_t> k(r, 0), o(r, 0);
  size_t j = 0;
  for (int64_t ki = 0; ki < kn; ++ki) {
    for (int64_t oi = 0; oi < on; ++oi) {
      int64_t at = 0;
      bool inside = true;
      for (size_t i = 0; i < r; ++i) {
        int64_t p = o[i] * strides[i] + k[i] * dilations[i] - pads_begin[i];
        inside = inside && p >= 0 && p < in[i];
        at = at * in[i] + p;
      }
      g.table[j++] = inside ? static_cast<int32_t>(at) : -1;
      for (size_t i = r; i-- > 0;) {
        if (++o[i] < out[i]) break;
        o[i] = 0;
      }
    }
    for (size_t i = r; i-- > 0;) {
      if (++k[i] < kernel[i]) break;
      k[i] = 0;
    }
  }
  return g;
}

void im2col(const Im2col& g, const void* in, void* out, ThreadPool& pool) {
  if (g.planes == 0 || g.table.empty()) return;
  switch (g.elem_size) {
    case 1: run<uint8_t>(g, in, out, pool); break;
    case 2: run<uint16_t>(g, in, out, pool); break;
    case 8: run<uint64_t>(g, in, out, pool); break;
    default: run<uint32_t>(g, in, out, pool); break;
  }
}

}  // namespace kiln::cpu
