"""The plan's fusions (backends/xnor/plan.py) on hand-built graphs: where they apply, where they
must not (a value read twice), and that every fused run equals the unfused plan and the numpy
reference executor bit for bit, on random data, on every ISA and thread count."""
from __future__ import annotations

import numpy as np
import pytest

import onnxruntime  # noqa: F401  (a dependency of `make test`)
import onnx
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fractalc.backends.onnx import ops, packing, reference  # noqa: E402
from fractalc.backends.xnor import available_isas  # noqa: E402
from fractalc.backends.xnor.executor import Executor  # noqa: E402

C, H = 70, 6  # channels not a multiple of 64: partial words and masked tiles


def _model(share_conv_output: bool, rng) -> onnx.ModelProto:
    inits, nodes = [], []

    def init(name, a):
        inits.append(numpy_helper.from_array(a, name))
        return name

    def conv(name, src_bits):
        w = packing.pack_weights_tight(rng.standard_normal((C, C, 3, 3)).astype(np.float32))
        mul = (rng.standard_normal(C) / 30).astype(np.float32)
        bias = rng.standard_normal(C).astype(np.float32)
        nodes.append(helper.make_node(
            "XnorConv", [src_bits, init(f"{name}.w", w), init(f"{name}.m", mul), init(f"{name}.b", bias)],
            [name], name, domain=ops.DOMAIN, in_channels=C, out_channels=C, kernel_shape=[3, 3],
            strides=[1, 1], pads=[1, 1, 1, 1], padding="zero", output_type="float"))
        return name

    def pack(name, src):
        nodes.append(helper.make_node("PackBits", [src], [name], name, domain=ops.DOMAIN))
        return name

    def op(kind, name, *ins):
        nodes.append(helper.make_node(kind, list(ins), [name], name))
        return name

    # block 1: conv -> residual add -> pack (all three fuse)
    a = conv("c1", pack("p0", "input"))
    s1 = op("Add", "add1", "input", a)                      # residual first: both orders fuse
    b = conv("c2", pack("p1", s1))
    s2 = op("Add", "add2", b, s1)
    if share_conv_output:                                   # c2's output read twice: no fusion
        s2 = op("Add", "add2b", s2, b)
    c = conv("c3", pack("p2", s2))
    s3 = op("Add", "add3", c, s2)
    m = op("Sum", "sum", s1, s2, s3)                        # a mean join of three, then packed
    j = op("Div", "join", m, init("three", np.array(3, np.float32)))
    d = conv("c4", pack("p3", j))
    out = op("Add", "output", d, j)
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "fusion", [vi("input", TensorProto.FLOAT, ["N", C, H, H])],
                          [vi("output", TensorProto.FLOAT, ["N", C, H, H])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)] + ops.opset_imports())
    model.ir_version = 8
    return model


@pytest.mark.parametrize("share", [False, True], ids=["fusable", "shared-value"])
def test_fused_plan_equals_unfused_and_reference(share):
    rng = np.random.default_rng(7)
    model = _model(share, rng)
    x = rng.standard_normal((2, C, H, H)).astype(np.float32)
    want = reference.run_reference(model, x, outputs=["output"])["output"]
    data = model.SerializeToString()
    for isa in available_isas():
        for threads in (1, 2):
            ex = Executor(data, threads=threads, isa=isa)
            got = ex.run(x)
            assert got.tobytes() == ex.run_all(x)["output"].tobytes(), (isa, threads)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    counts = Executor(data, threads=2).plan.counts
    if share:
        # c2 stays a plain conv (its output is read twice), so add2 and add2b stay numpy adds and
        # p2 a separate PackBits; c1 still fuses its add and pack, c3 and c4 their adds
        assert counts == {"PackBits": 2, "XnorConv+Add+PackBits": 1, "XnorConv": 1, "Add": 2,
                          "XnorConv+Add": 2, "Sum+Div+PackBits": 1}, counts
    else:
        # c1, c2: conv + residual + the next layer's pack; c3 (read by the join), c4: conv + add
        assert counts == {"PackBits": 1, "XnorConv+Add+PackBits": 2, "XnorConv+Add": 2,
                          "Sum+Div+PackBits": 1}, counts


def test_dense_concat_chains_share_a_buffer_safely():
    """x2 = [x1, y2], x3 = [x2, y3] and the output share one buffer; a second concat extending
    x1 (a branch) must not, and a BatchNormalization reading x2 last must not run in place."""
    rng = np.random.default_rng(9)
    g_ = 24
    inits, nodes = [], []

    def init(name, a):
        inits.append(numpy_helper.from_array(a, name))
        return name

    def conv(name, src, cin):
        w = packing.pack_weights_tight(rng.standard_normal((g_, cin, 3, 3)).astype(np.float32))
        nodes.append(helper.make_node(
            "XnorConv", [src, init(f"{name}.w", w), init(f"{name}.m", (rng.standard_normal(g_) / 30).astype(np.float32)),
                         init(f"{name}.b", rng.standard_normal(g_).astype(np.float32))],
            [name], name, domain=ops.DOMAIN, in_channels=cin, out_channels=g_, kernel_shape=[3, 3],
            strides=[1, 1], pads=[1, 1, 1, 1], padding="zero", output_type="float"))
        return name

    def pack(name, src, c):  # a BN folded into the pack: per-channel thresholds
        nodes.append(helper.make_node("PackBits", [src, init(f"{name}.t", rng.standard_normal(c).astype(np.float32)),
                                                   init(f"{name}.f", rng.integers(0, 2, c).astype(bool))],
                                      [name], name, domain=ops.DOMAIN))
        return name

    def concat(name, *ins):
        nodes.append(helper.make_node("Concat", list(ins), [name], name, axis=1))
        return name

    c = C
    x1 = concat("x1", "input", conv("y1", pack("p0", "input", c), c))
    x2 = concat("x2", x1, conv("y2", pack("p1", x1, c + g_), c + g_))
    x3 = concat("x3", x2, conv("y3", pack("p2", x2, c + 2 * g_), c + 2 * g_))
    branch = concat("branch", x1, conv("z", pack("pz", x1, c + g_), c + g_))   # x1 extended twice
    k = c + 2 * g_
    nodes.append(helper.make_node("BatchNormalization", [x2] + [init(f"bn.{n}", v) for n, v in (
        ("g", rng.uniform(0.5, 2, k).astype(np.float32)), ("b", rng.standard_normal(k).astype(np.float32)),
        ("m", rng.standard_normal(k).astype(np.float32)), ("v", rng.uniform(0.5, 2, k).astype(np.float32)))],
        ["bn1"], "bn1"))                  # x2's last reader: in place, it would rewrite x3's prefix
    concat("output", x3, branch, "bn1")
    vi = helper.make_tensor_value_info
    width = (c + 3 * g_) + (c + 2 * g_) + (c + 2 * g_)
    graph = helper.make_graph(nodes, "dense", [vi("input", TensorProto.FLOAT, ["N", c, H, H])],
                              [vi("output", TensorProto.FLOAT, ["N", width, H, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)] + ops.opset_imports())
    model.ir_version = 8
    x = rng.standard_normal((2, c, H, H)).astype(np.float32)
    want = reference.run_reference(model, x, outputs=["output"])["output"]
    ex = Executor(model.SerializeToString(), threads=2)
    got = ex.run(x)
    assert got.tobytes() == ex.run_all(x)["output"].tobytes()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    steps = {st.name: st for st in ex.plan.steps}
    chain = {n: steps[n].fn.__kwdefaults__["_c"] for n in ("x1", "x2", "x3", "branch")}
    # x1 is extended twice (x2, branch), so neither shares its buffer; x3 and the output (a
    # concat whose first input is x3) extend x2's, which is as wide as the output
    assert chain["x3"] is chain["x2"] is steps["output"].fn.__kwdefaults__["_c"]
    assert chain["x2"].width == width
    assert len({id(chain[n]) for n in ("x1", "x2", "branch")}) == 3
    assert all(steps[n].view for n in chain) and steps["bn1"].fast is None  # no in-place write
    # each new value comes from a conv read only by its concat: written into the buffer
    assert ex.plan.counts.get("XnorConv+Concat") == 4 and ex.plan.counts.get("Concat") == 1 \
        and "XnorConv" not in ex.plan.counts
