"""IR graph -> execution plan: the one description both torch builders follow.

The plan is computed once, before any module exists, and is plain data (no torch import):
the steps in the graph's deterministic topological order, each with its kind, the indices of
its inputs, the constant arguments of its forward call and, for nodes with parameters, the
torch layer to create (class name, positional and keyword arguments). `build.py` interprets
it; `source.py` prints it as straight-line Python. Both therefore agree on module paths, on
the initialisation order (the order of the steps) and on every op of the forward.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

from fractalc import ir
from fractalc.errors import FractalcError
from fractalc.passes.extract_column import column_of


class TorchBuildError(FractalcError):
    """The IR cannot be turned into a torch module (for example colliding module paths)."""


@dataclass(frozen=True)
class Step:
    """One IR node. ``kind``: input conv bconv bn act pool linear join add concat slice
    dropout output. ``args``: the constant arguments of its forward (see `build.run_step`).
    ``layer``: (torch.nn class name, args, kwargs) for nodes with parameters, else None."""

    id: str
    kind: str
    inputs: tuple[int, ...]
    args: tuple[Any, ...] = ()
    layer: tuple[str, tuple, tuple[tuple[str, Any], ...]] | None = None


@dataclass(frozen=True)
class Plan:
    name: str
    class_name: str
    steps: tuple[Step, ...]
    output: int  # index of the Output step
    columns: tuple[int, ...]  # fractal columns feeding joins (drop-path's global choices)
    has_binary: bool
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def layers(self) -> list[Step]:
        return [s for s in self.steps if s.layer is not None]


def class_name(name: str) -> str:
    """A valid CamelCase class name for a network name: rf_c3d4 -> RfC3d4."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    if out[0].isdigit():
        out = "Net" + out
    if keyword.iskeyword(out):
        out += "Net"
    return out


def _step(g: ir.Graph, n: str, index: dict[str, int]) -> Step:
    op = g.op(n)
    ins = tuple(index[s] for s in g.inputs(n))
    in_shape = tuple(g.shape(g.inputs(n)[0])) if g.inputs(n) else ()
    if isinstance(op, ir.Input):
        return Step(n, "input", ins)
    if isinstance(op, ir.Conv):
        layer = ("Conv2d", (in_shape[0], op.out_channels, op.kernel),
                 (("stride", op.stride), ("padding", op.padding), ("groups", op.groups), ("bias", op.bias)))
        return Step(n, "conv", ins, (), layer)
    if isinstance(op, ir.BinaryConv):
        if op.padding_mode not in ("zero", "one") or op.grad not in ("approxsign", "ste"):
            raise TorchBuildError(f"node {n!r}: unsupported binary conv padding_mode={op.padding_mode!r} "
                                  f"or grad={op.grad!r}")
        # The holder is a plain Conv2d: its `weight` is the latent float weight.
        layer = ("Conv2d", (in_shape[0], op.out_channels, op.kernel),
                 (("stride", op.stride), ("padding", op.padding), ("bias", False)))
        return Step(n, "bconv", ins, (op.stride, op.padding, op.padding_mode == "one", op.grad), layer)
    if isinstance(op, ir.BatchNorm):
        return Step(n, "bn", ins, (), ("BatchNorm2d", (in_shape[0],), (("eps", op.eps),)))
    if isinstance(op, ir.Activation):
        if op.fn not in ("relu", "tanh", "sign", "identity"):
            raise TorchBuildError(f"node {n!r}: unsupported activation {op.fn!r}")
        return Step(n, "act", ins, (op.fn,))
    if isinstance(op, ir.Pool):
        if op.kind not in ("max", "avg"):
            raise TorchBuildError(f"node {n!r}: unsupported pooling {op.kind!r}")
        return Step(n, "pool", ins, (op.kind, op.kernel, op.stride, op.padding, op.global_))
    if isinstance(op, ir.Linear):
        fan_in = 1
        for d in in_shape:
            fan_in *= d
        return Step(n, "linear", ins, (), ("Linear", (fan_in, op.out_features), (("bias", op.bias),)))
    if isinstance(op, ir.Join):
        return Step(n, "join", ins, (tuple(column_of(s) for s in g.inputs(n)),))
    if isinstance(op, ir.Add):
        return Step(n, "add", ins)
    if isinstance(op, ir.Concat):
        return Step(n, "concat", ins)
    if isinstance(op, ir.Slice):
        return Step(n, "slice", ins, (op.start, op.stop))
    if isinstance(op, ir.Dropout):
        return Step(n, "dropout", ins, (float(op.p),))
    if isinstance(op, ir.Output):
        return Step(n, "output", ins)
    raise TorchBuildError(f"node {n!r}: the torch backend has no rule for {ir.op_name(op)}")


def make_plan(g: ir.Graph) -> Plan:
    """The plan of a verified, shaped graph. Raises `TorchBuildError` for module paths that
    cannot coexist in one module tree."""
    order = g.order()
    index = {n: i for i, n in enumerate(order)}
    steps = tuple(_step(g, n, index) for n in order)
    plan = Plan(
        name=g.name, class_name=class_name(g.name), steps=steps, output=index[g.output_id],
        columns=tuple(sorted({c for s in steps if s.kind == "join" for c in s.args[0]} - {0})),
        has_binary=any(s.kind == "bconv" for s in steps),
        input_shape=tuple(g.shape(g.input_id)), output_shape=tuple(g.shape(g.output_id)))
    check_paths(plan)
    return plan


def check_paths(plan: Plan) -> None:
    """Every layer gets the module path equal to its id, or a clear error says why it cannot.

    A layer's id must not be a prefix of another layer's id (a module cannot be both a layer
    and a container), and no path segment may shadow an attribute of the network class or of
    nn.ModuleDict (``training``, ``keys``, ``forward``, ...).
    """
    import torch.nn as nn

    from .runtime import NetworkControls

    top_reserved = set(dir(nn.Module())) | set(dir(NetworkControls))
    dict_reserved = set(dir(nn.ModuleDict()))
    ids = sorted(s.id for s in plan.layers)
    for a, b in zip(ids, ids[1:]):
        if b.startswith(a + "."):
            raise TorchBuildError(f"module path collision: layer {a!r} would also have to contain "
                                  f"layer {b!r}; rename one of them in the spec")
    for i in ids:
        segs = i.split(".")
        bad = (segs[0] in top_reserved or segs[0].startswith("_fc_")
               or any(s in dict_reserved for s in segs[1:]))
        if bad:
            raise TorchBuildError(f"module path collision: a segment of layer id {i!r} is a reserved "
                                  "torch attribute name; rename it in the spec")
