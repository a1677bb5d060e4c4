"""The op table (issue #13): a primitive added here, in a test file, compiles, costs, renders,
builds in torch and exports to ONNX without any backend file being edited; a backend without
a hook for an op says so by name; the table is the one source of parameter shapes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fractalc import ir
from fractalc.ir import ops
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.ir.ops import OpDef, PrimSpec, p


@dataclass(frozen=True)
class Times:
    """y = factor * x (a scaled identity)."""

    factor: float


@dataclass(frozen=True)
class Mystery:
    """An op no backend knows."""


def _scale_step(g, n, op, ins):
    from fractalc.backends.torch.plan import Step
    return Step(n, "Times", ins, (float(op.factor),))


def _scale_onnx(b, g, n, op, ins, shape, state, val):
    val[n] = b.node("Mul", [ins[0], b.const(f"scale{op.factor}", np.float32(op.factor))],
                    b.float_value(n, shape), n)


@pytest.fixture
def scale_op():
    ops.register(OpDef(
        Times, ops.same,
        prims=(PrimSpec("times", (p("factor", "num"),), 1, "factor * x",
                        make=lambda a: Times(float(a["factor"]))),),
        style={"shape": "diamond", "fillcolor": "#123456"}, legend="scaled identity",
        summary=lambda op, n: f"x{op.factor:g}"))
    ops.set_hook(Times, "torch", _scale_step)
    ops.set_hook(Times, "torch.forward", lambda layer, xs, args: xs[0] * args[0])
    ops.set_hook(Times, "onnx", _scale_onnx)
    ops.register(OpDef(Mystery, ops.same, prims=(PrimSpec("mystery", (), 1, "?", make=lambda a: Mystery()),)))
    yield
    ops.unregister(Times)
    ops.unregister(Mystery)


SPEC = "network n {\n  input [3, 8, 8]\n  body = conv[4] >> times[factor=0.5] >> bn >> gap >> linear[5]\n}\n"


def _compile(tmp_path, text=SPEC):
    f = tmp_path / "s.fr"
    f.write_text(text)
    return compile_spec(f)


def test_added_primitive_compiles_and_costs(tmp_path, scale_op):
    c = _compile(tmp_path)
    assert [type(c.graph.op(n)).__name__ for n in c.graph.order()] == \
        ["Input", "Conv", "Times", "BatchNorm", "Pool", "Linear", "Output"]
    assert "body.times1" in c.graph
    total = cost(c.graph)
    # hand count: conv 4*3*3*3, bn 2*4, linear 4*5 + 5; the times adds nothing
    assert total.total("float_params") == 108 + 8 + 25
    assert total.total("float_mults") == 108 * 64 + 20


def test_added_primitive_renders(tmp_path, scale_op):
    from fractalc.backends.graphviz import Options, to_dot
    dot = to_dot(_compile(tmp_path).graph, Options(level="block"))
    assert "#123456" in dot and "x0.5" in dot and "scaled identity" in dot


def test_added_primitive_builds_in_torch_and_exports_to_onnx(tmp_path, scale_op):
    import onnxruntime as ort

    from fractalc.backends.onnx.emit import build
    from fractalc.backends.torch import from_graph

    c = _compile(tmp_path)
    model = from_graph(c.graph, seed=3).eval()
    x = torch.randn(2, 3, 8, 8)
    sd = model.state_dict()
    bn = lambda t: F.batch_norm(t, sd["body.bn1.running_mean"], sd["body.bn1.running_var"],
                                sd["body.bn1.weight"], sd["body.bn1.bias"], False, 0.0, 1e-5)
    ref = F.linear(bn(F.conv2d(x, sd["body.conv1.weight"], padding=1) * 0.5).mean((2, 3)),
                   sd["body.fc1.weight"], sd["body.fc1.bias"])
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    state = {k: v.numpy() for k, v in sd.items()}
    import io
    buf = io.BytesIO()
    torch.save(sd, buf)
    wpath = tmp_path / "w.pt"
    wpath.write_bytes(buf.getvalue())
    proto = build(c, {"weights": str(wpath)}, "onnx")
    assert any(nd.op_type == "Mul" and nd.name == "body.times1" for nd in proto.graph.node)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, got.numpy(), rtol=1e-4, atol=1e-5)
    assert set(state) >= {"body.conv1.weight", "body.bn1.weight"}


def test_backend_without_a_hook_names_the_op(tmp_path, scale_op):
    from fractalc.backends.onnx.emit import build
    from fractalc.backends.torch import from_graph
    c = _compile(tmp_path, SPEC.replace("times[factor=0.5]", "mystery"))
    assert cost(c.graph).total("float_params") > 0  # the front end and cost need no hook
    with pytest.raises(ops.MissingHook, match="torch backend has no hook for op Mystery"):
        from_graph(c.graph)
    # with torch hooks (seeded weights come from the torch model), ONNX still has none
    from fractalc.backends.torch.plan import Step
    ops.set_hook(Mystery, "torch", lambda g, n, op, ins: Step(n, "Mystery", ins))
    ops.set_hook(Mystery, "torch.forward", lambda layer, xs, args: xs[0])
    from_graph(c.graph)
    with pytest.raises(ops.MissingHook, match="ONNX backend has no hook for op Mystery"):
        build(c, {"seed": 0}, "onnx")


def test_a_primitive_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already defined"):
        ops.register(OpDef(Mystery, ops.same, prims=(PrimSpec("conv", (), 1, "?"),)))
    assert Mystery not in ops.OPS


def test_every_built_in_op_has_torch_and_onnx_hooks():
    import fractalc.backends.onnx.export  # noqa: F401  (registers the BinaryConv hook)
    import fractalc.backends.torch.plan  # noqa: F401
    for kind in (ir.Input, ir.Conv, ir.BinaryConv, ir.BatchNorm, ir.Activation, ir.Pool, ir.Linear,
                 ir.Join, ir.Add, ir.Concat, ir.Slice, ir.Dropout, ir.Output):
        assert "torch" in ops.of(kind).hooks and "onnx" in ops.of(kind).hooks, kind


@pytest.mark.parametrize("spec", ["rf_c3d4_resnet21", "binary_densenet28", "fractalnet_cifar"])
def test_table_tensor_shapes_are_torch_state_dict_shapes(root, spec):
    """The table is the one source of parameter shapes: torch builds exactly them."""
    from fractalc.backends.onnx.weights import expected_keys
    from fractalc.backends.torch import from_graph
    c = compile_spec(root / "specs" / f"{spec}.fr")
    sd = {k: tuple(v.shape) for k, v in from_graph(c.graph).state_dict().items()
          if not k.endswith("num_batches_tracked")}
    assert sd == expected_keys(c.graph)
    n_params = sum(int(np.prod(s)) for k, s in sd.items() if not k.endswith(("running_mean", "running_var")))
    t = cost(c.graph)
    assert n_params == t.total("float_params") + t.total("binary_params")
