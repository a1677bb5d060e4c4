"""XNOR/popcount kernels: bit-exact against torch's conv of sign(x) and sign(w), on every ISA.

The ISAs under test are every path this CPU runs, or only the default one when FRACTALC_ISA is
set (so `FRACTALC_ISA=portable pytest tests/test_xnor_kernels.py` checks the portable build).
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from fractalc.errors import BackendUnavailable, ModelError

import fractalc.backends.onnx.reference as reference

import fractalc.backends.xnor as xnor
import torch
F = torch.nn.functional

ISAS = [None] if os.environ.get("FRACTALC_ISA") else xnor.available_isas()


def isa_id(isa):
    return isa or f"env-{os.environ.get('FRACTALC_ISA')}"


def sign(a: np.ndarray) -> np.ndarray:
    """sign with sign(0) = +1, in float64."""
    return np.where(a < 0, -1.0, 1.0)


def torch_dot(x, w, stride, padding, mode):
    """Reference: F.conv2d(sign(x), sign(w)) in float64, NHWC int."""
    sx, sw = torch.from_numpy(sign(x)), torch.from_numpy(sign(w))
    if mode == "one":
        sx = F.pad(sx, (padding,) * 4, value=1.0)
        padding = 0
    y = F.conv2d(sx, sw, stride=stride, padding=padding).numpy()
    assert np.all(y == np.round(y))
    return y.transpose(0, 2, 3, 1).astype(np.int64)


def ref_pack_last_axis(bits: np.ndarray) -> np.ndarray:
    """Independent packer: bool (..., C) with True = -1 -> (..., ceil(C/64)) uint64, LSB first."""
    c = bits.shape[-1]
    cw = (c + 63) // 64
    words = np.zeros(bits.shape[:-1] + (cw,), np.uint64)
    for ch in range(c):
        words[..., ch // 64] |= bits[..., ch].astype(np.uint64) << np.uint64(ch % 64)
    return words


# (batch, C_in, C_out, H, W, k, stride, padding): strides 1/2, paddings 0/1/2, k = 1/3/5,
# channel counts off multiples of 64, batch 1..8.
CASES = [
    (1, 3, 8, 7, 7, 3, 1, 1),
    (2, 63, 65, 6, 5, 3, 1, 1),
    (3, 65, 33, 9, 8, 3, 2, 1),
    (1, 130, 64, 5, 6, 3, 1, 0),
    (8, 64, 32, 4, 4, 3, 2, 0),
    (2, 65, 130, 5, 5, 1, 1, 0),
    (4, 3, 63, 6, 7, 1, 2, 0),
    (1, 200, 40, 7, 6, 5, 1, 2),
    (5, 128, 96, 3, 3, 3, 1, 1),
    (2, 63, 17, 2, 3, 3, 2, 2),
]


@pytest.mark.parametrize("isa", ISAS, ids=isa_id)
@pytest.mark.parametrize("mode", ["zero", "one"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}-ci{}-co{}-{}x{}-k{}-s{}-p{}".format(*c))
def test_binary_conv_matches_torch_sign_conv(case, mode, isa):
    n, ci, co, h, w, k, s, p = case
    rng = np.random.default_rng(zlib.crc32(repr((case, mode)).encode()))
    x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1 must hold through packing
    wt = rng.standard_normal((co, ci, k, k)).astype(np.float32)
    xp, wp = xnor.pack_activations(x, isa=isa), xnor.pack_weights(wt)
    got = [xnor.binary_conv2d(xp, wp, ci, stride=s, padding=p, padding_mode=mode, isa=isa, threads=t)
           for t in (1, 2)]
    assert got[0].dtype == np.int32 and got[0].shape == (n, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, co)
    np.testing.assert_array_equal(got[0], torch_dot(x, wt, s, p, mode))
    assert got[0].tobytes() == got[1].tobytes()


def test_non_square_kernel_and_wide_image():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 70, 5, 40)).astype(np.float32)
    wt = rng.standard_normal((37, 70, 1, 3)).astype(np.float32)
    got = xnor.binary_conv2d(xnor.pack_activations(x), xnor.pack_weights(wt), 70, padding=1)
    ref = torch.nn.functional.conv2d(torch.from_numpy(sign(x)), torch.from_numpy(sign(wt)), padding=1)
    np.testing.assert_array_equal(got, ref.numpy().transpose(0, 2, 3, 1))


def test_all_isas_agree_on_every_output_kind():
    rng = np.random.default_rng(3)
    ci, co = 130, 70
    x = xnor.pack_activations(rng.standard_normal((3, ci, 8, 9)).astype(np.float32))
    wp = xnor.pack_weights(rng.standard_normal((co, ci, 3, 3)))
    mul, bias = rng.standard_normal(co).astype(np.float32), rng.standard_normal(co).astype(np.float32)
    thr, flip = xnor.thresholds_from_affine(mul, bias * 20, 9 * ci)
    outs = {}
    for isa in xnor.available_isas():
        for t in (1, 2, 3):
            for kind, kw in (("int32", {}), ("float", dict(mul=mul, bias=bias)),
                             ("bits", dict(threshold=thr, flip=flip))):
                y = xnor.BinaryConv2d(wp, ci, padding=1, output=kind, isa=isa, threads=t, **kw)(x)
                outs.setdefault(kind, set()).add(y.tobytes())
    assert all(len(v) == 1 for v in outs.values())


@pytest.mark.parametrize("isa", ISAS, ids=isa_id)
def test_fused_float_and_bit_outputs_match_numpy_on_the_raw_dot(isa):
    rng = np.random.default_rng(11)
    n, ci, co = 2, 65, 97
    x = xnor.pack_activations(rng.standard_normal((n, ci, 6, 7)).astype(np.float32))
    wp = xnor.pack_weights(rng.standard_normal((co, ci, 3, 3)))
    conv = dict(stride=1, padding=1, isa=isa)
    dot = xnor.binary_conv2d(x, wp, ci, **conv)
    mul = rng.standard_normal(co).astype(np.float32) / 7
    mul[:5] = 0.0
    bias = (rng.standard_normal(co) * 10).astype(np.float32)
    bias[5:10] = 0.0  # y == 0 exactly at dot == 0 must give +1
    y = xnor.binary_conv2d(x, wp, ci, output="float", mul=mul, bias=bias, **conv)
    expect = reference.fma_f32(mul, dot, bias)  # one rounding (the XnorConv contract)
    assert y.dtype == np.float32
    assert y.tobytes() == expect.tobytes()

    thr = rng.integers(-60, 60, co).astype(np.int32)
    flip = rng.integers(0, 2, co).astype(np.int32)
    bits = xnor.binary_conv2d(x, wp, ci, output="bits", threshold=thr, flip=flip, **conv)
    np.testing.assert_array_equal(bits, ref_pack_last_axis((dot < thr) != (flip != 0)))

    t2, f2 = xnor.thresholds_from_affine(mul, bias, 9 * ci)
    bits = xnor.binary_conv2d(x, wp, ci, output="bits", threshold=t2, flip=f2, **conv)
    np.testing.assert_array_equal(bits, ref_pack_last_axis(expect < 0))
    assert bits.shape == (n, 6, 7, 2) and not (bits[..., -1] >> np.uint64(co - 64)).any()


@pytest.mark.parametrize("isa", ISAS, ids=isa_id)
def test_float_output_rounds_once(isa):
    # dot = 3 (three +1 inputs against +1 weights), mul = -fl32(1/3), bias = 1: the exact value
    # 1 + 3 * -0.3333333433 = -2.98e-8 is what fmaf keeps; multiply-then-add rounds 3 * mul to
    # -1.0 first and returns 0. The bit output agrees with the float output's sign.
    x = xnor.pack_activations(np.ones((1, 3, 1, 1), np.float32))
    w = xnor.pack_weights(np.ones((1, 3, 1, 1), np.float32))
    mul = np.array([-1 / 3], np.float32)
    bias = np.ones(1, np.float32)
    y = xnor.binary_conv2d(x, w, 3, output="float", mul=mul, bias=bias, isa=isa)
    exact = 1.0 + 3.0 * float(mul[0])
    assert y[0, 0, 0, 0] == np.float32(exact) < 0
    thr, flip = xnor.thresholds_from_affine(mul, bias, 3)
    bits = xnor.binary_conv2d(x, w, 3, output="bits", threshold=thr, flip=flip, isa=isa)
    assert bits[0, 0, 0, 0] == 1  # -1


@pytest.mark.parametrize("isa", ISAS, ids=isa_id)
def test_fused_residual_add_and_sign_bits_equal_the_separate_ops(isa):
    rng = np.random.default_rng(12)
    for n, ci, co, hw, stride in ((2, 65, 97, 6, 1), (1, 64, 64, 9, 2), (3, 130, 40, 5, 1)):
        x = xnor.pack_activations(rng.standard_normal((n, ci, hw, hw)).astype(np.float32))
        wp = xnor.pack_weights(rng.standard_normal((co, ci, 3, 3)))
        mul = rng.standard_normal(co).astype(np.float32)
        bias = (rng.standard_normal(co) * 10).astype(np.float32)
        for t in (1, 2):
            conv = xnor.BinaryConv2d(wp, ci, stride=stride, padding=1, output="float", mul=mul,
                                     bias=bias, isa=isa, threads=t)
            y = conv(x)
            r = (rng.standard_normal(y.shape) * 20).astype(np.float32)
            r[..., :3] = -y[..., :3]  # exact zeros: +1 bits
            want = y + r
            want_bits = xnor.pack_activations(want, layout="nhwc", isa=isa)
            got, bits = conv(x, residual=r, sign_bits=True)
            assert got.tobytes() == want.tobytes() and bits.tobytes() == want_bits.tobytes()
            inplace = r.copy()
            got, bits = conv(x, residual=inplace, sign_bits=True, out=inplace)
            assert got is inplace and got.tobytes() == want.tobytes()
            assert bits.tobytes() == want_bits.tobytes()
            got, bits = conv(x, sign_bits=True)
            assert got.tobytes() == y.tobytes()
            assert bits.tobytes() == xnor.pack_activations(y, layout="nhwc", isa=isa).tobytes()
    with pytest.raises(ModelError, match="shape"):
        conv(x, residual=r[:, :1])


def test_thresholds_reproduce_float32_sign_for_every_dot():
    rng = np.random.default_rng(5)
    k = 300
    mul = np.concatenate([rng.standard_normal(40), [0.0, 0.0, -0.0, 1e-30, -1e-30, 0.1, -0.1, 3.0]]).astype(np.float32)
    bias = np.concatenate([rng.standard_normal(40) * 50, [1.0, -1.0, 0.0, 0.0, 0.0, 1.5, 1.5, -3.0]]).astype(np.float32)
    thr, flip = xnor.thresholds_from_affine(mul, bias, k)
    d = np.arange(-k, k + 1)
    neg = reference.fma_f32(mul[:, None], d[None, :], bias[:, None]) < 0
    np.testing.assert_array_equal((d[None, :] < thr[:, None]) != (flip[:, None] != 0), neg)
    # Closed forms with fl32(0.1) = 0.100000001490116: 0.1*d + 1.5 < 0 iff d <= -15 (one
    # rounding keeps -2.2e-8 at d = -15; multiply-then-add would round it to 0 and give +1);
    # -0.1*d + 1.5 < 0 iff d >= 15; 3*d - 3 < 0 iff d < 1; mul = 0: constant sign of bias.
    assert (thr[45], flip[45]) == (-14, 0) and (thr[46], flip[46]) == (15, 1)
    assert (thr[47], flip[47]) == (1, 0)
    assert (thr[40], flip[40]) == (-k, 0) and (thr[41], flip[41]) == (k + 1, 0)


def test_pack_bit_order_by_hand():
    # One pixel, 70 channels; negatives at channels 0, 5, 63, 64, 69; zeros and NaN pack as +1.
    v = np.ones(70, np.float32)
    v[[0, 5, 63, 64, 69]] = -0.5
    v[[1, 2, 3]] = [0.0, -0.0, np.nan]
    expect = np.array([0x8000000000000021, 0x21], np.uint64)
    for isa in xnor.available_isas():
        nhwc = xnor.pack_activations(v.reshape(1, 1, 1, 70), layout="nhwc", isa=isa)
        nchw = xnor.pack_activations(v.reshape(1, 70, 1, 1), layout="nchw", isa=isa)
        assert nhwc.shape == nchw.shape == (1, 1, 1, 2) and nhwc.dtype == np.uint64
        np.testing.assert_array_equal(nhwc[0, 0, 0], expect)
        np.testing.assert_array_equal(nchw[0, 0, 0], expect)
    # Weights: (C_out=1, C_in=70, 1, 1) packs to the same words.
    np.testing.assert_array_equal(xnor.pack_weights(v.reshape(1, 70, 1, 1))[0, 0, 0], expect)
    # docs/packing.md: against an all-(+1) 1x1 weight, dot = 70 - 2 * popcount = 65 - 5 = 60.
    ones = xnor.pack_weights(np.ones((1, 70, 1, 1)))
    assert xnor.binary_conv2d(nhwc, ones, 70)[0, 0, 0, 0] == 60


@pytest.mark.parametrize("c", [1, 3, 63, 64, 65, 130])
def test_pack_unpack_round_trip_and_zero_high_bits(c):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((3, c, 5, 7))  # 35 pixels: two 16-pixel blocks and a tail
    for isa in xnor.available_isas():
        p = xnor.pack_activations(x, isa=isa)  # float64 input: sign taken before any narrowing
        assert p.tobytes() == xnor.pack_activations(x, isa=isa, threads=3).tobytes()
        q = xnor.pack_activations(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.float32),
                                  layout="nhwc", isa=isa, threads=2)
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(p, ref_pack_last_axis(x.transpose(0, 2, 3, 1) < 0))
        np.testing.assert_array_equal(xnor.unpack_activations(p, c), sign(x).astype(np.float32))
        np.testing.assert_array_equal(xnor.unpack_activations(p, c, layout="nhwc"),
                                      sign(x).transpose(0, 2, 3, 1))
    w = rng.standard_normal((7, c, 3, 2))
    np.testing.assert_array_equal(xnor.pack_weights(w), ref_pack_last_axis(w.transpose(0, 2, 3, 1) < 0))


def test_tiny_negative_float64_packs_as_minus_one():
    x = np.full((1, 2, 1, 1), -1e-60)  # would become -0.0 (+1) if narrowed to float32 first
    assert xnor.pack_activations(x)[0, 0, 0, 0] == 0b11


def test_threads_identical_on_a_larger_layer():
    rng = np.random.default_rng(1)
    x = xnor.pack_activations(rng.standard_normal((2, 64, 28, 28)).astype(np.float32))
    wp = xnor.pack_weights(rng.standard_normal((64, 64, 3, 3)))
    ys = {xnor.BinaryConv2d(wp, 64, padding=1, threads=t)(x).tobytes() for t in (1, 2, 4, 7)}
    assert len(ys) == 1


def test_validation_errors_are_model_errors():
    wp = xnor.pack_weights(np.ones((4, 65, 3, 3)))
    x = xnor.pack_activations(np.ones((1, 65, 4, 4)))
    with pytest.raises(ModelError, match="uint64"):
        xnor.binary_conv2d(x.astype(np.int64), wp, 65)
    with pytest.raises(ModelError, match="words per pixel"):
        xnor.binary_conv2d(x, wp, 130)
    bad = x.copy()
    bad[0, 0, 0, 1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ModelError, match="unused bits"):
        xnor.binary_conv2d(bad, wp, 65)
    with pytest.raises(ModelError, match="smaller than"):
        xnor.binary_conv2d(x[:, :2, :2], wp, 65)
    with pytest.raises(ModelError, match="padding_mode"):
        xnor.binary_conv2d(x, wp, 65, padding_mode="reflect")
    with pytest.raises(ModelError, match="stride"):
        xnor.binary_conv2d(x, wp, 65, stride=0)
    with pytest.raises(ModelError, match="mul"):
        xnor.binary_conv2d(x, wp, 65, output="float", mul=np.ones(3), bias=np.ones(4))
    with pytest.raises(ModelError, match="threshold"):
        xnor.binary_conv2d(x, wp, 65, output="bits")
    with pytest.raises(ModelError, match="int32"):
        xnor.binary_conv2d(x, wp, 65, output="bits", threshold=np.full(4, 2**40), flip=np.zeros(4, int))
    with pytest.raises(ModelError, match="threads"):
        xnor.binary_conv2d(x, wp, 65, threads=0)
    with pytest.raises(ModelError, match="4-D"):
        xnor.pack_activations(np.ones((3, 4)))
    with pytest.raises(BackendUnavailable, match="unknown ISA"):
        xnor.binary_conv2d(x, wp, 65, isa="sse9")


def test_isa_environment_variable(monkeypatch):
    monkeypatch.setenv("FRACTALC_ISA", "portable")
    assert xnor.resolve_isa() == "portable"
    assert xnor.BinaryConv2d(xnor.pack_weights(np.ones((1, 1, 1, 1))), 1).isa == "portable"
    monkeypatch.setenv("FRACTALC_ISA", "neon")
    with pytest.raises(BackendUnavailable, match="unknown ISA"):
        xnor.resolve_isa()
    monkeypatch.delenv("FRACTALC_ISA")
    assert xnor.resolve_isa() == xnor.available_isas()[-1]


def test_concurrent_callers_share_the_pool_safely():
    # The GIL is released during kernels: several Python threads may call into the one pool.
    import threading

    rng = np.random.default_rng(9)
    x = xnor.pack_activations(rng.standard_normal((2, 70, 9, 9)).astype(np.float32))
    convs = [xnor.BinaryConv2d(xnor.pack_weights(rng.standard_normal((40, 70, 3, 3))), 70,
                               padding=1, stride=1 + i % 2, threads=2) for i in range(4)]
    expect = [c(x).tobytes() for c in convs]
    bad = []

    def worker(i):
        for _ in range(30):
            if convs[i](x).tobytes() != expect[i]:
                bad.append(i)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


@pytest.mark.parametrize("pool", [False, True])
def test_pointwise_conv_matches_torch_and_is_the_same_on_every_isa(pool):
    rng = np.random.default_rng(21)
    # last output-channel blocks of 64, 37, 36, 10, 58, 32 and 20 channels (the AVX-512 path
    # sizes the last block to 1..4 vectors)
    for n, h, w_, c, co in ((1, 8, 8, 64, 128), (2, 7, 5, 70, 37), (3, 3, 4, 3, 100), (1, 4, 6, 33, 74),
                            (2, 4, 4, 17, 58), (1, 4, 2, 20, 96), (1, 4, 4, 9, 84)):
        x = rng.standard_normal((n, h, w_, c)).astype(np.float32)
        w = rng.standard_normal((c, co)).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        # dyadic data (multiples of 1/4 with few bits): every engine computes it exactly
        xd, wd, bd = (np.round(a * 4) / 4 for a in (x, w, b))
        tx = torch.from_numpy(xd.astype(np.float64)).permute(0, 3, 1, 2)
        if pool:
            tx = F.avg_pool2d(tx, 2)
        want = F.conv2d(tx, torch.from_numpy(wd.T.astype(np.float64))[:, :, None, None],
                        torch.from_numpy(bd.astype(np.float64))).permute(0, 2, 3, 1).numpy()
        got = xnor.pointwise_conv(xd, wd, bd, pool=pool)
        assert got.shape == want.shape and np.array_equal(got, want.astype(np.float32))
        outs = {xnor.pointwise_conv(x, w, b, pool=pool, isa=isa, threads=t).tobytes()
                for isa in xnor.available_isas() for t in (1, 2, 3)}
        assert len(outs) == 1
        y = np.frombuffer(outs.pop(), np.float32).reshape(got.shape)
        tx = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2)
        tx = F.avg_pool2d(tx, 2) if pool else tx
        ref = F.conv2d(tx, torch.from_numpy(w.T.astype(np.float64))[:, :, None, None],
                       torch.from_numpy(b.astype(np.float64))).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_pointwise_conv_refuses_bad_shapes():
    x = np.zeros((1, 4, 4, 8), np.float32)
    with pytest.raises(ModelError, match="do not fit"):
        xnor.pointwise_conv(x, np.zeros((7, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ModelError, match="float32"):
        xnor.pointwise_conv(x.astype(np.float64), np.zeros((8, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ModelError, match="2x2"):
        xnor.pointwise_conv(x[:, :1], np.zeros((8, 3), np.float32), np.zeros(3, np.float32), pool=True)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_mean_join_equals_numpy_sum_then_div_on_every_isa(k):
    rng = np.random.default_rng(30 + k)
    for shape in ((2, 5, 3, 70), (1, 4, 4, 64), (3, 1, 2, 7)):
        xs = [(rng.standard_normal(shape) * 10).astype(np.float32) for _ in range(k)]
        xs[0][..., :2] = -sum(x[..., :2] for x in xs[1:]) if k > 1 else 0.0  # exact zeros: +1
        want = xs[0].copy()
        for x in xs[1:]:
            want = want + x
        want = want / np.float32(k)
        want_bits = xnor.pack_activations(want, layout="nhwc")
        for isa in xnor.available_isas():
            for t in (1, 2):
                y = xnor.mean_join(xs, k, isa=isa, threads=t)
                assert y.tobytes() == want.tobytes()
                y, bits = xnor.mean_join(xs, k, sign_bits=True, isa=isa, threads=t)
                assert y.tobytes() == want.tobytes() and bits.tobytes() == want_bits.tobytes()
                first = xs[0].copy()
                y = xnor.mean_join([first] + xs[1:], k, out=first, isa=isa, threads=t)
                assert y is first and y.tobytes() == want.tobytes()
    with pytest.raises(ModelError, match="shape"):
        xnor.mean_join([xs[0], xs[0][:1]], 2)


def test_pack_thresholded_equals_the_reference_packbits():
    import fractalc.backends.onnx.reference as reference_
    rng = np.random.default_rng(40)
    for shape in ((2, 5, 3, 70), (1, 4, 4, 64), (1, 2, 2, 200)):
        x = rng.standard_normal(shape).astype(np.float32)
        c = shape[-1]
        t = rng.standard_normal(c).astype(np.float32)
        f = rng.integers(0, 2, c).astype(bool)
        x[..., :2] = np.nan                   # NaN packs +1 either way
        t[5], t[6] = np.inf, -np.inf
        x[0, 0, 0, 7:9] = t[7:9]              # x == t packs +1 either way
        want = reference_.pack_bits(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), t, f)
        outs = {xnor.pack_thresholded(x, t, f, isa=isa, threads=n).tobytes()
                for isa in xnor.available_isas() for n in (1, 2)}
        assert outs == {want.tobytes()}
    with pytest.raises(ModelError, match="shape"):
        xnor.pack_thresholded(x, t[:-1], f)


@pytest.mark.parametrize("pool", [False, "avg", "max"])
@pytest.mark.parametrize("bn,relu", [(True, True), (True, False), (False, True)])
def test_pointwise_conv_prologue_bn_pool_relu(pool, bn, relu):
    # DenseNet's transition: BN -> max pool -> ReLU -> 1x1 conv; against torch in float64 on
    # dyadic data (exact in every engine), and the same bytes on every ISA on random data
    rng = np.random.default_rng(50)
    n, h, w_, c, co = 2, 6, 5, 70, 37
    x = (np.round(rng.standard_normal((n, h, w_, c)) * 4) / 4).astype(np.float32)
    w = (np.round(rng.standard_normal((c, co)) * 4) / 4).astype(np.float32)
    b = (np.round(rng.standard_normal(co) * 4) / 4).astype(np.float32)
    sc = (rng.integers(-4, 5, c) / 2).astype(np.float32) if bn else None
    sh = (np.round(rng.standard_normal(c) * 4) / 4).astype(np.float32) if bn else None
    t = torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2)
    if bn:
        t = t * torch.from_numpy(sc.astype(np.float64))[None, :, None, None] \
            + torch.from_numpy(sh.astype(np.float64))[None, :, None, None]
    if pool == "avg":
        t = F.avg_pool2d(t, 2)
    elif pool == "max":
        t = F.max_pool2d(t, 2)
    if relu:
        t = F.relu(t)
    want = F.conv2d(t, torch.from_numpy(w.T.astype(np.float64))[:, :, None, None],
                    torch.from_numpy(b.astype(np.float64))).permute(0, 2, 3, 1).numpy()
    got = xnor.pointwise_conv(x, w, b, pool=pool, scale=sc, shift=sh, relu=relu)
    assert np.array_equal(got, want.astype(np.float32))
    xr = rng.standard_normal(x.shape).astype(np.float32)
    outs = {xnor.pointwise_conv(xr, w, b, pool=pool, scale=sc, shift=sh, relu=relu, isa=isa, threads=t_).tobytes()
            for isa in xnor.available_isas() for t_ in (1, 2)}
    assert len(outs) == 1


@pytest.mark.parametrize("pool", [False, "avg", "max"])
@pytest.mark.parametrize("bn,relu", [(True, True), (False, True), (False, False)])
def test_pointwise_prologue_special_values_same_on_every_isa(pool, bn, relu):
    """NaN, infinities and signed zeros in the input: the vector prologue keeps the scalar one's
    order (a NaN in a max-pool window survives or not by its position, as `b > a ? b : a`
    decides), pixel by pixel (a NaN reaches only the outputs of its window)."""
    rng = np.random.default_rng(51)
    n, h, w_, c, co = 1, 8, 6, 37, 19
    x = rng.standard_normal((n, h, w_, c)).astype(np.float32)
    flat = x[:, :2].reshape(-1)  # the first two input rows only: the other outputs stay finite
    spots = rng.choice(flat.size, 40, replace=False)
    flat[spots[:10]] = np.nan
    flat[spots[10:20]] = np.inf
    flat[spots[20:30]] = -np.inf
    flat[spots[30:]] = -0.0
    x[:, :2] = flat.reshape(x[:, :2].shape)
    w = rng.standard_normal((c, co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    sc = rng.uniform(0.5, 2, c).astype(np.float32) if bn else None
    sh = rng.standard_normal(c).astype(np.float32) if bn else None
    outs = {}
    for isa in xnor.available_isas():
        for t_ in (1, 2):
            y = xnor.pointwise_conv(x, w, b, pool=pool, scale=sc, shift=sh, relu=relu, isa=isa, threads=t_)
            outs.setdefault(y.tobytes(), []).append(f"{isa}/{t_}")
    assert len(outs) == 1, list(outs.values())
    y = np.frombuffer(next(iter(outs)), np.float32)
    assert np.isnan(y).any() and np.isfinite(y).any()  # both kinds of pixels were exercised


@pytest.mark.parametrize("isa", ISAS, ids=isa_id)
def test_float_output_into_a_channel_slice_of_a_wider_buffer(isa):
    rng = np.random.default_rng(60)
    n, ci, co, hw = 2, 70, 37, 5
    x = xnor.pack_activations(rng.standard_normal((n, ci, hw, hw)).astype(np.float32))
    conv = xnor.BinaryConv2d(xnor.pack_weights(rng.standard_normal((co, ci, 3, 3))), ci, padding=1,
                             output="float", mul=rng.standard_normal(co).astype(np.float32),
                             bias=rng.standard_normal(co).astype(np.float32), isa=isa, threads=2)
    want = conv(x)
    buf = np.full((n, hw, hw, 100), 7.0, np.float32)
    assert conv(x, out=buf, out_offset=40) is buf
    assert buf[..., 40:77].tobytes() == want.tobytes()
    assert (buf[..., :40] == 7).all() and (buf[..., 77:] == 7).all()
    with pytest.raises(ModelError, match="out_offset"):
        conv(x, out=buf, out_offset=64)


def test_pack_thresholded_reads_a_channel_prefix_in_place():
    # a dense block's buffer: the pack of its first C channels reads the wider rows directly
    rng = np.random.default_rng(41)
    buf = rng.standard_normal((2, 4, 5, 200)).astype(np.float32)
    t = rng.standard_normal(70).astype(np.float32)
    f = rng.integers(0, 2, 70).astype(bool)
    view = buf[..., :70]
    assert not view.flags.c_contiguous and view.base is buf
    want = xnor.pack_thresholded(np.ascontiguousarray(view), t, f)
    for isa in xnor.available_isas():
        assert xnor.pack_thresholded(view, t, f, isa=isa).tobytes() == want.tobytes()
    # any other non-contiguous view is copied first, with the same result
    odd = buf[:, ::2, :, :70]
    assert xnor.pack_thresholded(odd, t, f).tobytes() == \
        xnor.pack_thresholded(np.ascontiguousarray(odd), t, f).tobytes()
