"""The native runtime on every spec, against the numpy reference executor of the ai.fractalc ops
(backends/onnx/reference.py) and the torch backend's network in binary mode.

On exactly computable (dyadic) weights and inputs every engine computes every sign exactly:
every bit-packed value of the runtime must equal the reference's bit for bit, every float
value must agree within 1e-4 relative, and the output must match torch within 1e-4 relative, on
every spec. Specs whose joins average 3 or 5 inputs (which round) get a fine BN grain that keeps
every pre-sign value away from its threshold on the chosen data: no flip is allowed there either.
Every kernel path (FRACTALC_ISA portable/avx2/avx512, whichever this CPU runs) and thread
counts 1 and 2 must give identical bytes. On random data, near-tie sign flips against the
reference are counted and printed.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import torch
import onnxruntime  # noqa: F401  (a dependency of `make test`)

from conftest import ALL_SPECS, SPECS, random_state, small_overrides, spec_id  # noqa: E402
from fractalc.backends.onnx import lower, reference, testing  # noqa: E402
from fractalc.backends.xnor import available_isas  # noqa: E402
from fractalc.backends.xnor.executor import Executor  # noqa: E402
from fractalc import ir  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402



CASES = [pytest.param(p, small_overrides(p), id=spec_id(p)) for p in ALL_SPECS]
CASES.append(pytest.param(SPECS / "bireal_resnet18.fr", {}, id="bireal_resnet18-224"))
COMBOS = [(isa, t) for isa in available_isas() for t in (1, 2)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _exact_joins(g) -> bool:
    # means of 2, 4, ... inputs keep dyadic data exact; of 3 or 5 they round (engine-dependent)
    return all(len(g.inputs(n)) & (len(g.inputs(n)) - 1) == 0 for n in g.nodes(ir.Join))


@functools.lru_cache(maxsize=2)
def _case(path, items):
    c = compile_spec(path, dict(items))
    g = c.graph
    # coarse grain: many exact zeros before signs (sign(0) = +1 everywhere); where joins are
    # inexact a fine grain makes exact-zero ties rare (as tests/test_onnx_specs.py does)
    state = testing.dyadic_state(g, seed=1, grain=8 if _exact_joins(g) else 4096)
    batch = 1 if g.shape("input")[1] > 64 else 2
    x = testing.dyadic_input((batch,) + g.shape("input"), seed=2)
    model = lower.to_onnx_xnor(c, state, "test")
    return c, state, x, model


def _close(got, want, what):
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


EXACT_OPS = {"Add", "Sum", "Div", "Relu", "Concat", "MaxPool", "Slice"}


def _check_against_reference(model, vals, ref, exact: bool, name: str) -> int:
    """Every packed bit equal and every float within 1e-4 of the reference, at every node; bit
    for bit at every join, add, ReLU, concat, max-pool and slice whose inputs are (returns how
    many such nodes it checked).

    The data are chosen so that no sign is a near-tie on any spec (on exact data every sign is
    computed exactly; with joins of 3 or 5 inputs, whose means round, the fine BN grain keeps
    every pre-sign value far from its threshold), so there is no flip to excuse: a first flip
    fails with its diagnosis (near-tie or not), and nothing after it goes unchecked."""
    inits = {t.name for t in model.graph.initializer}
    exact_nodes = [0]
    for nd in model.graph.node:
        n = nd.output[0]
        if n not in vals:  # inside a float chain run as one onnxruntime session
            assert nd.domain == "" and nd.op_type != "Identity", n
            continue
        got, want = vals[n], ref[n]
        assert got.shape == want.shape and got.dtype == want.dtype, n
        if want.dtype != np.uint64:
            _close(got, want, n)
            if nd.domain == "" and nd.op_type in EXACT_OPS and all(
                    i in vals and np.array_equal(vals[i], ref[i]) for i in nd.input if i and i not in inits):
                # one correctly rounded float32 operation (sums in input order) on equal inputs
                assert np.array_equal(got, want), f"{name}: {n} ({nd.op_type}) rounds differently"
                exact_nodes[0] += 1
            continue
        count = int(np.bitwise_count(got ^ want).sum())
        if count:
            why = f"{n} ({nd.op_type}): {count} packed bit(s) differ from the reference"
            why += " on exact data" if exact else " (inexact joins)"
            if nd.op_type == "PackBits":
                x = ref[nd.input[0]]
                t = ref[nd.input[1]][None, :, None, None] if len(nd.input) == 3 else np.float32(0)
                mism = reference.unpack_bits(got ^ want, x.shape[1]) < 0
                gap = float(np.abs(x.astype(np.float64) - t)[mism].max())
                why += f"; largest distance of a flipped value from its threshold {gap:.3g}"
                why += f" (tensor scale {float(np.abs(x).max()):.3g})"
            raise AssertionError(f"{name}: {why}")
    return exact_nodes[0]


@pytest.mark.parametrize("path,overrides", CASES)
def test_spec_exact(path, overrides):
    c, state, x, model = _case(path, tuple(sorted(overrides.items())))
    data = model.SerializeToString()
    names = [o for nd in model.graph.node for o in nd.output]
    ref = reference.run_reference(model, x, outputs=sorted(set(names) | {i for nd in model.graph.node
                                                                          for i in nd.input if i}))
    first = None
    binary = any(nd.op_type == "XnorConv" for nd in model.graph.node)
    # a network without binary layers (fractalnet_cifar) runs no kernel: one ISA is enough
    for isa, threads in COMBOS if binary else [(None, 1), (None, 2)]:
        ex = Executor(data, threads=threads, isa=isa)
        vals = ex.run_all(x)
        # run() frees values and reuses dying buffers in place: the same output, bit for bit
        assert np.array_equal(ex.run(x), vals["output"]), f"run() differs from run_all() ({isa}, {threads})"
        if first is None:
            first = vals
            checked = _check_against_reference(model, vals, ref, _exact_joins(c.graph), c.name)
            if binary and (c.graph.count(ir.Join) or c.graph.count(ir.Add)):
                assert checked > 0, "no join or add compared bit for bit"
        else:
            assert vals.keys() == first.keys()
            for n in first:
                assert np.array_equal(vals[n], first[n]), f"{n}: {isa} with {threads} threads differs"
    # every spec against torch (binary mode), also those whose joins round
    tm = testing.torch_model(c.graph, state)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    _close(first["output"], want, "output vs torch (binary mode)")
    assert np.abs(want).max() > 0 and np.unique(want).size > 1  # not a degenerate output


FLIP_SPECS = ["bireal_resnet18", "rf_c3d4_resnet21", "binary_densenet28", "drf_c3d4"]


@pytest.mark.parametrize("name", FLIP_SPECS)
def test_random_data_flips(name, capsys):
    path = SPECS / f"{name}.fr"
    c = compile_spec(path, small_overrides(path))
    state = random_state(c)  # seed 3, BN statistics away from the identity init, so folds round
    model = lower.to_onnx_xnor(c, state, "test")
    x = np.random.default_rng(4).standard_normal((2,) + c.graph.shape("input")).astype(np.float32)
    packed = [nd.output[0] for nd in model.graph.node if nd.op_type == "PackBits"]
    floats = [nd.output[0] for nd in model.graph.node if nd.op_type == "XnorConv"
              and any(a.name == "output_type" and a.s == b"float" for a in nd.attribute)]
    ref = reference.run_reference(model, x, outputs=packed + floats + ["output"])
    ex = Executor(model.SerializeToString(), threads=2)
    got = ex.run_all(x)  # an unfused plan: every node's value
    # run() fuses XnorConv+Add(+PackBits) (backends/xnor/plan.py): exact, even on random data
    assert ex.run(x).tobytes() == got["output"].tobytes()
    if name in ("bireal_resnet18", "rf_c3d4_resnet21"):
        assert "XnorConv+Add+PackBits" in ex.plan.counts, ex.plan.counts
    if name == "bireal_resnet18":  # every residual Add and PackBits folds into a conv
        assert "Add" not in ex.plan.counts and ex.plan.counts.get("PackBits") == 1, ex.plan.counts
    flips = total = 0
    for n in packed:
        flips += int(np.bitwise_count(got[n] ^ ref[n]).sum())
        total += int(np.prod(got[n].shape)) * 64
    # a float XnorConv is fmaf(multiplier, dot, bias) in both (one rounding, docs/onnx-ops.md):
    # bit-identical even on random data, as long as its binary input bits agree
    ulps = sum(int((got[n] != ref[n]).sum()) for n in floats)
    with capsys.disabled():
        print(f"\n{name}: {flips} sign flips in {total} packed bits vs the reference (random data); "
              f"{ulps} of {sum(got[n].size for n in floats)} float XnorConv outputs differ")
    if flips == 0:
        assert ulps == 0
    # flips happen only at near-ties (a BN or join output within float rounding of 0)
    assert flips <= total * 1e-4
    if flips == 0:
        _close(got["output"], ref["output"], "output")


def test_standard_flavour_runs():
    """The standard `onnx` flavour (no ai.fractalc op) runs too, in one onnxruntime session,
    and agrees with the onnx-xnor model and torch on exact data."""
    from fractalc.backends.onnx import export
    from fractalc.runtime import Session
    path = SPECS / "bireal_resnet18.fr"
    c, state, x, model = _case(path, tuple(sorted(small_overrides(path).items())))
    std = Session(export.to_onnx(c, state, "test").SerializeToString(), threads=2)
    assert std.op_counts() == {"onnxruntime (whole model)": 1}
    got = std.run(x)
    _close(got, Session(model.SerializeToString(), threads=2).run(x), "standard vs xnor flavour")
    tm = testing.torch_model(c.graph, state)
    with torch.no_grad():
        _close(got, tm(torch.from_numpy(x)).numpy(), "standard flavour vs torch")
    with pytest.raises(Exception) as e:
        std.run(x[:, :1])
    assert "input must have shape" in str(e.value)
