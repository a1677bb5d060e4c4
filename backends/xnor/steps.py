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
