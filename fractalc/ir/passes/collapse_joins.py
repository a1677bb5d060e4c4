"""collapse_joins: merge adjacent joins (FractalNet's definition).

Rewrite rule: a Join J whose only consumer is another Join K (and which feeds K once) is
removed; J's inputs take J's place in K's input list, in order. K then averages all of its
inputs with equal weight. Applied until no such pair remains, so the pass is idempotent.
Requires: a graph from `expand`. Ensures: no Join has a Join as its only consumer.
"""
from __future__ import annotations

from fractalc import ir


def collapse_joins(graph: ir.Graph) -> ir.Graph:
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        for j in list(g.nodes(ir.Join)):
            consumers = g.consumers(j)
            if len(consumers) != 1:
                continue
            k = consumers[0]
            if not isinstance(g.op(k), ir.Join) or g.inputs(k).count(j) != 1:
                continue
            new_inputs: list[str] = []
            for src in g.inputs(k):
                new_inputs.extend(g.inputs(j) if src == j else [src])
            g.remove(j)
            g.set_inputs(k, tuple(new_inputs))
            changed = True
    return g
