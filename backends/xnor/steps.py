"""The pieces a runtime plan is made of, shared by the planner (plan.py) and its float half
(floatplan.py): values, steps, and the checks every node's planning uses. (A module of its
own, so the two planners do not import each other.)"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fractalc.errors import ModelError


@dataclass
class Val:
    kind: str
    shape: tuple[int, ...]


@dataclass
class Step:
    fn: object
    ins: tuple[int, ...]
    out: int
    kind: str
    name: str
    into: object = None  # the same op writing into its first input (see _in_place)
    fast: object = None  # `into` where the plan proved it safe: what `run` calls
    conv: object = None  # the kernels.BinaryConv2d of a native float XnorConv (for fusion)
    join: object = None  # the float32 divisor of a fused mean join (Sum+Div, for fusion)
    view: bool = False   # the output may be a view of a shared buffer: never written in place


def node_error(node, msg):
    return ModelError(f"{node.op_type} node {node.name!r}: {msg}")


def node_attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def initializer(node, name, inits, dtype, shape=None):
    if name not in inits:
        raise node_error(node, f"input {name!r} must be an initializer")
    a = inits[name]
    if a.dtype != dtype:
        raise node_error(node, f"initializer {name!r} must be {np.dtype(dtype).name}, got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise node_error(node, f"initializer {name!r} must have shape {tuple(shape)}, got {a.shape}")
    return a


def canonical_weights(wt: np.ndarray, co: int, ci: int, kh: int, kw: int, name: str, fail):
    """XnorConv weights as canonical words (co, kh, kw, ceil(ci/64)) from either layout the op
    contract allows (canonical or tight, docs/packing.md), with unused bits checked to be 0.
    ``fail(msg)`` makes the exception to raise."""
    from fractalc.backends.onnx import packing
    n = ci * kh * kw
    canon = (co, kh, kw, (ci + 63) // 64)
    if wt.shape == canon:
        wc = np.ascontiguousarray(wt)
        if ci % 64 and (wc[..., -1] >> np.uint64(ci % 64)).any():
            raise fail(f"weights {name!r} have bits set above channel {ci - 1} (unused bits must be 0)")
        return wc
    if wt.shape == ((co * n + 63) // 64,):
        if (co * n) % 64 and wt[-1] >> np.uint64((co * n) % 64):
            raise fail(f"tight weights {name!r} have bits set after the last weight")
        return packing.tight_to_canonical(wt, co, ci, kh, kw)
    raise fail(f"weights {name!r} must be {canon} (canonical) or ({(co * n + 63) // 64},) "
               f"(tight) uint64 words, got {wt.shape}")
