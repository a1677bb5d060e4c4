"""The executor's numpy steps for the per-channel and gating operators of lowered graphs
(issue 14's RSign, shift, scale, PReLU / RPReLU, sigmoid, gating product).

Standard ONNX nodes, as the ONNX backend writes them (builder.py): ``Add`` / ``Sub`` / ``Mul``
of a value and a float32 per-channel initializer (C, 1, 1) (or (C,) on a flat value),
``PRelu`` with such a slope, ``Sigmoid``, and ``Mul`` of two values of one shape or of a
CxHxW value and a per-channel Cx1x1 one. Values are channels-last (plan.py), so a per-channel
vector broadcasts along the last axis, and a Cx1x1 value (stored (N, 1, 1, C)) broadcasts over
H and W as it is.

Rounding is the torch backend's, exactly: one float32 rounding per elementary operation, PReLU
as ``x if x > 0 else a * x``, and the sigmoid computed in float64 and rounded once (torch:
``sigmoid(x.double()).float()``; the engine: ``1 / (1 + exp(-x))`` in double). `step` returns
None for anything else, which then goes to onnxruntime as before.
"""
from __future__ import annotations

import numpy as np

from .steps import Step, Val, node_attrs

_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def prelu(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * a)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def per_channel(node, name: str, inits, v: Val) -> np.ndarray | None:
    """Initializer `name` as a (C,) vector if it is float32 and per channel of value `v`."""
    a = inits.get(name)
    c = v.shape[0]
    want = (c, 1, 1) if v.kind == "f4" else (c,)
    if a is None or a.dtype != np.float32 or a.shape != want:
        return None
    return np.ascontiguousarray(a.reshape(c))


def step(node, slots, vals, inits):
    """A numpy Step (and its output Val) for `node`, or None."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1 or node_attrs(node) \
            or not all(node.input) or node.input[0] not in slots:
        return None
    x = slots[node.input[0]]
    v = vals[x]
    if v.kind not in ("f4", "f") or (v.kind == "f" and len(v.shape) != 1):
        return None
    if op == "Sigmoid" and len(node.input) == 1:
        return Step(sigmoid, (x,), -1, op, node.name), v
    if len(node.input) != 2:
        return None
    other = node.input[1]
    if other in inits:
        a = per_channel(node, other, inits, v)
        if a is None:
            return None
        if op == "PRelu":
            return Step(lambda t, _a=a: prelu(t, _a), (x,), -1, op, node.name), v
        if op in _BINARY:
            return Step(lambda t, _f=_BINARY[op], _a=a: _f(t, _a), (x,), -1, op, node.name), v
        return None
    if op != "Mul" or other not in slots:
        return None
    y = slots[other]
    w = vals[y]
    if w == v:
        return Step(np.multiply, (x, y), -1, op, node.name), v
    if v.kind == w.kind == "f4":
        for big, small in ((v, w), (w, v)):
            if small.shape == (big.shape[0], 1, 1):  # (N, 1, 1, C) broadcasts over (N, H, W, C)
                return Step(np.multiply, (x, y), -1, op, node.name), big
    return None
