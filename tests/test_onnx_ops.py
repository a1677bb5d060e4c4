"""The ai.fractalc ops in the reference executor against independent oracles (torch's conv of
sign(x), exact rational arithmetic) and the packing layout against a hand-built example."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import torch
F = torch.nn.functional

from fractalc.backends.onnx import lower, ops, packing, reference  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sign(x):
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


# --- packing ---------------------------------------------------------------------------------

def test_packing_hand_example():
    x = np.ones((1, 70, 1, 1), np.float32)
    x[0, 1] = 0.0                       # sign(0) = +1 -> bit 0
    x[0, [0, 5, 63, 64, 69]] = -0.5     # negative -> bit 1
    p = packing.pack_activations(x)
    assert p.dtype == np.uint64 and p.shape == (1, 1, 1, 2)
    assert [int(v) for v in p[0, 0, 0]] == [0x8000000000000021, 0x21]
    assert p.tobytes() == bytes.fromhex("2100000000000080" "2100000000000000")  # little-endian words
    np.testing.assert_array_equal(packing.unpack_activations(p, 70), np.where(x < 0, -1, 1))


def test_packing_nhwc_and_nan():
    x = np.array([[[[1.0, -1.0]], [[-0.0, np.nan]], [[-2.0, 3.0]]]], np.float32)  # N=1,C=3,H=1,W=2
    p = packing.pack_activations(x)
    assert p.shape == (1, 1, 2, 1)
    # pixel (0,0): channels 0..2 = 1, -0.0, -2 -> only channel 2 negative
    assert int(p[0, 0, 0, 0]) == 0b100
    # pixel (0,1): -1, nan, 3 -> channel 0 negative; NaN packs as +1 (torch's where(x < 0, -1, 1))
    assert int(p[0, 0, 1, 0]) == 0b001


def test_weights_canonical_and_tight():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 70, 2, 3)).astype(np.float32)
    canon = packing.pack_weights(w)
    assert canon.shape == (3, 2, 3, 2)
    np.testing.assert_array_equal(packing.unpack_weights(canon, 70), np.where(w < 0, -1, 1))
    tight = packing.pack_weights_tight(w)
    n = 3 * 70 * 2 * 3
    assert tight.shape == (math.ceil(n / 64),)  # 1 bit per weight, no per-row padding
    # bit t of the stream is weight (o, c, y, x) with t = ((o*kh + y)*kw + x)*C_in + c
    for (o, c, y, xx) in [(0, 0, 0, 0), (1, 69, 1, 2), (2, 5, 0, 1), (0, 64, 1, 0)]:
        t = ((o * 2 + y) * 3 + xx) * 70 + c
        assert (int(tight[t // 64]) >> (t % 64)) & 1 == int(w[o, c, y, xx] < 0)
    np.testing.assert_array_equal(packing.tight_to_canonical(tight, 3, 70, 2, 3), canon)
    w64 = rng.standard_normal((2, 128, 3, 3)).astype(np.float32)  # C_in % 64 == 0: same bytes
    assert packing.pack_weights_tight(w64).tobytes() == packing.pack_weights(w64).tobytes()


# --- XnorConv dot products against torch ------------------------------------------------------

def _attrs(c_in, c_out, k, s, p, padding, output="float"):
    return ops.conv_attrs({"in_channels": c_in, "out_channels": c_out, "kernel_shape": [k, k],
                           "strides": [s, s], "pads": [p] * 4, "padding": padding,
                           "output_type": output})


@pytest.mark.parametrize("c_in,c_out,k,s,p,h", [(3, 5, 3, 1, 1, 7), (70, 9, 3, 2, 1, 8),
                                                (130, 4, 3, 1, 2, 5), (64, 3, 1, 1, 0, 4),
                                                (20, 6, 5, 2, 2, 9)])
@pytest.mark.parametrize("padding", ["zero", "one"])
def test_xnor_dot_matches_torch(c_in, c_out, k, s, p, h, padding):
    rng = np.random.default_rng(c_in * 31 + k)
    x = rng.standard_normal((2, c_in, h, h + 1)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = 0.0  # exact zeros: sign(0) = +1
    w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    xb = sign(torch.from_numpy(x))
    if padding == "one":  # its definition: sign(x) padded with +1
        want = F.conv2d(F.pad(xb, (p, p, p, p), value=1.0), sign(torch.from_numpy(w)), stride=s)
    else:                 # torch's zero padding of sign(x), borders included
        want = F.conv2d(xb, sign(torch.from_numpy(w)), stride=s, padding=p)
    a = _attrs(c_in, c_out, k, s, p, padding)
    xp = reference.pack_bits(x)
    for wp in (packing.pack_weights(w), packing.pack_weights_tight(w)):
        dot = reference.xnor_dot(xp, wp, a)
        np.testing.assert_array_equal(dot.transpose(0, 3, 1, 2), want.numpy().astype(np.int64))


def test_zero_and_one_padding_differ_only_at_borders():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    xp, wp = reference.pack_bits(x), packing.pack_weights(w)
    dz = reference.xnor_dot(xp, wp, _attrs(8, 4, 3, 1, 1, "zero"))
    do = reference.xnor_dot(xp, wp, _attrs(8, 4, 3, 1, 1, "one"))
    np.testing.assert_array_equal(dz[:, 1:-1, 1:-1], do[:, 1:-1, 1:-1])
    # top-left corner: 5 padded positions, each adds sum_c sign(W) with "one" padding
    sw = np.where(w < 0, -1, 1)
    extra = sw[:, :, 0, :].sum(axis=(1, 2)) + sw[:, :, 1:, 0].sum(axis=(1, 2))
    np.testing.assert_array_equal(do[0, 0, 0] - dz[0, 0, 0], extra)


def test_xnor_conv_float_output_is_fmaf():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 10, 5, 5)).astype(np.float32)
    w = rng.standard_normal((6, 10, 3, 3)).astype(np.float32)
    mul = rng.standard_normal(6).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    a = _attrs(10, 6, 3, 1, 1, "zero")
    xp, wp = reference.pack_bits(x), packing.pack_weights(w)
    y = reference.xnor_conv(xp, wp, mul, bias, a)
    dot = reference.xnor_dot(xp, wp, a).transpose(0, 3, 1, 2)
    assert y.shape == (1, 6, 5, 5) and y.dtype == np.float32
    for idx in [(0, 0, 0, 0), (0, 5, 4, 4), (0, 3, 2, 1)]:
        exact = Fraction(float(mul[idx[1]])) * int(dot[idx]) + Fraction(float(bias[idx[1]]))
        assert float(y[idx]) == _round_f32(exact)


def _round_f32(q: Fraction) -> float:
    """Round a rational to the nearest float32 (ties to even), by exhaustive neighbour check."""
    f = np.float32(float(q))  # within an ulp
    best = min([np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))],
               key=lambda c: (abs(Fraction(float(c)) - q), int(np.float32(c).view(np.uint32)) & 1))
    return float(best)


def test_fma_f32_single_rounding_on_ties():
    # m * d + b lies exactly halfway between two float32 values only after a float64 rounding:
    # 1 + 2^-24 + 2^-60: float64 drops 2^-60 and lands on the float32 tie 1 + 2^-24, which
    # ties-to-even would round down to 1; the exact value rounds up to 1 + 2^-23.
    m = np.array([2.0 ** -60], np.float32)
    b = np.array([1.0], np.float32)
    d = np.array([2 ** 36 + 1])                           # m*d = 2^-24 + 2^-60
    exact = Fraction(float(m[0])) * int(d[0]) + Fraction(float(b[0]))
    naive = (m.astype(np.float64) * d + b).astype(np.float32)
    got = reference.fma_f32(m, d, b)
    assert float(got[0]) == _round_f32(exact) == 1.0 + 2.0 ** -23 != float(naive[0])
    rng = np.random.default_rng(3)
    m = rng.standard_normal(2000).astype(np.float32)
    b = rng.standard_normal(2000).astype(np.float32)
    d = rng.integers(-5000, 5000, 2000)
    got = reference.fma_f32(m, d, b)
    for i in range(0, 2000, 40):
        assert float(got[i]) == _round_f32(Fraction(float(m[i])) * int(d[i]) + Fraction(float(b[i])))


# --- BN folding into thresholds ---------------------------------------------------------------

def _exact_sign_nonneg(a: lower.Affine, o: int, d: int) -> bool:
    """y(d) >= 0 with y = gamma * (alpha*d - mean) / sqrt(v) + beta, via high-precision decimals
    (an independent check of lower._nonneg's exact algebra)."""
    from decimal import Decimal, getcontext
    getcontext().prec = 80
    D = lambda v: Decimal(float(v))
    y = D(a.gamma[o]) * (D(a.alpha[o]) * d - D(a.mean[o])) / D(a.v[o]).sqrt() + D(a.beta[o])
    return y >= 0


def _random_affine(rng, c, n_dot):
    gamma = rng.standard_normal(c).astype(np.float32)
    gamma[::7] = 0.0                                   # gamma = 0: constant channels
    gamma[1::3] *= -1                                  # negative scales
    alpha = np.abs(rng.standard_normal(c)).astype(np.float32) * 0.1
    alpha[5] = 0.0                                     # all-zero weights
    var = np.abs(rng.standard_normal(c)).astype(np.float32)
    var[2::4] = 0.0                                    # zero variance (v = eps)
    v = var + np.float32(1e-5)
    mean = (rng.standard_normal(c) * alpha * math.sqrt(n_dot)).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    return lower.Affine(alpha, gamma, beta, mean, v)


def test_bits_threshold_random_bn():
    rng = np.random.default_rng(7)
    n = 9 * 20
    a = _random_affine(rng, 40, n)
    thr, flip = lower.bits_threshold(a, n)
    assert flip.any() and (~flip).any()
    for o in range(40):
        for d in range(-n, n + 1, 3):
            plus = (d <= thr[o]) if flip[o] else (d >= thr[o])
            assert plus == _exact_sign_nonneg(a, o, d), (o, d)


def test_bits_threshold_exact_ties():
    # y(d0) == 0 exactly (dyadic parameters, v = 1): sign(0) = +1 must hold at d0 for both signs
    # of gamma, and d0 -+ 1 must be -1.
    one = np.ones(2, np.float32)
    a = lower.Affine(alpha=np.array([0.25, 0.25], np.float32), gamma=np.array([0.5, -0.5], np.float32),
                     beta=np.zeros(2, np.float32), mean=np.array([1.25, 1.25], np.float32), v=one)
    thr, flip = lower.bits_threshold(a, 27)
    assert list(thr) == [5, 5] and list(flip) == [False, True]  # alpha*5 - 1.25 = 0


@pytest.mark.parametrize("seed", [0, 1])
def test_bits_output_matches_torch_bn_sign(seed):
    """XnorConv(bits) == sign(BN(conv(sign x, alpha sign W))) computed by torch in float64,
    with random BN statistics (negative scales, zero variance, gamma = 0)."""
    rng = np.random.default_rng(seed)
    c_in, c_out = 70, 40
    x = rng.standard_normal((2, c_in, 6, 6)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    n = c_in * 9
    a = _random_affine(rng, c_out, n)
    a = lower.Affine(lower.alpha_of(w), a.gamma, a.beta, a.mean * 0.05, a.v)
    thr, flip = lower.bits_threshold(a, n)
    at = _attrs(c_in, c_out, 3, 1, 1, "zero", "bits")
    got = reference.xnor_conv(reference.pack_bits(x), packing.pack_weights_tight(w), thr, flip, at)
    assert got.shape == (2, 6, 6, 1)
    t64 = lambda v: torch.from_numpy(np.asarray(v, np.float64))
    conv = F.conv2d(sign(t64(x)), t64(a.alpha)[:, None, None, None] * sign(t64(w)), padding=1)
    y = F.batch_norm(conv, t64(a.mean), t64(a.v), t64(a.gamma), t64(a.beta), False, 0.0, 0.0)
    want = packing.pack_activations(y.numpy())
    near = np.abs(y.numpy()) < 1e-9  # float64 cannot decide these; the exact test above does
    assert not near.any()
    np.testing.assert_array_equal(got, want)


def test_float_fold_matches_bn():
    rng = np.random.default_rng(4)
    a = _random_affine(rng, 16, 90)
    mul, bias = lower.float_fold(a)
    d = np.arange(-90, 91)[:, None]
    want = a.gamma * (a.alpha * d - a.mean) / np.sqrt(a.v.astype(np.float64)) + a.beta
    np.testing.assert_allclose(mul * d.astype(np.float64) + bias, want, rtol=1e-6, atol=1e-6)


def test_bn_nonpositive_variance_refused():
    from fractalc.errors import ModelError
    w = np.ones((2, 1, 1, 1), np.float32)
    state = {"c.weight": w, "b.weight": np.ones(2, np.float32), "b.bias": np.zeros(2, np.float32),
             "b.running_mean": np.zeros(2, np.float32), "b.running_var": np.array([1, -1], np.float32)}
    with pytest.raises(ModelError, match="running_var"):
        lower.affine(state, "c", "b", 1e-5)


# --- BN before a binary conv folded into PackBits ---------------------------------------------

def test_pack_threshold_exact_against_decimal():
    rng = np.random.default_rng(9)
    c = 24
    a = _random_affine(rng, c, 100)
    mean, beta, gamma, v = a.mean, a.beta, a.gamma, a.v
    thr, flip = lower.pack_threshold(gamma, beta, mean, v)
    assert flip.any() and (~flip).any() and np.isinf(thr[gamma == 0]).all()
    from decimal import Decimal, getcontext
    getcontext().prec = 80

    def plus(o, x):  # exact sign(BN(x)) >= 0
        D = lambda z: Decimal(float(z))
        return D(gamma[o]) * (D(x) - D(mean[o])) / D(v[o]).sqrt() + D(beta[o]) >= 0

    for o in range(c):
        t = thr[o]
        probes = [np.float32(0), np.float32(-3), np.float32(5), mean[o]]
        if np.isfinite(t):  # the threshold and its float32 neighbours: the decisive points
            probes += [t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))]
        for x in probes:
            got = reference.pack_bits(np.full((1, c, 1, 1), x, np.float32), thr, flip)
            bit = (int(got[0, 0, 0, 0]) >> o) & 1
            assert bit == (0 if plus(o, x) else 1), (o, float(x))


def test_pack_threshold_tie_is_plus_one():
    # BN(x) == 0 exactly at x = 0.75 (gamma = +-2, var + eps = 4, beta = 0): sign(0) = +1
    v = np.full(2, 4.0, np.float32)
    thr, flip = lower.pack_threshold(np.array([2, -2], np.float32), np.zeros(2, np.float32),
                                     np.array([0.75, 0.75], np.float32), v)
    assert list(thr) == [0.75, 0.75] and list(flip) == [False, True]
    x = np.array([0.75, np.nextafter(np.float32(0.75), np.float32(0)), 1.0], np.float32)
    xx = np.stack([x, x])[None, :, None, :]     # N=1, C=2, H=1, W=3
    got = reference.pack_bits(xx, thr, flip)[0, 0, :, 0]
    # channel 0 (gamma > 0): +, -, + ; channel 1 (gamma < 0): +, +, -
    assert [int(w) for w in got] == [0b00, 0b01, 0b10]


def test_pack_threshold_matches_torch_bn_sign():
    rng = np.random.default_rng(12)
    c = 40
    a = _random_affine(rng, c, 50)
    x = rng.standard_normal((2, c, 5, 5)).astype(np.float32)
    thr, flip = lower.pack_threshold(a.gamma, a.beta, a.mean, a.v)
    t64 = lambda z: torch.from_numpy(np.asarray(z, np.float64))
    y = F.batch_norm(t64(x), t64(a.mean), t64(a.v), t64(a.gamma), t64(a.beta), False, 0.0, 0.0)
    assert not (np.abs(y.numpy()) < 1e-9).any()
    np.testing.assert_array_equal(reference.pack_bits(x, thr, flip), packing.pack_activations(y.numpy()))


def test_pack_unpack_nodes_in_the_evaluator():
    """PackBits -> UnpackBits as a graph of ai.fractalc nodes (checker with our schemas, then
    the reference evaluator) gives sign(x) with sign(0) = +1."""
    from onnx import TensorProto, helper

    from fractalc.backends.onnx import load_model
    x_vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 70, 3, 2])
    bits = helper.make_tensor_value_info("x.bits", TensorProto.UINT64, ["N", 3, 2, 2])
    y_vi = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 70, 3, 2])
    nodes = [helper.make_node("PackBits", ["x"], ["x.bits"], name="x.pack", domain=ops.DOMAIN),
             helper.make_node("UnpackBits", ["x.bits"], ["y"], name="y", domain=ops.DOMAIN, channels=70)]
    m = helper.make_model(helper.make_graph(nodes, "g", [x_vi], [y_vi], value_info=[bits]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, 1)])
    m = load_model(m)
    x = np.random.default_rng(0).standard_normal((2, 70, 3, 2)).astype(np.float32)
    x[0, :5] = 0.0
    np.testing.assert_array_equal(reference.run_reference(m, x), np.where(x < 0, -1, 1))
