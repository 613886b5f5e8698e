#!/usr/bin/python3
"""Writes onnx_block.onnx, a tiny pre-norm transformer block as an exporter would write it,
and a test vector (onnx_block_x.npy, onnx_block_y.npy) computed here with NumPy.

Needs only Debian's python3-onnx and python3-numpy:  /usr/bin/python3 make_onnx_block.py [DIR]

The block has symbolic batch and sequence dims (dim_params "batch" and "seq"):
  h = LayerNormalization(x); q, k, v = h @ Wq + bq, ...; heads split with the
  Shape -> Gather -> Unsqueeze -> Concat -> Reshape pattern; Softmax(q k^T / sqrt(hd)) v;
  heads merged with Reshape [0, 0, -1]; x1 = x + ctx @ Wo + bo;
  y = x1 + Gelu(LayerNormalization(x1) @ W1 + b1) @ W2 + b2, Gelu in its Erf form.
"""
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D, HEADS, FF = 16, 2, 32
HD = D // HEADS
EPS = 1e-5


def make_weights(rng):
    w = {}
    for name, shape in [("ln1_w", [D]), ("ln1_b", [D]), ("ln2_w", [D]), ("ln2_b", [D]),
                        ("wq", [D, D]), ("wk", [D, D]), ("wv", [D, D]), ("wo", [D, D]),
                        ("bq", [D]), ("bk", [D]), ("bv", [D]), ("bo", [D]),
                        ("w1", [D, FF]), ("b1", [FF]), ("w2", [FF, D]), ("b2", [D])]:
        scale = 1.0 / math.sqrt(shape[0]) if len(shape) == 2 else 0.1
        w[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    w["ln1_w"] += 1
    w["ln2_w"] += 1
    return w


def make_model(w):
    nodes = []

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "_node", **attrs))

    def const(name, values, dtype=np.int64):
        node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype=dtype), name))

    def linear(x, wname, bname, out):
        node("MatMul", [x, wname], [out + "_mm"])
        node("Add", [out + "_mm", bname], [out])

    node("LayerNormalization", ["x", "ln1_w", "ln1_b"], ["h"], axis=-1, epsilon=EPS)
    for p in "qkv":
        linear("h", "w" + p, "b" + p, p)
    # [batch, seq, D] -> [batch, seq, HEADS, HD], the shape computed from x's shape.
    node("Shape", ["x"], ["x_shape"])
    const("idx0", 0)
    const("idx1", 1)
    const("axes0", [0])
    const("heads_hd", [HEADS, HD])
    node("Gather", ["x_shape", "idx0"], ["batch"], axis=0)
    node("Gather", ["x_shape", "idx1"], ["seq"], axis=0)
    node("Unsqueeze", ["batch", "axes0"], ["batch_1d"])
    node("Unsqueeze", ["seq", "axes0"], ["seq_1d"])
    node("Concat", ["batch_1d", "seq_1d", "heads_hd"], ["heads_shape"], axis=0)
    for p, perm in [("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])]:
        node("Reshape", [p, "heads_shape"], [p + "_heads"])
        node("Transpose", [p + "_heads"], [p + "_t"], perm=perm)
    node("MatMul", ["q_t", "k_t"], ["scores_raw"])
    const("scale", 1.0 / math.sqrt(HD), np.float32)
    node("Mul", ["scores_raw", "scale"], ["scores"])
    node("Softmax", ["scores"], ["probs"], axis=-1)
    node("MatMul", ["probs", "v_t"], ["ctx_heads"])
    node("Transpose", ["ctx_heads"], ["ctx_t"], perm=[0, 2, 1, 3])
    const("merge_shape", [0, 0, -1])
    node("Reshape", ["ctx_t", "merge_shape"], ["ctx"])
    linear("ctx", "wo", "bo", "attn")
    node("Add", ["x", "attn"], ["x1"])
    node("LayerNormalization", ["x1", "ln2_w", "ln2_b"], ["h2"], axis=-1, epsilon=EPS)
    linear("h2", "w1", "b1", "f")
    const("inv_sqrt2", 1.0 / math.sqrt(2.0), np.float32)
    const("one", 1.0, np.float32)
    const("half", 0.5, np.float32)
    node("Mul", ["f", "inv_sqrt2"], ["f_scaled"])
    node("Erf", ["f_scaled"], ["f_erf"])
    node("Add", ["f_erf", "one"], ["f_erf1"])
    node("Mul", ["f", "f_erf1"], ["f_gate"])
    node("Mul", ["f_gate", "half"], ["g"])
    linear("g", "w2", "b2", "mlp")
    node("Add", ["x1", "mlp"], ["y"])

    graph = helper.make_graph(
        nodes, "onnx_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", D])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sorted(w.items())])
    model = helper.make_model(graph, producer_name="kiln make_onnx_block.py",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def layer_norm(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def reference(x, w):
    """The block in float64 NumPy, independent of the ONNX graph above."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x.astype(np.float64)
    b, t, _ = x.shape
    h = layer_norm(x, w["ln1_w"], w["ln1_b"])
    q, k, v = [(h @ w["w" + p] + w["b" + p]).reshape(b, t, HEADS, HD).transpose(0, 2, 1, 3) for p in "qkv"]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HD)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, D)
    x1 = x + ctx @ w["wo"] + w["bo"]
    f = layer_norm(x1, w["ln2_w"], w["ln2_b"]) @ w["w1"] + w["b1"]
    erf = np.vectorize(math.erf)
    g = 0.5 * f * (1 + erf(f / math.sqrt(2)))
    return (x1 + g @ w["w2"] + w["b2"]).astype(np.float32)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    rng = np.random.default_rng(0)
    w = make_weights(rng)
    onnx.save(make_model(w), os.path.join(out_dir, "onnx_block.onnx"))
    x = rng.standard_normal([2, 5, D]).astype(np.float32)
    np.save(os.path.join(out_dir, "onnx_block_x.npy"), x)
    np.save(os.path.join(out_dir, "onnx_block_y.npy"), reference(x, w))


if __name__ == "__main__":
    main()
