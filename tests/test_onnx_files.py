"""ONNX files end to end: the CLI targets, determinism, metadata, weights files, file size,
and the loader's errors on bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import onnx
import torch
import onnxruntime as ort

from conftest import ALL_SPECS, ROOT, SPECS, spec_id  # noqa: E402
from fractalc import __version__  # noqa: E402
from fractalc.cli import main  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.cost import cost  # noqa: E402
from fractalc.errors import ModelError  # noqa: E402
from fractalc.backends.onnx import load_model, lower, run_reference, testing, weights  # noqa: E402

BLOCK = SPECS / "f_c3d4.fr"
SMALL = ["--set", "size=8", "--set", "channels=16"]


def cli(*args, capsys=None):
    """Run the real entry point; returns (exit status, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err if capsys else ""
    return code, err


@pytest.mark.parametrize("target", ["onnx", "onnx-xnor"])
def test_cli_writes_deterministic_checked_files(tmp_path, capsys, target):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli("compile", BLOCK, *SMALL, "-t", target, "-o", a, capsys=capsys)[0] == 0
    assert cli("compile", BLOCK, *SMALL, "-t", target, "-o", b, capsys=capsys)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    m = load_model(a)
    props = {p.key: p.value for p in m.metadata_props}
    c = compile_spec(BLOCK, {"size": "8", "channels": "16"})
    assert props["fractalc.version"] == __version__
    assert props["fractalc.spec"] == "f_c3d4.fr" and props["fractalc.network"] == "f_c3d4"
    assert props["fractalc.spec_sha256"] == c.spec.sha256
    assert json.loads(props["fractalc.overrides"]) == {"size": "8", "channels": "16"}
    assert props["fractalc.weights"] == "seed:0" and props["fractalc.flavour"] == target
    # the seed matters, and is recorded
    assert cli("compile", BLOCK, *SMALL, "-t", target, "-o", b, "--seed", "3", capsys=capsys)[0] == 0
    assert a.read_bytes() != b.read_bytes()
    assert {p.key: p.value for p in load_model(b).metadata_props}["fractalc.weights"] == "seed:3"


def test_cli_needs_output_file(capsys):
    code, err = cli("compile", BLOCK, "-t", "onnx-xnor", capsys=capsys)
    assert code == 1 and "-o" in err and "Traceback" not in err


def test_column_extraction(tmp_path, capsys):
    out = tmp_path / "col.onnx"
    assert cli("compile", BLOCK, *SMALL, "-t", "onnx-xnor", "--column", "1", "-o", out, capsys=capsys)[0] == 0
    m = load_model(out)
    names = {n.name for n in m.graph.node}
    assert "block.col1.conv4" in names and not any(".col2." in n or ".col3." in n for n in names)
    assert {p.key: p.value for p in m.metadata_props}["fractalc.column"] == "1"


def _save(state, path):
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)


def test_weights_file_is_used(tmp_path, capsys):
    c = compile_spec(BLOCK, {"size": "8", "channels": "16"})
    state = testing.dyadic_state(c.graph, seed=4)
    pt = tmp_path / "w.pt"
    _save(state, pt)
    for target in ("onnx", "onnx-xnor"):
        out = tmp_path / f"{target}.onnx"
        assert cli("compile", BLOCK, *SMALL, "-t", target, "--weights", pt, "-o", out, capsys=capsys)[0] == 0
        x = testing.dyadic_input((2, 16, 8, 8), seed=5)
        want = testing.torch_model(c.graph, state)(torch.from_numpy(x)).detach().numpy()
        if target == "onnx":
            got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        else:
            got = run_reference(out, x)
        # exact: dyadic data, and the final 3-input join is computed as torch does (sum, then / 3)
        np.testing.assert_array_equal(got, want)
        props = {p.key: p.value for p in load_model(out).metadata_props}
        assert props["fractalc.weights"].startswith("sha256:")


@pytest.mark.parametrize("edit,expect", [
    (lambda s: s.pop("block.col1.conv2.weight"), "1 missing: block.col1.conv2.weight"),
    (lambda s: s.__setitem__("block.colX.conv9.weight", np.zeros(3, np.float32)), "1 unexpected: block.colX.conv9.weight"),
    (lambda s: s.__setitem__("block.col2.bn1.running_var", np.ones(5, np.float32)),
     "1 mis-shaped: block.col2.bn1.running_var (5, the network has 16)"),
])
def test_bad_weights_named(tmp_path, capsys, edit, expect):
    c = compile_spec(BLOCK, {"size": "8", "channels": "16"})
    state = testing.dyadic_state(c.graph)
    edit(state)
    pt = tmp_path / "w.pt"
    _save(state, pt)
    out = tmp_path / "m.onnx"
    code, err = cli("compile", BLOCK, *SMALL, "-t", "onnx", "--weights", pt, "-o", out, capsys=capsys)
    assert code == 1 and expect in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("payload,expect", [
    (b"this is not a torch file", "not a valid safetensors file"),
    ("list", "not a state_dict"),
    ("nested", "are not tensors"),
])
def test_unreadable_weights(tmp_path, payload, expect):
    pt = tmp_path / "w.pt"
    if payload == "list":
        torch.save([torch.zeros(1)], pt)
    elif payload == "nested":
        torch.save({"model": {"a": torch.zeros(1)}}, pt)
    else:
        pt.write_bytes(payload)
    with pytest.raises(ModelError, match=expect):
        weights.load_state_file(pt)


@pytest.mark.parametrize("path", ALL_SPECS, ids=spec_id)
def test_lowered_file_is_small(path):
    """Binary weights take 1 bit each in the file: within 5 % + 64 KiB of `stats` bits / 8."""
    c = compile_spec(path)
    state = {k: np.ones(s, np.float32) for k, s in weights.expected_keys(c.graph).items()}
    size = len(lower.to_onnx_xnor(c, state, "seed:0").SerializeToString())
    budget = cost(c.graph).bits / 8
    assert size <= 1.05 * budget + 64 * 1024, f"{size} bytes for {budget:.0f} deployed"


# --- the loader -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xnor_bytes():
    c = compile_spec(BLOCK, {"size": "8", "channels": "16"})
    return lower.to_onnx_xnor(c, testing.dyadic_state(c.graph), "t").SerializeToString()


def _edited(data, fn):
    m = onnx.load_model_from_string(data)
    fn(m)
    return m.SerializeToString()


def _conv(m):
    return next(n for n in m.graph.node if n.op_type == "XnorConv")


def _set_attr(node, name, value):
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


@pytest.mark.parametrize("mutate,expect", [
    (lambda d: d[: len(d) // 2], "not an ONNX model"),
    (lambda d: b"\x00\xff garbage " * 50, "not an ONNX model"),
    (lambda d: _edited(d, lambda m: setattr(_conv(m), "op_type", "XnorConv2d")), "unknown operator ai.fractalc::XnorConv2d"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "padding", "two")), "attribute 'padding' must be one of zero, one"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "output_type", "int")), "'output_type' must be one of float, bits"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "tile_hint", [2, 2])), "unknown attribute(s) tile_hint"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "dilations", [0, 0])), "dilations"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "in_channels", 17)), "W must have shape"),
    (lambda d: _edited(d, lambda m: _set_attr(_conv(m), "kernel_shape", [3])), "'kernel_shape' must be 2 ints"),
    (lambda d: _edited(d, lambda m: [o.__setattr__("version", 2) for o in m.opset_import
                                     if o.domain == "ai.fractalc"]), "version 2"),
])
def test_loader_refuses_bad_models(xnor_bytes, tmp_path, mutate, expect):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(mutate(xnor_bytes))
    with pytest.raises(ModelError) as exc:
        load_model(bad)
    assert expect in str(exc.value)


def test_loader_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_import_is_light():
    code = ("import sys, fractalc.backends.onnx, fractalc.cli.targets; "
            "assert 'onnx' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
