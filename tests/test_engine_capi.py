"""The engine without Python: the C example (examples/c/run_model.c) compiled with `cc` against
the shared and the static libfractalc_rt, and the fractalc-run program on .npy files, each
compared byte for byte with the Python binding (the same engine); malformed files are error
codes and messages."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import onnx  # noqa: F401,E402  (a dependency of make test: missing fails, never skips)

from conftest import ROOT, SPECS  # noqa: E402
from fractalc.backends.onnx import lower, weights  # noqa: E402
from fractalc.backends.xnor import kernels  # noqa: E402
from fractalc.backends.xnor.engine import Engine, write_engine_file  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402

PKG = Path(kernels._xnor.__file__).parent
LIB, BIN = PKG / "lib", PKG / "bin"
INCLUDE = ROOT / "backends" / "xnor" / "include"
CC = shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    c = compile_spec(SPECS / "bireal_resnet18.fr", {"dataset": '"cifar10"', "size": "16"})
    state, _ = weights.resolve(c, {"seed": 7})
    path = tmp_path_factory.mktemp("engine") / "bireal.frt"
    write_engine_file(lower.to_onnx_xnor(c, state, "test"), path)
    return path


def _example_input(shape):
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((i * 7919) % 17 - 8) / 8.0).astype(np.float32).reshape(shape)


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.parametrize("link", ["shared", "static"])
def test_c_example(model_file, tmp_path, link):
    exe = tmp_path / f"run_model_{link}"
    src = ROOT / "examples" / "c" / "run_model.c"
    libs = ([f"-L{LIB}", "-lfractalc_rt", f"-Wl,-rpath,{LIB}"] if link == "shared"
            else [str(LIB / "libfractalc_rt.a"), "-lstdc++", "-lpthread", "-lm"])
    subprocess.run([CC, "-std=c11", "-Wall", "-Werror", "-O1", str(src), f"-I{INCLUDE}", *libs, "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    e = Engine(str(model_file), threads=2)
    for batch, threads in ((1, 1), (3, 2)):
        out = tmp_path / "y.bin"
        r = subprocess.run([str(exe), str(model_file), str(out), str(batch), str(threads)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"{threads} threads" in r.stdout and "arena" in r.stdout
        y = np.fromfile(out, np.float32).reshape((batch,) + e.output_shape)
        x = _example_input((batch,) + e.input_shape)
        assert y.tobytes() == e.run(x).tobytes()
    bad = tmp_path / "bad.frt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    r = subprocess.run([str(exe), str(bad), str(tmp_path / "z.bin")], capture_output=True, text=True)
    assert r.returncode == 1 and "checksum" in r.stderr


def test_fractalc_run_cli(model_file, tmp_path):
    exe = BIN / "fractalc-run"
    assert exe.exists()
    e = Engine(str(model_file), threads=2)
    x = np.random.default_rng(0).standard_normal((2,) + e.input_shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([str(exe), str(model_file), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                        "--threads", "2", "--repeat", "3", "--profile"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "median" in r.stderr and "XnorConv" in r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (2,) + e.output_shape
    assert y.tobytes() == e.run(x).tobytes()
    # errors: wrong shape, wrong dtype, not a model, missing file
    np.save(tmp_path / "bad.npy", x[:, :1])
    np.save(tmp_path / "f64.npy", x.astype(np.float64))
    (tmp_path / "junk.frt").write_bytes(b"not a model at all, not even close" * 4)
    for args, msg in (([model_file, tmp_path / "bad.npy"], "input must have shape"),
                      ([model_file, tmp_path / "f64.npy"], "float32"),
                      ([tmp_path / "junk.frt", tmp_path / "x.npy"], "bad magic"),
                      ([tmp_path / "missing.frt", tmp_path / "x.npy"], "cannot open")):
        r = subprocess.run([str(exe), *map(str, args), str(tmp_path / "o.npy")], capture_output=True, text=True)
        assert r.returncode == 1 and msg in r.stderr, r.stderr


def test_malformed_files_are_errors(model_file):
    """Byte flips, truncations and bad headers through the Python binding: ModelError, never a
    crash (the sanitizer fuzzing is test_engine_fuzz.py)."""
    from fractalc.errors import ModelError
    data = model_file.read_bytes()
    rng = np.random.default_rng(1)
    for k in range(200):
        b = bytearray(data)
        if k % 3 == 0:
            b = b[:int(rng.integers(0, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(ModelError, match="engine:"):
            Engine(bytes(b), threads=1)
    with pytest.raises(ModelError, match="version"):
        Engine(data[:8] + b"\x02" + data[9:], threads=1)


def test_arena_is_planned(model_file):
    e = Engine(str(model_file), threads=1)
    planned, unplanned = e.arena_bytes(8)
    assert 0 < planned < unplanned / 2
    assert e.arena_bytes(1)[0] < planned
