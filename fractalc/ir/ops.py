"""The op table: everything fractalc knows about each kind of IR node, declared once.

One `OpDef` per IR kind says:

- ``prims``: the language primitives that create it (name, parameters with types and
  defaults, tensor count, node-id stem, and ``make``: bound arguments -> IR op);
- ``shape``: the output shape rule (raises through ``fail`` with a message);
- ``tensors``: its parameter tensors (state_dict suffix, shape, role) given its input and
  output shapes: the one source of parameter shapes for the cost model, the ONNX weights and
  the torch builder;
- ``mults``: its multiplications (float, binary), the cost model's FLOP count;
- ``style``, ``legend``, ``summary``: how diagrams draw it;
- ``depth``: whether it counts as a layer of the depth in a model's name;
- ``hooks``: what each backend registered for it (``"torch"``, ``"onnx"``, ...). A backend
  looks its hook up with `hook`, which names the op when the backend has none.

Adding a primitive is one `register(OpDef(...))` plus one `set_hook` per backend that should
handle it (see tests/test_op_table.py, which adds one without touching any backend file).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from fractalc import ir
from fractalc.errors import FractalcError
from fractalc.records import field, record

REQUIRED = object()  # a primitive parameter without a default

Shape = tuple[int, ...]


class MissingHook(FractalcError):
    """A backend has no hook for an op kind (an op registered without that backend's support)."""


@record
class PrimSpec:
    """A language primitive: ``name[params](tensors)`` in a spec."""

    name: str
    params: tuple[tuple[str, str, object], ...]  # (name, type, default or REQUIRED)
    tensors: int  # number of tensor inputs; -1 = two or more
    doc: str
    stem: str = ""  # node-id stem (``conv`` in ``stage1.conv2``); default: the name
    make: Callable[[dict], Any] | None = None  # bound arguments -> IR op (None: no node)
    check: Callable[[dict], str | None] | None = None  # bound arguments -> error message

    @property
    def id_stem(self) -> str:
        return self.stem or self.name


def p(name: str, typ: str, default=REQUIRED) -> tuple[str, str, object]:
    """One primitive parameter: (name, type: int | num | bool | str, default)."""
    return (name, typ, default)


@record
class Tensor:
    """A parameter tensor of a node: ``<node id>.<name>`` in a state_dict.

    role: "float" (a learned float parameter), "binary" (a weight used through its sign: one
    bit each; torch keeps a float latent), "bn" (a learned BN scale/shift: float, and reported
    as BN), "buffer" (running statistics: stored, not learned, not a parameter), "fixed" (a
    constant the op itself defines, e.g. the blur kernel: no state_dict entry, but counted as
    float parameters, as larq counts fixed kernels)."""

    name: str
    shape: Shape
    role: str = "float"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _no_tensors(op, ins, out) -> tuple[Tensor, ...]:
    return ()


def _no_mults(op, ins, out) -> tuple[int, int]:
    return (0, 0)


@record(frozen=False)
class OpDef:
    kind: type
    shape: Callable[[Any, list[Shape], list[str], Callable[[str], None]], Shape]  # op, inputs, names, fail
    prims: tuple[PrimSpec, ...] = ()
    tensors: Callable[[Any, list[Shape], Shape], tuple[Tensor, ...]] = _no_tensors
    mults: Callable[[Any, list[Shape], Shape], tuple[int, int]] = _no_mults
    style: dict[str, str] = field(default_factory=dict)
    legend: str = ""
    summary: Callable[[Any, int], str] | None = None
    depth: bool = False
    hooks: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kind.__name__

    def describe(self, op, n_inputs: int) -> str:
        return self.summary(op, n_inputs) if self.summary else self.name.lower()


OPS: dict[type, OpDef] = {}

#: The language's primitives by name (every `OpDef.prims`), kept in step by `register`.
PRIMS: dict[str, PrimSpec] = {}

#: Scalar builtins, called with parentheses: round(x / 32) * 32, channels(z), ...
BUILTINS = ("round", "round_even", "floor", "ceil", "min", "max", "abs", "int", "pow", "len",
            "channels", "height", "width")


def register(d: OpDef) -> OpDef:
    """Add an op kind (and its primitives) to the table. Names must be new."""
    if d.kind in OPS:
        raise ValueError(f"op {d.name} is already registered")
    for pr in d.prims:
        if pr.name in PRIMS or pr.name in BUILTINS:
            raise ValueError(f"primitive {pr.name!r} is already defined")
    OPS[d.kind] = d
    for pr in d.prims:
        PRIMS[pr.name] = pr
    return d


def unregister(kind: type) -> None:
    """Remove an op kind and its primitives (for tests that add one)."""
    d = OPS.pop(kind)
    for pr in d.prims:
        PRIMS.pop(pr.name, None)


def of(op_or_kind) -> OpDef:
    """The table entry of an op (or op class); an unknown kind is an `FractalcError`."""
    kind = op_or_kind if isinstance(op_or_kind, type) else type(op_or_kind)
    try:
        return OPS[kind]
    except KeyError:
        raise FractalcError(f"op {kind.__name__} is not in the op table") from None


def by_name(name: str) -> OpDef:
    """The table entry of the op kind called `name` ("Conv")."""
    for d in OPS.values():
        if d.name == name:
            return d
    raise FractalcError(f"no op named {name!r} in the op table")


def kinds() -> tuple[type, ...]:
    """The registered op kinds: the IR's closed set."""
    return tuple(OPS)


def set_hook(kind: type, backend: str, fn) -> None:
    """Register `fn` as `backend`'s handler of op `kind`."""
    of(kind).hooks[backend] = fn


def hook(op_or_kind, backend: str, what: str | None = None):
    """`backend`'s handler of an op; `MissingHook` names the op and the backend if none."""
    d = of(op_or_kind)
    try:
        return d.hooks[backend]
    except KeyError:
        raise MissingHook(f"the {what or backend} backend has no hook for op {d.name}; register "
                          f"one with fractalc.ir.ops.set_hook({d.name}, {backend!r}, ...)") from None


def tensors(g: ir.Graph, n: str) -> tuple[Tensor, ...]:
    """The parameter tensors of node `n` of a shaped graph."""
    op = g.op(n)
    return of(op).tensors(op, [g.shape(s) for s in g.inputs(n)], g.shape(n))


def mults(g: ir.Graph, n: str) -> tuple[int, int]:
    op = g.op(n)
    return of(op).mults(op, [g.shape(s) for s in g.inputs(n)], g.shape(n))


# ----------------------------------------------------------------------------- shape helpers


def fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def spatial(size: int, k: int, s: int, pad: int) -> int:
    return (size + 2 * pad - k) // s + 1


def chw(op, ins, names, i, fail):
    """Input `i` as (C, H, W), or a failure naming it."""
    if len(ins[i]) != 3:
        fail(f"{type(op).__name__.lower()} needs a CxHxW input, got {fmt(ins[i])} from {names[i]} "
             "(a linear layer's output cannot feed it)")
    return ins[i]


def same(op, ins, names, fail):
    return tuple(ins[0])


# ----------------------------------------------------------------------------- the built-in ops


def _input_shape(op, ins, names, fail):
    if len(op.shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in op.shape):
        fail(f"input shape must be three positive integers [channels, height, width], got {list(op.shape)}")
    return tuple(op.shape)


def _conv_shape(op, ins, names, fail):
    c, h, w = chw(op, ins, names, 0, fail)
    if op.out_channels <= 0:
        fail(f"conv output channels must be positive, got {op.out_channels}")
    if op.kernel <= 0 or op.stride <= 0 or op.padding < 0:
        fail(f"conv kernel and stride must be positive and padding non-negative, got "
             f"k={op.kernel}, s={op.stride}, p={op.padding}")
    groups, dil = getattr(op, "groups", 1), getattr(op, "dilation", 1)
    if groups <= 0 or c % groups or op.out_channels % groups:
        fail(f"conv groups={groups} must divide input channels {c} and output channels {op.out_channels}")
    if dil <= 0:
        fail(f"conv dilation must be positive, got {dil}")
    span = dil * (op.kernel - 1) + 1  # the dilated kernel's extent
    oh, ow = spatial(h, span, op.stride, op.padding), spatial(w, span, op.stride, op.padding)
    if oh <= 0 or ow <= 0:
        fail(f"conv k={op.kernel}, s={op.stride}, p={op.padding} on a {h}x{w} input gives an "
             f"empty {oh}x{ow} output")
    return (op.out_channels, oh, ow)


def _conv_weight(op, ins) -> Shape:
    return (op.out_channels, ins[0][0] // getattr(op, "groups", 1), op.kernel, op.kernel)


def _conv_tensors(op, ins, out):
    w = Tensor("weight", _conv_weight(op, ins))
    return (w, Tensor("bias", (op.out_channels,))) if op.bias else (w,)


def _bconv_tensors(op, ins, out):
    return (Tensor("weight", _conv_weight(op, ins), "binary"),)


def _conv_mults(op, ins, out):
    """weights x output pixels (so a grouped conv costs 1/groups of the dense one); binary only
    when both the input and the weights are 1-bit (larq's rule: ``binary_input=false`` is float)."""
    n = math.prod(_conv_weight(op, ins)) * out[1] * out[2]
    return (0, n) if isinstance(op, ir.BinaryConv) and op.binary_input else (n, 0)


def _conv_summary(op, n_inputs):
    text = ("bconv" if isinstance(op, ir.BinaryConv) else "conv") + f" {op.kernel}x{op.kernel}"
    if op.stride != 1:
        text += f"/{op.stride}"
    text += f", {op.out_channels}"
    if op.groups != 1:
        text += f" g{op.groups}"
    if op.dilation != 1:
        text += f" d{op.dilation}"
    if isinstance(op, ir.BinaryConv) and op.padding_mode != "zero":
        text += f" pad {op.padding_mode}"
    if isinstance(op, ir.BinaryConv) and not op.binary_input:
        text += ", float in"
    return text


def _pad(a):
    """p defaults to "same" for stride 1: dilation * (k // 2)."""
    return a["k"] // 2 * a.get("dilation", 1) if a["p"] is None else a["p"]


def _conv_opts_check(a):
    if a["groups"] < 1:
        return f"conv groups must be positive, got {a['groups']}"
    if a["dilation"] < 1:
        return f"conv dilation must be positive, got {a['dilation']}"
    return None


def _bconv_check(a):
    if _conv_opts_check(a):
        return _conv_opts_check(a)
    if not a["binary_input"] and a["pad"] != "zero":
        return 'bconv with binary_input=false pads its float input with zeros: pad must be "zero"'
    if a["pad"] not in ("zero", "one"):
        return f'bconv padding must be "zero" or "one", got "{a["pad"]}"'
    if a["grad"] not in ("approxsign", "ste"):
        return f'bconv grad must be "approxsign" or "ste", got "{a["grad"]}"'
    return None


def _bn_shape(op, ins, names, fail):
    chw(op, ins, names, 0, fail)
    return tuple(ins[0])


def _bn_tensors(op, ins, out):
    c = out[0]
    return (Tensor("weight", (c,), "bn"), Tensor("bias", (c,), "bn"),
            Tensor("running_mean", (c,), "buffer"), Tensor("running_var", (c,), "buffer"))


def _pool_shape(op, ins, names, fail):
    c, h, w = chw(op, ins, names, 0, fail)
    if op.global_:
        return (c, 1, 1)
    if op.kernel <= 0 or op.stride <= 0 or op.padding < 0 or 2 * op.padding > op.kernel:
        fail(f"{op.kind}pool needs kernel > 0, stride > 0 and 0 <= padding <= kernel/2, got "
             f"k={op.kernel}, s={op.stride}, p={op.padding}")
    oh, ow = spatial(h, op.kernel, op.stride, op.padding), spatial(w, op.kernel, op.stride, op.padding)
    if oh <= 0 or ow <= 0:
        fail(f"{op.kind}pool k={op.kernel}, s={op.stride} on a {h}x{w} input gives an empty output")
    return (c, oh, ow)


def _pool_summary(op, n_inputs):
    if op.global_:
        return f"global {op.kind}pool"
    return f"{op.kind}pool {op.kernel}x{op.kernel}" + (f"/{op.stride}" if op.stride not in (0, op.kernel) else "")


BLUR_KERNEL = ((1, 2, 1), (2, 4, 2), (1, 2, 1))  # / 16: QuickNet's blur pool (exact in float32)


def _blurpool_shape(op, ins, names, fail):
    c, h, w = chw(op, ins, names, 0, fail)
    if op.stride <= 0:
        fail(f"blurpool stride must be positive, got {op.stride}")
    oh, ow = spatial(h, 3, op.stride, 1), spatial(w, 3, op.stride, 1)
    if oh <= 0 or ow <= 0:
        fail(f"blurpool on a {h}x{w} input gives an empty output")
    return (c, oh, ow)


def _blurpool_tensors(op, ins, out):
    return (Tensor("kernel", (ins[0][0], 1, 3, 3), "fixed"),)


def _linear_shape(op, ins, names, fail):
    if op.out_features <= 0:
        fail(f"linear output features must be positive, got {op.out_features}")
    return (op.out_features,)


def _linear_tensors(op, ins, out):
    w = Tensor("weight", (op.out_features, math.prod(ins[0])))
    return (w, Tensor("bias", (op.out_features,))) if op.bias else (w,)


def _elementwise_shape(word):
    def shape(op, ins, names, fail):
        if len(ins) < 2:
            fail(f"{word} needs at least 2 inputs, got {len(ins)}")
        first = ins[0]
        for i in range(1, len(ins)):  # names are read only for a message (they are made then)
            shp = ins[i]
            if shp != first:
                what = "channel" if len(shp) == len(first) == 3 and shp[1:] == first[1:] else "shape"
                fail(f"{what} mismatch at {word}: {names[0]} is {fmt(first)} but {names[i]} is {fmt(shp)}")
        return tuple(first)
    return shape


def _concat_shape(op, ins, names, fail):
    if len(ins) < 2:
        fail(f"concat needs at least 2 inputs, got {len(ins)}")
    for i in range(len(ins)):
        chw(op, ins, names, i, fail)
    first = ins[0]
    for i in range(1, len(ins)):  # names are read only for a message (they are made then)
        shp = ins[i]
        if shp[1:] != first[1:]:
            fail(f"spatial size mismatch at concat: {names[0]} is {fmt(first)} but {names[i]} is {fmt(shp)}")
    return (sum(s[0] for s in ins),) + tuple(first[1:])


def _slice_shape(op, ins, names, fail):
    c, h, w = chw(op, ins, names, 0, fail)
    if not (0 <= op.start < op.stop <= c):
        fail(f"slice [{op.start}, {op.stop}) is out of range for {c} channels")
    return (op.stop - op.start, h, w)


def _dropout_check(a):
    if not 0 <= a["p"] < 1:
        return f"dropout probability must be in [0, 1), got {a['p']}"
    return None


def _bn_check(a):
    if not a["eps"] > 0:
        return f"bn eps must be positive, got {a['eps']}"
    return None


def _pool_prim(name, kind):
    return PrimSpec(name, (p("k", "int"), p("s", "int", None), p("p", "int", 0)), 1,
                    f"{kind} pooling; s defaults to k", stem="pool",
                    make=lambda a: ir.Pool(kind, a["k"], a["k"] if a["s"] is None else a["s"], a["p"]))


def _act_prim(name, doc):
    return PrimSpec(name, (), 1, doc, make=lambda a: ir.Activation(name))


for _d in [
    OpDef(ir.Input, _input_shape, style={"shape": "invhouse", "fillcolor": "#dddddd"}, legend="input"),
    OpDef(ir.BinaryConv, _conv_shape, depth=True,
          prims=(PrimSpec("bconv", (p("out", "int"), p("k", "int", 3), p("s", "int", 1), p("p", "int", None),
                                    p("pad", "str", "zero"), p("grad", "str", "approxsign"),
                                    p("groups", "int", 1), p("dilation", "int", 1),
                                    p("binary_input", "bool", True)), 1,
                          "binary conv of sign(input) with alpha*sign(W); pad = \"zero\" (exact) or \"one\"; "
                          "grad = \"approxsign\" or \"ste\" (training backward of sign); groups (depthwise: "
                          "groups = channels), dilation; binary_input=false: float input, binary weights",
                          stem="conv",
                          make=lambda a: ir.BinaryConv(a["out"], a["k"], a["s"], _pad(a), a["pad"], a["grad"],
                                                       a["groups"], a["dilation"], a["binary_input"]),
                          check=_bconv_check),),
          tensors=_bconv_tensors, mults=_conv_mults, summary=_conv_summary, legend="binary conv",
          style={"shape": "box", "fillcolor": "#3d7cc9", "fontcolor": "white"}),
    OpDef(ir.Conv, _conv_shape, depth=True,
          prims=(PrimSpec("conv", (p("out", "int"), p("k", "int", 3), p("s", "int", 1), p("p", "int", None),
                                   p("groups", "int", 1), p("bias", "bool", False), p("dilation", "int", 1)), 1,
                          "full-precision conv; p defaults to dilation*(k//2); groups (depthwise: groups = "
                          "channels), dilation",
                          make=lambda a: ir.Conv(a["out"], a["k"], a["s"], _pad(a), a["groups"], a["bias"],
                                                 a["dilation"]),
                          check=_conv_opts_check),),
          tensors=_conv_tensors, mults=_conv_mults, summary=_conv_summary, legend="full-precision conv",
          style={"shape": "box3d", "fillcolor": "#f4a24c"}),
    OpDef(ir.BatchNorm, _bn_shape,
          prims=(PrimSpec("bn", (p("eps", "num", 1e-5), p("scale", "bool", True)), 1,
                          "batch normalisation; scale=false: no gamma (fixed at 1)",
                          make=lambda a: ir.BatchNorm(float(a["eps"]), a["scale"]), check=_bn_check),),
          tensors=_bn_tensors, summary=lambda op, n: "BN" if op.scale else "BN (no scale)", legend="batch norm",
          style={"shape": "ellipse", "fillcolor": "#b9e3ae"}),
    OpDef(ir.Activation, same,
          prims=(_act_prim("relu", "max(x, 0)"), _act_prim("tanh", "tanh(x)"),
                 _act_prim("sign", "+1 where x >= 0, else -1 (sign(0) = +1)"),
                 _act_prim("sigmoid", "1 / (1 + exp(-x)) (computed in float64, rounded once)"),
                 PrimSpec("identity", (), 1, "x (adds no node)", make=lambda a: None)),
          summary=lambda op, n: op.fn, legend="activation",
          style={"shape": "hexagon", "fillcolor": "#fff09a"}),
    OpDef(ir.Pool, _pool_shape,
          prims=(_pool_prim("maxpool", "max"), _pool_prim("avgpool", "avg"),
                 PrimSpec("gap", (), 1, "global average pooling to Cx1x1", stem="pool",
                          make=lambda a: ir.Pool("avg", global_=True)),
                 PrimSpec("gmp", (), 1, "global max pooling to Cx1x1", stem="pool",
                          make=lambda a: ir.Pool("max", global_=True))),
          summary=_pool_summary, legend="pooling", style={"shape": "folder", "fillcolor": "#d5c3ef"}),
    OpDef(ir.BlurPool, _blurpool_shape,
          prims=(PrimSpec("blurpool", (p("stride", "int", 2),), 1,
                          "QuickNet's fixed blur: depthwise 3x3 [[1,2,1],[2,4,2],[1,2,1]]/16, zero padding 1",
                          stem="pool", make=lambda a: ir.BlurPool(a["stride"])),),
          tensors=_blurpool_tensors,
          mults=lambda op, ins, out: (9 * out[0] * out[1] * out[2], 0),
          summary=lambda op, n: f"blurpool 3x3/{op.stride}", legend="blur pool (fixed)",
          style={"shape": "folder", "fillcolor": "#e8dcf7"}),
    OpDef(ir.Linear, _linear_shape, depth=True,
          prims=(PrimSpec("linear", (p("out", "int"), p("bias", "bool", True)), 1,
                          "fully connected on the flattened input", stem="fc",
                          make=lambda a: ir.Linear(a["out"], a["bias"])),),
          tensors=_linear_tensors,
          mults=lambda op, ins, out: (math.prod(ins[0]) * op.out_features, 0),
          summary=lambda op, n: f"linear {op.out_features}", legend="linear (FC)",
          style={"shape": "component", "fillcolor": "#f08c8c"}),
    OpDef(ir.Join, _elementwise_shape("join"),
          prims=(PrimSpec("join", (p("weights", "nums", None), p("learn", "bool", False)), -1,
                          "element-wise mean of all inputs (FractalNet join); with weights=[w1, ...]: "
                          "the weighted sum w1*x1 + w2*x2 + ...; with learn=true: learnable weights "
                          "initialised to 1/n", make=lambda a: _join_make(a),
                          check=lambda a: _join_check(a)),),
          summary=lambda op, n: f"join {n}", legend="join (mean)",
          style={"shape": "invtriangle", "fillcolor": "#d9455f", "fontcolor": "white"}),
    OpDef(ir.Add, _elementwise_shape("add"),
          prims=(PrimSpec("add", (), -1, "element-wise sum (residual); also written a + b",
                          make=lambda a: ir.Add()),),
          summary=lambda op, n: "+", legend="residual add", style={"shape": "circle", "fillcolor": "#ffffff"}),
    OpDef(ir.Concat, _concat_shape,
          prims=(PrimSpec("concat", (), -1, "channel concatenation (dense connectivity)",
                          make=lambda a: ir.Concat()),),
          summary=lambda op, n: "concat", legend="concat (stack)",
          style={"shape": "cylinder", "fillcolor": "#7cc6b6"}),
    OpDef(ir.Slice, _slice_shape,
          prims=(PrimSpec("slice", (p("start", "int"), p("stop", "int")), 1, "channels [start, stop)",
                          make=lambda a: ir.Slice(a["start"], a["stop"])),),
          summary=lambda op, n: f"slice {op.start}:{op.stop}", legend="channel slice",
          style={"shape": "cds", "fillcolor": "#c8e6f5"}),
    OpDef(ir.Dropout, same,
          prims=(PrimSpec("dropout", (p("p", "num"),), 1, "dropout (p = 0 adds no node)", stem="drop",
                          make=lambda a: ir.Dropout(float(a["p"])) if a["p"] else None,
                          check=_dropout_check),),
          summary=lambda op, n: f"dropout {op.p:g}", legend="dropout",
          style={"shape": "octagon", "fillcolor": "#f3f3f3", "style": "filled,dashed"}),
    OpDef(ir.Output, same, style={"shape": "house", "fillcolor": "#dddddd"}, legend="output"),
]:
    OPS[_d.kind] = _d
    PRIMS.update((pr.name, pr) for pr in _d.prims)


# ----------------------------------------------------------------------------- binary-network primitives
# ReActNet's RSign and RPReLU, learned per-channel shift / scale, PReLU, and Real-to-Binary's
# gating product (issue 14). Each adds only float parameters, one per channel and tensor, and
# no multiplications (larq's convention: element-wise ops are not MACs).


def _channels_shape(op, ins, names, fail):
    """CxHxW or F (after a linear layer): parameters per channel (the first dimension)."""
    if len(ins[0]) not in (1, 3):
        fail(f"{type(op).__name__.lower()} needs a CxHxW or F input, got {fmt(ins[0])} from {names[0]}")
    return tuple(ins[0])


def _per_channel(*names):
    def tensors(op, ins, out):
        return tuple(Tensor(n, (out[0],)) for n in names)
    return tensors


def _prelu_tensors(op, ins, out):
    names = ("shift_in", "weight", "shift_out") if op.shifts else ("weight",)
    return _per_channel(*names)(op, ins, out)


def _mul_shape(op, ins, names, fail):
    """Equal shapes, or CxHxW times a per-channel Cx1x1 (either order)."""
    if len(ins) != 2:
        fail(f"mul needs 2 inputs, got {len(ins)}")
    a, b = tuple(ins[0]), tuple(ins[1])
    if a == b:
        return a
    for big, small in ((a, b), (b, a)):
        if len(big) == 3 and len(small) == 3 and small == (big[0], 1, 1):
            return big
    fail(f"shape mismatch at mul: {names[0]} is {fmt(a)} but {names[1]} is {fmt(b)} (mul takes two "
         "tensors of one shape, or a CxHxW tensor and a per-channel Cx1x1 one, e.g. gap >> conv[C, k=1])")


def _channel_prim(name, doc, make, stem=""):
    return PrimSpec(name, (), 1, doc, stem=stem, make=lambda a: make())


for _d in [
    OpDef(ir.RSign, _channels_shape,
          prims=(_channel_prim("rsign", "ReActNet's RSign: x - t per channel (t learned, 0 at start); the "
                               "bconv after it binarizes sign(x - t)", ir.RSign),),
          tensors=_per_channel("threshold"), summary=lambda op, n: "RSign", legend="RSign threshold",
          style={"shape": "diamond", "fillcolor": "#9fc5f8"}),
    OpDef(ir.Shift, _channels_shape,
          prims=(_channel_prim("shift", "x + b per channel (b learned, 0 at start)", ir.Shift),),
          tensors=_per_channel("bias"), summary=lambda op, n: "+b", legend="channel shift",
          style={"shape": "parallelogram", "fillcolor": "#e8e8e8"}),
    OpDef(ir.Scale, _channels_shape,
          prims=(_channel_prim("scale", "x * s per channel (s learned, 1 at start)", ir.Scale),),
          tensors=_per_channel("weight"), summary=lambda op, n: "*s", legend="channel scale",
          style={"shape": "trapezium", "fillcolor": "#e8e8e8"}),
    OpDef(ir.PReLU, _channels_shape,
          prims=(PrimSpec("prelu", (), 1, "per-channel PReLU: x if x >= 0 else a * x (a learned, 0.25 at "
                          "start)", make=lambda a: ir.PReLU(False)),
                 PrimSpec("rprelu", (), 1, "ReActNet's RPReLU: PReLU(x + b1) + b2 per channel (b1, b2 "
                          "learned, 0 at start)", stem="rprelu", make=lambda a: ir.PReLU(True))),
          tensors=_prelu_tensors, summary=lambda op, n: "RPReLU" if op.shifts else "PReLU",
          legend="PReLU / RPReLU", style={"shape": "septagon", "fillcolor": "#f7c873"}),
    OpDef(ir.Mul, _mul_shape,
          prims=(PrimSpec("mul", (), 2, "element-wise product of two tensors of one shape, or of a CxHxW "
                          "tensor and a per-channel Cx1x1 one (gating)", make=lambda a: ir.Mul()),),
          summary=lambda op, n: "*", legend="element-wise product",
          style={"shape": "doublecircle", "fillcolor": "#ffffff"}),
]:
    register(_d)


# ----------------------------------------------------------------------------- joins (issue 14)
# `join` (the mean, ir.Join, above) with weights or learn=true makes a WeightedJoin; `maxjoin`
# a MaxJoin. Mults: a weighted join multiplies every input element once (n per output
# element); the mean's division and the max cost none (as the mean join always has).


def _join_make(a):
    if a["weights"] is None and not a["learn"]:
        return ir.Join()
    return ir.WeightedJoin(tuple(float(w) for w in a["weights"] or ()), bool(a["learn"]))


def _join_check(a):
    if a["weights"] is not None and a["learn"]:
        return ("join takes fixed weights=[...] or learn=true (learnable weights, starting at "
                "1/n each), not both")
    if a["weights"] is not None and len(a["weights"]) < 2:
        return f"join weights must list one weight per input (2 or more), got {len(a['weights'])}"
    return None


def _weighted_join_shape(op, ins, names, fail):
    shape = _elementwise_shape("join")(op, ins, names, fail)
    if op.weights and len(op.weights) != len(ins):
        fail(f"join has {len(op.weights)} weights for {len(ins)} inputs (one weight per input)")
    return shape


def _weighted_join_tensors(op, ins, out):
    return (Tensor("weight", (len(ins),)),) if op.learn else ()


def _weighted_join_summary(op, n):
    if op.learn:
        return f"join {n}, learned weights"
    return "join " + ", ".join(f"{w:g}" for w in op.weights)


for _d in [
    OpDef(ir.WeightedJoin, _weighted_join_shape, tensors=_weighted_join_tensors,
          mults=lambda op, ins, out: (len(ins) * math.prod(out), 0),
          summary=_weighted_join_summary, legend="weighted join",
          style={"shape": "invtriangle", "fillcolor": "#a8324a", "fontcolor": "white"}),
    OpDef(ir.MaxJoin, _elementwise_shape("maxjoin"),
          prims=(PrimSpec("maxjoin", (), -1, "element-wise maximum of all inputs", stem="join",
                          make=lambda a: ir.MaxJoin()),),
          summary=lambda op, n: f"max {n}", legend="join (max)",
          style={"shape": "invtriangle", "fillcolor": "#e0803a", "fontcolor": "white"}),
]:
    register(_d)
