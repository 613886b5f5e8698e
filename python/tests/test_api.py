"""kiln's Python API on the CPU: parse/print, the builder, compile and calls with NumPy
arrays against the reference evaluator, stats and guards, errors as KilnError."""
import numpy as np
import pytest

import kiln

MLP = """graph mlp(%x: f32[B, 16], %w1: f32[32, 16] param, %b1: f32[32] param, %w2: f32[8, 32] param) {
  %h = linear(%x, %w1, %b1)
  %a = gelu(%h, approximate="tanh")
  %y = linear(%a, %w2)
  %s = softmax(%y, axis=-1)
  return %s
}
"""


def mlp_args(rng, b):
    x = rng.standard_normal((b, 16), dtype=np.float32)
    w1 = (rng.standard_normal((32, 16)) / 4).astype(np.float32)
    b1 = rng.standard_normal(32).astype(np.float32)
    w2 = (rng.standard_normal((8, 32)) / 6).astype(np.float32)
    return x, w1, b1, w2


def test_parse_print_round_trip():
    g = kiln.parse(MLP)
    text = g.to_text()
    assert kiln.parse(text).to_text() == text
    assert [(a.name, a.type, a.role) for a in g.args()] == [
        ("x", "f32[B, 16]", "input"), ("w1", "f32[32, 16]", "param"), ("b1", "f32[32]", "param"),
        ("w2", "f32[8, 32]", "param")]
    assert g.outputs() == ["f32[B, 8]"]
    assert g.symbols() == ["B"]


def test_parse_error_is_located():
    with pytest.raises(kiln.KilnError, match=r"bad.kiln:2:\d+: .*undefined value %nope"):
        kiln.parse("graph g(%x: f32[4]) {\n  %y = relu(%nope)\n  return %y\n}\n", "bad.kiln")


@pytest.mark.parametrize("b", [1, 7, 300])
def test_compiled_matches_reference(rng, b):
    g = kiln.parse(MLP)
    cg = kiln.compile(g, device="cpu")
    args = mlp_args(rng, b)
    (y,) = cg(*args)
    names = [a.name for a in g.args()]
    (ref,) = kiln.evaluate(g, dict(zip(names, args)))
    assert isinstance(y, np.ndarray) and y.shape == (b, 8) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    # The reference is not the compiled code: it must also agree with NumPy itself.
    x, w1, b1, w2 = [a.astype(np.float64) for a in args]
    h = x @ w1.T + b1
    a = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    z = a @ w2.T
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(ref, e / e.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_stats_guards_warm_up(rng):
    cg = kiln.compile(MLP, device="cpu")
    cg.warm_up(B=5)
    assert cg.stats()["compiles"] == 1
    cg(*mlp_args(rng, 5))
    cg(*mlp_args(rng, 9))
    (y1,) = cg(*mlp_args(rng, 1))  # B = 1 is specialized: a recompile with its reason
    s = cg.stats()
    assert s["calls"] == 3 and s["compiles"] == 2 and s["recompiles"] == 1
    assert any("B = 1" in r for r in s["recompile_reasons"]), s["recompile_reasons"]
    assert len(cg.specializations()) == 2 and "B" in cg.specializations()[0]
    assert "compiles" in cg.stats_text()


def test_call_errors_name_the_argument(rng):
    cg = kiln.compile(MLP, device="cpu")
    x, w1, b1, w2 = mlp_args(rng, 3)
    with pytest.raises(kiln.KilnError, match="w1"):
        cg(x, w1[:, :8], b1, w2)
    with pytest.raises(kiln.KilnError, match="f32"):
        cg(x.astype(np.int32), w1, b1, w2)
    with pytest.raises(kiln.KilnError, match="4"):
        cg(x, w1, b1)
    with pytest.raises(TypeError, match="list"):
        cg(x, w1, b1, [1.0])
    with pytest.raises(kiln.KilnError, match="mode"):
        kiln.compile(MLP, mode="fast")
    with pytest.raises(kiln.KilnError):
        cg.static_slots(B=2)  # reduce-overhead on CUDA only


def test_non_contiguous_and_readonly_inputs(rng):
    cg = kiln.compile(MLP, device="cpu")
    x, w1, b1, w2 = mlp_args(rng, 6)
    xt = np.asfortranarray(x)
    w1.setflags(write=False)
    (y,) = cg(xt, w1, b1, w2)
    (ref,) = cg(x.copy(), w1.copy(), b1, w2)
    np.testing.assert_array_equal(y, ref)


def test_run_into_outputs_and_zero_copy(rng):
    cg = kiln.compile(MLP, device="cpu")
    args = mlp_args(rng, 4)
    out = np.full((4, 8), np.nan, np.float32)
    (res,) = cg.run(args, [out])
    assert res is out and not np.isnan(out).any()
    (y,) = cg(*args)
    np.testing.assert_allclose(out, y, rtol=1e-6)
    # A kiln tensor crosses into NumPy without a copy.
    t = kiln._api.to_kiln(out)
    assert t.data_ptr == out.__array_interface__["data"][0]
    back = kiln._api.from_kiln(t)
    assert back.__array_interface__["data"][0] == t.data_ptr


def test_builder_matches_text(rng):
    b = kiln.GraphBuilder("mlp")
    x = b.input("x", "f32", ["B", 16])
    w1 = b.param("w1", "f32", [32, 16])
    b1 = b.param("b1", "f32", [32])
    w2 = b.param("w2", "f32", [8, 32])
    h = b.op("linear", x, w1, b1, name="h")
    a = b.op("gelu", h, approximate="tanh", name="a")
    y = b.op("linear", a, w2, name="y")
    s = b.op("softmax", y, axis=-1, name="s")
    b.output(s)
    assert b.build().to_text() == kiln.parse(MLP).to_text()


def test_builder_symbolic_reshape_and_errors(rng):
    b = kiln.GraphBuilder("r")
    x = b.input("x", "f32", ["B", "T", 4])
    r = b.op("reshape", x, shape=[kiln.builder.Dim("B * T"), 4])
    c = b.constant(2, "f32")
    b.output(b.op("mul", r, c))
    g = b.build()
    assert g.outputs() == ["f32[B*T, 4]"] or g.outputs() == ["f32[B * T, 4]"]
    xs = rng.standard_normal((3, 5, 4), dtype=np.float32)
    (y,) = kiln.compile(g, device="cpu")(xs)
    np.testing.assert_allclose(y, xs.reshape(15, 4) * 2, rtol=1e-6)
    bad = kiln.GraphBuilder("bad")
    x = bad.input("x", "f32", [4])
    bad.output(bad.op("linear", x))
    with pytest.raises(kiln.KilnError, match="linear"):
        bad.build()


def test_integer_and_bool_dtypes(rng):
    g = kiln.parse("""graph g(%a: i32[N], %b: i32[N]) {
  %s = add(%a, %b)
  %c = gt(%s, %b)
  return %s, %c
}
""")
    a = rng.integers(-1000, 1000, 33, dtype=np.int32)
    b = rng.integers(-1000, 1000, 33, dtype=np.int32)
    s, c = kiln.compile(g, device="cpu")(a, b)
    np.testing.assert_array_equal(s, a + b)
    np.testing.assert_array_equal(c, (a + b) > b)
    assert c.dtype == np.bool_


def test_stubs_cover_the_extension():
    """_kiln.pyi names exactly the native module's classes, functions and methods."""
    import ast
    import pathlib
    stub = ast.parse((pathlib.Path(kiln.__file__).parent / "_kiln.pyi").read_text())
    declared = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
        elif isinstance(node, ast.FunctionDef):
            declared[node.name] = None
    native = {n for n in dir(kiln._kiln) if not n.startswith("_")}
    assert set(declared) == native
    for cls, members in declared.items():
        if members is None or cls == "KilnError":
            continue
        have = {m for m in dir(getattr(kiln._kiln, cls)) if not m.startswith("_")}
        if "__call__" in members:
            have.add("__call__")
        assert members == have, cls
