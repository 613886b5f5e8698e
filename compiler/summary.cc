#include "compiler/summary.h"

#include <cmath>
#include <limits>

#include "ir/str.h"

namespace kiln {

TensorSummary summarize(const HostTensor& t) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  TensorSummary s{t.dtype(), t.shape(), kNaN, kNaN, kNaN, 0xcbf29ce484222325ull};
  for (int64_t i = 0; i < t.nbytes(); ++i) {
    s.checksum ^= t.data()[i];
    s.checksum *= 0x100000001b3ull;
  }
  if (t.numel() == 0) return s;
  double lo = t.get(0), hi = lo, total = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v = t.get(i);
    if (std::isnan(v)) return s;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    total += v;
  }
  s.min = lo;
  s.max = hi;
  s.mean = total / static_cast<double>(t.numel());
  return s;
}

std::string checksum_hex(uint64_t checksum) { return fmt::format("{:016x}", checksum); }

std::string format_summary(const std::string& name, const TensorSummary& s) {
  return fmt::format("{}: {}[{}] min={:.6g} max={:.6g} mean={:.6g} checksum={}", name, dtype_name(s.dtype),
                     fmt::join(s.shape, ", "), s.min, s.max, s.mean, checksum_hex(s.checksum));
}

}  // namespace kiln
