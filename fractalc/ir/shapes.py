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


class InputNames:
    """The inputs' names in shape errors: ``input 1``, ``input 2``, ... or, given their ids,
    ``input 1 (stage1.conv2)``; a sequence whose items are made when read (only an error
    message reads them, and every node's shape is inferred two or three times)."""

    __slots__ = ("_n", "_ids")

    def __init__(self, n: int, ids=None):
        self._n = n
        self._ids = ids

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError("input index out of range")
        i %= self._n
        return f"input {i + 1}" if self._ids is None else f"input {i + 1} ({self._ids[i]})"


def infer(op: ir.Op, in_shapes: list[tuple[int, ...]], names=None,
          loc: Loc | None = None) -> tuple[int, ...]:
    """Output shape of `op` given its input shapes; raises `ShapeError` (located at `loc`),
    also when the output is over the size limits of `fractalc.limits`. `names` name the
    inputs in errors (a sequence of strings; default `InputNames`)."""
    names = names or InputNames(len(in_shapes))

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
