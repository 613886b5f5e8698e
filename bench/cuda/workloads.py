# The CUDA benchmark workloads as kiln IR with their sizes, shared by the kiln runner and
# the PyTorch runner (torch_bench.py writes the same computations by hand), so both sides
# run the same graphs on the same shapes.
#   python3 workloads.py --emit DIR   writes DIR/<name>.kiln and DIR/manifest.json
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DECODER = open(os.path.join(ROOT, "examples", "decoder_layer.kiln")).read()


def ew(dt):
    return f"""graph ew_{dt}(%x: {dt}[N]) {{
  %a = constant(value=1.5, dtype={dt})
  %b = constant(value=0.25, dtype={dt})
  %m = mul(%x, %a)
  %p = add(%m, %b)
  %g = gelu(%p)
  %s = sigmoid(%x)
  %y = mul(%g, %s)
  return %y
}}"""


RMS = """graph rms_norm_residual(%x: bf16[R, 4096], %res: bf16[R, 4096], %w: bf16[4096]) {
  %h = add(%x, %res)
  %n = rms_norm(%h, %w, axes=[-1], eps=1e-6)
  return %h, %n
}"""

SOFTMAX = """graph softmax(%x: bf16[R, 2048]) {
  %y = softmax(%x, axis=-1)
  return %y
}"""

LAYER_NORM_GELU = """graph layer_norm_gelu(%x: bf16[R, 4096], %w: bf16[4096], %b: bf16[4096]) {
  %n = layer_norm(%x, %w, %b, axes=[-1], eps=1e-5)
  %y = gelu(%n, approximate="tanh")
  return %y
}"""

LINEAR = """graph linear_bias_gelu(%x: bf16[T, 4096], %w: bf16[4096, 4096], %b: bf16[4096]) {
  %l = linear(%x, %w, %b)
  %y = gelu(%l, approximate="tanh")
  return %y
}"""

MLP = """graph llama_mlp(%x: bf16[T, 4096], %w_gate: bf16[11008, 4096], %w_up: bf16[11008, 4096], %w_down: bf16[4096, 11008]) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  return %y
}"""

OVERHEAD = """graph overhead(%x: f32[1024]) {
  %two = constant(value=2.0, dtype=f32)
  %one = constant(value=1.0, dtype=f32)
  %m = mul(%x, %two)
  %a = add(%m, %one)
  %y = relu(%a)
  return %y
}"""

# name, IR, symbol bindings, bytes moved (read once + written once), flops, kind
def workloads():
    w = []
    n = 1 << 26
    for dt, size in (("f32", 4), ("bf16", 2)):
        w.append(dict(name=f"gelu_ew_{dt}_2p26", ir=ew(dt), bind={"N": n}, bytes=2 * n * size, flops=0, kind="memory"))
    r, d = 8192, 4096
    w.append(dict(name="rms_norm_residual_8192x4096", ir=RMS, bind={"R": r}, bytes=4 * r * d * 2 + d * 2, flops=0, kind="memory"))
    w.append(dict(name="softmax_16384x2048", ir=SOFTMAX, bind={"R": 16384}, bytes=2 * 16384 * 2048 * 2, flops=0, kind="memory"))
    w.append(dict(name="layer_norm_gelu_8192x4096", ir=LAYER_NORM_GELU, bind={"R": r}, bytes=2 * r * d * 2 + 2 * d * 2, flops=0, kind="memory"))
    for t in (16, 512, 4096):
        w.append(dict(name=f"linear_bias_gelu_T{t}", ir=LINEAR, bind={"T": t},
                      bytes=(t * 4096 * 2 + 4096 * 4096 + 4096) * 2, flops=2 * t * 4096 * 4096, kind="gemm"))
    for t in (1, 16, 512, 2048):
        w.append(dict(name=f"llama_mlp_T{t}", ir=MLP, bind={"T": t},
                      bytes=(3 * 11008 * 4096 + 2 * t * 4096) * 2, flops=2 * t * 4096 * 11008 * 3, kind="gemm"))
    w.append(dict(name="overhead_relu_1024_f32", ir=OVERHEAD, bind={}, bytes=2 * 1024 * 4, flops=0, kind="overhead"))
    t, dm, f = 512, 2048, 5632
    flops = 2 * t * dm * (4 * dm) + 2 * t * dm * f * 3 + 2 * 2 * 16 * t * t * 128
    weights = (4 * dm * dm + 3 * dm * f + 2 * dm) * 2
    w.append(dict(name="decoder_layer_T512", ir=DECODER, bind={"B": 1, "T": t}, bytes=weights + 2 * t * dm * 2,
                  flops=flops, kind="model"))
    return w


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--emit":
        sys.exit("usage: workloads.py --emit DIR")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    manifest = []
    for x in workloads():
        path = os.path.join(out, x["name"] + ".kiln")
        with open(path, "w") as f:
            f.write(x.pop("ir") + "\n")
        manifest.append(dict(x, file=path))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
