"""How each IR node kind looks: colour, shape, label text, legend entry.

Every kind the paper's figures distinguish gets its own fill colour *and* shape, so a diagram
stays readable in grey scale: binary convs are blue boxes, full-precision convs orange 3-D
boxes, joins red funnels (fan-in), residual adds white circles, concats green cylinders (the
feature stack), pooling lilac folders. Collapsed scopes (``--depth``) are grey rounded boxes.
"""
from __future__ import annotations

from fractalc import ir

#: Node style per kind (the IR op name, or "scope" for a collapsed scope), in legend order.
NODE_STYLES: dict[str, dict[str, str]] = {
    "Input": {"shape": "invhouse", "fillcolor": "#dddddd"},
    "BinaryConv": {"shape": "box", "fillcolor": "#3d7cc9", "fontcolor": "white"},
    "Conv": {"shape": "box3d", "fillcolor": "#f4a24c"},
    "BatchNorm": {"shape": "ellipse", "fillcolor": "#b9e3ae"},
    "Activation": {"shape": "hexagon", "fillcolor": "#fff09a"},
    "Pool": {"shape": "folder", "fillcolor": "#d5c3ef"},
    "Linear": {"shape": "component", "fillcolor": "#f08c8c"},
    "Join": {"shape": "invtriangle", "fillcolor": "#d9455f", "fontcolor": "white"},
    "Add": {"shape": "circle", "fillcolor": "#ffffff"},
    "Concat": {"shape": "cylinder", "fillcolor": "#7cc6b6"},
    "Slice": {"shape": "cds", "fillcolor": "#c8e6f5"},
    "Dropout": {"shape": "octagon", "fillcolor": "#f3f3f3", "style": "filled,dashed"},
    "Output": {"shape": "house", "fillcolor": "#dddddd"},
    "scope": {"shape": "box", "fillcolor": "#eeeeee", "style": "filled,rounded"},
}

LEGEND_TEXT: dict[str, str] = {
    "Input": "input", "BinaryConv": "binary conv", "Conv": "full-precision conv",
    "BatchNorm": "batch norm", "Activation": "activation", "Pool": "pooling",
    "Linear": "linear (FC)", "Join": "join (mean)", "Add": "residual add",
    "Concat": "concat (stack)", "Slice": "channel slice", "Dropout": "dropout",
    "Output": "output", "scope": "collapsed scope",
}

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
    """A short description of what a node computes (second label line)."""
    if isinstance(op, (ir.Conv, ir.BinaryConv)):
        text = ("bconv" if isinstance(op, ir.BinaryConv) else "conv") + f" {op.kernel}x{op.kernel}"
        if op.stride != 1:
            text += f"/{op.stride}"
        text += f", {op.out_channels}"
        if isinstance(op, ir.Conv) and op.groups != 1:
            text += f" g{op.groups}"
        if isinstance(op, ir.BinaryConv) and op.padding_mode != "zero":
            text += f" pad {op.padding_mode}"
        return text
    if isinstance(op, ir.BatchNorm):
        return "BN"
    if isinstance(op, ir.Activation):
        return op.fn
    if isinstance(op, ir.Pool):
        if op.global_:
            return f"global {op.kind}pool"
        return f"{op.kind}pool {op.kernel}x{op.kernel}" + (f"/{op.stride}" if op.stride not in (0, op.kernel) else "")
    if isinstance(op, ir.Linear):
        return f"linear {op.out_features}"
    if isinstance(op, ir.Join):
        return f"join {n_inputs}"
    if isinstance(op, ir.Add):
        return "+"
    if isinstance(op, ir.Concat):
        return "concat"
    if isinstance(op, ir.Slice):
        return f"slice {op.start}:{op.stop}"
    if isinstance(op, ir.Dropout):
        return f"dropout {op.p:g}"
    return ir.op_name(op).lower()


def kind_of(op: ir.Op) -> str:
    return ir.op_name(op)


def si(x: float) -> str:
    """1.63e8 -> '163M' (three significant digits)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"
