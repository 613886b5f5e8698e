#include "codegen/attention.h"

#include <cmath>

#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

std::string AttentionForm::to_string() const {
  std::string s = str_cat(dtype_name(dtype), " H=", heads, " KVH=", kv_heads, " D=", head_dim, " scale=", scale);
  if (causal) s += " causal";
  if (window > 0) s += str_cat(" window=", window);
  if (softcap > 0) s += str_cat(" softcap=", softcap);
  if (mask == Mask::Additive) s += str_cat(" mask=add:", dtype_name(mask_dtype));
  if (mask == Mask::Bool) s += " mask=bool";
  if (kv_lens) s += str_cat(" kv_lens:", dtype_name(index_dtype));
  if (paged()) s += str_cat(" paged(", block_size, "):", dtype_name(table_dtype));
  return s;
}

absl::StatusOr<AttentionSizes> evaluate_sizes(const AttentionStep& s, const Bindings& b) {
  AttentionSizes z;
  auto eval = [&](const Dim& d, int64_t& out) -> absl::Status {
    KILN_ASSIGN_OR_RETURN(out, d.evaluate(b));
    return absl::OkStatus();
  };
  KILN_RETURN_IF_ERROR(eval(s.batch, z.batch));
  KILN_RETURN_IF_ERROR(eval(s.tq, z.tq));
  KILN_RETURN_IF_ERROR(eval(s.tk, z.tk));
  if (s.form.paged()) {
    KILN_RETURN_IF_ERROR(eval(s.max_blocks, z.max_blocks));
    KILN_RETURN_IF_ERROR(eval(s.num_blocks, z.num_blocks));
  }
  for (auto [from, to] : {std::pair{&s.q_strides, &z.qs}, {&s.k_strides, &z.ks}, {&s.v_strides, &z.vs},
                          {&s.out_strides, &z.os}, {&s.mask_strides, &z.ms}})
    for (size_t i = 0; i < 4; ++i) KILN_RETURN_IF_ERROR(eval((*from)[i], (*to)[i]));
  for (auto [from, to] : {std::pair{&s.q_offset, &z.q_offset}, {&s.k_offset, &z.k_offset}, {&s.v_offset, &z.v_offset},
                          {&s.out_offset, &z.out_offset}})
    KILN_RETURN_IF_ERROR(eval(*from, *to));
  return z;
}

absl::StatusOr<AttentionForm> attention_form(const Node& n) {
  if (n.op() != Op::Attention) return invalid_argument(n.describe(), " is not an attention");
  AttentionOperands ops = attention_operands(n);
  AttentionAttrs at(n);
  const Value *q = n.operand(0), *k = n.operand(1);
  AttentionForm f;
  f.dtype = q->dtype();
  std::optional<int64_t> h = q->shape()[1].constant(), d = q->shape()[3].constant(),
                         kvh = k->shape()[ops.paged() ? 2 : 1].constant();
  std::optional<int64_t> dv = n.result()->shape()[3].constant();
  if (!h || !d || !kvh || !dv || *dv != *d)
    return invalid_argument(n.describe(), ": the fused step needs static heads and head_dim (v's equal to q's), got q ",
                            q->type().to_string(), ", k ", k->type().to_string());
  f.heads = *h, f.kv_heads = *kvh, f.head_dim = *d;
  f.scale = at.scale().value_or(1.0 / std::sqrt(static_cast<double>(*d)));
  f.causal = at.causal();
  f.window = at.window();
  f.softcap = at.softcap();
  if (ops.mask) {
    const Value* m = n.operand(*ops.mask);
    f.mask = m->dtype() == DType::boolean ? AttentionForm::Mask::Bool : AttentionForm::Mask::Additive;
    f.mask_dtype = m->dtype();
  }
  if (ops.kv_lens) f.kv_lens = true, f.index_dtype = n.operand(*ops.kv_lens)->dtype();
  if (ops.paged()) {
    std::optional<int64_t> bs = k->shape()[1].constant();
    if (!bs) return invalid_argument(n.describe(), ": the fused step needs a static block size, got k ", k->type().to_string());
    f.block_size = *bs;
    f.table_dtype = n.operand(*ops.block_table)->dtype();
  }
  return f;
}

Strides4 dense_strides(const Shape& shape) {
  Strides4 s{Dim(0), Dim(0), Dim(0), Dim(1)};
  for (size_t i = 3; i-- > 0;) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

Strides4 broadcast_strides(const Shape& shape) {
  Strides4 s{Dim(0), Dim(0), Dim(0), Dim(0)};
  Dim step(1);
  for (size_t i = shape.size(); i-- > 0;) {
    size_t axis = 4 - shape.size() + i;
    if (shape[i] != Dim(1)) s[axis] = step;
    step = step * shape[i];
  }
  return s;
}

}  // namespace kiln
