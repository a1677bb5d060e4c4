"""Torch evaluation equals deployment, bit for bit (issue 14).

In eval and binary mode the torch network computes every binary conv as the lowered graph
does (backends/onnx/lower.py): an exact dot product, then fmaf(multiplier, dot, bias) or the
exact sign of the affine map, and a BatchNorm read only by binary convs as the exact sign of
BN(x). Checked, on random weights with BatchNorm statistics away from the identity:

- on networks whose every value is computed exactly the same way by every engine (binary
  layers, BN, adds, joins, concats: the block specs and the two-binary-conv example), the
  outputs of torch eval, the executor and the native engine are identical, and the old float
  path (conv(sign(x), alpha * sign(W)) in float32) is not;
- on every shipped spec and every zoo spec (a small input each), every binary layer of the
  torch network equals the reference implementation of its lowered op (backends/onnx/
  reference.py: integer popcounts, exact fmaf, integer and float thresholds) applied to torch's
  own input of that layer, bit for bit; and the whole network, float layers included (they
  follow the native engine's float arithmetic in eval, docs/float-arithmetic.md), gives the same
  output bytes in torch eval, `run_reference` and `fractalc.runtime.Session` (every available
  ISA, 1 and 2 threads). The emulation itself is tested in tests/test_float_exact.py. (The
  executor's float nodes run in onnxruntime, within rounding of that arithmetic.)
- training keeps its arithmetic and gradients, and the standalone source (`--target torch`)
  computes the same eval values, float layers included.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

import onnx  # noqa: F401  (a dependency of `make test`: missing fails, never skips)

from conftest import SPECS, random_input, random_state, small_overrides, spec_id
from fractalc import ir
from fractalc.backends.onnx import lower, ops as onnx_ops, packing, reference, testing
from fractalc.backends.torch.build import run_step
from fractalc.backends.torch.source import source
from fractalc.backends.xnor.engine import Engine, write_engine_file
from fractalc.backends.xnor.executor import Executor
from fractalc.backends.xnor.kernels import available_isas
from fractalc.compiler import compile_spec
from fractalc.runtime import Session

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TWO_BCONVS = """network two_bconvs {
    input [8, 8, 8]
    body = bn >> bconv[24, pad="one"] >> bconv[24, pad="one"] >> bn
}
"""
ZOO = sorted((SPECS / "zoo").glob("*.fr")) if (SPECS / "zoo").is_dir() else []
BLOCKS = ["f_c3d4", "rf_c3d4", "drf_c3d4"]  # binary layers, BN, joins, adds, concats only







@functools.lru_cache(maxsize=1)
def _two_bconvs(tmp):
    path = tmp / "two_bconvs.fr"
    path.write_text(TWO_BCONVS)
    c = compile_spec(path)
    state = random_state(c)
    return c, state, random_input(c)


def _float_path(model, x: np.ndarray) -> np.ndarray:
    """The network's output with every step on the float path (no `exact` role): what torch
    evaluated before deployment equality, conv(sign(x), alpha * sign(W)) in float32."""
    vals = []
    t = torch.from_numpy(x)
    with torch.no_grad():
        for kind, layer, ins, args in model._fc_steps:
            vals.append(run_step(kind, layer, [vals[i] for i in ins], args, t, None, "binary", False))
    return vals[model._fc_output].numpy()


def _three(c, state, x):
    """torch eval, executor and native engine outputs."""
    model = testing.torch_model(c.graph, state)
    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    lowered = lower.to_onnx_xnor(c, state, "test")
    ex = Executor(lowered.SerializeToString(), threads=1).run(x)
    en = Engine(write_engine_file(lowered), threads=1).run(x)
    return model, t, ex, en


def test_two_bconvs_bit_for_bit(tmp_path_factory):
    c, state, x = _two_bconvs(tmp_path_factory.getbasetemp())
    model, t, ex, en = _three(c, state, x)
    assert np.array_equal(t, ex) and np.array_equal(t, en)
    # the old float path differs: an exact zero dot computed as -1e-7 flips a sign
    old = _float_path(model, x)
    assert not np.array_equal(old, ex)
    assert np.abs(old - ex).max() > 1e-3


@pytest.mark.parametrize("name", BLOCKS)
def test_block_specs_bit_for_bit(name):
    path = SPECS / f"{name}.fr"
    c = compile_spec(path, small_overrides(path))
    state = random_state(c)
    x = random_input(c)
    _, t, ex, en = _three(c, state, x)
    assert np.array_equal(t, ex), f"torch eval vs executor: max diff {np.abs(t - ex).max()}"
    assert np.array_equal(t, en), f"torch eval vs engine: max diff {np.abs(t - en).max()}"


def _binary_layers_match(c, state, x, lowered=None) -> int:
    """Every XnorConv and thresholded PackBits of the lowered graph, applied by the reference
    to torch's value of its input, gives torch's value of its output bit for bit. Returns the
    number of layers checked."""
    g = c.graph
    model = testing.torch_model(g, state)
    if model.deployed_arithmetic is True:  # the float layers' emulation is not checked here: skip its cost
        model.deployed_arithmetic = "binary"
    tv = testing.torch_values(g, model, x)
    lowered = lowered if lowered is not None else lower.to_onnx_xnor(c, state, "test")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in lowered.graph.initializer}
    checked = 0
    for nd in lowered.graph.node:
        if nd.domain != onnx_ops.DOMAIN:
            continue
        if nd.op_type == "PackBits" and len(nd.input) == 3 and nd.name.endswith(".pack"):
            n = nd.name[:-len(".pack")]
            if n not in tv or not isinstance(g.op(n), ir.BatchNorm):
                continue
            want = reference.pack_bits(tv[g.inputs(n)[0]], inits[nd.input[1]], inits[nd.input[2]])
            assert np.array_equal(packing.pack_activations(tv[n]), want), f"{n}: sign of BN differs"
            checked += 1
        elif nd.op_type == "XnorConv":
            n = nd.name
            attrs = onnx_ops.conv_attrs(onnx_ops.attrs_of(nd), n)
            bits_in = packing.pack_activations(tv[g.inputs(n)[0]])
            want = reference.xnor_conv(bits_in, inits[nd.input[1]], inits[nd.input[2]], inits[nd.input[3]], attrs)
            out = nd.output[0]
            if attrs.output == "float":
                got = tv[out]
                assert got.dtype == want.dtype == np.float32
                if not np.array_equal(got, want):
                    bad = got != want
                    raise AssertionError(f"{n}: {int(bad.sum())} outputs differ from fmaf(multiplier, dot, "
                                         f"bias), e.g. {got[bad][:3]} vs {want[bad][:3]}")
            else:
                got = packing.pack_activations(tv[out[:-len(".bits")]])
                assert np.array_equal(got, want), f"{n}: signs differ from the integer thresholds"
            checked += 1
    return checked


SPEC_CASES = [pytest.param(p, id=spec_id(p)) for p in sorted(SPECS.glob("*.fr"))]
SPEC_CASES += [pytest.param(p, id="zoo-" + spec_id(p)) for p in ZOO]


def network(path):
    """(compiled, random state, random input) of a spec at a small size."""
    c = compile_spec(path, small_overrides(path))
    return c, random_state(c), random_input(c)


def deployed_outputs(c, state, x, lowered=None):
    """(torch eval output, run_reference output, the engine file) of a network."""
    model = testing.torch_model(c.graph, state)
    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    lowered = lowered if lowered is not None else lower.to_onnx_xnor(c, state, "test")
    return t, reference.run_reference(lowered, x), write_engine_file(lowered)


def assert_deploys_bit_for_bit(c, state, x, lowered=None) -> None:
    """torch eval == run_reference == fractalc.runtime.Session (native engine, every available
    ISA, 1 and 2 threads), as float32 bytes; the output finite and not constant."""
    t, ref, data = deployed_outputs(c, state, x, lowered)
    assert t.dtype == ref.dtype == np.float32 and np.isfinite(t).all()
    assert np.unique(t).size > 1  # not a degenerate output
    assert t.tobytes() == ref.tobytes(), f"torch eval vs reference: max diff {np.abs(t - ref).max():.3g}"
    for isa in available_isas():
        for threads in (1, 2):
            s = Session(data, threads=threads, isa=isa)
            assert s.engine == "native"
            got = s.run(x)
            assert got.tobytes() == t.tobytes(), \
                f"runtime ({isa}, {threads} threads) vs torch eval: max diff {np.abs(got - t).max():.3g}"


@pytest.mark.parametrize("path", SPEC_CASES)
def test_every_spec_deploys_bit_for_bit(path):
    """Random weights and inputs: every binary layer equals its lowered op applied to torch's
    own input of it, and the whole network (float layers included: stems, transitions, pools,
    classifier) gives the same bytes in torch eval, the reference executor and the runtime."""
    c, state, x = network(path)
    lowered = lower.to_onnx_xnor(c, state, "test")
    if any(lower.xnor_conv(c.graph, n) for n in c.graph.nodes(ir.BinaryConv)):
        assert _binary_layers_match(c, state, x, lowered) >= 1
    else:  # a float network (fractalnet_cifar): no binary role, only the engine's float arithmetic
        model = testing.torch_model(c.graph, state)
        assert all(r is None or r[0] in ("float", "ffolded") for r in model._fc_exact) and any(model._fc_exact)
    assert_deploys_bit_for_bit(c, state, x, lowered)


def test_two_bconvs_layers_and_old_path_fails_the_check(tmp_path_factory):
    """The layer check can fail: the float path's first binary conv does not pass it."""
    c, state, x = _two_bconvs(tmp_path_factory.getbasetemp())
    assert _binary_layers_match(c, state, x) == 3  # the sign-only BN and both convs
    model = testing.torch_model(c.graph, state)
    model.deployed_arithmetic = False  # back to the float path
    with pytest.raises(AssertionError, match="differ"):
        _binary_layers_match_with(model, c, state, x)


def _binary_layers_match_with(model, c, state, x):
    original = testing.torch_model
    try:
        testing.torch_model = lambda g, s: model
        return _binary_layers_match(c, state, x)
    finally:
        testing.torch_model = original


def test_source_target_same_eval_arithmetic(tmp_path_factory):
    """The emitted source's eval equals the native engine byte for byte, binary layers and
    float layers (stem conv, BN folds, pools, the classifier's GEMM) alike."""
    for c, state, x in [_two_bconvs(tmp_path_factory.getbasetemp()),
                        _spec_case("drf_c3d4"), _spec_case("bireal_resnet18"), _spec_case("binary_densenet28")]:
        ns: dict = {}
        exec(compile(source(c.graph, c, seed=0), "<fractalc source>", "exec"), ns)
        cls = next(v for k, v in ns.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                   and getattr(v, "network_name", None) == c.graph.name)
        m = cls(seed=0).eval()
        m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=False)
        with torch.no_grad():
            got = m(torch.from_numpy(x)).numpy()
        lowered = lower.to_onnx_xnor(c, state, "test")
        want = Engine(write_engine_file(lowered), threads=1).run(x)
        assert got.tobytes() == want.tobytes(), c.name


def _spec_case(name):
    path = SPECS / f"{name}.fr"
    c = compile_spec(path, small_overrides(path))
    return c, random_state(c), random_input(c)


# ---- training is unchanged -------------------------------------------------------------------

def test_train_mode_gradients_are_the_float_paths(tmp_path_factory):
    """In train mode the forward and gradients are the float path's: conv(sign(x), alpha *
    sign(W)) with ApproxSign / STE backward and batch-statistics BN, written out here by hand."""
    c, state, x = _two_bconvs(tmp_path_factory.getbasetemp())
    model = testing.torch_model(c.graph, state).train()
    xt = torch.from_numpy(x)
    y = model(xt)
    y.square().sum().backward()
    got = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    ref = copy.deepcopy(testing.torch_model(c.graph, state)).train()
    params = dict(ref.named_parameters())
    bn1, bn2 = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in ref.modules() if isinstance(m, torch.nn.Conv2d)]

    def approx_sign(v):  # forward sign (sign(0) = +1), backward max(0, 2 - 2|v|)
        return torch.where(v < 0, -1.0, 1.0).detach() + _approx_grad(v)

    h = bn1(xt)
    for conv in convs:
        w = conv.weight
        alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
        ws = torch.where(w < 0, -1.0, 1.0)
        wb = alpha * (ws.detach() + (w - w.detach()) * (w.detach().abs() <= 1))
        hb = torch.nn.functional.pad(approx_sign(h), (1, 1, 1, 1), value=1.0)
        h = torch.nn.functional.conv2d(hb, wb)
    bn2(h).square().sum().backward()
    assert got.keys() == {k for k, p in params.items() if p.grad is not None}
    for k in got:
        torch.testing.assert_close(got[k], params[k].grad, rtol=1e-5, atol=1e-6, msg=k)


def _approx_grad(v):
    """Zero in value, d/dv = max(0, 2 - 2|v|) (Bi-Real's ApproxSign derivative)."""
    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return torch.zeros_like(a)

        @staticmethod
        def backward(ctx, gr):
            (a,) = ctx.saved_tensors
            return gr * torch.clamp(2 - 2 * a.abs(), min=0)
    return F.apply(v)


def test_eval_gradients_equal_the_float_paths(tmp_path_factory):
    """Eval values are the deployed ones; gradients in eval are those of the float path's
    functions at the deployed values: every parameter keeps its gradient, equal where no sign
    upstream of it differs between the two paths (the first conv's input is the same)."""
    c, state, x = _two_bconvs(tmp_path_factory.getbasetemp())
    xt = torch.from_numpy(x)
    grads = []
    for exact in (True, False):
        model = testing.torch_model(c.graph, state)
        if not exact:
            model._fc_exact = tuple(None for _ in model._fc_exact)
        model(xt).sum().backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        assert torch.isfinite(grads[0][k]).all() and grads[0][k].abs().sum() > 0, k
    for k in ("body.bn1.weight", "body.bn1.bias", "body.conv1.weight"):  # before the first sign that differs
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_a_training_step_reduces_the_loss():
    c, state, x = _spec_case("rf_c3d4")
    model = testing.torch_model(c.graph, state).train()
    xt = torch.from_numpy(x)
    target = torch.zeros_like(model(xt))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = (model(xt) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
