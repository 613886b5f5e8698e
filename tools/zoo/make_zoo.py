#!/usr/bin/env python3
"""Builds kiln's model zoo (issue 16): small random-weight models of real architectures,
exported to ONNX with dynamic axes, with onnxruntime's outputs on fixed inputs.

Run by hand when the zoo changes, never by CI. It writes test/onnx/zoo/<model>/model.onnx,
per size set <model>/<set>/<input>.npy and <model>/<set>/<output>.npy (onnxruntime, CPU
execution provider, all graph optimizations on), and test/onnx/zoo/manifest.json, which
test/onnx/zoo_test.cc reads. A model's status is "enabled" when `kiln dump` imports it,
else "pending: " and kiln's first error line, verbatim.

  python3 -m venv /work/zoo-venv
  /work/zoo-venv/bin/pip install torch==2.8.* torchvision==0.23.* transformers==4.52.4 \
      onnx onnxruntime onnxscript numpy
  /work/zoo-venv/bin/python tools/zoo/make_zoo.py --kiln build/compiler/kiln
  /work/zoo-venv/bin/python tools/zoo/make_zoo.py --kiln build/compiler/kiln --only unet
      (rebuilds one model; the others keep their committed files, their statuses re-checked)
  python3 tools/zoo/zoo_status.py --kiln build/compiler/kiln
      (no torch: re-checks the committed models with kiln and rewrites only the statuses)

Run with (2026-12-06): Python 3.11, torch 2.8.0 (the CUDA wheel from PyPI, run on the CPU),
torchvision 0.23.0, transformers 4.52.4, onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.
transformers is pinned below 4.53 because its later vmap-built causal masks break the
TorchScript exporter. Every model here is exported with the TorchScript exporter
(torch.onnx.export(..., dynamo=False)), the one that produced the Slice patterns issue 16
names and most published Hugging Face ONNX files.

Outputs are deterministic for one set of versions: seeds are fixed per model.
"""
import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import zoo_status
from zoo_status import ZOO

OPSET = 17
RTOL = 1e-3
TEXT_SETS = [("b1_s7", {"batch": 1, "seq": 7}), ("b3_s16", {"batch": 3, "seq": 16})]
IMAGE_SETS = [("b1_32x32", {"batch": 1, "height": 32, "width": 32}),
              ("b2_40x40", {"batch": 2, "height": 40, "width": 40})]
BATCH_SETS = [("b1", {"batch": 1}), ("b3", {"batch": 3})]
VOCAB = 128


class Model:
    """One zoo entry: a torch module, its inputs (name, dims with symbol names, dtype, value
    range), its output names, its size sets and the sizes the C++ test draws fresh inputs at."""

    def __init__(self, name, module, inputs, outputs, size_sets, fresh, atol, note):
        self.name, self.module, self.inputs, self.outputs = name, module.eval(), inputs, outputs
        self.size_sets, self.fresh, self.atol, self.note = size_sets, fresh, atol, note


def text_input(name, lo=0, hi=VOCAB):
    return {"name": name, "dims": ["batch", "seq"], "dtype": "int64", "range": [lo, hi]}


IMAGE_INPUT = {"name": "pixels", "dims": ["batch", 3, "height", "width"], "dtype": "float32", "range": [-1, 1]}


class FirstOutput(nn.Module):
    """A Hugging Face model called with keyword inputs, returning its first output tensor."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)), return_dict=False)
        return out[0]


def hf(model, names):
    return FirstOutput(model, names)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     initializer_range=0.2, use_cache=False, attn_implementation="eager")
    return Model("gpt2", hf(GPT2LMHeadModel(cfg), ["input_ids"]), [text_input("input_ids")], ["logits"],
                 TEXT_SETS, {"batch": 2, "seq": 33}, 1e-4, "GPT2LMHeadModel, 2 layers, hidden 32, 4 heads")


def bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                     attn_implementation="eager")
    model = BertModel(cfg, add_pooling_layer=False)
    return Model("bert", hf(model, ["input_ids", "attention_mask"]),
                 [text_input("input_ids"), text_input("attention_mask", 0, 2)], ["last_hidden_state"],
                 TEXT_SETS, {"batch": 2, "seq": 33}, 1e-4, "BertModel, 2 layers, hidden 32, 4 heads, padding mask input")


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.2, use_cache=False, attn_implementation="eager")
    return Model("llama", hf(LlamaForCausalLM(cfg), ["input_ids"]), [text_input("input_ids")], ["logits"],
                 TEXT_SETS, {"batch": 2, "seq": 33}, 1e-4,
                 "LlamaForCausalLM, 2 layers, hidden 64, 4 heads over 2 KV heads (GQA), RoPE")


def t5_encoder():
    from transformers import T5Config, T5EncoderModel
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   initializer_factor=1.0, attn_implementation="eager")
    return Model("t5_encoder", hf(T5EncoderModel(cfg), ["input_ids"]), [text_input("input_ids")],
                 ["last_hidden_state"], TEXT_SETS, {"batch": 2, "seq": 33}, 1e-4,
                 "T5EncoderModel, 2 layers, d_model 32, 4 heads, relative position buckets")


def vit():
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10, initializer_range=0.2,
                    attn_implementation="eager")
    inp = dict(IMAGE_INPUT, dims=["batch", 3, 32, 32])
    return Model("vit", hf(ViTForImageClassification(cfg), ["pixel_values"]), [inp], ["logits"],
                 BATCH_SETS, {"batch": 2}, 1e-4,
                 "ViTForImageClassification, 32x32 images in 8x8 patches (fixed size: learned positions)")


def randomize_batch_norms(module):
    """Running statistics and affine parameters away from identity, so folding them matters."""
    g = torch.Generator().manual_seed(7)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return module


class NarrowResNet(nn.Module):
    """ResNet-18's layout (stem conv 7x7/2 + max pool, four stages of two torchvision
    BasicBlocks, global average pool, linear) at widths 8-64 instead of 64-512."""

    def __init__(self, widths=(8, 16, 32, 64), classes=10):
        super().__init__()
        from torchvision.models.resnet import BasicBlock
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w:
                down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            blocks += [BasicBlock(cin, w, stride, down), BasicBlock(w, w)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet():
    return Model("resnet", randomize_batch_norms(NarrowResNet()), [IMAGE_INPUT], ["logits"], IMAGE_SETS,
                 {"batch": 3, "height": 24, "width": 48}, 1e-4,
                 "ResNet-18 layout from torchvision BasicBlocks, widths 8/16/32/64")


def mobilenet_v2():
    from torchvision.models import MobileNetV2
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 1, 2]]  # t, c, n, s
    model = MobileNetV2(num_classes=10, width_mult=0.5, inverted_residual_setting=setting)
    return Model("mobilenet_v2", randomize_batch_norms(model), [IMAGE_INPUT], ["logits"], IMAGE_SETS,
                 {"batch": 3, "height": 24, "width": 48}, 1e-4,
                 "torchvision MobileNetV2, width 0.5, 4 inverted-residual stages (depthwise convs, ReLU6)")


def whisper_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    cfg = WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=1,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_source_positions=16, max_target_positions=16,
                        init_std=0.2, attn_implementation="eager")
    encoder = WhisperEncoder(cfg)
    inp = {"name": "input_features", "dims": ["batch", 16, 32], "dtype": "float32", "range": [-1, 1]}
    return Model("whisper_encoder", hf(encoder, ["input_features"]), [inp], ["last_hidden_state"], BATCH_SETS,
                 {"batch": 2}, 1e-4,
                 "WhisperEncoder, 16 mel bins x 32 frames (fixed: Whisper checks the length), 2 layers, hidden 32")


class UNet(nn.Module):
    """A two-level U-Net for segmentation: conv-GroupNorm-SiLU blocks, max-pool down, nearest
    and bilinear Resize up, skip connections concatenated, a 1x1 conv to class scores."""

    @staticmethod
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())

    def __init__(self, classes=5):
        super().__init__()
        self.enc1, self.enc2, self.mid = self.block(3, 16), self.block(16, 32), self.block(32, 64)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2, self.dec1 = self.block(64 + 32, 32), self.block(32 + 16, 16)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def unet():
    return Model("unet", UNet(), [IMAGE_INPUT], ["scores"], IMAGE_SETS, {"batch": 3, "height": 24, "width": 48},
                 1e-4, "hand-written U-Net: GroupNorm, SiLU, MaxPool, Resize nearest and linear, Concat skips")


class Mlp(nn.Module):
    """The control: ops kiln imports today (Gemm, LayerNorm, Gelu, Softmax), dynamic batch, so the
    test's enabled path runs while every real architecture is pending."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(24, 64), nn.LayerNorm(64), nn.Linear(64, 10)

    def forward(self, x):
        return torch.softmax(self.fc2(nn.functional.gelu(self.norm(self.fc1(x)))), -1)


def mlp():
    inp = {"name": "x", "dims": ["batch", 24], "dtype": "float32", "range": [-1, 1]}
    return Model("mlp", Mlp(), [inp], ["probs"], BATCH_SETS, {"batch": 5}, 1e-5,
                 "control model: Linear, LayerNorm, GELU, Linear, Softmax")


BUILDERS = [gpt2, bert, llama, t5_encoder, vit, resnet, mobilenet_v2, whisper_encoder, unet, mlp]


def shape_of(inp, bindings):
    return [bindings[d] if isinstance(d, str) else d for d in inp["dims"]]


def make_input(inp, bindings, rng):
    shape = shape_of(inp, bindings)
    lo, hi = inp["range"]
    if inp["dtype"] == "int64":
        if inp["name"] == "attention_mask":  # padding: row b keeps its first seq - 3b tokens
            a = np.ones(shape, np.int64)
            for b in range(shape[0]):
                a[b, max(1, shape[1] - 3 * b):] = 0
            return a
        return rng.integers(lo, hi, size=shape, dtype=np.int64)
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def export(m, path):
    bindings = m.size_sets[-1][1]
    rng = np.random.default_rng(0)
    args = tuple(torch.from_numpy(make_input(i, bindings, rng)) for i in m.inputs)
    dynamic = {i["name"]: {k: d for k, d in enumerate(i["dims"]) if isinstance(d, str)} for i in m.inputs}
    out_dims = {o: {0: "batch"} for o in m.outputs}
    if m.inputs[0]["dims"][-1] == "seq":
        out_dims = {o: {0: "batch", 1: "seq"} for o in m.outputs}
    elif "height" in m.inputs[0]["dims"] and m.name == "unet":
        out_dims = {o: {0: "batch", 2: "height", 3: "width"} for o in m.outputs}
    torch.onnx.export(m.module, args, path, input_names=[i["name"] for i in m.inputs], output_names=m.outputs,
                      dynamic_axes={**dynamic, **out_dims}, opset_version=OPSET, do_constant_folding=True,
                      dynamo=False)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    return model


def build(m, kiln):
    d = os.path.join(ZOO, m.name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    model = export(m, path)
    size = os.path.getsize(path)
    if size > 2 << 20:
        sys.exit(f"{path}: {size} bytes, over the 2 MiB the zoo allows")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    sets = []
    for k, (set_name, bindings) in enumerate(m.size_sets):
        rng = np.random.default_rng(1000 + k)
        os.makedirs(os.path.join(d, set_name), exist_ok=True)
        feeds = {i["name"]: make_input(i, bindings, rng) for i in m.inputs}
        outs = sess.run(m.outputs, feeds)
        with torch.no_grad():  # the export is only right if it agrees with the module at every size
            eager = m.module(*(torch.from_numpy(feeds[i["name"]]) for i in m.inputs))
        eager = eager if isinstance(eager, tuple) else (eager,)
        for o, e in zip(outs, eager):
            np.testing.assert_allclose(o, e.numpy(), rtol=RTOL, atol=m.atol, err_msg=f"{m.name} {set_name}")
        files = {"inputs": {}, "outputs": {}}
        for kind, named in (("inputs", feeds), ("outputs", dict(zip(m.outputs, outs)))):
            for n, a in named.items():
                rel = f"{m.name}/{set_name}/{n}.npy"
                np.save(os.path.join(ZOO, rel), a)
                files[kind][n] = rel
        sets.append({"name": set_name, "bindings": bindings, **files})
    ops = sorted({n.op_type for n in model.graph.node})
    return {"name": m.name, "description": m.note, "exporter": "torchscript (torch.onnx.export, dynamo=False)",
            "opset": OPSET, "model": f"{m.name}/model.onnx", "bytes": size, "op_types": ops,
            "inputs": m.inputs, "outputs": m.outputs, "size_sets": sets, "fresh_bindings": m.fresh,
            "rtol": RTOL, "atol": m.atol, "status": zoo_status.kiln_status(kiln, path)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", required=True, help="the kiln CLI, for each model's status")
    ap.add_argument("--only", nargs="*", help="rebuild only these models (the others stay as committed)")
    a = ap.parse_args()
    kiln = os.path.abspath(a.kiln)
    old = {e["name"]: e for e in zoo_status.read_manifest()}
    entries = []
    for seed, builder in enumerate(BUILDERS):
        name = builder.__name__
        torch.manual_seed(seed)  # before the module is made: its random weights
        if a.only and name not in a.only:
            e = old[name]
            e["status"] = zoo_status.kiln_status(kiln, os.path.join(ZOO, e["model"]))
        else:
            e = build(builder(), kiln)
        entries.append(e)
    zoo_status.write_manifest(entries)
    zoo_status.print_summary(entries)


if __name__ == "__main__":
    main()
