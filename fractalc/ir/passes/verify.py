"""verify: check the IR invariants; raises `IRError` naming the node. Changes nothing.

Invariants: acyclic; exactly one Input (no inputs) and one Output (one input, no consumers);
every node reachable from the Input and reaching the Output; ``inputs`` and edges agree; every
op is one of the closed set of kinds; every node has a shape consistent with `shapes.infer`;
ids are non-empty dotted paths of identifier characters.
"""
from __future__ import annotations

import re

from fractalc import ir
from fractalc.ir import ops, shapes
from fractalc.errors import FractalcError

_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class IRError(FractalcError):
    """The IR breaks an invariant (a compiler bug or a hand-edited graph)."""


def verify(graph: ir.Graph) -> None:
    g = graph
    try:
        g.order()
    except ir.CycleError:
        raise IRError(f"graph {graph.name!r} has a cycle") from None
    inputs = [n for n in g if isinstance(g.op(n), ir.Input)]
    outputs = [n for n in g if isinstance(g.op(n), ir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise IRError(f"graph {graph.name!r} needs one Input and one Output, has {len(inputs)} and {len(outputs)}")
    (inp,), (out,) = inputs, outputs
    reach = g.descendants(inp) | {inp}
    back = g.ancestors(out) | {out}
    for n in g:
        d = g.attrs(n)
        op = d["op"]
        if type(op) not in ops.OPS:
            raise IRError(f"node {n!r} has an unknown op {op!r}")
        if not _ID.fullmatch(n):
            raise IRError(f"node id {n!r} is not a dotted path")
        ins = d["inputs"]
        if set(ins) != set(g.predecessors(n)):
            raise IRError(f"node {n!r}: inputs {ins} disagree with the graph edges")
        if isinstance(op, ir.Input) and ins:
            raise IRError(f"Input {n!r} has inputs")
        if not isinstance(op, ir.Input) and not ins:
            raise IRError(f"node {n!r} has no inputs")
        if isinstance(op, ir.Output) and (len(ins) != 1 or g.consumers(n)):
            raise IRError(f"Output {n!r} must have one input and no consumers")
        if n not in reach:
            raise IRError(f"node {n!r} is not reachable from the input")
        if n not in back:
            raise IRError(f"node {n!r} does not contribute to the output (dead code)")
        if "shape" not in d:
            raise IRError(f"node {n!r} has no shape; run infer_shapes first")
        want = shapes.infer(op, [g.shape(s) for s in ins], None, d.get("loc"))
        if tuple(d["shape"]) != want:
            raise IRError(f"node {n!r} has shape {d['shape']}, its inputs give {want}")
