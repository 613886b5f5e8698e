#include "codegen/attention.h"

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
  if (paged()) s += str_cat(" paged(", block_size, "):", dtype_name(index_dtype));
  return s;
}

}  // namespace kiln
