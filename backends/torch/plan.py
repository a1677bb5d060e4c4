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
from dataclasses import dataclass, replace
from typing import Any

from fractalc import ir
from fractalc.ir import ops
from fractalc.errors import FractalcError
from fractalc.ir.passes.extract_column import column_of


class TorchBuildError(FractalcError):
    """The IR cannot be turned into a torch module (for example colliding module paths)."""


@dataclass(frozen=True)
class Step:
    """One IR node. ``kind``: input conv bconv bn act pool linear join add concat slice
    dropout output, or the name of an op registered in the op table, whose forward is its
    ``"torch.forward"`` hook ``(layer, inputs, args) -> tensor``. ``args``: the constant
    arguments of its forward (see `build.run_step`). ``layer``: (torch.nn class name, args,
    kwargs) for nodes with parameters, else None."""

    id: str
    kind: str
    inputs: tuple[int, ...]
    args: tuple[Any, ...] = ()
    layer: tuple[str, tuple, tuple[tuple[str, Any], ...]] | None = None
    # the lowered graph's role of the node in eval + binary mode (`exact_roles`): () none,
    # ("conv", folded BN id or None, its scale flag, bits) for a binary conv, ("folded",) or
    # ("sign", scale flag) for a BatchNorm; a float layer computed as the native engine does
    # (floatexact.deployed_float): ("float", folded BN id or None, scale flag), and
    # ("ffolded",) for the BatchNorm folded into such a conv
    exact: tuple = ()


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
    """The step of node `n`: the torch hook of its op-table entry (registered below for the
    built-in kinds; `ops.set_hook(Kind, "torch", fn)` for new ones)."""
    op = g.op(n)
    make = ops.hook(op, "torch")
    return make(g, n, op, tuple(index[s] for s in g.inputs(n)))


def _tensor(g: ir.Graph, n: str, name: str) -> tuple[int, ...]:
    """The shape of parameter tensor `name` of node `n`, from the op table."""
    return next(t.shape for t in ops.tensors(g, n) if t.name == name)


def _input(g, n, op, ins):
    return Step(n, "input", ins)


def _conv(g, n, op, ins):
    out, cin_per_group, k, _ = _tensor(g, n, "weight")
    opts = (("dilation", op.dilation),) if op.dilation != 1 else ()
    layer = ("Conv2d", (cin_per_group * op.groups, out, k),
             (("stride", op.stride), ("padding", op.padding), ("groups", op.groups), ("bias", op.bias)) + opts)
    return Step(n, "conv", ins, (), layer)


def _bconv(g, n, op, ins):
    if op.padding_mode not in ("zero", "one") or op.grad not in ("approxsign", "ste"):
        raise TorchBuildError(f"node {n!r}: unsupported binary conv padding_mode={op.padding_mode!r} "
                              f"or grad={op.grad!r}")
    out, cin, k, _ = _tensor(g, n, "weight")
    # The holder is a plain Conv2d: its `weight` is the latent float weight (out, in/groups, k, k).
    kw = (("stride", op.stride), ("padding", op.padding), ("bias", False))
    if op.groups != 1:
        kw += (("groups", op.groups),)
    layer = ("Conv2d", (cin * op.groups, out, k), kw)
    args = (op.stride, op.padding, op.padding_mode == "one", op.grad)
    if (op.groups, op.dilation, op.binary_input) != (1, 1, True):  # binary_conv2d's trailing options
        args += (op.groups, op.dilation, op.binary_input)
    return Step(n, "bconv", ins, args, layer)


def _bn(g, n, op, ins):
    # scale=false: the layer keeps its weight (fixed at 1: the forward passes no weight, so it
    # gets no gradient); args (False,) selects runtime.batchnorm_noscale
    return Step(n, "bn", ins, () if op.scale else (False,),
                ("BatchNorm2d", _tensor(g, n, "weight"), (("eps", op.eps),)))


def _act(g, n, op, ins):
    if op.fn not in ("relu", "tanh", "sign", "sigmoid", "identity"):
        raise TorchBuildError(f"node {n!r}: unsupported activation {op.fn!r}")
    return Step(n, "act", ins, (op.fn,))


def _pool(g, n, op, ins):
    if op.kind not in ("max", "avg"):
        raise TorchBuildError(f"node {n!r}: unsupported pooling {op.kind!r}")
    return Step(n, "pool", ins, (op.kind, op.kernel, op.stride, op.padding, op.global_))


def _linear(g, n, op, ins):
    out, fan_in = _tensor(g, n, "weight")
    return Step(n, "linear", ins, (), ("Linear", (fan_in, out), (("bias", op.bias),)))


def _join(g, n, op, ins):
    return Step(n, "join", ins, (tuple(column_of(s) for s in g.inputs(n)),))


def _simple(kind: str, *fields):
    def make(g, n, op, ins):
        return Step(n, kind, ins, tuple(getattr(op, f) for f in fields))
    return make


for _kind, _make in [(ir.Input, _input), (ir.Conv, _conv), (ir.BinaryConv, _bconv), (ir.BatchNorm, _bn),
                     (ir.Activation, _act), (ir.Pool, _pool), (ir.Linear, _linear), (ir.Join, _join),
                     (ir.Add, _simple("add")), (ir.Concat, _simple("concat")),
                     (ir.Slice, _simple("slice", "start", "stop")), (ir.Output, _simple("output"))]:
    ops.set_hook(_kind, "torch", _make)
ops.set_hook(ir.Dropout, "torch", lambda g, n, op, ins: Step(n, "dropout", ins, (float(op.p),)))

# Issue 14's per-channel primitives: one runtime.ChannelParams layer each, holding the node's
# (C,) vectors (the op table's tensor names) at their initial values: thresholds and shifts 0,
# scales 1, PReLU slopes 0.25 (torch's and ReActNet's). Their forwards are the "torch.forward"
# hooks in build.py (runtime.rsign, ...), their source lines the "torch.source" hooks in source.py.
RUNTIME_LAYERS = frozenset({"ChannelParams"})  # layer classes of runtime.py rather than torch.nn
_INITIAL = {"threshold": 0.0, "bias": 0.0, "shift_in": 0.0, "shift_out": 0.0}
_INITIAL_WEIGHT = {ir.Scale: 1.0, ir.PReLU: 0.25}


def _channel_params(g, n, op, ins):
    init = tuple((t.name, _INITIAL.get(t.name, _INITIAL_WEIGHT.get(type(op)))) for t in ops.tensors(g, n))
    args = (op.shifts,) if isinstance(op, ir.PReLU) else ()
    return Step(n, ir.op_name(op), ins, args, ("ChannelParams", (g.shape(n)[0],), (("init", init),)))


for _kind in (ir.RSign, ir.Shift, ir.Scale, ir.PReLU):
    ops.set_hook(_kind, "torch", _channel_params)
ops.set_hook(ir.Mul, "torch", lambda g, n, op, ins: Step(n, "Mul", ins))
ops.set_hook(ir.BlurPool, "torch", lambda g, n, op, ins: Step(n, "blurpool", ins, (op.stride,)))


def make_plan(g: ir.Graph) -> Plan:
    """The plan of a verified, shaped graph. Raises `TorchBuildError` for module paths that
    cannot coexist in one module tree."""
    order = g.order()
    index = {n: i for i, n in enumerate(order)}
    steps = tuple(_step(g, n, index) for n in order)
    roles = exact_roles(g)
    steps = tuple(replace(s, exact=roles[s.id]) if s.id in roles else s for s in steps)
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


def exact_roles(g: ir.Graph) -> dict[str, tuple]:
    """Per node, how the lowered graph (backends/onnx/lower.py, whose own decisions these are)
    computes it, which torch eval in binary mode reproduces bit for bit (binarize.deployed_*):
    a binary conv with a binarized input -> ("conv", folded BN or None, BN scale flag, bits
    output); its folded BN -> ("folded",); a BN read only by binary convs -> ("sign", scale flag)."""
    from fractalc.backends.onnx import lower

    plans = lower.plan(g)
    out: dict[str, tuple] = {}
    for n, p in plans.items():
        scale = bool(getattr(g.op(p.bn), "scale", True)) if p.bn else True
        out[n] = ("conv", p.bn, scale, p.bits)
        if p.bn:
            out[p.bn] = ("folded",)
    sign_bns = lower.sign_only_bns(g, plans)
    for n in sign_bns:
        out[n] = ("sign", bool(getattr(g.op(n), "scale", True)))
    for n, role in float_roles(g, set(out)).items():
        out.setdefault(n, role)
    return out


def _readers(g: ir.Graph, n: str) -> list[str]:
    """The nodes reading `n`'s value, looking through Dropouts (no node in ONNX: an alias)."""
    out = []
    for c in g.consumers(n):
        out += _readers(g, c) if isinstance(g.op(c), ir.Dropout) else [c]
    return out


def float_roles(g: ir.Graph, taken: set[str]) -> dict[str, tuple]:
    """The float layers of `g` the native engine computes with its own arithmetic
    (docs/float-arithmetic.md), skipping nodes in `taken` (binary roles): a float conv (or a
    BinaryConv with ``binary_input=false``, a float conv in the lowered graph) with the
    BatchNorm the engine folds into it (the conv's only reader, not a sign-only BN), a
    BatchNorm, a linear layer, a pool, a ReLU, a blur pool, a scale node, a weighted join, a
    max join."""
    out: dict[str, tuple] = {}
    for n in g.order():
        op = g.op(n)
        if n in taken or n in out:
            continue
        if isinstance(op, ir.Conv) or (isinstance(op, ir.BinaryConv) and not op.binary_input):
            rd = _readers(g, n)
            bn = rd[0] if len(rd) == 1 and isinstance(g.op(rd[0]), ir.BatchNorm) and rd[0] not in taken else None
            out[n] = ("float", bn, bool(g.op(bn).scale) if bn else True)
            if bn:
                out[bn] = ("ffolded",)
        elif isinstance(op, ir.BatchNorm):
            out[n] = ("float", None, bool(op.scale))
        elif isinstance(op, (ir.Linear, ir.Pool, ir.BlurPool, ir.Scale, ir.WeightedJoin, ir.MaxJoin)) \
                or (isinstance(op, ir.Activation) and op.fn == "relu"):
            out[n] = ("float", None, True)
    return out


# Issue 14's joins: a weighted join's forward is drop_path.weighted_join (a learnable one holds
# its n weights in a runtime.ChannelParams layer, "weight", 1/n each), a max join's max_join.
def _weighted_join(g, n, op, ins):
    if op.learn:
        init = (("weight", 1.0 / len(ins)),)
        return Step(n, "WeightedJoin", ins, (), ("ChannelParams", (len(ins),), (("init", init),)))
    return Step(n, "WeightedJoin", ins, (tuple(float(w) for w in op.weights),))


ops.set_hook(ir.WeightedJoin, "torch", _weighted_join)
ops.set_hook(ir.MaxJoin, "torch", lambda g, n, op, ins: Step(n, "MaxJoin", ins))
