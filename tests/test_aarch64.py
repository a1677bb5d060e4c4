"""AArch64 (issue 16): the NEON kernels and the standalone engine, cross-compiled with Debian's
g++-aarch64-linux-gnu (backends/xnor/tools/cross_aarch64.sh, cached in build/aarch64 by a hash
of the sources) and run under qemu-user.

- Kernels (backends/xnor/tools/xnor_check.cpp): every conv shape and padding mode of
  tests/test_xnor_kernels.py, with int32, float (+ fused residual and sign bits) and bit
  outputs, and the NCHW, NHWC and thresholded packings, on the neon and portable paths with 1
  and 2 threads: bit-exact against torch's conv of the signs (and the reference packer / fmaf
  contract), so the paths agree with each other and with x86.
- Engine: a lowered Bi-Real ResNet18 (ImageNet stem, 64x64 input) written by the Python engine
  writer, run by the cross-built fractalc-run and the C example (examples/c/run_model.c) under
  qemu: the same bytes as the x86 engine, which equals the reference executor bit for bit.

The toolchain is a dependency of `make test` (the set-up installs it): missing tools fail these
tests unless FRACTALC_TESTS_ALLOW_MISSING=1, like tests/conftest.py's other dependencies.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

import fractalc.backends.onnx.reference as reference
import fractalc.backends.xnor as xnor
from conftest import ROOT, SPECS
from test_xnor_kernels import CASES, ref_pack_last_axis, torch_dot

TOOLS = ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-gcc", "qemu-aarch64", "cmake", "ninja")
OPT_OUT = "FRACTALC_TESTS_ALLOW_MISSING"
ISAS = ("portable", "neon")
THREADS = (1, 2)
COMBOS = [(i, t) for i in ISAS for t in THREADS]


@pytest.fixture(scope="module")
def cross():
    """The cross build's folder (built or reused by cross_aarch64.sh)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        msg = (f"AArch64 cross toolchain missing: {', '.join(missing)} (make setup installs Debian's "
               "g++-aarch64-linux-gnu and qemu-user)")
        if os.environ.get(OPT_OUT) == "1":
            pytest.skip(msg)
        pytest.fail(msg + f"; set {OPT_OUT}=1 to run without these tests", pytrace=False)
    r = subprocess.run(["sh", "backends/xnor/tools/cross_aarch64.sh", "build/aarch64"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr + r.stdout
    return ROOT / r.stdout.strip().splitlines()[-1]


def qemu(args, **kw):
    return subprocess.run(["qemu-aarch64", *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


# ---------------------------------------------------------------- kernels

def _out_hw(h, w, k, s, p):
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1


class Jobs:
    """Builds xnor_check's job file and reads its result file back (format: xnor_check.cpp)."""

    def __init__(self):
        self.buf = bytearray()
        self.jobs = []  # (name, [(dtype, count), ...] per combo, expected...)

    def conv(self, name, case, mode, kind, seed, saturate=False):
        n, ci, co, h, w, k, s, p = case
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1 through packing
        wt = rng.standard_normal((co, ci, k, k)).astype(np.float32)
        if saturate:  # -1 inputs against mostly +1 weights: every byte counter grows by ~8 a word
            x = -np.abs(x) - 1
            wt = np.abs(wt)
            wt[rng.random(wt.shape) < 0.02] *= -1
        ho, wo = _out_hw(h, w, k, s, p)
        dot = torch_dot(x, wt, s, p, mode)
        out_kind = {"int32": 0, "float": 1, "bits": 2}[kind]
        residual = sign_bits = kind == "float"
        self.buf += struct.pack("<I13i", 1, n, ci, co, h, w, k, k, s, p, mode == "zero", out_kind, residual, sign_bits)
        self.buf += x.tobytes() + xnor.pack_weights(wt).tobytes()
        packed = ref_pack_last_axis(x.transpose(0, 2, 3, 1) < 0)
        pix, cwo = n * ho * wo, (co + 63) // 64
        layout = [("packed-nchw", np.uint64, packed.size), ("packed-nhwc", np.uint64, packed.size)]
        want = {"packed-nchw": packed.ravel(), "packed-nhwc": packed.ravel()}
        if kind == "int32":
            layout.append(("out", np.int32, pix * co))
            want["out"] = dot.ravel()
        elif kind == "float":
            mul = (rng.standard_normal(co) / 7).astype(np.float32)
            bias = (rng.standard_normal(co) * 10).astype(np.float32)
            r = (rng.standard_normal((n, ho, wo, co)) * 20).astype(np.float32)
            y = reference.fma_f32(mul, dot, bias)  # one rounding (the XnorConv contract)
            r[..., :3] = -y[..., :3]  # exact zeros after the add: +1 sign bits
            y = y + r  # the fused Add: a second rounding
            self.buf += mul.tobytes() + bias.tobytes() + r.tobytes()
            layout += [("out", np.float32, pix * co), ("sign", np.uint64, pix * cwo)]
            want["out"] = y.ravel()
            want["sign"] = ref_pack_last_axis(y < 0).ravel()
        else:
            thr = rng.integers(-k * k * ci // 4, k * k * ci // 4 + 1, co).astype(np.int32)
            flip = rng.integers(0, 2, co).astype(np.int32)
            self.buf += thr.tobytes() + flip.tobytes()
            layout.append(("out", np.uint64, pix * cwo))
            want["out"] = ref_pack_last_axis((dot < thr) != (flip != 0)).ravel()
        self.jobs.append((name, layout, want))

    def pack(self, name, x, c, t, f):
        pixels, stride = x.shape
        self.buf += struct.pack("<I3i", 2, pixels, stride, c)
        self.buf += x.astype(np.float32).tobytes() + t.astype(np.float32).tobytes() + f.astype(np.uint8).tobytes()
        xs = x[:, :c].reshape(1, pixels, 1, c)
        nchw = np.ascontiguousarray(xs.transpose(0, 3, 1, 2))
        words = pixels * ((c + 63) // 64)
        layout = [("thresholded", np.uint64, words)]
        want = {"thresholded": reference.pack_bits(nchw, t, f).ravel()}
        if stride == c:
            layout.append(("plain", np.uint64, words))
            want["plain"] = ref_pack_last_axis(xs < 0).ravel()
        self.jobs.append((name, layout, want))

    def fconv(self, name, n, h, w, c, k, s, pad, co, relu, rng, dyadic):
        """The engine's float conv (stem, classifier): on dyadic data (multiples of 1/4 with
        few bits: every sum exact) equal to torch in float64; on random data within 1e-5."""
        import torch
        x = rng.standard_normal((n, h, w, c))
        wt = rng.standard_normal((k, k, c, co))
        b = rng.standard_normal(co)
        if dyadic:
            x, wt, b = (np.round(a * 4) / 4 for a in (x, wt, b))
        x, wt, b = (a.astype(np.float32) for a in (x, wt, b))
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        hp, wp = h + 2 * pad, w + 2 * pad
        ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
        self.buf += struct.pack("<I9i", 3, n, hp, wp, c, k, k, s, co, relu)
        self.buf += xp.tobytes() + wt.tobytes() + b.tobytes()
        ref = torch.nn.functional.conv2d(torch.from_numpy(xp.transpose(0, 3, 1, 2).astype(np.float64)),
                                         torch.from_numpy(wt.transpose(3, 2, 0, 1).astype(np.float64)),
                                         torch.from_numpy(b.astype(np.float64)), stride=s)
        ref = ref.numpy().transpose(0, 2, 3, 1)
        if relu:
            ref = np.maximum(ref, 0)
        self.jobs.append((name, [("out", np.float32, n * ho * wo * co)],
                          {"out": ref.astype(np.float32).ravel() if dyadic else ("close", ref.ravel())}))

    def read(self, data: bytes):
        """{name: (want, {(isa, threads): {part: array}})}"""
        out, off = {}, 0
        for name, layout, want in self.jobs:
            got = {}
            for combo in COMBOS:
                parts = {}
                for part, dtype, count in layout:
                    a = np.frombuffer(data, dtype, count, off)
                    off += a.nbytes
                    parts[part] = a
                got[combo] = parts
            out[name] = (want, got)
        assert off == len(data), "result file longer than the jobs"
        return out


def _case_id(c):
    return "n{}-ci{}-co{}-{}x{}-k{}-s{}-p{}".format(*c)


def _kernel_jobs() -> Jobs:
    j = Jobs()
    for case in CASES:
        for mode in ("zero", "one"):
            j.conv(f"conv-{_case_id(case)}-{mode}-int32", case, mode, "int32", zlib.crc32(repr((case, mode)).encode()))
        for kind in ("float", "bits"):
            j.conv(f"conv-{_case_id(case)}-zero-{kind}", case, "zero", kind, zlib.crc32(repr((case, kind)).encode()))
    # the NEON byte counters' flush (every 31 words) at its limit: 5 x 5 x 4 words, all ones
    for case in ((1, 200, 40, 7, 6, 5, 1, 2), (2, 1024, 33, 3, 3, 3, 1, 1), (1, 4000, 20, 1, 2, 1, 1, 0)):
        j.conv(f"conv-{_case_id(case)}-saturated", case, "zero", "int32", 17, saturate=True)
    rng = np.random.default_rng(40)
    for pixels, c, stride in ((30, 70, 70), (16, 64, 64), (4, 200, 200), (40, 70, 200), (35, 1, 1), (35, 130, 130)):
        x = rng.standard_normal((pixels, stride)).astype(np.float32)
        t = rng.standard_normal(c).astype(np.float32)
        f = rng.integers(0, 2, c).astype(bool)
        x[:, :2] = np.nan  # NaN packs +1 either way
        if c > 8:
            t[5], t[6] = np.inf, -np.inf
            x[0, 7:9] = t[7:9]  # x == t packs +1 either way
        j.pack(f"pack-{pixels}x{c}-stride{stride}", x, c, t, f)
    # float convs: the ImageNet stem (7x7/2, C = 3), a CIFAR stem, a classifier (1x1, 1000 outputs),
    # channel counts off multiples of 16, 5 pixels (a 4-pixel tile and a tail)
    rng = np.random.default_rng(50)
    for n, h, w, c, k, s, pad, co, relu in ((2, 13, 11, 3, 7, 2, 3, 64, 1), (1, 9, 9, 3, 3, 1, 1, 64, 0),
                                            (3, 1, 1, 70, 1, 1, 0, 1000, 0), (1, 5, 1, 33, 1, 1, 0, 17, 1),
                                            (2, 6, 5, 20, 3, 2, 1, 40, 1)):
        for dyadic in (True, False):
            j.fconv(f"fconv-n{n}-{h}x{w}x{c}-k{k}-s{s}-p{pad}-co{co}-relu{relu}-{'dyadic' if dyadic else 'random'}",
                    n, h, w, c, k, s, pad, co, relu, rng, dyadic)
    return j


JOB_NAMES = [name for name, _, _ in _kernel_jobs().jobs]


@pytest.fixture(scope="module")
def kernel_results(cross, tmp_path_factory):
    jobs = _kernel_jobs()
    d = tmp_path_factory.mktemp("aarch64")
    (d / "jobs.bin").write_bytes(bytes(jobs.buf))
    r = qemu([cross / "xnor_check", d / "jobs.bin", d / "results.bin", ",".join(ISAS),
              ",".join(map(str, THREADS))])
    assert r.returncode == 0, r.stderr
    assert "best neon" in r.stdout  # the default path on AArch64
    return jobs.read((d / "results.bin").read_bytes())


@pytest.mark.parametrize("name", JOB_NAMES)
def test_neon_kernels_exact_under_qemu(kernel_results, name):
    want, got = kernel_results[name]
    for combo, parts in got.items():
        for part, w in want.items():
            g = parts[part]
            if isinstance(w, tuple):  # ("close", float64 reference): same bytes on every path
                assert g.tobytes() == got[COMBOS[0]][part].tobytes(), f"{part} on {combo} differs"
                np.testing.assert_allclose(g, w[1], rtol=1e-5, atol=1e-5 * np.abs(w[1]).max())
            elif g.dtype == np.float32:
                assert g.tobytes() == np.asarray(w, np.float32).tobytes(), f"{part} on {combo}"
            else:
                np.testing.assert_array_equal(g, np.asarray(w).astype(g.dtype), err_msg=f"{part} on {combo}")


def test_isa_names_on_aarch64(cross, tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    for isa, msg in (("avx512", "cannot run the avx512 path"), ("sse9", "expected portable or neon")):
        r = qemu([cross / "xnor_check", tmp_path / "empty.bin", tmp_path / "o.bin", isa, "1"])
        assert r.returncode == 1 and msg in r.stderr, r.stderr


# ---------------------------------------------------------------- the engine

@pytest.fixture(scope="module")
def bireal(tmp_path_factory):
    """Bi-Real ResNet18 (ImageNet stem) at 64x64 on exactly computable (dyadic) data, its engine
    file, the x86 engine's output and the reference executor's."""
    from fractalc.backends.onnx import lower, testing
    from fractalc.backends.xnor.engine import Engine, write_engine_file
    from fractalc.compiler import compile_spec

    # 10 classes: a 1000-way classifier's sums leave float32's exact range on this data, and
    # onnxruntime (in the executor) sums them in another order
    c = compile_spec(SPECS / "bireal_resnet18.fr", {"size": "64", "classes": "10"})
    state = testing.dyadic_state(c.graph, seed=1, grain=8)
    model = lower.to_onnx_xnor(c, state, "test")
    d = tmp_path_factory.mktemp("bireal")
    path = d / "bireal64.frt"
    write_engine_file(model, path)
    x = testing.dyadic_input((2,) + c.graph.shape("input"), seed=2)
    np.save(d / "x.npy", x)
    y86 = Engine(str(path), threads=2).run(x)
    # the reference executor (numpy + onnxruntime, an independent implementation of the lowered
    # graph's ops): on dyadic data every value is exactly computable, so it equals bit for bit
    from fractalc.backends.xnor.executor import Executor
    want = Executor(model.SerializeToString(), threads=2).run(x)
    return d, path, x, y86, want, Engine


def test_bireal_resnet18_engine_under_qemu(cross, bireal):
    d, path, x, y86, want, _ = bireal
    # the x86 engine is the reference executor's result, bit for bit; AArch64 gives its bytes
    assert np.array_equal(y86, want)
    assert y86.shape == (2, 10)
    for isa, threads in (("neon", 1), ("neon", 2), ("portable", 2)):
        out = d / f"y-{isa}-{threads}.npy"
        r = qemu([cross / "fractalc-run", path, d / "x.npy", out, "--threads", threads, "--isa", isa, "--profile"])
        assert r.returncode == 0, r.stderr
        assert "XnorConv" in r.stderr
        y = np.load(out)
        assert y.dtype == np.float32 and y.tobytes() == y86.tobytes(), f"{isa}, {threads} threads"


def test_c_example_under_qemu(cross, bireal, tmp_path):
    d, path, x, y86, want, Engine = bireal
    out = tmp_path / "y.bin"
    r = qemu([cross / "run_model", path, out, 2, 2])
    assert r.returncode == 0, r.stderr
    assert "isa neon, 2 threads" in r.stdout  # NEON is the default on AArch64
    i = np.arange(x.size, dtype=np.int64)  # the example's input: x[i] = ((i * 7919) % 17 - 8) / 8
    xe = (((i * 7919) % 17 - 8) / 8.0).astype(np.float32).reshape(x.shape)
    y = np.fromfile(out, np.float32).reshape(y86.shape)
    assert y.tobytes() == Engine(str(path), threads=2).run(xe).tobytes()
    bad = tmp_path / "bad.frt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    r = qemu([cross / "run_model", bad, tmp_path / "z.bin"])
    assert r.returncode == 1 and "checksum" in r.stderr
