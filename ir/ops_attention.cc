#include "ir/ops_attention.h"

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using Types = std::span<const TensorType>;
using Result = absl::StatusOr<std::vector<TensorType>>;

absl::Status need(bool ok, auto&&... parts) { return ok ? absl::OkStatus() : invalid_argument(parts...); }

std::string dims(const TensorType& t) { return t.to_string(); }

// Whether `kvh` heads can serve `h` query heads: equal, or both static with kvh dividing h.
bool divides(const Dim& kvh, const Dim& h) {
  if (kvh == h) return true;
  std::optional<int64_t> a = kvh.constant(), b = h.constant();
  return a && b && *a > 0 && *b % *a == 0;
}

}  // namespace

absl::StatusOr<AttentionOperands> attention_operands(Types in) {
  AttentionOperands ops;
  int last = -1;  // 0 mask, 1 kv_lens, 2 block_table: each at most once, in this order
  for (size_t i = 3; i < in.size(); ++i) {
    const TensorType& t = in[i];
    int kind = !is_integer(t.dtype) ? 0 : t.shape.size() == 1 ? 1 : t.shape.size() == 2 ? 2 : -1;
    if (kind < 0)
      return invalid_argument("operand ", i, " (", dims(t), ") is neither a mask (bool or float), kv_lens (an integer [B]) "
                              "nor a block table (an integer [B, max_blocks])");
    if (kind <= last)
      return invalid_argument("operand ", i, " (", dims(t), "): the optional operands are [mask], [kv_lens], "
                              "[block_table], each at most once and in this order");
    last = kind;
    (kind == 0 ? ops.mask : kind == 1 ? ops.kv_lens : ops.block_table) = i;
  }
  return ops;
}

AttentionOperands attention_operands(const Node& n) {
  std::vector<TensorType> in;
  for (const Value* v : n.operands()) in.push_back(v->type());
  absl::StatusOr<AttentionOperands> ops = attention_operands(in);
  return ops.ok() ? *ops : AttentionOperands{};
}

Result infer_attention(Types in, const Attrs& a) {
  const TensorType &q = in[0], &k = in[1], &v = in[2];
  KILN_RETURN_IF_ERROR(need(is_float(q.dtype), "q must be floating-point, got ", dims(q)));
  KILN_RETURN_IF_ERROR(need(k.dtype == q.dtype && v.dtype == q.dtype, "q, k and v must share a dtype, got ", dims(q), ", ",
                            dims(k), ", ", dims(v)));
  KILN_RETURN_IF_ERROR(need(q.shape.size() == 4 && k.shape.size() == 4 && v.shape.size() == 4,
                            "q, k and v must have rank 4 (q [B, H, Tq, D]), got ", dims(q), ", ", dims(k), ", ", dims(v)));
  KILN_ASSIGN_OR_RETURN(AttentionOperands ops, attention_operands(in));
  const Dim &b = q.shape[0], &h = q.shape[1], &tq = q.shape[2], &d = q.shape[3];
  // Head axis, sequence length (logical: max_blocks * block_size when paged) of k and v.
  Dim kvh = ops.paged() ? k.shape[2] : k.shape[1], tk;
  if (ops.paged()) {
    const TensorType& bt = in[*ops.block_table];
    KILN_RETURN_IF_ERROR(need(k.shape[0] == v.shape[0] && k.shape[1] == v.shape[1] && k.shape[2] == v.shape[2],
                              "paged k and v must be [num_blocks, block_size, KVH, D] alike, got ", dims(k), ", ", dims(v)));
    KILN_RETURN_IF_ERROR(need(bt.shape[0] == b, "block_table ", dims(bt), " must have q's batch ", b.to_string()));
    KILN_RETURN_IF_ERROR(
        need(bt.dtype == DType::i32 || bt.dtype == DType::i64, "block_table must be i32 or i64, got ", dims(bt)));
    KILN_RETURN_IF_ERROR(need(ops.kv_lens.has_value(), "the paged form needs kv_lens"));
    KILN_RETURN_IF_ERROR(need(!ops.mask.has_value(), "the paged form takes no mask"));
    tk = bt.shape[1] * k.shape[1];
  } else {
    KILN_RETURN_IF_ERROR(need(k.shape[0] == b && v.shape[0] == b && v.shape[1] == kvh && v.shape[2] == k.shape[2],
                              "k and v must be [B, KVH, Tk, _] with q's B, got q ", dims(q), ", k ", dims(k), ", v ", dims(v)));
    tk = k.shape[2];
  }
  KILN_RETURN_IF_ERROR(need(k.shape[3] == d, "q and k must agree in head_dim, got ", dims(q), ", ", dims(k)));
  KILN_RETURN_IF_ERROR(need(divides(kvh, h), "k's ", kvh.to_string(), " heads must divide q's ", h.to_string(),
                            " (GQA)"));
  if (ops.kv_lens) {
    const TensorType& l = in[*ops.kv_lens];
    KILN_RETURN_IF_ERROR(need(l.shape[0] == b, "kv_lens ", dims(l), " must be [", b.to_string(), "]"));
    // The devices' attention routines read lengths and block ids as i32 or i64.
    KILN_RETURN_IF_ERROR(
        need(l.dtype == DType::i32 || l.dtype == DType::i64, "kv_lens must be i32 or i64, got ", dims(l)));
  }
  if (ops.mask) {
    const TensorType& m = in[*ops.mask];
    KILN_RETURN_IF_ERROR(need(m.dtype == DType::boolean || m.dtype == q.dtype, "mask must be bool or ",
                              dtype_name(q.dtype), ", got ", dims(m)));
    Shape scores{b, h, tq, tk};
    absl::StatusOr<Shape> s = broadcast_shapes(scores, m.shape);
    KILN_RETURN_IF_ERROR(need(s.ok() && *s == scores, "mask ", dims(m), " does not broadcast to the scores' shape ",
                              shape_to_string(scores)));
  }
  AttentionAttrs at(a);
  if (std::optional<double> s = at.scale()) KILN_RETURN_IF_ERROR(need(*s > 0, "scale must be > 0"));
  KILN_RETURN_IF_ERROR(need(at.window() >= 0, "window must be >= 0 (0: none), got ", at.window()));
  KILN_RETURN_IF_ERROR(need(at.softcap() >= 0, "softcap must be >= 0 (0: none), got ", at.softcap()));
  return std::vector{TensorType{q.dtype, {b, h, tq, v.shape[3]}}};
}

Result infer_cache_write(Types in, const Attrs&) {
  const TensorType &cache = in[0], &x = in[1], &pos = in[2];
  bool paged = in.size() == 4;
  KILN_RETURN_IF_ERROR(need(cache.shape.size() == 4 && x.shape.size() == 4, "cache and new must have rank 4, got ",
                            dims(cache), ", ", dims(x)));
  KILN_RETURN_IF_ERROR(need(x.dtype == cache.dtype, "new ", dims(x), " must have the cache's dtype ", dtype_name(cache.dtype)));
  bool per_token = pos.shape.size() == 2 && pos.shape[1] == x.shape[2];  // [B, T]: one row per token
  KILN_RETURN_IF_ERROR(need(is_integer(pos.dtype) && (pos.shape.size() == 1 || per_token) && pos.shape[0] == x.shape[0],
                            "positions must be an integer [", x.shape[0].to_string(), "] or [", x.shape[0].to_string(),
                            ", ", x.shape[2].to_string(), "], got ", dims(pos)));
  if (paged) {
    const TensorType& bt = in[3];
    KILN_RETURN_IF_ERROR(need(is_integer(bt.dtype) && bt.shape.size() == 2 && bt.shape[0] == x.shape[0],
                              "block_table must be an integer [", x.shape[0].to_string(), ", max_blocks], got ", dims(bt)));
    KILN_RETURN_IF_ERROR(need(cache.shape[2] == x.shape[1] && cache.shape[3] == x.shape[3],
                              "new [B, KVH, T, D] ", dims(x), " does not fit the paged cache [num_blocks, block_size, KVH, D] ",
                              dims(cache)));
  } else {
    KILN_RETURN_IF_ERROR(need(cache.shape[0] == x.shape[0] && cache.shape[1] == x.shape[1] && cache.shape[3] == x.shape[3],
                              "new [B, KVH, T, D] ", dims(x), " does not fit the cache [B, KVH, S_max, D] ", dims(cache)));
  }
  return std::vector{cache};
}

}  // namespace kiln
