"""Joins with FractalNet's drop-path, written without data-dependent Python control flow.

Torch-only (copied verbatim into the emitted standalone source).

A join is the element-wise mean of its inputs with equal weights. With drop-path (training
only), each forward pass first draws one `DropPathState` for the whole network:

- ``is_global`` (probability ``global_ratio``): global drop-path for this batch;
- ``column``: the column kept everywhere in global mode, uniform over the columns present in
  the network (``colN`` scope segments of the join inputs).

Then every join averages a subset of its inputs, decided by a 0/1 mask:

- local: each input kept with probability 1 - p; if none survives, one input chosen uniformly
  is kept, so a join never drops every input;
- global: the inputs from the chosen column; a join with no input from that column (it lies
  off the column's path, so its output is zeroed at a later join anyway) keeps all inputs.

Masks are per batch (the whole batch takes the same paths, as in FractalNet) and are applied
by multiplication, so every parameter still receives a (zero) gradient: DistributedDataParallel
needs no ``find_unused_parameters``. All choices are tensor operations, so torch.compile and
torch.export trace them without graph breaks.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


class DropPathState(NamedTuple):
    is_global: torch.Tensor  # bool scalar
    column: torch.Tensor  # int64 scalar
    p: float


def draw_drop_path(columns: Sequence[int], p: float, global_ratio: float,
                   device: torch.device) -> DropPathState:
    """One draw per forward pass: local or global for this batch, and the global column."""
    cols = torch.tensor(list(columns) or [0], dtype=torch.int64, device=device)
    pick = torch.randint(0, cols.numel(), (1,), device=device)
    is_global = torch.rand((), device=device) < global_ratio
    # gather, not cols[pick]: indexing by a 0-d tensor would be data-dependent for tracers.
    return DropPathState(is_global, cols.gather(0, pick).squeeze(0), float(p))


def mean(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Equal-weight mean, summed in input order."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out / len(xs)


def weighted_join(xs: Sequence[torch.Tensor], weights) -> torch.Tensor:
    """``weights[0] * xs[0] + weights[1] * xs[1] + ...``, summed in input order (the lowered
    graph's Mul then Sum). `weights`: floats (a fixed join) or a (n,) Parameter (a learnable
    one). Drop-path does not apply to weighted joins (which inputs to rescale, and how, is not
    FractalNet's definition)."""
    out = xs[0] * weights[0]
    for i in range(1, len(xs)):
        out = out + xs[i] * weights[i]
    return out


def max_join(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Element-wise maximum of `xs` (no drop-path)."""
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def join(xs: Sequence[torch.Tensor], columns: Sequence[int],
         state: DropPathState | None) -> torch.Tensor:
    """Mean of `xs`; with a `state` (training with drop-path), the mean of the kept inputs.

    ``columns[i]`` is the fractal column input i comes from (0: none).
    """
    if state is None:
        return mean(xs)
    n = len(xs)
    device = xs[0].device
    index = torch.arange(n, device=device)
    keep = torch.rand(n, device=device) >= state.p
    rescue = index == torch.randint(0, n, (), device=device)
    keep = keep | (rescue & ~keep.any())
    in_column = torch.tensor(list(columns), dtype=torch.int64, device=device) == state.column
    in_column = in_column | ~in_column.any()
    mask = torch.where(state.is_global, in_column, keep).to(xs[0].dtype)
    out = xs[0] * mask[0]
    for i in range(1, n):
        out = out + xs[i] * mask[i]
    return out / mask.sum()
