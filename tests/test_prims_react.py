"""Issue 14's binary-network primitives: rsign, rprelu, prelu, shift, scale, sigmoid, mul.

References are independent of the code under test: closed-form parameter counts (and the
ReActNet-18 numbers of docs/zoo-reference.md, section 2.1 / 3.8), torch's own functional ops
written out by hand, onnxruntime on the standard ONNX file, and, for the lowered graph, the
torch network in eval mode, which the reference executor, the executor and the C++ engine must
reproduce bit for bit (weights chosen so that every sum is exact; the new ops are single IEEE
operations, or a float64 sigmoid rounded once).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.errors import FractalcError
from fractalc.ir import ops

ALL = """\
rule gate[c](z) = z >> gap >> conv[c / 4, k=1] >> relu >> conv[c, k=1] >> sigmoid
rule block(x) = mul(x >> rsign >> bconv[16] >> bn, x >> bn >> gate[16]) >> rprelu
network allprims {
  input [3, 8, 8]
  body = conv[16] >> bn >> prelu >> shift >> scale >> block >> gap >> linear[10] >> prelu >> shift >> scale >> sigmoid
}
"""

# Built so that torch's float32 arithmetic is exact up to the new ops: binary conv weights
# +-2^-k (alpha a power of two, every partial sum exact), gates from a 6x6 max pool (exact), no
# float conv or linear layer. Every new op appears, shifts and thresholds both before a binary
# conv (folded into PackBits) and elsewhere, the gate on both sides of a mul.
EXACT = """\
rule gate(z) = z >> maxpool[6] >> scale >> shift >> sigmoid
rule gated(y) = mul(y, gate(y))
rule gated_first(y) = mul(gate(y), y)
rule square(y) = mul(y, y >> prelu)
network exact {
  input [8, 6, 6]
  body = rsign >> bconv[16] >> rprelu >> gated >> prelu >> shift >> bconv[16, pad="one"] >> gated_first >> square >> scale >> rsign >> rprelu
}
"""

REACTNET18 = """\
rule short[c, s](x) = if s == 1 then x else x >> avgpool[2] >> conv[c, k=1] >> bn
rule block[c, s](x) = add(x >> rsign >> bconv[c, s=s] >> bn, short[c, s](x)) >> rprelu
rule stage[c, s](x) = x >> block[c, s] >> block[c, 1] >> block[c, 1] >> block[c, 1]
network reactnet18 {
  input [3, 224, 224]
  stem = conv[64, k=7, s=2, p=3] >> bn >> maxpool[3, s=2, p=1]
  stage1 = stage[64, 1]
  stage2 = stage[128, 2]
  stage3 = stage[256, 2]
  stage4 = stage[512, 2]
  head = gap >> linear[1000]
}
"""


def _compile(tmp_path, text, name="s.fr"):
    f = tmp_path / name
    f.write_text(text)
    return compile_spec(f)


def _random_state(g, seed=0, dyadic_binary=False):
    """Random weights for every parameter of `g`; binary conv weights +-2^-k per output channel
    with `dyadic_binary` (alpha = mean |W| exact)."""
    from fractalc.backends.onnx.weights import expected_keys
    rng = np.random.default_rng(seed)
    state = {}
    for k, shape in expected_keys(g).items():
        node = k.rsplit(".", 1)[0]
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif dyadic_binary and isinstance(g.op(node), ir.BinaryConv):
            mag = 2.0 ** -rng.integers(1, 4, size=(shape[0], 1, 1, 1))
            state[k] = (rng.choice([-1.0, 1.0], size=shape) * mag).astype(np.float32)
        else:
            state[k] = rng.normal(0.0, 0.6, shape).astype(np.float32)
    return state


def _torch(g, state):
    from fractalc.backends.onnx.testing import torch_model
    return torch_model(g, state)


# ----------------------------------------------------------------------------- op table, cost


@pytest.mark.parametrize("prim,per_channel", [("rsign", 1), ("shift", 1), ("scale", 1), ("prelu", 1),
                                              ("rprelu", 3), ("sigmoid", 0)])
@pytest.mark.parametrize("c", [5, 64])
def test_parameter_counts_are_closed_form(tmp_path, prim, per_channel, c):
    """Each adds per_channel * C float parameters and no multiplications, on CxHxW or flat values."""
    base = f"network n {{\n  input [3, 4, 4]\n  body = conv[{c}] >> X >> gap >> linear[{c}] >> X\n}}\n"
    with_op = cost(_compile(tmp_path, base.replace("X", prim)).graph)
    without = cost(_compile(tmp_path, base.replace("X", "identity"), "t.fr").graph)
    assert with_op.total("float_params") - without.total("float_params") == 2 * per_channel * c
    assert with_op.total("binary_params") == without.total("binary_params") == 0
    assert with_op.total("float_mults") == without.total("float_mults")


def test_mul_counts_nothing_and_broadcasts_per_channel(tmp_path):
    c = _compile(tmp_path, ALL)
    g = c.graph
    (mul,) = g.nodes(ir.Mul)
    assert [g.shape(s) for s in g.inputs(mul)] == [(16, 8, 8), (16, 1, 1)] and g.shape(mul) == (16, 8, 8)
    assert ops.mults(g, mul) == (0, 0) and ops.tensors(g, mul) == ()


def test_reactnet18_counts_equal_the_reference(tmp_path):
    """docs/zoo-reference.md 2.1 / 3.8 (derived, and equal to a torch instantiation of
    ReActNet's birealnet.py): 10,985,472 binary + 718,952 float parameters (Bi-Real's 704,040
    + RSign 3,392 + RPReLU 3 x 3,840), 1,676,279,808 binary and 137,793,536 float MACs."""
    t = cost(_compile(tmp_path, REACTNET18).graph)
    assert t.total("binary_params") == 10_985_472
    assert t.total("float_params") == 718_952
    assert t.total("binary_mults") == 1_676_279_808
    assert t.total("float_mults") == 137_793_536
    g = _compile(tmp_path, REACTNET18, "r.fr").graph
    assert len(list(g.nodes(ir.RSign))) == 16 and len(list(g.nodes(ir.PReLU))) == 16


@pytest.mark.parametrize("body,msg", [
    ("mul(x, x >> gap >> conv[8, k=1])", "shape mismatch at mul"),
    ("mul(x, x >> maxpool[2])", "shape mismatch at mul"),
    ("mul(x, x, x)", "'mul' takes 2 tensor arguments, got 3"),
])
def test_bad_mul_is_a_located_error(tmp_path, body, msg):
    text = f"rule r(x) = {body}\nnetwork n {{\n  input [4, 6, 6]\n  body = r\n}}\n"
    with pytest.raises(FractalcError, match=msg) as e:
        _compile(tmp_path, text)
    assert "s.fr:" in str(e.value)


def test_new_ops_have_every_backend_hook():
    import fractalc.backends.onnx.export  # noqa: F401
    import fractalc.backends.torch.build  # noqa: F401
    import fractalc.backends.torch.source  # noqa: F401
    for kind in (ir.RSign, ir.Shift, ir.Scale, ir.PReLU, ir.Mul):
        d = ops.of(kind)
        assert {"torch", "torch.forward", "torch.source", "onnx"} <= set(d.hooks), kind
        assert d.style and d.legend


# ----------------------------------------------------------------------------- torch


def test_torch_forward_is_torchs_own_ops(tmp_path):
    """The network's output written out with torch.nn.functional on its own state_dict."""
    c = _compile(tmp_path, ALL)
    model = _torch(c.graph, _random_state(c.graph, seed=1))
    sd = model.state_dict()
    ch = lambda v: v.view(1, -1, 1, 1)
    bn = lambda t, n: F.batch_norm(t, sd[f"{n}.running_mean"], sd[f"{n}.running_var"], sd[f"{n}.weight"],
                                   sd[f"{n}.bias"], False, 0.0, 1e-5)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = bn(F.conv2d(x, sd["body.conv1.weight"], padding=1), "body.bn1")
    y = F.prelu(y, sd["body.prelu1.weight"])
    y = (y + ch(sd["body.shift1.bias"])) * ch(sd["body.scale1.weight"])
    w = sd["body.conv2.weight"]
    wb = w.abs().mean((1, 2, 3), keepdim=True) * torch.where(w < 0, -1.0, 1.0)
    xb = torch.where(y - ch(sd["body.rsign1.threshold"]) < 0, -1.0, 1.0)
    main = bn(F.conv2d(xb, wb, padding=1), "body.bn2")
    gate = bn(y, "body.bn3").mean((2, 3), keepdim=True)
    gate = F.conv2d(F.relu(F.conv2d(gate, sd["body.conv3.weight"])), sd["body.conv4.weight"])
    z = main * torch.sigmoid(gate)
    z = F.prelu(z + ch(sd["body.rprelu1.shift_in"]), sd["body.rprelu1.weight"]) + ch(sd["body.rprelu1.shift_out"])
    f = F.linear(z.mean((2, 3)), sd["body.fc1.weight"], sd["body.fc1.bias"])
    f = (F.prelu(f, sd["body.prelu2.weight"]) + sd["body.shift2.bias"]) * sd["body.scale2.weight"]
    want = torch.sigmoid(f)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_torch_initial_values_and_a_train_step_reaches_every_new_parameter(tmp_path):
    from fractalc.backends.torch import from_graph
    c = _compile(tmp_path, ALL)
    model = from_graph(c.graph, seed=0).train()
    sd = model.state_dict()
    assert torch.all(sd["body.rsign1.threshold"] == 0) and torch.all(sd["body.shift1.bias"] == 0)
    assert torch.all(sd["body.scale1.weight"] == 1) and torch.all(sd["body.prelu1.weight"] == 0.25)
    assert torch.all(sd["body.rprelu1.shift_in"] == 0) and torch.all(sd["body.rprelu1.weight"] == 0.25)
    new = [k for k in sd if any(s in k for s in ("rsign", "shift", "scale", "prelu"))]
    assert len(new) == 10
    before = {k: sd[k].clone() for k in new}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    params = dict(model.named_parameters())
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in new), \
        [k for k in new if params[k].grad is None or params[k].grad.abs().sum() == 0]
    opt.step()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in new)


def test_torch_source_matches_the_built_network(tmp_path):
    from fractalc.backends.torch import from_graph
    from fractalc.backends.torch.source import source
    c = _compile(tmp_path, ALL)
    ns: dict = {}
    exec(compile(source(c.graph, c, seed=3), "allprims_gen.py", "exec"), ns)
    emitted = ns["Allprims"](seed=3).eval()
    built = from_graph(c.graph, seed=3).eval()
    sd = {k: torch.from_numpy(v) for k, v in _random_state(c.graph, seed=4).items()}
    emitted.load_state_dict(sd, strict=False)
    built.load_state_dict(sd, strict=False)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(emitted(x), built(x))


# ----------------------------------------------------------------------------- ONNX


def test_standard_onnx_runs_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    from fractalc.backends.onnx.export import to_onnx
    from fractalc.backends.onnx.loader import load_model
    c = _compile(tmp_path, ALL)
    state = _random_state(c.graph, seed=5)
    proto = load_model(to_onnx(c, state))
    kinds = {n.name: n.op_type for n in proto.graph.node}
    assert kinds["body.rsign1"] == "Sub" and kinds["body.shift1"] == "Add" and kinds["body.scale1"] == "Mul"
    assert kinds["body.prelu1"] == "PRelu" and kinds["body.rprelu1.prelu"] == "PRelu"
    assert kinds["body.sigmoid1"] == "Sigmoid" and kinds["body.mul1"] == "Mul"
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        want = _torch(c.graph, state)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lowered_rsign_and_shift_fold_into_packbits_thresholds(tmp_path):
    from fractalc.backends.onnx.lower import to_onnx_xnor
    from fractalc.backends.onnx.loader import load_model
    c = _compile(tmp_path, EXACT)
    state = _random_state(c.graph, seed=6, dyadic_binary=True)
    proto = load_model(to_onnx_xnor(c, state))
    names = {n.name: n for n in proto.graph.node}
    inits = {t.name: t for t in proto.graph.initializer}
    from onnx import numpy_helper
    for n, t in (("body.rsign1", state["body.rsign1.threshold"]), ("body.shift2", -state["body.shift2.bias"])):
        assert n not in names  # not computed: its consumer packs the input against the threshold
        pack = names[f"{n}.pack"]
        assert pack.op_type == "PackBits" and len(pack.input) == 3
        np.testing.assert_array_equal(numpy_helper.to_array(inits[pack.input[1]]), t)
        assert not numpy_helper.to_array(inits[pack.input[2]]).any()
    # read by anything else than a binary conv, they are computed (the gate's shift, the last rsign)
    assert names["body.shift1"].op_type == "Add" and names["body.rsign2"].op_type == "Sub"


def _exact_case(tmp_path, seed):
    c = _compile(tmp_path, EXACT)
    state = _random_state(c.graph, seed=seed, dyadic_binary=True)
    rng = np.random.default_rng(seed + 100)
    # quarter-steps in input and thresholds: ties x == t are frequent (sign(0) = +1 everywhere)
    x = (rng.integers(-6, 7, size=(3, 8, 6, 6)) / 4).astype(np.float32)
    state["body.rsign1.threshold"] = (rng.integers(-2, 3, size=8) / 4).astype(np.float32)
    with torch.no_grad():
        want = _torch(c.graph, state)(torch.from_numpy(x)).numpy()
    return c, state, x, want


@pytest.mark.parametrize("seed", [0, 1])
def test_lowered_graph_equals_torch_eval_bit_for_bit(tmp_path, seed):
    """The numpy reference, the executor (its numpy steps) and the C++ engine all give the
    torch network's eval output exactly."""
    from fractalc.backends.onnx import reference
    from fractalc.backends.onnx.lower import to_onnx_xnor
    from fractalc.backends.xnor import chanops
    from fractalc.backends.xnor.engine import Engine
    from fractalc.backends.xnor.executor import Executor
    c, state, x, want = _exact_case(tmp_path, seed)
    assert want.shape == (3, 16, 6, 6) and np.isfinite(want).all()
    proto = to_onnx_xnor(c, state)
    np.testing.assert_array_equal(reference.run_reference(proto, x), want)
    ex = Executor(proto, threads=1)
    fns = {st.fn for st in ex.plan.steps}
    assert chanops.sigmoid in fns  # numpy steps, not onnxruntime's float32 sigmoid
    np.testing.assert_array_equal(ex.run(x), want)
    en = Engine(proto, threads=2)  # raises Unsupported if any op had to fall back
    kinds = en.op_counts()
    assert {"RPReLU", "PReLU", "Sigmoid", "Mul"} <= set(kinds), kinds
    np.testing.assert_array_equal(en.run(x), want)


def test_engine_runs_the_flat_and_gated_ops_natively(tmp_path):
    """Per-channel ops on a flat value (after a linear layer) and a conv-computed gate: the
    engine matches torch to float32 rounding (the float convs and sums round differently)."""
    from fractalc.backends.onnx.lower import to_onnx_xnor
    from fractalc.backends.xnor.engine import Engine
    from fractalc.backends.xnor.executor import Executor
    c = _compile(tmp_path, ALL)
    state = _random_state(c.graph, seed=7)
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = _torch(c.graph, state)(torch.from_numpy(x)).numpy()
    proto = to_onnx_xnor(c, state)
    for runner in (Engine(proto, threads=1), Executor(proto, threads=1)):
        np.testing.assert_allclose(runner.run(x), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- diagram


def test_diagram_draws_each_new_kind_from_the_table(tmp_path):
    from fractalc.backends.graphviz import Options, to_dot
    dot = to_dot(_compile(tmp_path, ALL).graph, Options(level="block"))
    for kind in (ir.RSign, ir.Shift, ir.Scale, ir.PReLU, ir.Mul):
        d = ops.of(kind)
        assert d.style["fillcolor"] in dot and d.style["shape"] in dot and d.legend in dot, kind
    assert "RPReLU" in dot and "sigmoid" in dot
