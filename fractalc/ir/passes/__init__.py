"""Graph -> graph passes, one per module. Each docstring states its rewrite rules.

`run_default` is the pipeline every compile uses: collapse_joins, infer_shapes, verify.
"""
from __future__ import annotations

from fractalc import ir
from fractalc.ir.passes.collapse_joins import collapse_joins
from fractalc.ir.passes.infer_shapes import infer_shapes
from fractalc.ir.passes.verify import verify


def run_default(graph: ir.Graph) -> ir.Graph:
    """collapse_joins, then infer_shapes only when some node lacks a shape, then verify.

    `expand` sets every node's shape as it builds, and collapse_joins keeps shapes (a merged
    join averages inputs of the join's own shape), so re-inferring every shape would only
    repeat work: `verify` recomputes each node's shape from its inputs and refuses any
    mismatch, so skipping the pass checks exactly as much."""
    g = collapse_joins(graph)
    if not all(g.has_shape(n) for n in g):
        g = infer_shapes(g)
    verify(g)
    return g


__all__ = ["collapse_joins", "infer_shapes", "verify", "run_default"]
