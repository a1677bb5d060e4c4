"""The runtime refuses malformed models and wrong inputs with a clear FractalcError, and its CLI
(`fractalc run`, `fractalc bench`) works end to end."""
from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

import onnxruntime  # noqa: F401  (a dependency of `make test`)

from conftest import SPECS  # noqa: E402
from fractalc.backends.onnx import lower, reference, testing  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.errors import FractalcError, ModelError  # noqa: E402
from fractalc.runtime import Session  # noqa: E402


@functools.lru_cache(maxsize=None)
def _model_bytes(spec="f_c3d4.fr", size="8") -> bytes:
    c = compile_spec(SPECS / spec, {"size": size})
    return lower.to_onnx_xnor(c, testing.dyadic_state(c.graph, seed=1), "t").SerializeToString()


def _proto(spec="f_c3d4.fr"):
    import onnx
    return onnx.load_model_from_string(_model_bytes(spec))


def _refused(blob, *words):
    with pytest.raises(ModelError) as e:
        Session(blob, threads=1)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    return msg


def _node(m, op):
    return next(n for n in m.graph.node if n.op_type == op)


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def test_not_onnx_and_truncated(tmp_path):
    _refused(b"hello world, not a model", "not an ONNX model")
    _refused(_model_bytes()[: len(_model_bytes()) // 2], "not an ONNX model", "truncated")
    _refused(str(tmp_path / "missing.onnx"), "does not exist")


def test_unknown_fractalc_op_and_attribute():
    m = _proto()
    _node(m, "XnorConv").op_type = "XnorConv2"
    _refused(m.SerializeToString(), "XnorConv2")
    from onnx import helper
    m = _proto()
    _node(m, "XnorConv").attribute.append(helper.make_attribute("tile_hint", [2, 2]))
    _refused(m.SerializeToString(), "tile_hint")
    # a known attribute with a bad value is refused too, by name
    m = _proto()
    _node(m, "XnorConv").attribute.append(helper.make_attribute("dilations", [0, 0]))
    _refused(m.SerializeToString(), "dilations")


def test_wrong_weight_size_and_packing():
    import onnx
    m = _proto()
    n = _node(m, "XnorConv")
    t = _init(m, n.input[1])
    a = onnx.numpy_helper.to_array(t)
    t.CopyFrom(onnx.numpy_helper.from_array(a.reshape(-1)[:-1].copy(), t.name))
    _refused(m.SerializeToString(), "W must have shape", f"[{a.size}]", f"[{a.size - 1}]")


def test_unused_weight_bits_set():
    import onnx
    m = _proto()
    n = next(x for x in m.graph.node if x.op_type == "XnorConv")
    t = _init(m, n.input[1])
    a = onnx.numpy_helper.to_array(t).copy()
    ci = next(at.i for at in n.attribute if at.name == "in_channels")
    if ci % 64 == 0:  # every bit is a real channel: make the weights claim fewer channels instead
        for at in n.attribute:
            if at.name == "in_channels":
                at.i = ci - 1
        _refused(m.SerializeToString(), n.name, f"in_channels={ci - 1}", f"{ci} channels")
    else:
        a.reshape(-1)[-1] |= np.uint64(1) << np.uint64(63)
        t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
        _refused(m.SerializeToString(), n.name)


def test_wrong_multiplier_dtype_and_shape():
    import onnx
    m = _proto("rf_c3d4.fr")
    n = next(x for x in m.graph.node if x.op_type == "XnorConv"
             and any(at.name == "output_type" and at.s == b"float" for at in x.attribute))
    t = _init(m, n.input[2])
    a = onnx.numpy_helper.to_array(t)
    t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.float64), t.name))
    _refused(m.SerializeToString(), "multiplier", "must be float", "float64")
    m = _proto("rf_c3d4.fr")
    t = _init(m, n.input[2])
    t.CopyFrom(onnx.numpy_helper.from_array(np.concatenate([a, a]), t.name))
    _refused(m.SerializeToString(), "multiplier must have shape", f"[{a.size}]", f"[{2 * a.size}]")


def test_missing_input_and_dropped_node():
    m = _proto()
    n = _node(m, "XnorConv")
    n.input[0] = "no_such_value"
    _refused(m.SerializeToString(), "no_such_value")
    m = _proto()
    dropped = m.graph.node[0].output[0]
    del m.graph.node[0]
    _refused(m.SerializeToString(), dropped)  # the value nobody computes any more


@pytest.mark.parametrize("dim", [0, -5, 2 ** 40])
def test_bad_graph_input_dims(dim):
    m = _proto()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = dim
    _refused(m.SerializeToString(), "shape", f"({dim})")


def test_wrong_inputs_refused():
    s = Session(_model_bytes(), threads=1)
    c, h, w = s.input_shape
    ok = np.zeros((1, c, h, w), np.float32)
    assert s.run(ok).shape == (1,) + s.output_shape
    shape = f"must have shape (N, {c}, {h}, {w})"
    for bad, words in ((ok.astype(np.float64), ("must be float32", "float64")),
                       (ok[0], (shape, f"got ({c}, {h}, {w})")),
                       (np.zeros((1, c + 1, h, w), np.float32), (shape, f"got (1, {c + 1}, {h}, {w})")),
                       (np.zeros((0, c, h, w), np.float32), (shape, "1 <= N", f"got (0, {c}, {h}, {w})")),
                       (ok.tolist(), ("must be a numpy array", "list")),
                       (np.zeros((1, c, h, w), np.int32), ("must be float32", "int32"))):
        with pytest.raises(ModelError) as e:
            s.run(bad)
        assert str(e.value).count("input") >= 1 and all(wd in str(e.value) for wd in words), (words, str(e.value))
    with pytest.raises(FractalcError) as e:
        Session(_model_bytes(), threads=0)
    assert "threads" in str(e.value) and "got 0" in str(e.value)
    with pytest.raises(FractalcError) as e:
        Session(_model_bytes(), isa="sparc")
    assert "unknown ISA 'sparc'" in str(e.value) and "portable" in str(e.value)


def test_unpack_and_asymmetric_conv_match_reference():
    """Legal ops the lowering never emits: UnpackBits, and an XnorConv with asymmetric pads and
    strides (run by the exact reference path)."""
    from onnx import TensorProto, helper, numpy_helper

    from fractalc.backends.onnx import ops, packing
    rng = np.random.default_rng(0)
    ci, co = 70, 5
    w = packing.pack_weights_tight(rng.standard_normal((co, ci, 3, 2)).astype(np.float32))
    nodes = [helper.make_node("PackBits", ["input"], ["xb"], domain=ops.DOMAIN, name="p"),
             helper.make_node("XnorConv", ["xb", "w", "a", "b"], ["y"], domain=ops.DOMAIN, name="c",
                              in_channels=ci, out_channels=co, kernel_shape=[3, 2], strides=[2, 1],
                              pads=[1, 0, 2, 1], padding="one", output_type="bits"),
             helper.make_node("UnpackBits", ["y"], ["output"], domain=ops.DOMAIN, name="u", channels=co)]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.integers(-20, 20, co).astype(np.int32), "a"),
             numpy_helper.from_array(np.array([True, False, True, False, False]), "b")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", ci, 7, 6])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", co, 4, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, ops.VERSION)],
                          ir_version=8)
    x = rng.standard_normal((2, ci, 7, 6)).astype(np.float32)
    want = reference.run_reference(m, x)
    got = Session(m.SerializeToString(), threads=2).run(x)
    assert np.array_equal(got, want)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fractalc", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_run_and_errors(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(_model_bytes())
    s = Session(model, threads=1)
    x = np.random.default_rng(1).standard_normal((2,) + s.input_shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = _cli("run", str(model), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), s.run(x))
    np.save(tmp_path / "bad.npy", x[:, :-1])
    r = _cli("run", str(model), "--input", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "z.npy"))
    assert r.returncode == 1 and "input must have shape" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "z.npy").exists()
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk")
    r = _cli("run", str(tmp_path / "junk.onnx"), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "z.npy"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "ONNX" in r.stderr


def test_cli_bench_spec_json(tmp_path):
    import json
    out = tmp_path / "b.json"
    r = _cli("bench", str(SPECS / "rf_c3d4.fr"), "--set", "size=8", "--repeats", "2", "--threads", "1",
             "--json", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    row = data["results"][0]["threads"]["1"]
    assert set(row["median_ms"]) == {"fractalc", "onnxruntime", "torch"}
    assert any(k.startswith("XnorConv") for k in row["fractalc_breakdown_ms"]), row["fractalc_breakdown_ms"]
    assert "speedup_vs" in row and "cpu" in data["cpu"]
    assert set(row["paired_speedup_vs"]) == {"onnxruntime", "torch"}
    assert data["summary"]["vs_onnxruntime_min"] == row["speedup_vs"]["onnxruntime"]
    assert data["summary"]["two_threads_beat_one_everywhere"] is None  # one thread count only


def test_paired_ratios_by_hand():
    """Each round's own ratio, then the median: a machine slowing down between rounds moves both
    sides of a round together (the ratio of medians here would be 10 / 2 = 5)."""
    from fractalc.backends.xnor.bench import paired_ratios
    r = paired_ratios({"fractalc": [1.0, 2.0, 4.0], "onnxruntime": [8.0, 10.0, 40.0]})
    assert r == {"onnxruntime": 8.0}


def test_bench_summary_by_hand():
    from fractalc.backends.xnor.bench import format_summary, summarize

    def row(ms, ort):
        return {"median_ms": {"fractalc": ms, "onnxruntime": ort}, "speedup_vs": {"onnxruntime": ort / ms}}
    res = [{"model": "a", "batch": 1, "threads": {"2": row(2.0, 12.0), "1": row(3.0, 24.0)}},
           {"model": "a", "batch": 8, "threads": {"2": row(10.0, 40.0), "1": row(9.0, 80.0)}}]
    s = summarize(res)
    assert s["vs_onnxruntime_min"] == 4.0 and s["two_threads_speedup"] == {"a batch 1": 1.5, "a batch 8": 0.9}
    assert s["two_threads_beat_one_everywhere"] is False
    text = format_summary(s)
    assert "min 4.0x, NOT met" in text and "2 threads beat 1 everywhere: False" in text
