"""The native engine's float arithmetic in numpy (the contract: docs/float-arithmetic.md).

`reference.run_reference` computes every float operator of a lowered graph with these
functions, so its outputs equal the engine's (``backends/xnor/src``) byte for byte. Values are
NCHW float32 arrays (the engine's NHWC layout does not change any per-output arithmetic).

The engine accumulates convolutions and GEMMs with ``fmaf`` chains in a pinned order; numpy has
no fused multiply-add, so `fma` computes it exactly: a * b of two float32 values is exact in
float64, s = p + c rounds once in float64 with its error e recovered exactly (TwoSum), and s
rounded to odd (one ulp toward e where e != 0 and s's last bit is even) then rounded to float32
is the correctly rounded a * b + c (53 >= 24 + 2 bits).
"""
from __future__ import annotations

import numpy as np

F32, F64 = np.float32, np.float64


def fma(a, b, c) -> np.ndarray:
    """float32(a * b + c) with a single rounding (C's ``fmaf``), element-wise with
    broadcasting; a, b, c are float32 (or float64 holding float32 values)."""
    p = np.asarray(a, F64) * np.asarray(b, F64)  # exact: 24 + 24 bits
    c = np.asarray(c, F64)
    s = p + c
    bv = s - p  # TwoSum: e = (p + c) - s exactly
    e = (p - (s - bv)) + (c - bv)
    bits = s.view(np.int64)
    # round to odd: where inexact and s's last bit is even, one ulp toward the exact value
    # (bits + 1 moves away from zero, bits - 1 toward it, for either sign)
    fix = (e != 0) & ((bits & 1) == 0) & np.isfinite(s)
    if fix.any():
        bits = bits + np.where(fix, np.where((e > 0) == (s > 0), 1, -1), 0)
    return bits.view(F64).astype(F32)


_MID, _LOW29 = 0x10000000, 0x1FFFFFFF  # float64 bits below float32 precision: exactly half an ulp
_TINY = 897 << 52  # float64 bits of 2^-126: below it float32 rounds coarser (subnormals)
_ABS = 0x7FFFFFFFFFFFFFFF


class FmaChain:
    """acc = fma(a, b, acc) step after step, acc starting at +0 (an engine's per-output chain,
    vectorised over all outputs); a, b float64 arrays holding float32 values.

    Fast form of `fma`: s = a * b + acc rounds once in float64, and float32(s) is already the
    correctly rounded result unless s lies exactly halfway between two float32 values (a
    float64 rounding may have made it so) or in float32's subnormal range; only those
    elements (rare on real data) go through `fma`'s exact rounding. `grain`: if every product
    and the start are multiples of 2^-grain with grain <= 126, so is every sum, and a nonzero
    one is never below 2^-126: the subnormal test is skipped (None: always tested)."""

    def __init__(self, shape, grain: int | None = None):
        self.acc = np.zeros(shape, F32)
        self._tiny = grain is None or grain > 126
        self._p, self._s = np.empty(shape, F64), np.empty(shape, F64)
        self._m = np.empty(shape, np.int64)
        self._f, self._g = np.empty(shape, bool), np.empty(shape, bool)

    def step(self, a, b) -> None:
        p, s, m, f, g = self._p, self._s, self._m, self._f, self._g
        np.multiply(a, b, out=p)  # exact
        np.add(p, self.acc, out=s)
        sv = s.view(np.int64)
        np.bitwise_and(sv, _LOW29, out=m)
        np.equal(m, _MID, out=f)
        if self._tiny:
            np.bitwise_and(sv, _ABS, out=m)
            np.subtract(m, 1, out=m)  # zero -> -1: huge as unsigned, so not "tiny" (an exact 0)
            np.less(m.view(np.uint64), np.uint64(_TINY - 1), out=g)
            np.logical_or(f, g, out=f)
        if f.any():
            idx = np.flatnonzero(f)
            fixed = fma(p.reshape(-1)[idx], 1.0, self.acc.reshape(-1)[idx])
            self.acc[...] = s
            self.acc.reshape(-1)[idx] = fixed
        else:
            self.acc[...] = s


def frac_bits(v: np.ndarray) -> int | None:
    """The least q with every value of float32 `v` a multiple of 2^-q (None if any is not
    finite; an all-zero array gives -200)."""
    v = np.asarray(v, F32)
    if not np.isfinite(v).all():
        return None
    bits = v.view(np.int32).astype(np.int64) & 0x7FFFFFFF
    bits = bits[bits != 0]
    if bits.size == 0:
        return -200
    exp = bits >> 23
    mant = (bits & 0x7FFFFF) | np.where(exp > 0, 0x800000, 0)
    low = np.log2((mant & -mant).astype(F64)).astype(np.int64)  # trailing zeros
    lsb = np.maximum(exp, 1) - 127 - 23 + low  # exponent of the lowest set bit
    return int(-lsb.min())


def grain(x, w) -> int | None:
    """q with every product of a value of `x` and one of `w` a multiple of 2^-q (None: some
    value is not finite)."""
    qx, qw = frac_bits(x), frac_bits(w)
    return None if qx is None or qw is None else qx + qw


def sums_exact(x: np.ndarray, w2: np.ndarray, q="?") -> bool:
    """Whether every partial sum of every output of a product of `x` with the rows of `w2`
    (Co, K) is exactly representable in float32, whatever the order: all products are
    multiples of 2^-q (q = the fractional bits of x plus those of w) and no sum of their
    magnitudes reaches 2^24 * 2^-q. Then the engine's fmaf chain gives the exact sum, which
    float64 computes exactly in any order (a shortcut, not an approximation). `q`:
    `grain(x, w2)` when already known."""
    q = grain(x, w2) if q == "?" else q
    if q is None:
        return False
    bound = float(np.abs(np.asarray(x, F64)).max(initial=0.0)) * \
        float(np.abs(np.asarray(w2, F64)).sum(axis=1).max(initial=0.0))
    return bound * 2.0 ** q < 2.0 ** 24


def _taps(xp, ky, kx, s, d, ho, wo):
    """The (N, C, ho, wo) inputs under kernel tap (ky, kx) of a padded input (stride s, dilation d)."""
    return xp[:, :, ky * d:ky * d + s * (ho - 1) + 1:s, kx * d:kx * d + s * (wo - 1) + 1:s]


def conv(x, w, b, stride: int, pad: int, dilation: int = 1, groups: int = 1) -> np.ndarray:
    """A float Conv (zero padding `pad` on every side) as the engine computes it.

    Dense (group 1, dilation 1; src/fkernels.cpp conv_float, src/pointwise.cpp): per output,
    acc = +0, acc = fma(x, w, acc) over the zero-padded taps in the order (ky, kx, c), then
    y = acc + b. Grouped or dilated (src/fgrouped.cpp): acc = +0, acc = acc + x * w (two
    roundings) over (ky, kx, i) with taps in the padding skipped, then y = acc + b.
    """
    x = np.asarray(x, F32)
    w = np.asarray(w, F32)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    b = np.zeros(co, F32) if b is None else np.asarray(b, F32).reshape(co)
    s, p, d = stride, pad, dilation
    ho = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    wo = (wd + 2 * p - d * (kw - 1) - 1) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    bb = b[None, :, None, None]
    if groups == 1 and dilation == 1:
        w2 = w.transpose(0, 2, 3, 1).reshape(co, -1)  # (Co, K) in the order (ky, kx, c)
        q = grain(x, w)
        if sums_exact(x, w2, q):
            cols = np.stack([_taps(xp, ky, kx, s, 1, ho, wo) for ky in range(kh) for kx in range(kw)], axis=2)
            cols = cols.transpose(0, 3, 4, 2, 1).reshape(n, ho, wo, -1).astype(F64)  # (.., K) as w2
            acc = (cols @ w2.astype(F64).T + 0.0).astype(F32).transpose(0, 3, 1, 2)
            return acc + bb
        x64, w64 = xp.astype(F64), w.astype(F64)
        chain = FmaChain((n, co, ho, wo), q)
        for ky in range(kh):
            for kx in range(kw):
                t = np.ascontiguousarray(_taps(x64, ky, kx, s, 1, ho, wo))  # strided operands are slower
                for ci in range(c):
                    chain.step(t[:, ci:ci + 1], w64[:, ci, ky, kx][None, :, None, None])
        return chain.acc + bb
    og = co // groups
    first = (np.arange(co) // og) * cg  # input channel 0 of output channel o's group
    acc = np.zeros((n, co, ho, wo), F32)
    oy, ox = np.arange(ho) * s - p, np.arange(wo) * s - p
    for ky in range(kh):
        for kx in range(kw):
            valid = ((oy + ky * d >= 0) & (oy + ky * d < h))[:, None] & ((ox + kx * d >= 0) & (ox + kx * d < wd))[None]
            t = _taps(xp, ky, kx, s, d, ho, wo)
            for i in range(cg):
                prod = t[:, first + i] * w[:, i, ky, kx][None, :, None, None]
                acc = np.where(valid, acc + prod, acc)
    return acc + bb


def gemm(x, w2, b) -> np.ndarray:
    """Gemm (N, K) x (Co, K)^T + b as the engine computes it (a 1x1 conv_float): acc = +0,
    acc = fma(x[k], w[o][k], acc) over k ascending, then y = acc + b."""
    x = np.asarray(x, F32)
    w2 = np.asarray(w2, F32)
    co = w2.shape[0]
    b = np.zeros(co, F32) if b is None else np.asarray(b, F32).reshape(co)
    q = grain(x, w2)
    if sums_exact(x, w2, q):
        return (x.astype(F64) @ w2.astype(F64).T + 0.0).astype(F32) + b
    x64, w64 = x.astype(F64), w2.astype(F64)
    chain = FmaChain((x.shape[0], co), q)
    for k in range(x.shape[1]):
        chain.step(x64[:, k:k + 1], w64[None, :, k])
    return chain.acc + b


def bn_scale(gamma, var, eps: float) -> np.ndarray:
    """float64 gamma / sqrt(float32(var + eps)) (var + eps summed in float32, as torch)."""
    v = (np.asarray(var, F32) + F32(eps)).astype(F64)
    return np.asarray(gamma, F32).astype(F64) / np.sqrt(v)


def bn_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization not folded into a conv: float32 (scale, shift) = (g / s,
    beta - mean * g / s) computed in float64 and rounded once; y = x * scale + shift."""
    g, bt, m = (np.asarray(a, F32).astype(F64) for a in (gamma, beta, mean))
    s = np.sqrt((np.asarray(var, F32) + F32(eps)).astype(F64))
    return (g / s).astype(F32), (bt - m * g / s).astype(F32)


def batchnorm(x, gamma, beta, mean, var, eps: float) -> np.ndarray:
    scale, shift = bn_affine(gamma, beta, mean, var, eps)
    c = (1, -1) + (1,) * (np.ndim(x) - 2)
    return np.asarray(x, F32) * scale.reshape(c) + shift.reshape(c)  # two roundings


def fold_bn(w, b, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A Conv's weights and bias with the BatchNormalization reading only it folded in, as the
    engine's loader folds it: scale = g / sqrt(float32(var + eps)) in float64,
    w' = float32(w * scale), b' = float32((b - mean) * scale + beta)."""
    w = np.asarray(w, F32)
    scale = bn_scale(gamma, var, eps)
    b64 = np.zeros(w.shape[0], F64) if b is None else np.asarray(b, F32).astype(F64)
    bias = (b64 - np.asarray(mean, F32)) * scale + np.asarray(beta, F32)
    wf = (w.astype(F64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(F32)
    return wf, bias.astype(F32)


def pool(x, kind: str, kernel, strides, pads) -> np.ndarray:
    """MaxPool / AveragePool (count_include_pad=1) as src/fkernels.cpp pool_nhwc: per output,
    the taps inside the input in row-major window order, the first copied, then max
    (s > o ? s : o) or sum; an average is then divided by kh * kw."""
    x = np.asarray(x, F32)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, strides
    pt, pl, pb, pr = pads
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, max(pb, kh)), (pl, max(pr, kw))))
    oy, ox = np.arange(ho) * sh - pt, np.arange(wo) * sw - pl
    acc = np.zeros((n, c, ho, wo), F32)
    have = np.zeros((ho, wo), bool)
    for ky in range(kh):
        for kx in range(kw):
            valid = ((oy + ky >= 0) & (oy + ky < h))[:, None] & ((ox + kx >= 0) & (ox + kx < w))[None]
            t = xp[:, :, ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw]
            step = np.where(t > acc, t, acc) if kind == "max" else acc + t
            acc = np.where(valid & ~have, t, np.where(valid, step, acc))
            have |= valid
    if kind == "max":
        return np.where(have, acc, F32(-np.inf))
    return acc / F32(kh * kw)


def global_pool(x, kind: str) -> np.ndarray:
    """GlobalAveragePool (pixels summed in row-major order, then / HW) or GlobalMaxPool
    (std::max in pixel order: o < s ? s : o)."""
    x = np.asarray(x, F32)
    n, c = x.shape[:2]
    v = x.reshape(n, c, -1)
    acc = v[:, :, 0].copy()
    for i in range(1, v.shape[2]):
        acc = np.where(acc < v[:, :, i], v[:, :, i], acc) if kind == "max" else acc + v[:, :, i]
    if kind == "avg":
        acc = acc / F32(v.shape[2])
    return acc.reshape(n, c, 1, 1)


def relu(x) -> np.ndarray:
    """x < 0 ? 0 : x (-0 and NaN kept)."""
    x = np.asarray(x, F32)
    return np.where(x < 0, F32(0), x)


def prelu(x, slope) -> np.ndarray:
    """x > 0 ? x : slope * x."""
    x = np.asarray(x, F32)
    return np.where(x > 0, x, np.asarray(slope, F32) * x)


def total(xs) -> np.ndarray:
    """Sum in input order: ((x0 + x1) + x2) + ..."""
    acc = np.asarray(xs[0], F32)
    for v in xs[1:]:
        acc = acc + np.asarray(v, F32)
    return acc


def maximum(xs) -> np.ndarray:
    """std::max chain: m = m < x ? x : m, in input order."""
    acc = np.asarray(xs[0], F32)
    for v in xs[1:]:
        v = np.asarray(v, F32)
        acc = np.where(acc < v, v, acc)
    return acc
