"""Compile targets ``onnx`` and ``onnx-xnor`` (registered in fractalc/targets.py)."""
from __future__ import annotations

from fractalc.errors import FractalcError


def _graph_for(compiled, options: dict):
    """The graph to export: the whole network, or one fractal column (--column)."""
    column = options.get("column")
    if column is None:
        return compiled, {}
    if getattr(compiled, "column", None) == column:  # the CLI extracted it already
        return compiled, {"fractalc.column": str(column)}
    try:
        from fractalc.ir.passes.extract_column import extract_column
    except ImportError:
        raise FractalcError("--column needs the extract_column pass, which this fractalc lacks") from None
    import copy
    c = copy.copy(compiled)
    c.graph = extract_column(compiled.graph, column)
    return c, {"fractalc.column": str(column)}


def build(compiled, options: dict, flavour: str):
    """The ModelProto of `compiled` for `flavour` ("onnx" | "onnx-xnor"), checked."""
    from . import weights
    from .export import to_onnx
    from .loader import load_model
    from .lower import to_onnx_xnor

    unknown = sorted(k for k, v in options.items() if v is not None and k not in ("seed", "weights", "column"))
    if unknown:
        raise FractalcError(f"target {flavour!r} takes no --{unknown[0].replace('_', '-')} option")
    c, extra = _graph_for(compiled, options)
    state, source = weights.resolve(c, options)
    make = to_onnx if flavour == "onnx" else to_onnx_xnor
    proto = make(c, state, source, extra)
    return load_model(proto)  # the full checker, with our schemas: a failure here is a bug


def _emit(compiled, output, options, flavour):
    if output is None:
        raise FractalcError(f"target {flavour!r} writes a binary file: give -o FILE.onnx")
    from fractalc.fileio import atomic_write
    proto = build(compiled, options, flavour)
    atomic_write(output, proto.SerializeToString(deterministic=True))
    return None


def emit_onnx(compiled, output, options):
    return _emit(compiled, output, options, "onnx")


def emit_onnx_xnor(compiled, output, options):
    return _emit(compiled, output, options, "onnx-xnor")
