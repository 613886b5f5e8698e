#include "examples/models.h"

#include "frontends/trace/trace.h"
#include "ir/str.h"

namespace kiln::examples {

using namespace kiln::trace;

Graph trace_mlp(const MlpConfig& c) {
  Tracer t("mlp");
  Tensor x = t.input("x", c.dtype, {"B", c.dim});  // B is symbolic: any batch size
  Tensor w_up = t.param("w_up", c.dtype, {c.hidden, c.dim});  // no data: bound at run time
  Tensor w_gate = t.param("w_gate", c.dtype, {c.hidden, c.dim});
  Tensor w_down = t.param("w_down", c.dtype, {c.dim, c.hidden});

  // Values are named after their op unless named; these follow the hand-written IR.
  Tensor g = t.name(linear(x, w_gate), "g");
  Tensor u = t.name(linear(x, w_up), "u");
  Tensor a = t.name(silu(g), "a");
  Tensor h = t.name(a * u, "h");
  Tensor y = t.name(linear(h, w_down), "y");
  t.output(rms_norm(y), "n");
  t.output(h);
  return t.finish();
}

namespace {

// [B, T, D] -> [B, H, T, hd]
Tensor split_heads(const Tensor& x, int64_t heads, int64_t head_dim) {
  return permute(reshape(x, {x.dim(0), x.dim(1), heads, head_dim}), {0, 2, 1, 3});
}

// Rotary embedding, "rotate half" form: x * cos + [-x2, x1] * sin, with x1, x2 the two
// halves of the head dim; cos and sin [T, hd] broadcast over batch and heads.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t head_dim) {
  Tensor x1 = slice(x, -1, 0, head_dim / 2);
  Tensor x2 = slice(x, -1, head_dim / 2, head_dim);
  Tensor rotated = concat({-x2, x1}, -1);
  Tensor x_cos = x * cos;  // its own statement: C++ leaves the order of a + b's operands open
  return x_cos + rotated * sin;
}

}  // namespace

namespace {

// One decoder layer on x [B, T, dim]; its parameters and named values are prefixed with
// `prefix` (none for a single layer).
Tensor decoder_layer(Tracer& t, const DecoderConfig& c, const Tensor& x, const Tensor& cos, const Tensor& sin,
                     const std::string& prefix) {
  const int64_t head_dim = c.dim / c.heads;
  Tensor attn_norm = t.param(prefix + "attn_norm", c.dtype, {c.dim});
  Tensor wq = t.param(prefix + "wq", c.dtype, {c.dim, c.dim});
  Tensor wk = t.param(prefix + "wk", c.dtype, {c.dim, c.dim});
  Tensor wv = t.param(prefix + "wv", c.dtype, {c.dim, c.dim});
  Tensor wo = t.param(prefix + "wo", c.dtype, {c.dim, c.dim});
  Tensor mlp_norm = t.param(prefix + "mlp_norm", c.dtype, {c.dim});
  Tensor w_gate = t.param(prefix + "w_gate", c.dtype, {c.hidden, c.dim});
  Tensor w_up = t.param(prefix + "w_up", c.dtype, {c.hidden, c.dim});
  Tensor w_down = t.param(prefix + "w_down", c.dtype, {c.dim, c.hidden});

  // Attention block.
  Tensor h = t.name(rms_norm(x, attn_norm), prefix + "attn_in");
  Tensor q = t.name(rotary(split_heads(linear(h, wq), c.heads, head_dim), cos, sin, head_dim), prefix + "q");
  Tensor k = t.name(rotary(split_heads(linear(h, wk), c.heads, head_dim), cos, sin, head_dim), prefix + "k");
  Tensor v = t.name(split_heads(linear(h, wv), c.heads, head_dim), prefix + "v");
  Tensor attn = t.name(scaled_dot_product_attention(q, k, v, std::nullopt, /*causal=*/true), prefix + "attn");
  attn = reshape(permute(attn, {0, 2, 1, 3}), {x.dim(0), x.dim(1), c.dim});  // [B, T, D]
  Tensor r = t.name(x + linear(attn, wo), prefix + "attn_out");

  // MLP block.
  Tensor m = t.name(rms_norm(r, mlp_norm), prefix + "mlp_in");
  Tensor gate = silu(linear(m, w_gate));
  Tensor gated = gate * linear(m, w_up);
  return r + linear(gated, w_down);
}

}  // namespace

Graph trace_decoder_layer(const DecoderConfig& c) { return trace_decoder_stack(c, 1); }

Graph trace_decoder_stack(const DecoderConfig& c, int layers) {
  Tracer t(layers == 1 ? "decoder_layer" : "decoder_stack");
  Tensor x = t.input("x", c.dtype, {"B", "T", c.dim});
  Tensor cos = t.input("cos", c.dtype, {"T", c.dim / c.heads});
  Tensor sin = t.input("sin", c.dtype, {"T", c.dim / c.heads});
  for (int l = 0; l < layers; ++l) x = decoder_layer(t, c, x, cos, sin, layers == 1 ? "" : str_cat("l", l, "_"));
  t.output(x, "out");
  return t.finish();
}

Graph trace_elementwise_chain(int64_t ops) {
  Tracer t(str_cat("chain", ops));
  Tensor x = t.input("x", DType::f32, {"B", 64});
  Tensor y = x;
  for (int64_t i = 0; i < ops; ++i) {
    switch (i % 4) {
      case 0: y = sin(y); break;
      case 1: y = y + x; break;
      case 2: y = y * x; break;
      default: y = tanh(y); break;
    }
  }
  t.output(y, "out");
  return t.finish();
}

}  // namespace kiln::examples
