"""How each IR node kind looks: colour, shape, label text, legend entry.

Every kind the paper's figures distinguish gets its own fill colour *and* shape, so a diagram
stays readable in grey scale: binary convs are blue boxes, full-precision convs orange 3-D
boxes, joins red funnels (fan-in), residual adds white circles, concats green cylinders (the
feature stack), pooling lilac folders. Collapsed scopes (``--depth``) are grey rounded boxes.
"""
from __future__ import annotations

from collections.abc import Mapping

from fractalc import ir
from fractalc.ir import ops


class _TableView(Mapping):
    """A read-only view of one diagram field of every op-table entry, by op name, in table
    order (the legend order), followed by diagram-only kinds such as collapsed scopes."""

    def __init__(self, field: str, extra: dict):
        self._field, self._extra = field, extra

    def _table(self) -> dict:
        return {d.name: getattr(d, self._field) for d in ops.OPS.values()}

    def __getitem__(self, kind: str):
        table = self._table()
        return table[kind] if kind in table else self._extra[kind]

    def __iter__(self):
        return iter([*self._table(), *self._extra])

    def __len__(self) -> int:
        return len(ops.OPS) + len(self._extra)


#: Node style per kind (the IR op name, or "scope" for a collapsed scope), in legend order:
#: each op's ``style`` in the op table.
NODE_STYLES: Mapping[str, dict[str, str]] = _TableView(
    "style", {"scope": {"shape": "box", "fillcolor": "#eeeeee", "style": "filled,rounded"}})

#: Legend text per kind: each op's ``legend`` in the op table.
LEGEND_TEXT: Mapping[str, str] = _TableView("legend", {"scope": "collapsed scope"})

#: Edge style per kind: plain data flow, a residual shortcut, the dense feature stack.
EDGE_STYLES: dict[str, dict[str, str]] = {
    "data": {},
    "shortcut": {"style": "dashed", "color": "#666666"},
    "stack": {"style": "bold", "color": "#2a8f7f"},
}

EDGE_LEGEND_TEXT = {"shortcut": "shortcut", "stack": "feature stack"}


def fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def op_summary(op: ir.Op, n_inputs: int) -> str:
    """A short description of what a node computes (second label line): the op table's
    ``summary``."""
    return ops.of(op).describe(op, n_inputs)


def kind_of(op: ir.Op) -> str:
    return ir.op_name(op)


def si(x: float) -> str:
    """1.63e8 -> '163M' (three significant digits)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"
