#include "passes/strided_view.h"

#include "ir/op_attrs.h"

namespace kiln {
namespace {

bool is_one(const Dim& d) { return d == Dim(1); }

// Strides of a tensor of shape `out` that is `in` (with strides `st`) reshaped, or nullopt.
// Size-1 dims take any stride; others are matched in runs of equal element count: a run of
// one dim on each side keeps its stride; a run of constant dims needs its input dims
// contiguous with each other, and the output dims then split that stride.
std::optional<std::vector<Dim>> reshape_strides(const Shape& in, const std::vector<Dim>& st, const Shape& out) {
  std::vector<size_t> ins;
  for (size_t i = 0; i < in.size(); ++i)
    if (!is_one(in[i])) ins.push_back(i);
  std::vector<Dim> res(out.size(), Dim(0));
  size_t i = 0, j = 0;
  auto skip_ones = [&] {
    while (j < out.size() && is_one(out[j])) ++j;
  };
  for (skip_ones(); j < out.size(); skip_ones()) {
    if (i == ins.size()) return std::nullopt;
    if (in[ins[i]] == out[j]) {
      res[j++] = st[ins[i++]];
      continue;
    }
    // A run of constant dims with one element count on both sides.
    size_t i_end = i, j_end = j;
    int64_t pi = 1, po = 1;
    do {
      std::optional<int64_t> a = pi <= po && i_end < ins.size() ? in[ins[i_end]].constant() : std::nullopt;
      std::optional<int64_t> b = po < pi || !a ? (j_end < out.size() ? out[j_end].constant() : std::nullopt) : std::nullopt;
      if (a) pi *= *a, ++i_end;
      else if (b) po *= *b, ++j_end;
      else return std::nullopt;
      if (pi > (int64_t{1} << 40) || po > (int64_t{1} << 40)) return std::nullopt;
    } while (pi != po || j_end == j);
    for (size_t k = i; k + 1 < i_end; ++k)
      if (!(st[ins[k]] == st[ins[k + 1]] * in[ins[k + 1]])) return std::nullopt;
    Dim s = st[ins[i_end - 1]];
    for (size_t k = j_end; k-- > j;) {
      res[k] = s;
      s = s * out[k];
    }
    i = i_end, j = j_end;
  }
  if (i != ins.size()) return std::nullopt;
  return res;
}

}  // namespace

std::optional<StridedView> strided_view(const Value* v, const std::function<bool(const Node*)>& through) {
  std::vector<const Node*> chain;
  const Value* base = v;
  while (base->producer() && through(base->producer())) {
    chain.push_back(base->producer());
    base = base->producer()->operand(0);
  }
  StridedView sv;
  sv.base = base;
  const Shape& bs = base->shape();
  sv.strides.assign(bs.size(), Dim(1));
  for (size_t i = bs.size(); i-- > 1;) sv.strides[i - 1] = sv.strides[i] * bs[i];
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& n = **it;
    const Shape &in = n.operand(0)->shape(), &out = n.result()->shape();
    const int64_t rank = static_cast<int64_t>(in.size());
    switch (n.op()) {
      case Op::Permute: {
        std::vector<Dim> st;
        for (int64_t d : PermuteAttrs(n).dims()) {
          int64_t a = d < 0 ? d + rank : d;
          if (a < 0 || a >= rank) return std::nullopt;
          st.push_back(sv.strides[a]);
        }
        sv.strides = std::move(st);
        break;
      }
      case Op::Slice: {
        SliceAttrs at(n);
        int64_t axis = at.axis() < 0 ? at.axis() + rank : at.axis();
        if (at.step() < 1 || axis < 0 || axis >= rank) return std::nullopt;
        sv.offset = sv.offset + slice_bounds(n).start * sv.strides[axis];
        sv.strides[axis] = sv.strides[axis] * Dim(at.step());
        break;
      }
      case Op::Expand: {
        if (out.size() < in.size()) return std::nullopt;
        std::vector<Dim> st(out.size(), Dim(0));
        for (size_t i = 0; i < in.size(); ++i) {
          size_t o = out.size() - in.size() + i;
          if (in[i] == out[o]) st[o] = sv.strides[i];
          else if (!is_one(in[i])) return std::nullopt;  // (not a valid expand)
        }
        sv.strides = std::move(st);
        break;
      }
      case Op::Reshape: case Op::Squeeze: case Op::Unsqueeze: {
        std::optional<std::vector<Dim>> st = reshape_strides(in, sv.strides, out);
        if (!st) return std::nullopt;
        sv.strides = std::move(*st);
        break;
      }
      default:
        return std::nullopt;
    }
  }
  return sv;
}

}  // namespace kiln
