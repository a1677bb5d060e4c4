"""The ``onnx`` flavour: standard operators only (opset 17), runnable by stock onnxruntime.

Lowering of each IR kind (everything but BinaryConv is shared with the xnor flavour, see
`builder.emit_common`):

- BinaryConv ``b``: ``b.negative = Less(x, 0)``, ``b.sign = Where(b.negative, -1, 1)`` (so
  sign(0) = +1), for padding_mode "one" ``b.pad = Pad(b.sign, +1)``, then ``Conv`` with the
  weights stored as the floats alpha * sign(W) (initializer ``b.binary_weight``; alpha = mean |W|
  per output channel, see `builder.alpha_of`) and the IR's zero padding ("zero" mode) or none.
- BatchNorm: BatchNormalization with the running statistics (not folded, so the file keeps the
  trained values readable); Join: Sum (Add for two) in input order, then Div by the count (torch's
  rounding; onnxruntime's Mean multiplies by 1/n); Add: Add (Sum for more than two); Concat; Slice;
  pools (avg counts padding, as torch); Linear: Flatten + Gemm; Dropout: omitted; Output:
  Identity named ``output``.
- The batch dimension is the symbolic ``N``.
"""
from __future__ import annotations

import numpy as np

from fractalc import ir
from fractalc.ir import ops

from .builder import Builder, alpha_of, emit_common, metadata, sign


def binary_weight(w: np.ndarray) -> np.ndarray:
    """alpha * sign(W) as float32, sign(0) = +1."""
    alpha = alpha_of(w)[:, None, None, None]
    return np.where(np.asarray(w) < 0, -alpha, alpha).astype(np.float32)


def to_onnx(compiled, state: dict[str, np.ndarray], weights_source: str = "", extra_meta=None):
    """Build the standard-ops ModelProto of `compiled.graph` with weights `state`."""
    g = compiled.graph
    b = Builder()
    val: dict[str, str] = {}
    for n in g.order():
        emit_common(b, g, n, state, val)
    return b.model(g.name, metadata(compiled, "onnx", weights_source, extra_meta))


def _binary_conv(b, g, n, op, ins, shape, state, val):
    """sign(x) (+1 padding for padding_mode "one"), then a float Conv with alpha * sign(W)
    (group and dilations as the IR's); ``binary_input=false``: the Conv reads x itself."""
    src = g.inputs(n)[0]
    x = sign(b, ins[0], n, g.shape(src)) if op.binary_input else ins[0]
    pads = [op.padding] * 4
    if op.padding_mode == "one" and op.padding:
        c, h, w = g.shape(src)
        p = op.padding
        x = b.node("Pad", [x, b.init(f"{n}.pads", np.array([0, 0, p, p, 0, 0, p, p], np.int64)),
                           b.const("one", np.float32(1))],
                   b.float_value(f"{n}.pad", (c, h + 2 * p, w + 2 * p)), f"{n}.pad",
                   mode="constant")
        pads = [0] * 4
    wb = b.init(f"{n}.binary_weight", binary_weight(state[f"{n}.weight"]))
    opts = {"group": op.groups} if op.groups != 1 else {}
    if op.dilation != 1:
        opts["dilations"] = [op.dilation] * 2
    val[n] = b.node("Conv", [x, wb], b.float_value(n, shape), n,
                    kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2, pads=pads, **opts)


ops.set_hook(ir.BinaryConv, "onnx", _binary_conv)
