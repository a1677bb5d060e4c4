"""Pure-numpy reference executor for lowered (``onnx-xnor``) graphs: the oracle for the runtime.

Every ``ai.fractalc`` op is implemented with exact integer arithmetic (popcount over uint64
words, `packing.popcount`); the other ops run in ``onnx.reference.ReferenceEvaluator``, the
float ones replaced by the native engine's float arithmetic (`floatexact`, the contract in
docs/float-arithmetic.md): its summation orders, its fmaf chains, and a BatchNormalization read
only by a Conv folded into the Conv's weights as the engine's loader folds it. So on any
weights the outputs equal the engine's byte for byte. Slow but exact: use small inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fractalc.errors import ModelError

from . import floatexact as fx
from . import ops, packing


# --- the ops as plain functions (also used directly by tests) ---------------------------------

def pack_bits(x: np.ndarray, threshold=None, flip=None) -> np.ndarray:
    """PackBits: bit 1 (-1) where x < t, or x > t where flip (t = 0 without a threshold)."""
    x = np.asarray(x, dtype=np.float32)
    if threshold is None:
        return packing.pack_activations(x)
    t = np.asarray(threshold, np.float32)[None, :, None, None]
    f = np.asarray(flip, bool)[None, :, None, None]
    neg = np.where(f, x > t, x < t)  # NaN compares false: +1, like sign(NaN) in torch
    return packing._pack_last_axis(np.transpose(neg, (0, 2, 3, 1)))


def unpack_bits(x: np.ndarray, channels: int) -> np.ndarray:
    return packing.unpack_activations(x, channels)


def xnor_dot(x: np.ndarray, w: np.ndarray, a: ops.ConvAttrs) -> np.ndarray:
    """The integer dot products (N, H_out, W_out, C_out) of a packed input and packed weights.

    zero padding: padded positions contribute nothing (exactly torch's zero-padded conv of
    sign(x)); one padding: padded positions are +1 in every real channel. A grouped conv
    (``a.group > 1``) is this per group, on the group's channels re-packed from bit 0.
    """
    x = np.asarray(x, dtype=np.uint64)
    w = np.asarray(w, dtype=np.uint64)
    kh, kw = a.kernel
    if w.ndim == 1:
        w = packing.tight_to_canonical(w, a.out_channels, a.group_channels, kh, kw)
    if a.group > 1:
        from dataclasses import replace
        cg, og = a.group_channels, a.out_channels // a.group
        neg = packing._unpack_last_axis(x, a.in_channels)  # (N, H, W, C_in) booleans
        sub = replace(a, in_channels=cg, out_channels=og, group=1)
        return np.concatenate([xnor_dot(packing._pack_last_axis(neg[..., i * cg:(i + 1) * cg]),
                                        w[i * og:(i + 1) * og], sub) for i in range(a.group)], axis=-1)
    n, h, wd, nw = x.shape
    t, l, b, r = a.pads
    sh, sw = a.strides
    dh, dw = a.dilations
    oh, ow = a.out_hw(h, wd)
    xp = np.zeros((n, h + t + b, wd + l + r, nw), dtype=np.uint64)  # zero words = +1
    xp[:, t:t + h, l:l + wd] = x
    inside = np.zeros((h + t + b, wd + l + r), dtype=np.int64)
    inside[t:t + h, l:l + wd] = 1
    dot = np.zeros((n, oh, ow, a.out_channels), dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            rows = slice(dy * dh, dy * dh + sh * (oh - 1) + 1, sh)
            cols = slice(dx * dw, dx * dw + sw * (ow - 1) + 1, sw)
            xs = xp[:, rows, cols, :]                                  # (N, oh, ow, words)
            pc = packing.popcount(xs[:, :, :, None, :] ^ w[None, None, None, :, dy, dx, :])
            term = a.in_channels - 2 * pc.sum(axis=-1, dtype=np.int64)  # (N, oh, ow, C_out)
            if a.padding == "zero":
                term = term * inside[rows, cols][None, :, :, None]
            dot += term
    return dot


def fma_f32(m: np.ndarray, d: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32(m * d + b) with one rounding (as C's fmaf), for float32 m, b and integer d.

    m * d is exact in float64 (24-bit by < 31-bit); the float64 sum's error e is recovered
    exactly (TwoSum), and where the float64 sum lies exactly halfway between two float32 values
    (the only case where a second rounding can differ) the tie is broken toward e.
    """
    p = np.asarray(m, np.float64) * np.asarray(d, np.float64)
    bb = np.asarray(b, np.float64)
    s = p + bb
    bv = s - p
    e = (p - (s - bv)) + (bb - bv)
    r = s.astype(np.float32)
    fix = (e != 0) & (r.astype(np.float64) != s)
    if fix.any():
        toward = np.where(s > r.astype(np.float64), np.float32(np.inf), np.float32(-np.inf))
        other = np.nextafter(r, toward.astype(np.float32))
        half = (r.astype(np.float64) + other.astype(np.float64)) == 2 * s
        tie = fix & half
        up = np.maximum(r, other)
        down = np.minimum(r, other)
        r = np.where(tie, np.where(e > 0, up, down), r)
    return r


def xnor_conv(x, w, a_in, b_in, a: ops.ConvAttrs) -> np.ndarray:
    """XnorConv: float NCHW output (fmaf(multiplier, dot, bias)) or packed bits."""
    dot = xnor_dot(x, w, a)
    if a.output == "float":
        y = fma_f32(np.asarray(a_in, np.float32), dot, np.asarray(b_in, np.float32))
        return np.ascontiguousarray(np.transpose(y, (0, 3, 1, 2)))
    thr = np.asarray(a_in, np.int64)
    flip = np.asarray(b_in, bool)
    plus = np.where(flip, dot <= thr, dot >= thr)  # +1 (bit 0) where the condition holds
    return packing._pack_last_axis(~plus)


# --- ReferenceEvaluator glue ------------------------------------------------------------------

def _op_classes():
    from onnx.reference.op_run import OpRun

    class PackBits(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, threshold=None, flip=None, **_):
            return (pack_bits(x, threshold, flip),)

    class UnpackBits(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, **_):
            return (unpack_bits(x, ops.attrs_of(self.onnx_node)["channels"]),)

    class XnorConv(OpRun):
        op_domain = ops.DOMAIN

        def _run(self, x, w, a_in, b_in, **_):
            a = ops.conv_attrs(ops.attrs_of(self.onnx_node), self.onnx_node.name)
            return (xnor_conv(x, w, a_in, b_in, a),)

    class Sigmoid(OpRun):
        # fractalc's sigmoid (the torch backend's, the runtime's): float64, rounded once to
        # float32; onnx's float32 reference would differ by an ulp
        op_domain = ""

        def _run(self, x, **_):
            return ((1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.asarray(x).dtype),)

    return [PackBits, UnpackBits, XnorConv, Sigmoid] + _float_classes(OpRun)


def _float_classes(OpRun):
    """The standard float ops with the engine's arithmetic (floatexact); attributes are read
    from the node (ONNX defaults where absent)."""
    def at(node):
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def refuse(node, what):
        return ModelError(f"{node.op_type} node {node.name!r}: {what} is not part of the float contract "
                          "(docs/float-arithmetic.md)")

    def pads_of(node, a, k):
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise refuse(node, "auto_pad")
        return tuple(a.get("pads", (0,) * (2 * k)))

    class Conv(OpRun):
        op_domain = ""

        def _run(self, x, w, b=None, **_):
            a = at(self.onnx_node)
            p = pads_of(self.onnx_node, a, 2)
            st, dl = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
            if len(set(p)) != 1 or st[0] != st[1] or dl[0] != dl[1]:
                raise refuse(self.onnx_node, "an asymmetric pad, stride or dilation")
            return (fx.conv(x, w, b, st[0], p[0], dl[0], int(a.get("group", 1))),)

    class Gemm(OpRun):
        op_domain = ""

        def _run(self, x, w, b=None, **_):
            a = at(self.onnx_node)
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise refuse(self.onnx_node, "transA, alpha or beta")
            w2 = w if a.get("transB", 0) else np.asarray(w).T
            return (fx.gemm(x, w2, None if b is None else np.asarray(b).reshape(-1)),)

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, gamma, beta, mean, var, **_):
            return (fx.batchnorm(x, gamma, beta, mean, var, float(at(self.onnx_node).get("epsilon", 1e-5))),)

    def pool_class(kind):
        class Pool(OpRun):
            op_domain = ""

            def _run(self, x, **_):
                a = at(self.onnx_node)
                if a.get("ceil_mode", 0) or tuple(a.get("dilations", (1, 1))) != (1, 1) or \
                        (kind == "avg" and a.get("count_include_pad", 0) != 1):
                    raise refuse(self.onnx_node, "ceil_mode, dilations or count_include_pad=0")
                ks = tuple(a["kernel_shape"])
                return (fx.pool(x, kind, ks, tuple(a.get("strides", (1, 1))), pads_of(self.onnx_node, a, 2)),)
        Pool.__name__ = "MaxPool" if kind == "max" else "AveragePool"
        return Pool

    def global_class(kind):
        class GlobalPool(OpRun):
            op_domain = ""

            def _run(self, x, **_):
                return (fx.global_pool(x, kind),)
        GlobalPool.__name__ = "GlobalMaxPool" if kind == "max" else "GlobalAveragePool"
        return GlobalPool

    class Relu(OpRun):
        op_domain = ""

        def _run(self, x, **_):
            return (fx.relu(x),)

    class PRelu(OpRun):
        op_domain = ""

        def _run(self, x, slope, **_):
            return (fx.prelu(x, slope),)

    class Sum(OpRun):
        op_domain = ""

        def _run(self, *xs, **_):
            return (fx.total(xs),)

    class Max(OpRun):
        op_domain = ""

        def _run(self, *xs, **_):
            return (fx.maximum(xs),)

    return [Conv, Gemm, BatchNormalization, pool_class("max"), pool_class("avg"), global_class("max"),
            global_class("avg"), Relu, PRelu, Sum, Max]


def engine_graph(proto, keep: set[str] = frozenset()):
    """A copy of `proto` with the engine loader's arithmetic rewrites (docs/float-arithmetic.md):

    - a BatchNormalization whose input is read by nothing else and comes from a Conv (float32
      parameters, no other attribute than epsilon / momentum) becomes that Conv with the BN
      folded into its weights and bias (`floatexact.fold_bn`); the unfolded Conv is dropped
      unless its output is in `keep`;
    - a Mul of a value by a float32 initializer becomes x * s + 0 (the engine's per-channel
      affine map; the only visible difference: -0 becomes +0).
    """
    from onnx import helper, numpy_helper
    m = type(proto)()
    m.CopyFrom(proto)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    readers: dict[str, int] = {}
    for nd in g.node:
        for i in nd.input:
            readers[i] = readers.get(i, 0) + 1
    for o in g.output:
        readers[o.name] = readers.get(o.name, 0) + 1
    producer = {o: nd for nd in g.node for o in nd.output}
    arr = lambda n: numpy_helper.to_array(inits[n]) if n in inits else None
    nodes = []
    drop = set()
    for nd in g.node:
        conv = producer.get(nd.input[0]) if nd.input else None
        if nd.op_type == "BatchNormalization" and nd.domain in ("", "ai.onnx") and len(nd.input) == 5 \
                and conv is not None and conv.op_type == "Conv" and conv.domain in ("", "ai.onnx") \
                and readers.get(nd.input[0]) == 1 and len(conv.input) in (2, 3) and conv.input[1] in inits:
            ps = [arr(i) for i in nd.input[1:]]
            attrs = {a.name: helper.get_attribute_value(a) for a in nd.attribute}
            w = arr(conv.input[1])
            co = w.shape[0]
            b = arr(conv.input[2]) if len(conv.input) == 3 else None
            if all(p is not None and p.dtype == np.float32 and p.shape == (co,) for p in ps) \
                    and not set(attrs) - {"epsilon", "momentum"} and (len(conv.input) == 2 or b is not None):
                wf, bf = fx.fold_bn(w, b, *ps, float(attrs.get("epsilon", 1e-5)))
                names = [f"{nd.name}.folded_weight", f"{nd.name}.folded_bias"]
                g.initializer.extend([numpy_helper.from_array(wf, names[0]), numpy_helper.from_array(bf, names[1])])
                folded = helper.make_node("Conv", [conv.input[0]] + names, list(nd.output), name=f"{nd.name}.folded")
                folded.attribute.extend(conv.attribute)
                nodes.append(folded)
                if conv.output[0] not in keep:
                    drop.add(id(conv))
                continue
        if nd.op_type == "Mul" and nd.domain in ("", "ai.onnx") and len(nd.input) == 2 and nd.input[1] in inits \
                and arr(nd.input[1]).dtype == np.float32:
            mid = f"{nd.output[0]}.product"
            zero = f"{nd.name}.plus_zero"
            g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
            nodes.append(helper.make_node("Mul", list(nd.input), [mid], name=nd.name))
            nodes.append(helper.make_node("Add", [mid, zero], list(nd.output), name=f"{nd.name}.plus_zero"))
            continue
        nodes.append(nd)
    del g.node[:]
    g.node.extend(n for n in nodes if id(n) not in drop)
    return m


def evaluator(model, keep: set[str] = frozenset()):
    """A ``ReferenceEvaluator`` for `model` (path, bytes or ModelProto) with our ops and the
    engine's float arithmetic (`engine_graph`; values named in `keep` stay computed)."""
    from onnx.reference import ReferenceEvaluator

    from .loader import load_model
    proto = engine_graph(load_model(model), keep)
    return ReferenceEvaluator(proto, new_ops=_op_classes())


def run_reference(model: "str | Path | bytes | object", x: np.ndarray,
                  outputs: list[str] | None = None):
    """Run a (lowered or standard) fractalc ONNX model on `x` (N, C, H, W) float32.

    Returns the first graph output as an array; with `outputs`, a dict of those values
    (any intermediate value name is allowed).
    """
    ev = evaluator(model, set(outputs or ()))
    feeds = {ev.input_names[0]: np.asarray(x, dtype=np.float32)}
    if outputs is None:
        return ev.run(None, feeds)[0]
    res = ev.run(None, feeds, intermediate=True)
    missing = [n for n in outputs if n not in res]
    if missing:
        raise KeyError(f"no value named {', '.join(missing)} in the model")
    return {n: res[n] for n in outputs}
