#include "test/cpu/decoder_layer.h"

#include <cmath>

#include "ir/str.h"

namespace kiln::testing {

std::string decoder_layer_text(int d, int h, int e, int f) {
  std::string text = R"(graph decoder_layer(%x: bf16[B, T, D], %cos: bf16[T, E], %sin: bf16[T, E], %attn_norm: bf16[D] param, %wq: bf16[D, D] param, %wk: bf16[D, D] param, %wv: bf16[D, D] param, %wo: bf16[D, D] param, %mlp_norm: bf16[D] param, %w_gate: bf16[F, D] param, %w_up: bf16[F, D] param, %w_down: bf16[D, F] param) {
  %attn_in = rms_norm(%x, %attn_norm, axes=[-1], eps=1e-06)
  %linear = linear(%attn_in, %wq)
  %reshape = reshape(%linear, shape=[B, T, H, E])
  %permute = permute(%reshape, dims=[0, 2, 1, 3])
  %slice = slice(%permute, axis=-1, start=0, end=E2, step=1)
  %slice_1 = slice(%permute, axis=-1, start=E2, end=E, step=1)
  %neg = neg(%slice_1)
  %concat = concat(%neg, %slice, axis=-1)
  %mul = mul(%permute, %cos)
  %mul_1 = mul(%concat, %sin)
  %q = add(%mul, %mul_1)
  %linear_1 = linear(%attn_in, %wk)
  %reshape_1 = reshape(%linear_1, shape=[B, T, H, E])
  %permute_1 = permute(%reshape_1, dims=[0, 2, 1, 3])
  %slice_2 = slice(%permute_1, axis=-1, start=0, end=E2, step=1)
  %slice_3 = slice(%permute_1, axis=-1, start=E2, end=E, step=1)
  %neg_1 = neg(%slice_3)
  %concat_1 = concat(%neg_1, %slice_2, axis=-1)
  %mul_2 = mul(%permute_1, %cos)
  %mul_3 = mul(%concat_1, %sin)
  %k = add(%mul_2, %mul_3)
  %linear_2 = linear(%attn_in, %wv)
  %reshape_2 = reshape(%linear_2, shape=[B, T, H, E])
  %v = permute(%reshape_2, dims=[0, 2, 1, 3])
  %attn = scaled_dot_product_attention(%q, %k, %v, causal=true)
  %permute_3 = permute(%attn, dims=[0, 2, 1, 3])
  %reshape_3 = reshape(%permute_3, shape=[B, T, D])
  %linear_3 = linear(%reshape_3, %wo)
  %attn_out = add(%x, %linear_3)
  %mlp_in = rms_norm(%attn_out, %mlp_norm, axes=[-1], eps=1e-06)
  %linear_4 = linear(%mlp_in, %w_gate)
  %silu = silu(%linear_4)
  %linear_5 = linear(%mlp_in, %w_up)
  %mul_4 = mul(%silu, %linear_5)
  %linear_6 = linear(%mul_4, %w_down)
  %out = add(%attn_out, %linear_6)
  return %out
})";
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size()) text.replace(at, from.size(), to);
  };
  // Longest names first: E2 before E.
  replace("E2", std::to_string(e / 2));
  replace(", D]", str_cat(", ", d, "]"));
  replace("[D", str_cat("[", d));
  replace(", E]", str_cat(", ", e, "]"));
  replace(", H,", str_cat(", ", h, ","));
  replace("end=E,", str_cat("end=", e, ","));
  replace("[F", str_cat("[", f));
  replace(", F]", str_cat(", ", f, "]"));
  return text;
}


TensorMap layer_args(const Graph& g, const Bindings& b, uint64_t seed) {
  TensorMap args = random_args(g, b, seed);
  scale_weights_by_fan_in(g, args);
  return args;
}

}  // namespace kiln::testing
