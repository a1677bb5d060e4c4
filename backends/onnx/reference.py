"""Pure-numpy reference executor for lowered (``onnx-xnor``) graphs: the oracle for the runtime.

Every ``ai.fractalc`` op is implemented with exact integer arithmetic (popcount over uint64
words, `packing.popcount`); standard ops run in ``onnx.reference.ReferenceEvaluator``. Slow
but exact: use small inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import ops, packing


# --- the ops as plain functions (also used directly by tests) ---------------------------------

def pack_bits(x: np.ndarray, threshold=None, flip=None) -> np.ndarray:
    """PackBits: bit 1 (-1) where x < t, or x > t where flip (t = 0 without a threshold)."""
    x = np.asarray(x, dtype=np.float32)
    if threshold is None:
        return packing.pack_activations(x)
    t = np.asarray(threshold, np.float32)[None, :, None, None]
    f = np.asarray(flip, bool)[None, :, None, None]
    neg = np.where(f, x > t, x < t)  # NaN compares false: +1, like sign(NaN) in torch
    return packing._pack_last_axis(np.transpose(neg, (0, 2, 3, 1)))


def unpack_bits(x: np.ndarray, channels: int) -> np.ndarray:
    return packing.unpack_activations(x, channels)


def xnor_dot(x: np.ndarray, w: np.ndarray, a: ops.ConvAttrs) -> np.ndarray:
    """The integer dot products (N, H_out, W_out, C_out) of a packed input and packed weights.

    zero padding: padded positions contribute nothing (exactly torch's zero-padded conv of
    sign(x)); one padding: padded positions are +1 in every real channel. A grouped conv
    (``a.group > 1``) is this per group, on the group's channels re-packed from bit 0.
    """
    x = np.asarray(x, dtype=np.uint64)
    w = np.asarray(w, dtype=np.uint64)
    kh, kw = a.kernel
    if w.ndim == 1:
        w = packing.tight_to_canonical(w, a.out_channels, a.group_channels, kh, kw)
    if a.group > 1:
        from dataclasses import replace
        cg, og = a.group_channels, a.out_channels // a.group
        neg = packing._unpack_last_axis(x, a.in_channels)  # (N, H, W, C_in) booleans
        sub = replace(a, in_channels=cg, out_channels=og, group=1)
        return np.concatenate([xnor_dot(packing._pack_last_axis(neg[..., i * cg:(i + 1) * cg]),
                                        w[i * og:(i + 1) * og], sub) for i in range(a.group)], axis=-1)
    n, h, wd, nw = x.shape
    t, l, b, r = a.pads
    sh, sw = a.strides
    dh, dw = a.dilations
    oh, ow = a.out_hw(h, wd)
    xp = np.zeros((n, h + t + b, wd + l + r, nw), dtype=np.uint64)  # zero words = +1
    xp[:, t:t + h, l:l + wd] = x
    inside = np.zeros((h + t + b, wd + l + r), dtype=np.int64)
    inside[t:t + h, l:l + wd] = 1
    dot = np.zeros((n, oh, ow, a.out_channels), dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            rows = slice(dy * dh, dy * dh + sh * (oh - 1) + 1, sh)
            cols = slice(dx * dw, dx * dw + sw * (ow - 1) + 1, sw)
            xs = xp[:, rows, cols, :]                                  # (N, oh, ow, words)
            pc = packing.popcount(xs[:, :, :, None, :] ^ w[None, None, None, :, dy, dx, :])
            term = a.in_channels - 2 * pc.sum(axis=-1, dtype=np.int64)  # (N, oh, ow, C_out)
            if a.padding == "zero":
                term = term * inside[rows, cols][None, :, :, None]
            dot += term
    return dot


def fma_f32(m: np.ndarray, d: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32(m * d + b) with one rounding (as C's fmaf), for float32 m, b and integer d.

    m * d is exact in float64 (24-bit by < 31-bit); the float64 sum's error e is recovered
    exactly (TwoSum), and where the float64 sum lies exactly halfway between two float32 values
    (the only case where a second rounding can differ) the tie is broken toward e.
    """
    p = np.asarray(m, np.float64) * np.asarray(d, np.float64)
    bb = np.asarray(b, np.float64)
    s = p + bb
    bv = s - p
    e = (p - (s - bv)) + (bb - bv)
    r = s.astype(np.float32)
    fix = (e != 0) & (r.astype(np.float64) != s)
    if fix.any():
        toward = np.where(s > r.astype(np.float64), np.float32(np.inf), np.float32(-np.inf))
        other = np.nextafter(r, toward.astype(np.float32))
        half = (r.astype(np.float64) + other.astype(np.float64)) == 2 * s
        tie = fix & half
        up = np.maximum(r, other)
        down = np.minimum(r, other)
        r = np.where(tie, np.where(e > 0, up, down), r)
    return r


def xnor_conv(x, w, a_in, b_in, a: ops.ConvAttrs) -> np.ndarray:
    """XnorConv: float NCHW output (fmaf(multiplier, dot, bias)) or packed bits."""
    dot = xnor_dot(x, w, a)
    if a.output == "float":
        y = fma_f32(np.asarray(a_in, np.float32), dot, np.asarray(b_in, np.float32))
        return np.ascontiguousarray(np.transpose(y, (0, 3, 1, 2)))
    thr = np.asarray(a_in, np.int64)
    flip = np.asarray(b_in, bool)
    plus = np.where(flip, dot <= thr, dot >= thr)  # +1 (bit 0) where the condition holds
    return packing._pack_last_axis(~plus)


# --- ReferenceEvaluator glue ------------------------------------------------------------------

def _op_classes():
    from onnx.reference.op_run import OpRun

    class PackBits(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, threshold=None, flip=None, **_):
            return (pack_bits(x, threshold, flip),)

    class UnpackBits(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, **_):
            return (unpack_bits(x, ops.attrs_of(self.onnx_node)["channels"]),)

    class XnorConv(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, w, a_in, b_in, **_):
            a = ops.conv_attrs(ops.attrs_of(self.onnx_node), self.onnx_node.name)
            return (xnor_conv(x, w, a_in, b_in, a),)

    class Sigmoid(OpRun):
        # fractalc's sigmoid (the torch backend's, the runtime's): float64, rounded once to
        # float32; onnx's float32 reference would differ by an ulp
        op_domain = ""

        def _run(self, x, **_):
            return ((1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.asarray(x).dtype),)

    return [PackBits, UnpackBits, XnorConv, Sigmoid]


def evaluator(model):
    """A ``ReferenceEvaluator`` for `model` (path, bytes or ModelProto) with our ops."""
    from onnx.reference import ReferenceEvaluator

    from .loader import load_model
    proto = load_model(model)
    return ReferenceEvaluator(proto, new_ops=_op_classes())


def run_reference(model: "str | Path | bytes | object", x: np.ndarray,
                  outputs: list[str] | None = None):
    """Run a (lowered or standard) fractalc ONNX model on `x` (N, C, H, W) float32.

    Returns the first graph output as an array; with `outputs`, a dict of those values
    (any intermediate value name is allowed).
    """
    ev = evaluator(model)
    feeds = {ev.input_names[0]: np.asarray(x, dtype=np.float32)}
    if outputs is None:
        return ev.run(None, feeds)[0]
    res = ev.run(None, feeds, intermediate=True)
    missing = [n for n in outputs if n not in res]
    if missing:
        raise KeyError(f"no value named {', '.join(missing)} in the model")
    return {n: res[n] for n in outputs}
