"""Shape rules for every IR node kind: the single place that says what shape a node outputs.

Used while expanding (so a mismatch is reported at the spec position that caused it) and by
the `infer_shapes` pass. Shapes exclude the batch dimension: ``(C, H, W)`` or ``(F,)``.
"""
from __future__ import annotations

from . import ir
from .errors import Loc, ShapeError
from .limits import MAX_DIM, MAX_TENSOR_ELEMENTS


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def _spatial(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def infer(op: ir.Op, in_shapes: list[tuple[int, ...]], names: list[str] | None = None,
          loc: Loc | None = None) -> tuple[int, ...]:
    """Output shape of `op` given its input shapes; raises `ShapeError` (located at `loc`),
    also when the output is over the size limits of `fractalc.limits`."""
    shape = _infer(op, in_shapes, names, loc)
    if any(d > MAX_DIM for d in shape):
        raise ShapeError(f"{type(op).__name__.lower()} output {_fmt(shape)} has a dimension over "
                         f"the limit of {MAX_DIM:,}", loc)
    n = 1
    for d in shape:
        n *= d
    if n > MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"{type(op).__name__.lower()} output {_fmt(shape)} has {n:,} elements per "
                         f"sample, over the limit of {MAX_TENSOR_ELEMENTS:,}", loc)
    return shape


def _infer(op: ir.Op, in_shapes: list[tuple[int, ...]], names: list[str] | None,
           loc: Loc | None) -> tuple[int, ...]:
    names = names or [f"input {i + 1}" for i in range(len(in_shapes))]
    kind = type(op).__name__.lower()

    def fail(msg: str):
        raise ShapeError(msg, loc)

    def need_chw(i=0):
        if len(in_shapes[i]) != 3:
            fail(f"{kind} needs a CxHxW input, got {_fmt(in_shapes[i])} from {names[i]} "
                 "(a linear layer's output cannot feed it)")
        return in_shapes[i]

    if isinstance(op, ir.Input):
        if len(op.shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in op.shape):
            fail(f"input shape must be three positive integers [channels, height, width], got {list(op.shape)}")
        return tuple(op.shape)
    if isinstance(op, (ir.Conv, ir.BinaryConv)):
        c, h, w = need_chw()
        if op.out_channels <= 0:
            fail(f"conv output channels must be positive, got {op.out_channels}")
        if op.kernel <= 0 or op.stride <= 0 or op.padding < 0:
            fail(f"conv kernel and stride must be positive and padding non-negative, got "
                 f"k={op.kernel}, s={op.stride}, p={op.padding}")
        groups = getattr(op, "groups", 1)
        if groups <= 0 or c % groups or op.out_channels % groups:
            fail(f"conv groups={groups} must divide input channels {c} and output channels {op.out_channels}")
        oh, ow = _spatial(h, op.kernel, op.stride, op.padding), _spatial(w, op.kernel, op.stride, op.padding)
        if oh <= 0 or ow <= 0:
            fail(f"conv k={op.kernel}, s={op.stride}, p={op.padding} on a {h}x{w} input gives an "
                 f"empty {oh}x{ow} output")
        return (op.out_channels, oh, ow)
    if isinstance(op, (ir.BatchNorm, ir.Activation, ir.Dropout, ir.Output)):
        if isinstance(op, ir.BatchNorm):
            need_chw()
        return tuple(in_shapes[0])
    if isinstance(op, ir.Pool):
        c, h, w = need_chw()
        if op.global_:
            return (c, 1, 1)
        if op.kernel <= 0 or op.stride <= 0 or op.padding < 0 or 2 * op.padding > op.kernel:
            fail(f"{op.kind}pool needs kernel > 0, stride > 0 and 0 <= padding <= kernel/2, got "
                 f"k={op.kernel}, s={op.stride}, p={op.padding}")
        oh, ow = _spatial(h, op.kernel, op.stride, op.padding), _spatial(w, op.kernel, op.stride, op.padding)
        if oh <= 0 or ow <= 0:
            fail(f"{op.kind}pool k={op.kernel}, s={op.stride} on a {h}x{w} input gives an empty output")
        return (c, oh, ow)
    if isinstance(op, ir.Linear):
        if op.out_features <= 0:
            fail(f"linear output features must be positive, got {op.out_features}")
        return (op.out_features,)
    if isinstance(op, (ir.Join, ir.Add)):
        word = "join" if isinstance(op, ir.Join) else "add"
        if len(in_shapes) < 2:
            fail(f"{word} needs at least 2 inputs, got {len(in_shapes)}")
        first = in_shapes[0]
        for name, shp in zip(names[1:], in_shapes[1:]):
            if shp != first:
                what = "channel" if len(shp) == len(first) == 3 and shp[1:] == first[1:] else "shape"
                fail(f"{what} mismatch at {word}: {names[0]} is {_fmt(first)} but {name} is {_fmt(shp)}")
        return tuple(first)
    if isinstance(op, ir.Concat):
        if len(in_shapes) < 2:
            fail(f"concat needs at least 2 inputs, got {len(in_shapes)}")
        for i in range(len(in_shapes)):
            need_chw(i)
        first = in_shapes[0]
        for name, shp in zip(names[1:], in_shapes[1:]):
            if shp[1:] != first[1:]:
                fail(f"spatial size mismatch at concat: {names[0]} is {_fmt(first)} but {name} is {_fmt(shp)}")
        return (sum(s[0] for s in in_shapes),) + tuple(first[1:])
    if isinstance(op, ir.Slice):
        c, h, w = need_chw()
        if not (0 <= op.start < op.stop <= c):
            fail(f"slice [{op.start}, {op.stop}) is out of range for {c} channels")
        return (op.stop - op.start, h, w)
    raise ShapeError(f"no shape rule for {type(op).__name__}", loc)  # the IR is closed: a bug
