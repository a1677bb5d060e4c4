"""`fractalc.runtime.Session` is a thin binding over the standalone engine: the target networks
run natively (no onnxruntime step), an ``.frt`` file loads directly (memory-mapped), graphs the
engine lacks an operator for fall back to the planner/executor, and the profile names engine
ops."""
from __future__ import annotations

import numpy as np
import pytest

import onnx  # noqa: F401,E402  (a dependency of make test: missing fails, never skips)

from conftest import SPECS  # noqa: E402
from fractalc.backends.onnx import lower, weights  # noqa: E402
from fractalc.backends.xnor.engine import write_engine_file  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.errors import FractalcError, ModelError  # noqa: E402
from fractalc.runtime import Session  # noqa: E402


def _model(name):
    c = compile_spec(SPECS / f"{name}.fr", {"dataset": '"cifar10"', "size": "16"})
    state, _ = weights.resolve(c, {"seed": 2})
    return c, lower.to_onnx_xnor(c, state, "test")


@pytest.mark.parametrize("name", ["bireal_resnet18", "rf_c3d4_resnet21"])
def test_session_runs_natively(name, tmp_path):
    c, model = _model(name)
    data = model.SerializeToString()
    s = Session(data, threads=2)
    assert s.engine == "native"
    assert not any("onnxruntime" in k for k in s.op_counts()), s.op_counts()
    x = np.random.default_rng(0).standard_normal((3,) + s.input_shape).astype(np.float32)
    prof: dict = {}
    y = s.run(x, profile=prof)
    assert any(k.startswith("XnorConv") for k in prof) and all(v >= 0 for v in prof.values())
    ex = Session(data, threads=2, engine="executor")
    assert ex.engine == "executor"
    np.testing.assert_allclose(y, ex.run(x), rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(y).max())))
    path = tmp_path / "m.frt"
    write_engine_file(model, path)
    f = Session(path, threads=1)
    assert f.engine == "native" and f.metadata.get("fractalc.flavour") == s.metadata.get("fractalc.flavour")
    assert f.run(x).tobytes() == y.tobytes()
    with pytest.raises(ModelError, match="input must have shape"):
        f.run(x[:, :1])


def test_fallback_and_errors(tmp_path):
    from fractalc.backends.onnx import export
    c, model = _model("bireal_resnet18")
    state, _ = weights.resolve(c, {"seed": 2})
    std = export.to_onnx(c, state, "test").SerializeToString()  # Where/Less signs: not native
    assert Session(std, threads=1).engine == "executor"
    with pytest.raises(ModelError):
        Session(std, threads=1, engine="native")
    with pytest.raises(FractalcError):
        Session(model.SerializeToString(), engine="tpu")
    bad = tmp_path / "bad.frt"
    data = bytearray(write_engine_file(model))
    data[-5] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        Session(bad)
