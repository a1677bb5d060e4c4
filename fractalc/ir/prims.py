"""The primitive operations of the language and the scalar builtins.

Primitives are declared in the op table (`fractalc.ir.ops`, each with the IR op it makes);
`PRIMS` is the language's view of them by name, kept up to date by `ops.register`.
"""
from __future__ import annotations

from fractalc import ir
from fractalc.ir.ops import BUILTINS, PRIMS, REQUIRED, PrimSpec

__all__ = ["PRIMS", "BUILTINS", "REQUIRED", "PrimSpec", "make_op", "id_stem"]


def id_stem(name: str) -> str:
    """Node-id stem of primitive `name` (ids look like ``col1.conv2``)."""
    return PRIMS[name].id_stem


def make_op(name: str, a: dict) -> ir.Op | None:
    """The IR op for primitive `name` with fully bound arguments `a` (None = no node)."""
    return PRIMS[name].make(a)
