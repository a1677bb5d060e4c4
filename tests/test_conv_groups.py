"""Convolution options and binary-network primitives of issue 14: ``groups``/``dilation`` on
conv and bconv, ``bconv[binary_input=false]``, ``bn[scale=false]`` and ``blurpool``.

References are independent of fractalc: closed-form counts, torch's own F.conv2d / F.batch_norm
on +-1 tensors, onnxruntime for the standard ONNX file, and torch's conv for the XNOR kernels
(every ISA this CPU runs, or the one FRACTALC_ISA names; 1 and 2 threads).
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fractalc.backends.xnor as xnor
from fractalc import cost as costmod
from fractalc.backends.onnx import reference
from fractalc.backends.onnx.export import to_onnx
from fractalc.backends.onnx.lower import to_onnx_xnor
from fractalc.backends.onnx.ops import conv_attrs
from fractalc.backends.onnx.testing import dyadic_state
from fractalc.backends.torch import from_graph
from fractalc.backends.xnor.executor import Executor
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError

F = torch.nn.functional
ISAS = [None] if os.environ.get("FRACTALC_ISA") else xnor.available_isas()


def compiled(text: str):
    return compile_spec(text, file="test.fr")


def sign(a):
    return np.where(np.asarray(a) < 0, -1.0, 1.0)


# --- cost: closed forms ------------------------------------------------------------------------

SPEC = """
network t {
    input [16, 12, 12]
    a = bconv[32, 3, groups=4, dilation=2]
    b = bn[scale=false]
    c = blurpool[stride=2]
    d = bconv[16, 3, binary_input=false]
    e = conv[16, 3, groups=16, dilation=2]
}
"""


def test_costs_closed_form():
    c = costmod.cost(compiled(SPEC).graph)
    by = {l.id: l for l in c.layers}
    a, b, p, d, e = by["a.conv1"], by["b.bn1"], by["c.pool1"], by["d.conv1"], by["e.conv1"]
    assert a.shape == (32, 12, 12)  # dilation 2 with the default pad 2 keeps the size
    assert (a.binary_params, a.binary_mults, a.float_mults) == (32 * 16 // 4 * 9, 32 * 4 * 9 * 144, 0)
    assert (b.float_params, b.bn_buffers) == (2 * 32, 2 * 32)  # larq: 2 per channel, scale or not
    assert p.shape == (32, 6, 6) and (p.float_params, p.float_mults) == (9 * 32, 9 * 32 * 36)
    # binary weights on a float input: binary parameters, float multiplications (larq)
    assert (d.binary_params, d.float_mults, d.binary_mults) == (16 * 32 * 9, 16 * 32 * 9 * 36, 0)
    assert (e.float_params, e.float_mults) == (16 * 9, 16 * 9 * 36)  # depthwise: MACs / groups


def test_dilation_shape_and_errors():
    g = compiled("network t { input [8, 20, 20]\n a = bconv[8, 3, dilation=4, p=0] }").graph
    assert g.shape("a.conv1") == (8, 20 - 8, 20 - 8)
    for bad in ("bconv[8, 3, groups=3]", "bconv[8, 3, dilation=0]", "conv[8, 3, groups=0]",
                'bconv[8, 3, binary_input=false, pad="one"]', "blurpool[stride=0]"):
        with pytest.raises(FractalcError):
            compiled(f"network t {{ input [8, 8, 8]\n a = {bad} }}")


# --- torch ------------------------------------------------------------------------------------

def _model(text, seed=0):
    c = compiled(text)
    m = from_graph(c.graph, seed=seed)
    return c, m


@pytest.mark.parametrize("groups,dilation,pad", [(4, 1, "zero"), (16, 2, "zero"), (2, 3, "one")])
def test_torch_bconv_groups_dilation(groups, dilation, pad):
    c, m = _model(f'network t {{ input [16, 9, 9]\n a = bconv[32, 3, groups={groups}, dilation={dilation}, '
                  f'pad="{pad}"] }}')
    m.eval()
    x = torch.randn(2, 16, 9, 9)
    w = m.state_dict()["a.conv1.weight"]
    assert tuple(w.shape) == (32, 16 // groups, 3, 3)
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    sx = torch.where(x < 0, -1.0, 1.0)
    p = dilation
    if pad == "one":
        sx, p = F.pad(sx, (p,) * 4, value=1.0), 0
    want = F.conv2d(sx, alpha * torch.where(w < 0, -1.0, 1.0), None, 1, p, dilation, groups)
    assert torch.allclose(m(x), want, atol=1e-5)


def test_torch_binary_input_false_and_bn_noscale_train_step():
    c, m = _model("network t { input [3, 8, 8]\n a = bconv[8, 3, binary_input=false]\n b = bn[scale=false] }")
    x = torch.randn(4, 3, 8, 8)
    m.train()
    y = m(x)
    w = m.state_dict()["a.conv1.weight"]
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    z = F.conv2d(x, alpha * torch.where(w < 0, -1.0, 1.0), None, 1, 1)  # the input is not binarized
    bias = m.state_dict()["b.bn1.bias"]
    want = F.batch_norm(z, None, None, None, bias, True, 0.0, 1e-5)
    assert torch.allclose(y, want, atol=1e-5)
    y.square().mean().backward()
    bn = m.get_submodule("b.bn1")
    assert bn.weight.grad is None and bn.bias.grad is not None  # gamma is fixed at 1
    assert m.get_submodule("a.conv1").weight.grad is not None


def test_torch_blurpool_matches_fixed_kernel():
    c, m = _model("network t { input [5, 7, 7]\n a = blurpool[stride=2] }")
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    y = m.double()(x)
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 5, 4, 4))
    for oy in range(4):
        for ox in range(4):
            want[:, :, oy, ox] = (xp[:, :, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3] * k).sum(axis=(2, 3))
    assert np.allclose(y.detach().numpy(), want, atol=1e-12)
    assert not list(m.parameters())  # the kernel is a constant


# --- ONNX: standard (onnxruntime), lowered (reference), runtime (executor) -------------------

NET = """
network t {
    input [16, 10, 10]
    a = bconv[16, 3, binary_input=false] >> bn[scale=false]
    b = bconv[32, 3, groups=4, dilation=2] >> bn
    c = bconv[32, 3, groups=32, s=2] >> bn[scale=false]
    d = bconv[64, 3, groups=2, dilation=3, pad="one"] >> bn >> blurpool[stride=2]
    e = bconv[64, 1, groups=2] >> bn
    f = gap >> linear[10]
}
"""


def _state(c, m, seed=1):
    state = dyadic_state(c.graph, seed=seed)
    sd = m.state_dict()
    for k in sd:
        if k in state:
            sd[k] = torch.tensor(state[k])
    m.load_state_dict(sd)
    return {k: v.numpy() for k, v in m.state_dict().items()}


def test_standard_onnx_matches_torch():
    c, m = _model(NET)
    st = _state(c, m)
    m.eval()
    x = torch.randn(3, 16, 10, 10)
    sess = ort.InferenceSession(to_onnx(c, st).SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(got, m(x).detach().numpy(), atol=1e-4)


def test_lowered_graph_and_runtime_bit_exact():
    c, m = _model(NET)
    st = _state(c, m)
    m.eval()
    x = np.random.default_rng(0).standard_normal((3, 16, 10, 10)).astype(np.float32)
    low = to_onnx_xnor(c, st)
    convs = {n.name: conv_attrs(reference.ops.attrs_of(n)) for n in low.graph.node if n.op_type == "XnorConv"}
    assert "a.conv1" not in convs  # float input: a float Conv, not an XnorConv
    assert (convs["b.conv1"].group, convs["b.conv1"].dilations) == (4, (2, 2))
    assert (convs["d.conv1"].group, convs["d.conv1"].dilations) == (2, (3, 3))
    ref = reference.run_reference(low, x)
    assert np.allclose(ref, m(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    # the binary convs are exact integer arithmetic; the float tail (blur pool, pooling, linear)
    # runs on onnxruntime in the executor and on onnx's ReferenceEvaluator here: ulps apart
    first = None
    for isa in ISAS:
        for threads in (1, 2):
            got = Executor(low.SerializeToString(), threads=threads, isa=isa).run(x)
            assert np.allclose(got, ref, rtol=0, atol=1e-5), (isa, threads)
            first = got if first is None else first
            assert np.array_equal(got, first), (isa, threads)  # same bytes on every ISA / thread count


# --- the XNOR kernels against torch, every ISA -------------------------------------------------

KCASES = [  # (n, c_in, c_out, h, w, k, stride, pad, groups, dilation)
    (2, 64, 64, 7, 6, 3, 1, 1, 64, 1),     # depthwise
    (1, 130, 66, 9, 9, 3, 2, 1, 2, 1),     # groups off word boundaries (65 channels each)
    (2, 256, 128, 8, 8, 3, 1, 1, 2, 1),    # whole words per group
    (1, 48, 96, 11, 10, 3, 1, 2, 3, 2),    # dilated and grouped
    (2, 70, 35, 12, 12, 3, 1, 4, 1, 4),    # dilated only
    (1, 8, 8, 9, 9, 5, 2, 3, 4, 2),
]


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: i or "env")
@pytest.mark.parametrize("case", KCASES, ids=str)
@pytest.mark.parametrize("mode", ["zero", "one"])
def test_kernels_grouped_dilated_vs_torch(isa, case, mode):
    n, ci, co, h, w, k, s, p, g, d = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
    wt = rng.standard_normal((co, ci // g, k, k)).astype(np.float32)
    sx, sw = torch.from_numpy(sign(x)), torch.from_numpy(sign(wt))
    pp = p
    if mode == "one":
        sx, pp = F.pad(sx, (p,) * 4, value=1.0), 0
    want = F.conv2d(sx, sw, None, s, pp, d, g).numpy().transpose(0, 2, 3, 1)
    xp, wp = xnor.pack_activations(x), xnor.pack_weights(wt)
    for threads in (1, 2):
        conv = dict(stride=s, padding=p, padding_mode=mode, groups=g, dilation=d, isa=isa, threads=threads)
        dot = xnor.binary_conv2d(xp, wp, ci, **conv)
        assert np.array_equal(dot, want.astype(np.int32))
        mul = rng.standard_normal(co).astype(np.float32)
        bias = rng.standard_normal(co).astype(np.float32)
        y = xnor.binary_conv2d(xp, wp, ci, output="float", mul=mul, bias=bias, **conv)
        assert np.array_equal(y, reference.fma_f32(mul, dot.astype(np.int64), bias))
        thr = rng.integers(-20, 20, co).astype(np.int32)
        flip = rng.integers(0, 2, co).astype(np.int32)
        bits = xnor.binary_conv2d(xp, wp, ci, output="bits", threshold=thr, flip=flip, **conv)
        neg = (dot < thr) != (flip != 0)
        assert np.array_equal(bits, reference.packing._pack_last_axis(neg))


def test_reference_xnor_dot_grouped_dilated_vs_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 12, 9, 9)).astype(np.float32)
    wt = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    a = conv_attrs({"in_channels": 12, "out_channels": 6, "kernel_shape": [3, 3], "strides": [2, 2],
                    "pads": [2, 2, 2, 2], "group": 3, "dilations": [2, 2], "padding": "zero"})
    got = reference.xnor_dot(reference.packing.pack_activations(x), reference.packing.pack_weights(wt), a)
    want = F.conv2d(torch.from_numpy(sign(x)), torch.from_numpy(sign(wt)), None, 2, 2, 2, 3).numpy()
    assert np.array_equal(got, want.transpose(0, 2, 3, 1).astype(np.int64))


def test_stats_json_and_diagram():
    from fractalc.backends import graphviz
    c = compiled(SPEC)
    dot = graphviz.to_dot(c.graph) if hasattr(graphviz, "to_dot") else None
    if dot is not None:
        text = dot if isinstance(dot, str) else str(dot)
        assert "g4 d2" in text and "float in" in text and "blurpool 3x3/2" in text and "no scale" in text
    js = costmod.cost(c.graph).to_json()
    assert json.loads(json.dumps(js))["params"]["binary"] == 32 * 4 * 9 + 16 * 32 * 9
