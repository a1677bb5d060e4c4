"""Text forms of the IR: a readable listing (golden-tested) and a JSON document.

Both are deterministic: nodes in `Graph.order()`, attributes in declaration order.
"""
from __future__ import annotations

import json

from fractalc import ir

_SHORT = {"out_channels": "out", "kernel": "k", "stride": "s", "padding": "p",
          "padding_mode": "pad", "out_features": "out", "global_": "global"}


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _fmt_op(op: ir.Op) -> str:
    parts = []
    for k, v in ir.op_attrs(op).items():
        if k == "shape":
            v = _fmt_shape(v)
        elif isinstance(v, bool):
            if k in ("bias", "global_") and not v:
                continue
            v = str(v).lower()
        parts.append(f"{_SHORT.get(k, k)}={v}")
    return f"{ir.op_name(op)}({', '.join(parts)})"


def format_ir(g: ir.Graph) -> str:
    """One line per node: ``id = Op(attrs)(inputs) : shape``."""
    order = g.order()
    width = max(len(n) for n in order)
    lines = [f"graph {g.name}  # {len(order)} nodes"]
    for n in order:
        ins = ", ".join(g.inputs(n))
        call = f"({ins})" if ins else ""
        lines.append(f"  {n:<{width}} = {_fmt_op(g.op(n))}{call} : {_fmt_shape(g.shape(n))}")
    return "\n".join(lines) + "\n"


def ir_to_json(g: ir.Graph) -> str:
    nodes = []
    for n in g.order():
        op = g.op(n)
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ir.op_attrs(op).items()}
        loc = g.loc(n)
        nodes.append({"id": n, "op": ir.op_name(op), "attrs": attrs, "inputs": list(g.inputs(n)),
                      "shape": list(g.shape(n)), "loc": str(loc) if loc else None})
    return json.dumps({"graph": g.name, "nodes": nodes}, indent=1) + "\n"


def _refuse(options: dict, target: str) -> None:
    from fractalc.errors import FractalcError
    # --column is applied by the compile command before any target runs.
    used = [k for k, v in options.items() if v not in (None, False, ()) and k != "column"]
    if used:
        raise FractalcError(f"target {target!r} takes no --{used[0].replace('_', '-')} option")


def emit_ir(compiled, output, options):
    _refuse(options, "ir")
    return format_ir(compiled.graph)


def emit_json(compiled, output, options):
    _refuse(options, "json")
    return ir_to_json(compiled.graph)
