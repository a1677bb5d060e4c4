"""Graph -> graph passes, one per module. Each docstring states its rewrite rules.

`run_default` is the pipeline every compile uses: collapse_joins, infer_shapes, verify.
"""
from __future__ import annotations

from .. import ir
from .collapse_joins import collapse_joins
from .infer_shapes import infer_shapes
from .verify import verify


def run_default(graph: ir.Graph) -> ir.Graph:
    g = collapse_joins(graph)
    g = infer_shapes(g)
    verify(g)
    return g


__all__ = ["collapse_joins", "infer_shapes", "verify", "run_default"]
