"""The standalone engine (backends/xnor/engine.py + src/engine.cpp) on every shipped spec.

Every spec is lowered to an engine file and run natively (no numpy op, no onnxruntime): its
output must match the planner/executor runtime (itself checked against the reference executor
by test_runtime_specs.py) within 1e-4 relative on exactly computable (dyadic) data, and be
byte-identical for every ISA path this CPU runs and 1 or 2 threads. The two target networks
are also checked against the numpy reference executor directly, and on random data.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import onnx  # noqa: F401,E402  (a dependency of make test: missing fails, never skips)
import onnxruntime  # noqa: F401,E402

from conftest import ALL_SPECS, SPECS, random_input, random_state, small_overrides, spec_id  # noqa: E402
from fractalc.backends.onnx import lower, reference, testing  # noqa: E402
from fractalc.backends.xnor import available_isas  # noqa: E402
from fractalc.backends.xnor.engine import Engine, write_engine_file  # noqa: E402
from fractalc.backends.xnor.executor import Executor  # noqa: E402
from fractalc import ir  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402



CASES = [pytest.param(p, small_overrides(p), id=spec_id(p)) for p in ALL_SPECS]
CASES.append(pytest.param(SPECS / "bireal_resnet18.fr", {}, id="bireal_resnet18-224"))
COMBOS = [(isa, t) for isa in available_isas() for t in (1, 2)]


@functools.lru_cache(maxsize=2)
def _case(path, items):
    c = compile_spec(path, dict(items))
    g = c.graph
    # means of 3 or 5 inputs round: a fine grain keeps exact-zero ties rare (as test_runtime_specs)
    exact = all(len(g.inputs(n)) & (len(g.inputs(n)) - 1) == 0 for n in g.nodes(ir.Join))
    state = testing.dyadic_state(g, seed=1, grain=8 if exact else 4096)
    batch = 1 if c.graph.shape("input")[1] > 64 else 2
    x = testing.dyadic_input((batch,) + c.graph.shape("input"), seed=2)
    return c, state, x, lower.to_onnx_xnor(c, state, "test")


def _close(got, want, what):
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


@pytest.mark.parametrize("path,overrides", CASES)
def test_engine_spec(path, overrides):
    c, state, x, model = _case(path, tuple(sorted(overrides.items())))
    data = write_engine_file(model)
    first = None
    for isa, threads in COMBOS:
        e = Engine(data, threads=threads, isa=isa)
        assert not any(k.startswith("onnxruntime") for k in e.op_counts())
        y = e.run(x)
        if first is None:
            first = y
            want = Executor(model.SerializeToString(), threads=2).run(x)
            assert y.shape == want.shape and y.dtype == np.float32
            _close(y, want, "engine vs the planner/executor runtime")
        else:
            assert y.tobytes() == first.tobytes(), f"{isa} with {threads} threads differs"
    # batch independence: each image alone gives the same bytes
    e = Engine(data, threads=2)
    for i in range(x.shape[0]):
        assert e.run(x[i:i + 1]).tobytes() == first[i:i + 1].tobytes()


@pytest.mark.parametrize("name", ["bireal_resnet18", "rf_c3d4_resnet21"])
def test_engine_vs_reference(name):
    path = SPECS / f"{name}.fr"
    c, state, x, model = _case(path, tuple(sorted(small_overrides(path).items())))
    want = reference.run_reference(model, x, outputs=["output"])["output"]
    _close(Engine(write_engine_file(model), threads=2).run(x), want, "engine vs the reference executor")


@pytest.mark.parametrize("name", ["bireal_resnet18", "rf_c3d4_resnet21", "binary_densenet28"])
def test_engine_random_data(name, capsys):
    """Random weights with BN statistics away from the identity, random input: the engine and
    the executor compute every binary layer the same way (float stem and classifier within
    rounding), so outputs agree unless a near-tie sign flips (counted, must be rare)."""
    path = SPECS / f"{name}.fr"
    c = compile_spec(path, small_overrides(path))
    state = random_state(c, seed=3)
    model = lower.to_onnx_xnor(c, state, "test")
    x = random_input(c, seed=4, batch=2)
    got = Engine(write_engine_file(model), threads=2).run(x)
    want = Executor(model.SerializeToString(), threads=2).run(x)
    bad = ~np.isclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    with capsys.disabled():
        print(f"\n{name}: {int(bad.sum())} of {bad.size} outputs differ beyond 1e-4 (engine vs executor, random data)")
    assert bad.mean() <= 0.01
