"""Shape inference: the output shape of a node, by the shape rule of its op-table entry.

Used while expanding (so a mismatch is reported at the spec position that caused it) and by
the `infer_shapes` pass. Shapes exclude the batch dimension: ``(C, H, W)`` or ``(F,)``.
"""
from __future__ import annotations

from fractalc import ir
from fractalc.ir import ops
from fractalc.errors import FractalcError, Loc, ShapeError
from fractalc.limits import MAX_DIM, MAX_TENSOR_ELEMENTS


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def infer(op: ir.Op, in_shapes: list[tuple[int, ...]], names: list[str] | None = None,
          loc: Loc | None = None) -> tuple[int, ...]:
    """Output shape of `op` given its input shapes; raises `ShapeError` (located at `loc`),
    also when the output is over the size limits of `fractalc.limits`."""
    names = names or [f"input {i + 1}" for i in range(len(in_shapes))]

    def fail(msg: str):
        raise ShapeError(msg, loc)

    try:
        d = ops.of(op)
    except FractalcError:
        raise ShapeError(f"no shape rule for {type(op).__name__}", loc) from None
    shape = tuple(d.shape(op, [tuple(s) for s in in_shapes], names, fail))
    if any(x > MAX_DIM for x in shape):
        raise ShapeError(f"{type(op).__name__.lower()} output {_fmt(shape)} has a dimension over "
                         f"the limit of {MAX_DIM:,}", loc)
    n = 1
    for x in shape:
        n *= x
    if n > MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"{type(op).__name__.lower()} output {_fmt(shape)} has {n:,} elements per "
                         f"sample, over the limit of {MAX_TENSOR_ELEMENTS:,}", loc)
    return shape
