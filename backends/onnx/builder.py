"""Shared ONNX graph building for both flavours: names, initializers, value_info, metadata.

Naming (docs/onnx-ops.md): the value an IR node outputs is named by its id; the ONNX node that
computes it is named by the id too; helper nodes and their values get a suffix of the id
(``stage1.conv1.sign``, ``input.pack``); a node's initializers are ``<id>.<what>``; the packed
form of a float value X is ``X.bits``. Shared scalar constants are ``fractalc.<name>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fractalc import ir
from fractalc.ir import ops
from fractalc.version import __version__

OPSET = 17  # the standard ONNX opset both flavours pin


class Builder:
    """Accumulates nodes, initializers and value shapes in a deterministic order."""

    def __init__(self, batch: str = "N"):
        from onnx import TensorProto
        self.TP = TensorProto
        self.batch = batch
        self.nodes = []
        self.inits = []
        self.init_names: set[str] = set()
        self.node_names: set[str] = set()
        self.types: dict[str, tuple[int, list]] = {}  # value name -> (elem type, dims)
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    # --- values
    def typed(self, name: str, elem: int, dims) -> str:
        self.types[name] = (elem, list(dims))
        return name

    def float_value(self, name: str, shape) -> str:
        """Register a float activation value of IR shape (C, H, W) or (F,) (batch prepended)."""
        return self.typed(name, self.TP.FLOAT, [self.batch, *shape])

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        if name in self.init_names:
            raise AssertionError(f"duplicate initializer {name}")  # a builder bug
        self.init_names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, key: str, array) -> str:
        """A shared constant initializer ``fractalc.<key>`` (created once)."""
        name = f"fractalc.{key}"
        if name not in self.init_names:
            self.init(name, np.asarray(array))
        return name

    def node(self, op_type: str, inputs, output: str, name: str, /, domain: str = "", **attrs) -> str:
        from onnx import helper
        if name in self.node_names:
            raise AssertionError(f"duplicate node name {name}")  # a builder bug
        self.node_names.add(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name,
                                           domain=domain, **attrs))
        return output

    # --- the model
    def model(self, graph_name: str, metadata: dict[str, str], domains=()):
        from onnx import helper
        vi = lambda n: helper.make_tensor_value_info(n, *self.types[n])
        io = set(self.inputs) | set(self.outputs)
        value_info = [vi(n) for n in self.types if n not in io and n not in self.init_names]
        graph = helper.make_graph(self.nodes, graph_name, [vi(n) for n in self.inputs],
                                  [vi(n) for n in self.outputs], self.inits, value_info=value_info)
        opsets = [helper.make_opsetid("", OPSET), *domains]
        m = helper.make_model(graph, opset_imports=opsets, producer_name="fractalc",
                              producer_version=__version__)
        m.ir_version = 8  # the IR version of opset 17 (ONNX 1.12): readable by older runtimes
        helper.set_model_props(m, metadata)
        return m


def metadata(compiled, flavour: str, weights_source: str, extra: dict | None = None) -> dict:
    """The metadata_props every fractalc ONNX file carries (all values strings, sorted keys)."""
    md = {
        "fractalc.version": __version__,
        "fractalc.flavour": flavour,
        "fractalc.network": compiled.name,
        "fractalc.spec": Path(compiled.spec.main).name,
        "fractalc.spec_sha256": compiled.spec.sha256,
        "fractalc.overrides": json.dumps(compiled.overrides, sort_keys=True),
        "fractalc.opset": str(OPSET),
        "fractalc.weights": weights_source,
    }
    md.update(extra or {})
    return dict(sorted(md.items()))


def alpha_of(w: np.ndarray) -> np.ndarray:
    """Per-output-channel alpha = mean |W|, computed in float64 and rounded once to float32."""
    w64 = np.asarray(w, np.float64)
    return np.abs(w64).reshape(w64.shape[0], -1).mean(axis=1).astype(np.float32)


def emit_common(b: Builder, g: ir.Graph, n: str, state: dict, val: dict[str, str]) -> None:
    """Emit the standard ONNX nodes of IR node `n` with the ``"onnx"`` hook of its op-table
    entry (registered below for the built-in kinds). A hook is called as
    ``hook(b, g, n, op, ins, shape, state, val)`` with ``ins`` the value names of its inputs;
    it emits nodes and sets ``val[n]`` to the value holding the node's output.

    `val` maps IR ids to the value names holding their outputs (Dropout aliases its input).
    """
    op = g.op(n)
    emit = ops.hook(op, "onnx", "ONNX")
    emit(b, g, n, op, [val[s] for s in g.inputs(n)], g.shape(n), state, val)


def _conv(b, g, n, op, ins, shape, state, val):
    args = [ins[0], b.init(f"{n}.weight", state[f"{n}.weight"])]
    if op.bias:
        args.append(b.init(f"{n}.bias", state[f"{n}.bias"]))
    opts = {"dilations": [op.dilation] * 2} if op.dilation != 1 else {}
    val[n] = b.node("Conv", args, b.float_value(n, shape), n, kernel_shape=[op.kernel] * 2,
                    strides=[op.stride] * 2, pads=[op.padding] * 4, group=op.groups, **opts)


def bn_gamma(g: ir.Graph, n: str, state: dict) -> np.ndarray:
    """The scale of BatchNorm `n` as float32: its weight, or ones for ``bn[scale=false]``."""
    if not g.op(n).scale:
        return np.ones(g.shape(n)[0], np.float32)
    return np.asarray(state[f"{n}.weight"], np.float32)


def _bn(b, g, n, op, ins, shape, state, val):
    args = [ins[0], b.init(f"{n}.weight", bn_gamma(g, n, state))] + [
        b.init(f"{n}.{k}", state[f"{n}.{k}"]) for k in ("bias", "running_mean", "running_var")]
    val[n] = b.node("BatchNormalization", args, b.float_value(n, shape), n, epsilon=float(op.eps))


def _blurpool(b, g, n, op, ins, shape, state, val):
    c = shape[0]
    k = np.array(ops.BLUR_KERNEL, np.float32) / np.float32(16)  # exact: dyadic values
    kernel = np.ascontiguousarray(np.broadcast_to(k, (c, 1, 3, 3)), np.float32)
    val[n] = b.node("Conv", [ins[0], b.init(f"{n}.kernel", kernel)], b.float_value(n, shape), n,
                    kernel_shape=[3, 3], strides=[op.stride] * 2, pads=[1] * 4, group=c)


def _act(b, g, n, op, ins, shape, state, val):
    if op.fn == "sign":
        sign(b, ins[0], n, g.shape(g.inputs(n)[0]), out=n)
        b.float_value(n, shape)
    else:
        kind = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": "Identity"}[op.fn]
        b.node(kind, ins, b.float_value(n, shape), n)
    val[n] = n


def _pool(b, g, n, op, ins, shape, state, val):
    out = b.float_value(n, shape)
    if op.global_:
        b.node("GlobalMaxPool" if op.kind == "max" else "GlobalAveragePool", ins, out, n)
    elif op.kind == "max":
        b.node("MaxPool", ins, out, n, kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2,
               pads=[op.padding] * 4)
    else:  # torch's avg_pool2d default counts the zero padding
        b.node("AveragePool", ins, out, n, kernel_shape=[op.kernel] * 2,
               strides=[op.stride] * 2, pads=[op.padding] * 4, count_include_pad=1)
    val[n] = n


def _linear(b, g, n, op, ins, shape, state, val):
    flat = b.typed(f"{n}.flatten", b.TP.FLOAT, [b.batch, int(np.prod(g.shape(g.inputs(n)[0])))])
    b.node("Flatten", ins, flat, f"{n}.flatten", axis=1)
    args = [flat, b.init(f"{n}.weight", state[f"{n}.weight"])]
    if op.bias:
        args.append(b.init(f"{n}.bias", state[f"{n}.bias"]))
    val[n] = b.node("Gemm", args, b.float_value(n, shape), n, transB=1)


def _join(b, g, n, op, ins, shape, state, val):
    # Sum in input order, then a true division: exactly the torch backend's rounding.
    # (onnxruntime's Mean multiplies by 1/n, which rounds differently and can flip a
    # later sign.)
    total = b.float_value(f"{n}.sum", shape)
    b.node("Add" if len(ins) == 2 else "Sum", ins, total, f"{n}.sum")
    val[n] = b.node("Div", [total, b.const(f"count{len(ins)}", np.float32(len(ins)))],
                    b.float_value(n, shape), n)


def _add(b, g, n, op, ins, shape, state, val):
    val[n] = b.node("Add" if len(ins) == 2 else "Sum", ins, b.float_value(n, shape), n)


def _concat(b, g, n, op, ins, shape, state, val):
    val[n] = b.node("Concat", ins, b.float_value(n, shape), n, axis=1)


def _slice(b, g, n, op, ins, shape, state, val):
    args = [ins[0], b.init(f"{n}.starts", np.array([op.start], np.int64)),
            b.init(f"{n}.ends", np.array([op.stop], np.int64)),
            b.const("channel_axis", np.array([1], np.int64))]
    val[n] = b.node("Slice", args, b.float_value(n, shape), n)


def _dropout(b, g, n, op, ins, shape, state, val):
    val[n] = ins[0]  # inference: identity, no node


def _input(b, g, n, op, ins, shape, state, val):
    b.inputs.append(b.float_value(n, shape))
    val[n] = n


def _output(b, g, n, op, ins, shape, state, val):
    val[n] = b.node("Identity", ins, b.float_value(n, shape), n)
    b.outputs.append(n)


for _kind, _emit in [(ir.Input, _input), (ir.Conv, _conv), (ir.BatchNorm, _bn), (ir.Activation, _act),
                     (ir.Pool, _pool), (ir.Linear, _linear), (ir.Join, _join), (ir.Add, _add),
                     (ir.Concat, _concat), (ir.Slice, _slice), (ir.Dropout, _dropout),
                     (ir.Output, _output), (ir.BlurPool, _blurpool)]:
    ops.set_hook(_kind, "onnx", _emit)


# --- issue 14's per-channel primitives and the gating product -----------------------------------
# A (C,) parameter becomes an initializer (C, 1, 1) (or (C,) on a flat value) that ONNX
# broadcasts over the batch and H x W; each op is the one standard operator computing what the
# torch backend computes, in the same order (so the same float32 roundings).

def channel_init(b: Builder, g: ir.Graph, n: str, name: str, state: dict, negate: bool = False) -> str:
    """Initializer ``<n>.<name>``: the node's (C,) parameter shaped to broadcast over its input."""
    shape = g.shape(g.inputs(n)[0])
    v = np.asarray(state[f"{n}.{name}"], np.float32)
    return b.init(f"{n}.{name}", (-v if negate else v).reshape((-1,) + (1,) * (len(shape) - 1)))


def _channelwise(op_type: str, param: str):
    def emit(b, g, n, op, ins, shape, state, val):
        val[n] = b.node(op_type, [ins[0], channel_init(b, g, n, param, state)], b.float_value(n, shape), n)
    return emit


def _prelu(b, g, n, op, ins, shape, state, val):
    """PRelu(x, a); RPReLU: Add(x, b1) -> PRelu -> Add(b2), values ``<n>.in``, ``<n>.prelu``."""
    x = ins[0]
    if op.shifts:
        x = b.node("Add", [x, channel_init(b, g, n, "shift_in", state)], b.float_value(f"{n}.in", shape), f"{n}.in")
    y = b.float_value(f"{n}.prelu" if op.shifts else n, shape)
    b.node("PRelu", [x, channel_init(b, g, n, "weight", state)], y, f"{n}.prelu" if op.shifts else n)
    if op.shifts:
        y = b.node("Add", [y, channel_init(b, g, n, "shift_out", state)], b.float_value(n, shape), n)
    val[n] = y


for _kind, _emit in [(ir.RSign, _channelwise("Sub", "threshold")), (ir.Shift, _channelwise("Add", "bias")),
                     (ir.Scale, _channelwise("Mul", "weight")), (ir.PReLU, _prelu)]:
    ops.set_hook(_kind, "onnx", _emit)


def _mul(b, g, n, op, ins, shape, state, val):
    # ONNX broadcasts a (N, C, 1, 1) operand over H x W, as torch does
    val[n] = b.node("Mul", ins, b.float_value(n, shape), n)


ops.set_hook(ir.Mul, "onnx", _mul)


def sign(b: Builder, x: str, owner: str, shape, out: str | None = None) -> str:
    """sign(x) with sign(0) = +1 (and NaN -> +1, as the torch backend): Where(x < 0, -1, 1)."""
    neg = b.typed(f"{owner}.negative", b.TP.BOOL, [b.batch, *shape])
    b.node("Less", [x, b.const("zero", np.float32(0))], neg, f"{owner}.negative")
    out = out or b.float_value(f"{owner}.sign", shape)
    b.node("Where", [neg, b.const("minus_one", np.float32(-1)), b.const("one", np.float32(1))],
           out, out)
    return out


# --- issue 14's joins (both flavours) --------------------------------------------------------

def _weighted_join(b, g, n, op, ins, shape, state, val):
    """``Mul(x_i, w_i)`` per input (``<id>.weight<i>``: a float32 scalar initializer, the fixed
    weight or the learned one), then Add (two) or Sum in input order: the torch backend's
    drop_path.weighted_join, rounding for rounding."""
    w = np.asarray(state[f"{n}.weight"], np.float32) if op.learn else np.asarray(op.weights, np.float32)
    products = []
    for i, x in enumerate(ins):
        wi = b.init(f"{n}.weight{i}", np.float32(w[i]))
        products.append(b.node("Mul", [x, wi], b.float_value(f"{n}.mul{i}", shape), f"{n}.mul{i}"))
    val[n] = b.node("Add" if len(ins) == 2 else "Sum", products, b.float_value(n, shape), n)


def _max_join(b, g, n, op, ins, shape, state, val):
    val[n] = b.node("Max", ins, b.float_value(n, shape), n)


ops.set_hook(ir.WeightedJoin, "onnx", _weighted_join)
ops.set_hook(ir.MaxJoin, "onnx", _max_join)
