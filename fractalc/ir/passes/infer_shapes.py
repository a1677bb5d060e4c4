"""infer_shapes: set every node's ``shape`` from its inputs, with the rules of `shapes.py`.

Requires: an acyclic graph with one Input. Ensures: every node has a ``shape``; a mismatch
raises `ShapeError` located at the spec position that created the node.
"""
from __future__ import annotations

from fractalc import ir
from fractalc.ir import shapes


def infer_shapes(graph: ir.Graph) -> ir.Graph:
    g = graph.copy()
    for n in g.order():
        ins = g.inputs(n)
        names = [f"input {i + 1} ({src})" for i, src in enumerate(ins)]
        g.set_shape(n, shapes.infer(g.op(n), [g.shape(s) for s in ins], names, g.loc(n)))
    return g
