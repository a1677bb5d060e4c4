"""Fuzzing the runtime's loader: mutated lowered models either run or raise a FractalcError.

Hypothesis mutates valid onnx-xnor models (initializer sizes, dtypes and values, attributes,
graph input shapes, dropped or renamed inputs, dropped nodes, truncated and corrupted bytes)
and runs each through `Session(...).run(x)`. The fuzz loop runs in a child process (this file
run as a script), so a crash in native code fails the test instead of killing pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLES = int(os.environ.get("FRACTALC_FUZZ_EXAMPLES", "300"))
# derandomized, so CI runs the same examples every time; FRACTALC_FUZZ_RANDOM=1 explores
RANDOM = os.environ.get("FRACTALC_FUZZ_RANDOM") == "1"


def _models():
    from fractalc.backends.onnx import lower, testing
    from fractalc.compiler import compile_spec
    root = Path(__file__).resolve().parent.parent / "specs"
    out = []
    for spec in ("f_c3d4.fr", "drf_c3d4.fr", "rf_c3d4.fr"):
        c = compile_spec(root / spec, {"size": "4"})
        m = lower.to_onnx_xnor(c, testing.dyadic_state(c.graph, seed=1), "fuzz")
        out.append(m.SerializeToString())
    # a whole network: float stem/transitions/head (numpy and onnxruntime nodes)
    c = compile_spec(root / "bireal_resnet18.fr", {"dataset": '"cifar10"', "size": "8"})
    out.append(lower.to_onnx_xnor(c, testing.dyadic_state(c.graph, seed=1), "fuzz").SerializeToString())
    return out


def _mutate(data: bytes, draw, st) -> bytes:
    import onnx
    from onnx import helper
    m = onnx.load_model_from_string(data)
    g = m.graph
    kind = draw(st.sampled_from(["init_dims", "init_bytes", "init_values", "init_type", "attr",
                                 "attr_drop", "attr_add", "input_shape", "input_type", "drop_input",
                                 "rename_input", "drop_node", "truncate", "corrupt"]))
    big = st.sampled_from([-(2 ** 40), -1, 0, 1, 2, 3, 63, 64, 65, 1000, 2 ** 20, 2 ** 31 - 1, 2 ** 40])
    if kind.startswith("init"):
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        if kind == "init_dims":
            dims = draw(st.lists(big if draw(st.booleans()) else st.integers(0, 130), min_size=0, max_size=4))
            del t.dims[:]
            t.dims.extend(dims)
        elif kind == "init_bytes":
            raw = t.raw_data if t.raw_data else onnx.numpy_helper.to_array(t).tobytes()
            cut = draw(st.integers(0, max(0, len(raw) + 8)))
            t.ClearField("float_data"); t.ClearField("int32_data"); t.ClearField("int64_data")
            t.ClearField("uint64_data")
            t.raw_data = (raw + b"\x01" * 8)[:cut]
        elif kind == "init_values":
            a = onnx.numpy_helper.to_array(t).copy()
            if a.size:
                flat = a.reshape(-1).view(np.uint8)
                rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
                flat[:] = rng.integers(0, 256, flat.size, dtype=np.uint8)
                if a.dtype == np.bool_:
                    a = a.view(np.uint8).astype(bool).reshape(a.shape)
                t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
        else:
            t.data_type = draw(st.sampled_from([1, 2, 3, 6, 7, 9, 10, 11, 13, 16]))
    elif kind.startswith("attr"):
        nodes = [n for n in g.node if n.attribute or kind == "attr_add"]
        if not nodes:
            return data
        n = nodes[draw(st.integers(0, len(nodes) - 1))]
        if kind == "attr_add":
            n.attribute.append(helper.make_attribute(draw(st.sampled_from(["foo", "channels", "pads", "axis"])), 1))
        elif kind == "attr_drop":
            del n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
        else:
            a = n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
            v = draw(st.one_of(big, st.lists(big, min_size=1, max_size=5), st.sampled_from([b"zero", b"one", b"bits", b"float", b"x"])))
            name = a.name
            n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(name, v))
    elif kind == "input_shape":
        d = g.input[0].type.tensor_type.shape.dim[draw(st.integers(0, 3))]
        d.dim_value = draw(big)
    elif kind == "input_type":
        g.input[0].type.tensor_type.elem_type = draw(st.sampled_from([2, 6, 10, 11, 13]))
    elif kind in ("drop_input", "rename_input"):
        n = g.node[draw(st.integers(0, len(g.node) - 1))]
        i = draw(st.integers(0, len(n.input) - 1)) if n.input else None
        if i is None:
            return data
        if kind == "drop_input":
            del n.input[i]
        else:
            n.input[i] = draw(st.sampled_from(["nope", "", g.node[-1].output[0], g.input[0].name]))
    elif kind == "drop_node":
        del g.node[draw(st.integers(0, len(g.node) - 1))]
    out = m.SerializeToString()
    if kind == "truncate":
        out = out[:draw(st.integers(0, len(out)))]
    elif kind == "corrupt":
        b = bytearray(out)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        out = bytes(b)
    return out


def _child() -> None:
    from hypothesis import HealthCheck, given, settings, strategies as st

    from fractalc.errors import FractalcError
    from fractalc.runtime import Session

    models = _models()
    stats = {"ran": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        base = models[data.draw(st.integers(0, len(models) - 1))]
        blob = _mutate(base, data.draw, st)
        try:
            s = Session(blob, threads=data.draw(st.integers(1, 2)))
            x = np.random.default_rng(0).standard_normal((2,) + s.input_shape).astype(np.float32)
            y = s.run(x)
            assert isinstance(y, np.ndarray)
            stats["ran"] += 1
        except FractalcError as exc:
            assert str(exc).strip(), "an error without a message"
            stats["refused"] += 1

    fuzz()
    print(f"fuzz: {stats['ran']} mutated models ran, {stats['refused']} refused with a clear error")


def test_fuzz_mutated_models_never_crash():
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    r = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True,
                       timeout=600, env=env)
    print(r.stdout[-2000:])
    assert r.returncode == 0, f"fuzz child failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert "fuzz:" in r.stdout
    ran, refused = (int(w) for w in r.stdout.split("fuzz:")[1].split()[0:5:4])
    assert ran + refused >= EXAMPLES and refused > 0


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    _child()
