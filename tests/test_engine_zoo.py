"""The standalone engine runs every network of specs/*.fr and specs/zoo/*.fr natively (issue 14's
grouped, depthwise and dilated convs, the blur pool, maxjoin and the global max pool included),
bit for bit as the planner/executor runtime.

Each network is compiled at a small input where its spec allows (``dataset="cifar10"`` and
``size=16`` or 32x32, or ``size=8`` for the block specs; BinaryAlexNet and XNORNet need about
224 for their 6x6 classifier conv and run there), given exactly computable weights
(testing.dyadic_state over seeded random ones, so that every float sum is exact and any
summation order gives the same bits) and a dyadic input. Then: the engine file is written
without `Unsupported` (no fallback), ``fractalc.runtime.Session`` picks the native engine, and
the engine's output equals the executor's (numpy + onnxruntime, an independent implementation
of every float op) with np.array_equal, for every ISA this CPU runs and 1 and 2 threads.
Small specs in this file cover the ops no shipped network uses (maxjoin, the global max pool,
grouped and dilated float convs, grouped binary convs with bit outputs).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import onnx  # noqa: F401  (a dependency of make test: missing fails, never skips)
import onnxruntime  # noqa: F401

from conftest import SPECS, small_overrides
from fractalc import ir
from fractalc.backends.onnx import export, lower, testing, weights  # noqa: F401  (export: BinaryConv's float hook)
from fractalc.backends.xnor import available_isas
from fractalc.backends.xnor.engine import Engine, write_engine_file
from fractalc.backends.xnor.executor import Executor
from fractalc.compiler import compile_spec
from fractalc.lang.resolve import load
from fractalc.runtime import Session

COMBOS = [(isa, t) for isa in available_isas() for t in (1, 2)]
PATHS = sorted(SPECS.glob("*.fr")) + sorted((SPECS / "zoo").glob("*.fr"))



def _cases():
    out = []
    for p in PATHS:
        spec = load(p)
        ov = small_overrides(spec)
        for net in spec.networks:
            out.append(pytest.param(p, net, tuple(sorted(ov.items())), id=f"{p.stem}:{net}"))
    return out


CASES = _cases()


def _state(c, seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights for every parameter, the dyadic ones of testing.dyadic_state over
    them (the per-channel primitives' parameters keep their seeded values: each is used in one
    rounding, by both runtimes alike)."""
    g = c.graph
    state, _ = weights.resolve(c, {"seed": seed})
    # means of 3 or 5 inputs round: a fine grain keeps exact-zero ties rare (as test_engine_specs)
    exact = all(len(g.inputs(n)) & (len(g.inputs(n)) - 1) == 0 for n in g.nodes(ir.Join))
    state.update(testing.dyadic_state(g, seed=seed, grain=8 if exact else 4096))
    rng = np.random.default_rng(seed)
    # a sigmoid gate's values are rounded too (Real-to-Binary), and reach the next gate's sums
    exact = exact and not any(getattr(g.op(n), "fn", None) == "sigmoid" for n in g.order())
    for n in g.order():
        op = g.op(n)
        if isinstance(op, ir.PReLU):  # slopes in {-1, 0, 1}: no fractional bits pile up layer after layer
            for k in [k for k in state if k.startswith(n + ".")]:
                v = np.asarray(state[k])
                state[k] = (rng.choice([-1.0, 0.0, 1.0], v.shape) if k.endswith(".weight")
                            else rng.integers(-4, 5, v.shape) / 8.0).astype(np.float32)
        elif not exact and isinstance(op, (ir.Conv, ir.Linear)):
            # after a rounded mean, a float sum is exact only with one term: one nonzero weight per
            # output (so onnxruntime's summation order and the engine's give the same bits)
            w = np.zeros_like(state[f"{n}.weight"])
            flat = w.reshape(w.shape[0], -1)
            flat[np.arange(w.shape[0]), rng.integers(0, flat.shape[1], w.shape[0])] = rng.choice([-1.0, 1.0], w.shape[0])
            state[f"{n}.weight"] = w
    return state


@functools.lru_cache(maxsize=1)
def _model(path, network, items):
    c = compile_spec(path, dict(items), network=network)
    model = lower.to_onnx_xnor(c, _state(c, 1), "test")
    batch = 1 if c.graph.shape("input")[1] > 64 else 2
    x = testing.dyadic_input((batch,) + c.graph.shape("input"), seed=2)
    return model, x


def _check_native_equals_executor(model, x, exact=True):
    """`exact`: the engine's output equals the executor's bit for bit. Otherwise (a network
    with means of 3 or 5 inputs or sigmoid gates: their rounded values reach pools and sums
    that the executor runs in onnxruntime in its own order) within 1e-5 of the largest output;
    every ISA and thread count gives the same bytes either way."""
    data = write_engine_file(model)  # raises Unsupported if any op would fall back
    want = Executor(model.SerializeToString(), threads=2).run(x)
    first = None
    for isa, threads in COMBOS:
        got = Engine(data, threads=threads, isa=isa).run(x)
        assert got.shape == want.shape and got.dtype == np.float32
        if first is None:
            first = got
        assert got.tobytes() == first.tobytes(), f"{isa} with {threads} threads differs from {COMBOS[0]}"
        bad = got != want
        if exact:
            assert np.array_equal(got, want), (f"{isa}, {threads} threads: {int(bad.sum())} of {bad.size} outputs "
                                               f"differ, max {float(np.abs(got - want).max())}")
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    return data


def _exact(model) -> bool:
    """No mean of a number of inputs that is not a power of two (a Div by 3, 5, ...) and no
    sigmoid gate: no rounded value reaches a sum."""
    from onnx import numpy_helper
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for nd in model.graph.node:
        if nd.op_type == "Sigmoid":
            return False
        if nd.op_type == "Div" and nd.input[1] in inits:
            d = float(inits[nd.input[1]].reshape(()))
            if d != 2.0 ** round(np.log2(abs(d))):
                return False
    return True


@pytest.mark.parametrize("path,network,items", CASES)
def test_zoo_network_runs_natively_bit_for_bit(path, network, items):
    model, x = _model(path, network, items)
    _check_native_equals_executor(model, x, exact=_exact(model))
    assert Session(model.SerializeToString(), threads=1).engine == "native"


RULES = """rule mj3[c](z) = maxjoin(z >> bn >> bconv[c], z >> bn >> bconv[c], z >> bn >> bconv[c, pad="one"])
rule gres[c](z) = (z >> bconv[c, groups=4, dilation=2] >> bn) + z
"""


def _spec(tmp_path: Path, body: str, size: int = 12) -> Path:
    f = tmp_path / "s.fr"
    f.write_text('import "fractalc:common.fr"\n%s\nnetwork s {\n    input [3, %d, %d]\n%s\n}\n'
                 % (RULES, size, size, body))
    return f


# ops that no shipped network has, or not in every form: each line is one network's body
EXTRA = {
    "maxjoin_gmp": """    a = conv[32] >> bn >> relu
    b = mj3[32]
    c = bn >> relu >> gmp
    d = linear[10]""",
    "grouped_float_convs": """    a = conv[16] >> bn >> relu
    b = conv[32, k=3, groups=4, dilation=2] >> bn >> relu
    c = conv[32, k=3, groups=32, s=2, p=1] >> bn
    d = conv[16, k=1, groups=2] >> gap >> linear[10]""",
    "grouped_binary_bits": """    a = conv[128] >> bn
    b = bconv[128, groups=2] >> bn >> bconv[128, groups=4, dilation=2] >> bn
    c = bconv[128, k=3, groups=128, pad="one"] >> bn >> relu
    e = gres[128] >> gres[128]
    d = gap >> linear[10]""",
}


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_new_ops_run_natively_bit_for_bit(tmp_path, name):
    c = compile_spec(_spec(tmp_path, EXTRA[name]))
    model = lower.to_onnx_xnor(c, _state(c, 3), "test")
    kinds = {nd.op_type for nd in model.graph.node}
    x = testing.dyadic_input((2,) + c.graph.shape("input"), seed=4)
    data = _check_native_equals_executor(model, x)
    native = set(Engine(data, threads=1).kinds)
    if name == "maxjoin_gmp":
        assert {"Max", "GlobalMaxPool"} <= kinds and {"Max", "GlobalMaxPool"} <= native
    elif name == "grouped_float_convs":
        assert {"GroupedConv(dilated)+Relu", "DepthwiseConv", "GroupedConv"} <= native
    else:
        assert {"XnorConv(grouped)(bits)", "XnorConv(grouped)", "XnorConv(grouped,dilated)(bits)",
                "XnorConv(grouped,dilated)+Add+PackBits"} <= native
