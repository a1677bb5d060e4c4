"""extract_column: the plain network made of one fractal column (FractalNet's column extraction).

A node belongs to column N when the last ``colK`` segment of its id has K = N (ids such as
``stage2.block1.col3.conv1``; col1 is the deepest column). `column_of` gives K (0: none).

Rewrite rules, for ``extract_column(graph, N)``:
1. Walking back from the Output, at every Join only the inputs from column N are followed
   (kept, in order); every other input is dropped.
2. A Join left with one input is removed and its consumers read that input instead; a Join
   left with several column-N inputs stays (it averages them).
3. Nodes no longer reaching the Output are removed.

Ids are unchanged, so a full model's state_dict loads into the column model with
``strict=False``: every key the column model has is present, and the unexpected keys are
exactly those of the dropped branches.

If a Join that remains on the column's path has no input from column N (for example N is
larger than the number of columns of some block), the pass raises `FractalcError` naming the
join and the columns it offers; nothing is guessed. A graph without joins is returned
unchanged (a copy).

Requires: a verified graph (shapes are re-inferred and the result is verified).
Ensures: no Join has fewer than 2 inputs; every Join input is from column N.
"""
from __future__ import annotations

import re

from fractalc import ir
from fractalc.errors import FractalcError
from fractalc.ir.passes.infer_shapes import infer_shapes
from fractalc.ir.passes.verify import verify

_COL = re.compile(r"col(\d+)")


def column_of(node_id: str) -> int:
    """K of the last ``colK`` segment of `node_id`, or 0 when it has none."""
    for seg in reversed(node_id.split(".")):
        m = _COL.fullmatch(seg)
        if m:
            return int(m.group(1))
    return 0


def columns(graph: ir.Graph) -> tuple[int, ...]:
    """The sorted columns that feed some Join of `graph`."""
    return tuple(sorted({column_of(s) for j in graph.nodes(ir.Join) for s in graph.inputs(j)} - {0}))


def extract_column(graph: ir.Graph, column: int) -> ir.Graph:
    if column < 1:
        raise FractalcError(f"--column must be a positive column number (1 = deepest), got {column}")
    g = graph.copy()
    available = columns(g)
    if available and column not in available:
        raise FractalcError(f"graph {g.name!r} has no column {column}; its joins take columns "
                            + ", ".join(map(str, available)))
    kept_inputs: dict[str, tuple[str, ...]] = {}
    live: set[str] = set()
    stack = [g.output_id]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        ins = g.inputs(n)
        if isinstance(g.op(n), ir.Join):
            ins = tuple(s for s in ins if column_of(s) == column)
            if not ins:
                offered = sorted({column_of(s) for s in g.inputs(n)})
                raise FractalcError(
                    f"join {n!r} has no input from column {column} (its inputs come from columns "
                    f"{', '.join(map(str, offered))}), so column {column} is not a path through "
                    f"the network", hint="choose a column every block has, e.g. --column 1")
            kept_inputs[n] = ins
        stack.extend(ins)
    for n in [n for n in g.order() if n not in live]:
        g.remove(n)
    for j, ins in kept_inputs.items():
        g.set_inputs(j, ins)
    # Bypass single-input joins, in order, so a chain of them resolves to its first real input.
    for j in [n for n in g.order() if n in kept_inputs and len(kept_inputs[n]) == 1]:
        src = g.inputs(j)[0]
        for c in g.consumers(j):
            g.set_inputs(c, tuple(src if s == j else s for s in g.inputs(c)))
        g.remove(j)
    g = infer_shapes(g)
    verify(g)
    return g
