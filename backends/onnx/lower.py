"""The ``onnx-xnor`` flavour: binary convolutions lowered to ``ai.fractalc`` ops (docs/onnx-ops.md).

Rewrite rules, per BinaryConv node ``b`` (in IR order):

1. Input: if b's input is itself a bit-domain output (rule 3) it is used as is; otherwise the
   float value X is packed once by ``X.pack = PackBits(X)`` (shared by every binary conv that
   reads X), giving ``X.bits``.
1b. A BatchNorm ``n`` that is not folded by rule 2 and whose every consumer is a BinaryConv
   (the "bn-conv" order) is not computed at all: ``n.pack = PackBits(x, threshold, flip)``
   packs sign(BN(x)) directly, with exact float32 thresholds (`pack_threshold`).
1c. An RSign (x - t) or Shift (x + b) whose every consumer is a binary conv binarizing it is
   not computed either: ``n.pack = PackBits(x, t, flip=0)`` (t = -b for a shift). Exact: a
   float32 x - t is >= 0 exactly when x >= t (a difference of two floats rounds to 0 only
   when they are equal), which is PackBits' +1.
2. BN folding: if b's only consumer is a BatchNorm ``n`` (reading only b), n folds into b and
   the conv computes n's output; otherwise b computes alpha * dot.
3. Output domain: if every consumer of that result is a BinaryConv, b outputs bits
   (``output_type="bits"``, value ``<tail>.bits``) with an exact per-channel integer threshold and
   flip (`bits_threshold`); otherwise a float32 NCHW value named by the tail's id, as
   ``fmaf(multiplier, dot, bias)`` with multiplier = gamma * alpha / s and bias = beta - gamma *
   mean / s (s = sqrt(float32(var + eps))), or alpha and 0 without BN.
A BinaryConv with ``binary_input=false`` is not lowered (its input is float): it is emitted as
in the ``onnx`` flavour, a float Conv with alpha * sign(W) baked, and counts as a float reader
for rules 1b and 3. Grouped and dilated binary convs become XnorConvs with ``group`` and
``dilations``. ``bn[scale=false]`` folds with gamma = 1.
Everything else is emitted as in the ``onnx`` flavour. Weights are stored tightly
(`packing.pack_weights_tight`; identical to the canonical layout when C_in % 64 == 0, and then
stored with the canonical 4-D shape).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fractalc import ir
from fractalc.errors import ModelError

from . import export, ops, packing  # noqa: F401  (export registers the standard BinaryConv emitter: binary_input=false convs)
from .builder import Builder, alpha_of, bn_gamma, emit_common, metadata


def xnor_conv(g: ir.Graph, n: str) -> bool:
    """Whether node `n` is lowered to an XnorConv: a BinaryConv whose input is binarized."""
    op = g.op(n)
    return isinstance(op, ir.BinaryConv) and op.binary_input


@dataclass(frozen=True)
class Plan:
    conv: str
    bn: str | None   # the folded BatchNorm, if any
    bits: bool       # output stays in the bit domain

    @property
    def tail(self) -> str:
        return self.bn or self.conv


def sign_only_bns(g: ir.Graph, plans: dict[str, Plan]) -> list[str]:
    """BatchNorms (not folded into a conv) whose every consumer is a BinaryConv (rule 1b)."""
    folded = {p.bn for p in plans.values()}
    return [n for n in g.nodes(ir.BatchNorm) if n not in folded and g.consumers(n)
            and all(xnor_conv(g, c) for c in g.consumers(n))]


def threshold_shifts(g: ir.Graph) -> list[str]:
    """RSign and Shift nodes (on CxHxW values) whose every consumer is a binary conv that
    binarizes its input (rule 1c)."""
    def binarizes(c):
        op = g.op(c)
        return isinstance(op, ir.BinaryConv) and getattr(op, "binary_input", True)
    return [n for n in g.order() if isinstance(g.op(n), (ir.RSign, ir.Shift)) and len(g.shape(n)) == 3
            and g.consumers(n) and all(binarizes(c) for c in g.consumers(n))]


def plan(g: ir.Graph) -> dict[str, Plan]:
    """Fusion decisions for every BinaryConv of `g` (rules 2 and 3 of the module docstring)."""
    out = {}
    for n in g.nodes(ir.BinaryConv):
        if not xnor_conv(g, n):
            continue
        cons = g.consumers(n)
        bn = None
        if len(cons) == 1 and isinstance(g.op(cons[0]), ir.BatchNorm) and g.inputs(cons[0]) == (n,):
            bn = cons[0]
        tail_cons = g.consumers(bn or n)
        bits = bool(tail_cons) and all(xnor_conv(g, c) for c in tail_cons)
        out[n] = Plan(n, bn, bits)
    return out


# --- exact folding ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Affine:
    """Per-channel y = gamma * (alpha * dot - mean) / sqrt(v) + beta, all float32 values."""

    alpha: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    v: np.ndarray  # float32(var + eps), > 0


def affine(state: dict, conv: str, bn: str | None, eps: float, gamma: np.ndarray | None = None) -> Affine:
    """The affine map of `conv` (+ BatchNorm `bn`); `gamma` overrides the BN's weight (ones for
    ``bn[scale=false]``)."""
    alpha = alpha_of(state[f"{conv}.weight"])
    c = alpha.shape[0]
    if bn is None:
        one, zero = np.ones(c, np.float32), np.zeros(c, np.float32)
        return Affine(alpha, one, zero, zero, one)
    f32 = lambda k: np.asarray(state[f"{bn}.{k}"], np.float32)
    v = f32("running_var") + np.float32(eps)  # float32 sum, as torch and onnx compute it
    bad = np.flatnonzero(~(v > 0))
    if bad.size:
        raise ModelError(f"{bn}: running_var + eps must be positive, channel {int(bad[0])} has "
                         f"{float(f32('running_var')[bad[0]])!r} (eps {eps})")
    return Affine(alpha, f32("weight") if gamma is None else gamma, f32("bias"), f32("running_mean"), v)


def float_fold(a: Affine) -> tuple[np.ndarray, np.ndarray]:
    """multiplier and bias (float32) with y ~= multiplier * dot + bias (float64, rounded once)."""
    s = np.sqrt(a.v.astype(np.float64))
    g = a.gamma.astype(np.float64)
    mul = g * a.alpha.astype(np.float64) / s
    bias = a.beta.astype(np.float64) - g * a.mean.astype(np.float64) / s
    return mul.astype(np.float32), bias.astype(np.float32)


def _nonneg(p: Fraction, q: Fraction, v: Fraction) -> bool:
    """Exactly: p + q * sqrt(v) >= 0 (v > 0)."""
    if q == 0:
        return p >= 0
    if p >= 0 and q >= 0:
        return True
    if p <= 0 and q < 0:
        return False
    if p > 0:          # q < 0
        return p * p >= q * q * v
    return q * q * v >= p * p  # p < 0 < q


def bits_threshold(a: Affine, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer thresholds and flips with sign(y(dot)) = +1 iff the integer test holds.

    flip = 0: +1 iff dot >= T;  flip = 1: +1 iff dot <= T.  y is the exact real value of the
    affine map (no float rounding). T is clamped to [-n-1, n+1] (n = C_in*kh*kw >= |dot|),
    so a constant channel (gamma = 0 or alpha = 0) gets T = -n-1 (always +1) or n+1 (never).
    """
    c = a.alpha.shape[0]
    thr = np.zeros(c, np.int32)
    flip = np.zeros(c, bool)
    for i in range(c):
        g, al = Fraction(float(a.gamma[i])), Fraction(float(a.alpha[i]))
        m, be, v = Fraction(float(a.mean[i])), Fraction(float(a.beta[i])), Fraction(float(a.v[i]))
        slope = g * al
        # y(d) * s = slope * d - g * m + beta * s  (s = sqrt(v) > 0 keeps the sign)
        cond = lambda d: _nonneg(slope * d - g * m, be, v)
        if slope == 0:
            thr[i] = -n - 1 if cond(0) else n + 1
            continue
        root = (float(g * m) - float(be) * math.sqrt(float(v))) / float(slope)
        guess = int(min(max(math.floor(root) if math.isfinite(root) else 0, -n - 1), n + 1))
        if slope > 0:  # cond is increasing: T = min {d : cond(d)}
            d = guess
            while d > -n - 1 and cond(d - 1):
                d -= 1
            while d < n + 1 and not cond(d):
                d += 1
            thr[i] = d
        else:          # cond is decreasing: T = max {d : cond(d)}
            d = guess
            while d < n + 1 and cond(d + 1):
                d += 1
            while d > -n - 1 and not cond(d):
                d -= 1
            thr[i], flip[i] = d, True
    return thr, flip


def pack_threshold(gamma, beta, mean, v) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 thresholds and flips with sign(BN(x)) = +1 iff (flip ? x <= t : x >= t).

    BN(x) = gamma * (x - mean) / sqrt(v) + beta is evaluated exactly (no rounding) for every
    float32 x; t is the smallest (flip: largest) float32 where it is >= 0. gamma = 0 gives a
    constant channel: t = -inf (always +1) if beta >= 0, else +inf (always -1, finite x).
    """
    c = gamma.shape[0]
    thr = np.zeros(c, np.float32)
    flip = np.zeros(c, bool)
    inf = np.float32(np.inf)
    for i in range(c):
        g, m = Fraction(float(gamma[i])), Fraction(float(mean[i]))
        be, vv = Fraction(float(beta[i])), Fraction(float(v[i]))
        if g == 0:
            thr[i] = -inf if be >= 0 else inf
            continue
        cond = lambda x: _nonneg(g * (Fraction(float(x)) - m), be, vv)
        root = float(m) - float(be) * math.sqrt(float(v[i])) / float(g)
        if abs(root) > 3.0e38:  # beyond float32: every finite x is on one side
            t = np.float32(math.copysign(np.inf, root))
        else:
            t = np.float32(root)
        up = g > 0  # cond increasing in x
        step_back = np.float32(-np.inf) if up else inf
        step_fwd = inf if up else np.float32(-np.inf)
        if np.isfinite(t):
            while np.isfinite(prev := np.nextafter(t, step_back)) and cond(prev):
                t = prev
            while np.isfinite(t) and not cond(t):
                t = np.nextafter(t, step_fwd)
        thr[i], flip[i] = t, not up
    return thr, flip


# --- the graph --------------------------------------------------------------------------------

def to_onnx_xnor(compiled, state: dict[str, np.ndarray], weights_source: str = "", extra_meta=None):
    """Build the lowered ModelProto of `compiled.graph` with weights `state`."""
    g = compiled.graph
    plans = plan(g)
    folded = {p.bn for p in plans.values() if p.bn}
    pre = set(sign_only_bns(g, plans))
    thresholds = set(threshold_shifts(g))
    bits_of: dict[str, str] = {}   # IR id -> name of its packed value
    b = Builder()
    val: dict[str, str] = {}
    for n in g.order():
        op = g.op(n)
        if n in folded:
            continue  # computed by its binary conv
        elif n in pre:
            _lower_sign_bn(b, g, n, state, val, bits_of)
        elif n in thresholds:
            _lower_threshold(b, g, n, state, bits_of, val)
        elif n in plans:
            _lower_conv(b, g, plans[n], state, val, bits_of)
        else:
            emit_common(b, g, n, state, val)
    return b.model(g.name, metadata(compiled, "onnx-xnor", weights_source, extra_meta),
                   domains=ops.opset_imports())


def _lower_sign_bn(b: Builder, g: ir.Graph, n: str, state, val, bits_of) -> None:
    """A BatchNorm read only by binary convs: PackBits with its exact per-channel threshold."""
    f32 = lambda k: np.asarray(state[f"{n}.{k}"], np.float32)
    v = f32("running_var") + np.float32(g.op(n).eps)
    if not np.all(v > 0):
        raise ModelError(f"{n}: running_var + eps must be positive")
    thr, flip = pack_threshold(bn_gamma(g, n, state), f32("bias"), f32("running_mean"), v)
    c, h, w = g.shape(n)
    out = b.typed(f"{n}.bits", b.TP.UINT64, [b.batch, h, w, packing.words(c)])
    src = val[g.inputs(n)[0]]
    b.node("PackBits", [src, b.init(f"{n}.threshold", thr), b.init(f"{n}.flip", flip)], out,
           f"{n}.pack", domain=ops.DOMAIN)
    bits_of[n] = out


def _lower_threshold(b: Builder, g: ir.Graph, n: str, state, bits_of, val) -> None:
    """An RSign / Shift read only by binary convs: PackBits of its input with threshold t (-b)."""
    if isinstance(g.op(n), ir.RSign):
        thr = np.asarray(state[f"{n}.threshold"], np.float32)
    else:
        thr = -np.asarray(state[f"{n}.bias"], np.float32)  # x + b >= 0 iff x >= -b (negation is exact)
    c, h, w = g.shape(n)
    out = b.typed(f"{n}.bits", b.TP.UINT64, [b.batch, h, w, packing.words(c)])
    b.node("PackBits", [val[g.inputs(n)[0]], b.init(f"{n}.threshold", thr),
                        b.init(f"{n}.flip", np.zeros(c, bool))], out, f"{n}.pack", domain=ops.DOMAIN)
    bits_of[n] = out


def _lower_conv(b: Builder, g: ir.Graph, p: Plan, state, val, bits_of) -> None:
    n = p.conv
    op = g.op(n)
    src = g.inputs(n)[0]
    c_in, h, w = g.shape(src)
    if src not in bits_of:
        packed = b.typed(f"{src}.bits", b.TP.UINT64, [b.batch, h, w, packing.words(c_in)])
        b.node("PackBits", [val[src]], packed, f"{src}.pack", domain=ops.DOMAIN)
        bits_of[src] = packed
    weight = np.asarray(state[f"{n}.weight"], np.float32)
    k = op.kernel
    cg = c_in // op.groups  # input channels per output channel
    wbits = packing.pack_weights_tight(weight)
    if cg % packing.WORD == 0:
        wbits = wbits.reshape(op.out_channels, k, k, cg // packing.WORD)
    args = [bits_of[src], b.init(f"{n}.weight_bits", wbits)]
    eps = g.op(p.bn).eps if p.bn else 0.0
    a = affine(state, n, p.bn, eps, bn_gamma(g, p.bn, state) if p.bn else None)
    c_out, oh, ow = g.shape(n)
    if p.bits:
        thr, flip = bits_threshold(a, cg * k * k)
        args += [b.init(f"{n}.threshold", thr), b.init(f"{n}.flip", flip)]
        out = b.typed(f"{p.tail}.bits", b.TP.UINT64, [b.batch, oh, ow, packing.words(c_out)])
        bits_of[p.tail] = out
    else:
        mul, bias = float_fold(a)
        args += [b.init(f"{n}.multiplier", mul), b.init(f"{n}.bias", bias)]
        out = b.float_value(p.tail, (c_out, oh, ow))
        val[p.tail] = out
    b.node("XnorConv", args, out, n, domain=ops.DOMAIN, in_channels=c_in, out_channels=c_out,
           kernel_shape=[k, k], strides=[op.stride] * 2, pads=[op.padding] * 4,
           padding=op.padding_mode, output_type="bits" if p.bits else "float",
           **({"group": op.groups} if op.groups != 1 else {}),
           **({"dilations": [op.dilation] * 2} if op.dilation != 1 else {}))
