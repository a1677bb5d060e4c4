"""Weights files with provenance (fractalc.weights_file): safetensors written and read back
bit for bit with their metadata, old .pt state_dicts still read, keys that do not fit named,
provenance differences warned about, and hostile files refused with a FractalcError before
any tensor is made.

Reference: the `safetensors` package itself (its reader must see our files and metadata, our
reader must give back what it writes) and the safetensors layout (8-byte little-endian header
length, JSON header, data section tiled by the tensors)."""
from __future__ import annotations

import json
import struct
import warnings

import numpy as np
import pytest
import torch

from fractalc import weights_file
from fractalc.backends.onnx.weights import parameter_list
from fractalc.backends.torch import from_graph
from fractalc.cli import main
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError, FractalcWarning, ModelError
from fractalc.training.checkpoint import fit_state_dict, load_weights, save_weights
from fractalc.version import __version__

from conftest import SPECS
from conftest import run_main

SPEC = SPECS / "rf_c3d4.fr"
SMALL = {"size": "8", "channels": "8"}


@pytest.fixture(scope="module")
def compiled():
    return compile_spec(SPEC, SMALL)



def test_round_trip_and_metadata(compiled, tmp_path):
    from safetensors import safe_open
    model = from_graph(compiled.graph, seed=3)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, compiled, mode="binary")
    sd = model.state_dict()
    w = weights_file.read(path)
    assert w.kind == "safetensors" and set(w.tensors) == set(sd)
    for k, v in sd.items():  # bit for bit, dtype kept (int64 num_batches_tracked too)
        got = torch.from_numpy(w.tensors[k])
        assert got.dtype == v.dtype and torch.equal(got, v), k
    m = w.metadata
    assert m["format"] == "fractalc-weights" and m["format_version"] == 1
    assert m["fractalc_version"] == __version__
    assert m["spec"] == "rf_c3d4.fr" and m["spec_sha256"] == compiled.spec.sha256
    assert m["network"] == "rf_c3d4" and m["column"] is None and m["overrides"] == SMALL
    assert m["mode"] == "binary"
    params = parameter_list(compiled.graph)
    assert m["parameters"] == [[k, list(s), r] for k, s, r in params]
    assert {r for _, _, r in params} >= {"binary", "bn", "buffer"}
    assert {p[0] for p in m["parameters"]} == {k for k in sd if not k.endswith("num_batches_tracked")}
    # the reference reader sees the same tensors and metadata
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(sd)
        assert f.metadata()["spec_sha256"] == compiled.spec.sha256
        assert torch.equal(f.get_tensor("block.col1.conv1.weight"), sd["block.col1.conv1.weight"])
    # and loading back gives the same model, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_weights(path, compiled)
    fresh = from_graph(compiled.graph, seed=9)
    fit_state_dict(fresh, back, "w")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), sd.values()))


def test_files_of_the_reference_writer_are_read(tmp_path):
    from safetensors.torch import save_file
    t = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64),
         "h": torch.randn(2, 2).half(), "bf": torch.randn(7).bfloat16(), "s": torch.tensor(2.5)}
    save_file(t, str(tmp_path / "x.safetensors"), metadata={"note": "hi"})
    w = weights_file.read(tmp_path / "x.safetensors")
    assert w.metadata == {"note": "hi"}
    assert np.array_equal(w.tensors["a"], t["a"].numpy()) and np.array_equal(w.tensors["b"], t["b"].numpy())
    assert np.array_equal(w.tensors["h"], t["h"].numpy())
    assert w.tensors["bf"].dtype == np.float32 and np.array_equal(w.tensors["bf"], t["bf"].float().numpy())
    assert w.tensors["s"].shape == () and w.tensors["s"] == 2.5


def test_old_pt_state_dicts_and_checkpoints_are_read(compiled, tmp_path):
    sd = from_graph(compiled.graph, seed=1).state_dict()
    torch.save(sd, tmp_path / "w.pt")
    w = weights_file.read(tmp_path / "w.pt")
    assert w.kind == "state_dict" and w.metadata == {}
    assert all(np.array_equal(w.tensors[k], v.numpy()) for k, v in sd.items())
    torch.save({"format": "fractalc-checkpoint", "spec_sha256": "0" * 64, "overrides": {}, "model": sd},
               tmp_path / "c.pt")
    c = weights_file.read(tmp_path / "c.pt")
    assert c.kind == "checkpoint" and c.metadata["spec_sha256"] == "0" * 64
    with pytest.warns(FractalcWarning, match="spec text differs"):
        load_weights(tmp_path / "c.pt", compiled)
    # a pickle of anything but tensors is refused by torch.load(weights_only=True)
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"a": Evil()}, protocol=2))
    with pytest.raises(ModelError, match="weights_only"):
        weights_file.read(tmp_path / "evil.pt")


def test_mismatched_keys_are_named(compiled, tmp_path):
    sd = from_graph(compiled.graph).state_dict()
    sd.pop("block.col1.conv2.weight")
    sd["block.colX.conv9.weight"] = torch.zeros(3)
    sd["block.col2.bn1.running_var"] = torch.ones(5)
    path = tmp_path / "w.safetensors"
    weights_file.write(path, sd)
    with pytest.raises(ModelError) as info:
        fit_state_dict(from_graph(compiled.graph), load_weights(path), repr(str(path)))
    msg = info.value.message
    assert "1 missing: block.col1.conv2.weight" in msg
    assert "1 unexpected: block.colX.conv9.weight" in msg
    assert "1 mis-shaped: block.col2.bn1.running_var (5, the network has 8)" in msg
    # nothing half-written by the commands that read --weights
    for target in ("onnx", "torch-state"):
        out = tmp_path / f"o.{target}"
        with pytest.raises(SystemExit):
            main(["compile", str(SPEC), "--set", "size=8", "--set", "channels=8", "-t", target,
                  "--weights", str(path), "-o", str(out)])
        assert not out.exists()


def test_eval_and_compile_name_the_keys(tmp_path, capsys):
    spec = tmp_path / "s.fr"
    spec.write_text("network n {\n  input [1, 16, 16]\n  body = conv[8] >> bn >> gap >> linear[10]\n}\n")
    bad = tmp_path / "bad.safetensors"
    weights_file.write(bad, {"body.conv1.weight": torch.zeros(8, 1, 5, 5), "nope": torch.zeros(1)})
    for args in (["eval", spec, "--weights", bad, "--data", "digits", "--engine", "torch"],
                 ["eval", spec, "--weights", bad, "--data", "digits", "--engine", "xnor"],
                 ["compile", spec, "-t", "onnx", "--weights", bad, "-o", tmp_path / "m.onnx"],
                 ["compile", spec, "-t", "torch-state", "--weights", bad, "-o", tmp_path / "m.pt"]):
        rc, out, err = run_main(capsys, *args)
        assert rc == 1 and out == "", err
        assert "1 mis-shaped: body.conv1.weight (8x1x5x5, the network has 8x1x3x3)" in err, err
        assert "1 unexpected: nope" in err and "missing: body.bn1.weight" in err, err
        assert "Error(s) in loading state_dict" not in err and "Traceback" not in err


def test_provenance_mismatch_warns_and_still_loads(compiled, tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_weights(path, from_graph(compiled.graph, seed=2), compiled)
    other = tmp_path / "rf.fr"
    text = SPEC.read_text()
    assert 'import "lib/sofar.fr"' in text
    other.write_text(text.replace('import "lib/sofar.fr"', f'import "{SPECS}/lib/sofar.fr"'))
    c2 = compile_spec(other, SMALL)
    with pytest.warns(FractalcWarning) as rec:
        load_weights(path, c2)
    assert "spec text differs" in str(rec[0].message) and "overrides" not in str(rec[0].message)
    c3 = compile_spec(SPEC, {**SMALL, "order": '"bn-conv"'})
    with pytest.warns(FractalcWarning, match="overrides differ .*bn-conv"):
        load_weights(path, c3)
    # the CLI prints it as one "warning:" line on stderr; stdout stays the result
    out = tmp_path / "m.onnx"
    rc, stdout, err = run_main(capsys, "compile", other, "--set", "size=8",
                           "--set", "channels=8", "-t", "onnx", "--weights", path, "-o", out)
    assert rc == 0 and stdout == "" and out.exists()
    assert err.startswith("warning: weights") and "spec text differs" in err


def test_torch_state_target_writes_safetensors_with_provenance(tmp_path, capsys):
    out = tmp_path / "init.safetensors"
    rc, _, err = run_main(capsys, "compile", SPEC, "--set", "size=8", "-t", "torch-state", "--seed", "4",
                      "--column", "2", "-o", out)
    assert rc == 0, err
    w = weights_file.read(out)
    assert w.metadata["column"] == 2 and w.metadata["overrides"] == {"size": "8"}
    assert all(k.startswith("block.col2.") for k in w.tensors)


def _header_file(header: dict | bytes, body: bytes = b"", length: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + body


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("data,expect", [
    (b"", "shorter than the 8-byte header length"),
    (b"\x05\x00\x00", "shorter than the 8-byte header length"),
    (_header_file(GOOD, b"\0" * 8, length=1 << 62), "more than the 16,777,216 allowed"),
    (_header_file(GOOD, b"\0" * 8, length=10_000), "truncated"),
    (_header_file(GOOD, b"\0" * 4), "outside the 4-byte data section"),
    (_header_file(b"{not json"), "not JSON"),
    (_header_file(b"[1, 2]"), "not a JSON object"),
    (_header_file({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8), "dtype 'U8'"),
    (_header_file({"a": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8), "dtype"),
    (_header_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
     r"F32 x \[3\] is 12 bytes, its data offsets span 8"),
    (_header_file({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8), "bad shape"),
    (_header_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlaps"),
    (_header_file(GOOD, b"\0" * 12), "4 bytes after the last tensor"),
    (_header_file({**GOOD, "__metadata__": {"x": 1}}, b"\0" * 8), "__metadata__"),
    (_header_file({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), "needs exactly dtype"),
])
def test_hostile_safetensors_are_refused(tmp_path, data, expect):
    p = tmp_path / "w.safetensors"
    p.write_bytes(data)
    with pytest.raises(FractalcError, match=expect):
        weights_file.read(p)


def test_truncated_real_file_and_special_files_are_refused(compiled, tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(p, from_graph(compiled.graph), compiled)
    data = p.read_bytes()
    for cut in (7, 100, len(data) // 2, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError):
            weights_file.read(p)
    for special in ("/dev/zero", "/proc/self/environ", str(tmp_path)):
        with pytest.raises(ModelError, match="cannot read weights file"):
            weights_file.read(special)


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "w.safetensors"
    weights_file.write(p, {"a": np.zeros(1 << 16, np.float32)})
    monkeypatch.setattr(weights_file, "max_weights_bytes", lambda: 10_000)
    with pytest.raises(ModelError, match="more than the 10,000 allowed"):
        weights_file.read(p)
