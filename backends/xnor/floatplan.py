"""Plan steps for the standard (float) operators of lowered graphs.

Three ways, chosen per node at load time (see plan.py for the value forms):
- numpy on channels-last values for the cheap element-wise ops, Concat, pools (`_native`);
- Bi-Real's downsampling path (avgpool, 1x1 conv, BN) as one native kernel (`pointwise`);
- onnxruntime for float convolutions and Gemm with the BN / ReLU / pools around them, one
  session per chain (`float_chain`, `ort_step`), and for any other standard operator.
"""
from __future__ import annotations

import numpy as np

from . import chanops, floatops
from .steps import Step, Val, node_attrs, node_error, initializer

_ATTRS_OK = {
    "Identity": set(), "Add": set(), "Sum": set(), "Div": set(), "Relu": set(),
    "Concat": {"axis"}, "BatchNormalization": {"epsilon", "momentum"},
    "MaxPool": {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "dilations", "storage_order"},
    "AveragePool": {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "count_include_pad", "dilations"},
    "GlobalAveragePool": set(), "Flatten": {"axis"},
}


def standard_node(node, slots, vals, inits, threads, opset):
    step = _native(node, slots, vals, inits) or chanops.step(node, slots, vals, inits)
    if step is not None:
        return step
    return ort_step(node, slots, vals, inits, threads, opset)


# Chains run as one onnxruntime session: a float conv or Gemm with the BN / ReLU / pools around
# it (the stems, transitions and heads). onnxruntime then fuses Conv+BN(+ReLU) and keeps its
# blocked layout inside; measured on Bi-Real ResNet18 at 224, batch 1, 2 threads: the stem
# Conv, BN, MaxPool took 2.2 + 0.8 + 0.6 ms as separate steps, 1.5 ms as one chain.
_CHAIN_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
              "Flatten", "Gemm"}


def float_chain(nodes, k, consumers, inits) -> list:
    """The nodes after nodes[k] that form a single-input chain with it (each reads only the
    previous output, which nothing else reads, plus initializers); [] unless it has a Conv or
    Gemm and at least two nodes."""
    first = nodes[k]
    if first.op_type not in _CHAIN_OPS or not first.input or any(i not in inits for i in first.input[1:]):
        return []
    chain = []
    prev = first
    for nd in nodes[k + 1:]:
        if (nd.domain not in ("", "ai.onnx") or nd.op_type not in _CHAIN_OPS or len(prev.output) != 1
                or not nd.input or nd.input[0] != prev.output[0] or consumers.get(prev.output[0], 0) != 1
                or any(not i or i not in inits for i in nd.input[1:])):
            break
        chain.append(nd)
        prev = nd
    if not any(n.op_type in ("Conv", "Gemm") for n in [first] + chain):
        return []
    return chain


def bn_params(bn, inits, c):
    """(gamma, beta, mean, var, eps) of a BatchNormalization on `c` channels whose parameters are
    float32 initializers, else None."""
    if bn.op_type != "BatchNormalization" or len(bn.input) != 5 or set(node_attrs(bn)) - {"epsilon", "momentum"}:
        return None
    ps = [inits.get(i) for i in bn.input[1:]]
    if any(a is None or a.dtype != np.float32 or a.shape != (c,) for a in ps):
        return None
    return (*ps, float(node_attrs(bn).get("epsilon", 1e-5)))


def pool2(nd, h, w):
    """'avg' or 'max' for a 2x2 stride-2 unpadded pool node on an h x w input, else None."""
    if nd.op_type not in ("AveragePool", "MaxPool"):
        return None
    at = node_attrs(nd)
    extra = {"count_include_pad"} if nd.op_type == "AveragePool" else {"storage_order", "dilations"}
    if (tuple(at.get("kernel_shape", ())) != (2, 2) or tuple(at.get("strides", ())) != (2, 2)
            or any(at.get("pads", (0, 0, 0, 0))) or at.get("ceil_mode", 0) != 0
            or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or h < 2 or w < 2
            or at.get("storage_order", 0) != 0 or tuple(at.get("dilations", (1, 1))) != (1, 1)
            or set(at) - {"kernel_shape", "strides", "pads", "ceil_mode", "auto_pad"} - extra):
        return None
    return "avg" if nd.op_type == "AveragePool" else "max"


def pointwise(node, chain, slots, vals, inits, threads, isa):
    """[BatchNormalization ->] [AveragePool|MaxPool 2x2/2 ->] [Relu ->] 1x1 Conv
    [-> BatchNormalization] on channels-last values: one native kernel (kernels.pointwise_conv;
    same bytes on every ISA), the BN before the conv as its prologue (``x * scale + shift``, as
    the numpy BatchNormalization step rounds), the one after folded into the weights. Bi-Real's
    downsampling path (avgpool, conv, BN) and DenseNet's transition (BN, max pool, ReLU, conv).
    Saves the two layout transposes of an NCHW chain in onnxruntime and its per-call overhead
    (Bi-Real ResNet18's three shortcuts at batch 1: 0.66 ms as numpy pool + onnxruntime MatMul,
    0.24 ms this way; BinaryDenseNet28's transitions: 4.8 ms in onnxruntime). None where the
    chain is anything else."""
    seq = [node] + list(chain)
    src = node.input[0]
    if src not in slots or vals[slots[src]].kind != "f4":
        return None
    c, h, w = vals[slots[src]].shape
    k = 0
    pre = None
    if k < len(seq) and seq[k].op_type == "BatchNormalization":
        ps = bn_params(seq[k], inits, c)
        if ps is None:
            return None
        pre = floatops.bn_affine(*ps)
        k += 1
    pool = pool2(seq[k], h, w) if k < len(seq) else None
    if pool is not None:
        h, w = h // 2, w // 2
        k += 1
    relu = k < len(seq) and seq[k].op_type == "Relu" and len(seq[k].input) == 1 and not seq[k].attribute
    k += relu
    if k >= len(seq) or seq[k].op_type != "Conv":
        return None
    conv = seq[k]
    k += 1
    at = node_attrs(conv)
    if (set(at) - {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"}
            or tuple(at.get("kernel_shape", (1, 1))) != (1, 1) or tuple(at.get("strides", (1, 1))) != (1, 1)
            or any(at.get("pads", (0, 0, 0, 0))) or tuple(at.get("dilations", (1, 1))) != (1, 1)
            or at.get("group", 1) != 1 or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or len(conv.input) not in (2, 3)):
        return None
    wt = inits.get(conv.input[1])
    if wt is None or wt.dtype != np.float32 or wt.shape[1:] != (c, 1, 1):
        return None
    co = wt.shape[0]
    bias = np.zeros(co, np.float64)
    if len(conv.input) == 3:
        b = inits.get(conv.input[2])
        if b is None or b.dtype != np.float32 or b.shape != (co,):
            return None
        bias = b.astype(np.float64)
    scale = np.ones(co, np.float64)
    if k < len(seq):
        ps = bn_params(seq[k], inits, co)
        if ps is None or k + 1 != len(seq):
            return None
        g_, b_, m_, v_, eps = ps
        s_ = np.sqrt((v_ + np.float32(eps)).astype(np.float64))  # var + eps rounded in float32, as torch
        scale = g_.astype(np.float64) / s_
        bias = (bias - m_) * scale + b_
    w2 = np.ascontiguousarray((wt[:, :, 0, 0].astype(np.float64) * scale[:, None]).T.astype(np.float32))
    b2 = bias.astype(np.float32)
    from . import kernels
    sc, sh = pre if pre is not None else (None, None)

    def fn(x, _w=w2, _b=b2, _p=pool or False, _sc=sc, _sh=sh, _r=bool(relu), _t=threads, _i=isa):
        return kernels.pointwise_conv(x, _w, _b, pool=_p, scale=_sc, shift=_sh, relu=_r, threads=_t, isa=_i)
    label = "+".join(n.op_type for n in seq)
    return Step(fn, (slots[src],), -1, label, node.name), Val("f4", (co, h, w))


def ort_step(node, slots, vals, inits, threads, opset, chain=()):
    """`node` (and `chain`) in onnxruntime (float values only)."""
    shapes = []
    sub_inits = []
    from onnx import numpy_helper
    for i in node.input:
        if not i:
            shapes.append(None)
        elif i in slots:
            v = vals[slots[i]]
            if v.kind == "bits":
                raise node_error(node, f"input {i!r} is bit-packed; only ai.fractalc operators read bits")
            shapes.append(("nchw", v.shape) if v.kind == "f4c" else v.shape)
        else:
            shapes.append(None)
            sub_inits.append(numpy_helper.from_array(inits[i], i))
    for nd in chain:
        for i in nd.input[1:]:
            sub_inits.append(numpy_helper.from_array(inits[i], i))
    from . import ortnode
    fn, tail = ortnode.make(node, sub_inits, shapes, opset, threads, chain)
    ins = tuple(slots[i] for i in node.input if i in slots)
    kind = "f4" if len(tail) == 3 else "f"
    label = "+".join([node.op_type] + [n.op_type for n in chain])
    return Step(fn, ins, -1, label, node.name), Val(kind, tail)


# Gemm always goes to onnxruntime: numpy's OpenBLAS threads spin after a call and steal the
# cores from the XNOR kernels (a 1000x512 Gemm measured 12 ms inside a model, 0.1 ms alone).
# Padded pools too (the stem's 3x3/2 max pool: 0.8 ms in numpy, part of the stem chain there).


def _native(node, slots, vals, inits):
    """A numpy step for the common float ops, or None to hand the node to onnxruntime."""
    op = node.op_type
    if op not in _ATTRS_OK or set(a.name for a in node.attribute) - _ATTRS_OK[op]:
        return None
    at = node_attrs(node)
    if any(not i for i in node.input) or not node.input:
        return None
    if any(i in slots and vals[slots[i]].kind == "bits" for i in node.input) and op != "Identity":
        raise node_error(node, "a bit-packed value feeds a float operator")
    ins = [i for i in node.input if i in slots]
    vs = [vals[slots[i]] for i in ins]
    sl = tuple(slots[i] for i in ins)

    def step(fn, val, sl=sl):
        return Step(fn, sl, -1, op, node.name), val

    if op == "Identity" and len(ins) == 1 == len(node.input):
        return step(lambda x: x, vs[0])
    if op in ("Add", "Sum") and len(ins) == len(node.input) >= (2 if op == "Add" else 1):
        if len(node.input) > 2 and op == "Add":
            return None
        if all(v == vs[0] for v in vs):
            if len(ins) == 1:
                return step(lambda x: x.copy(), vs[0])
            st_, val_ = step(floatops.add(len(ins)), vs[0])
            st_.into = floatops.add_into
            return st_, val_
        return None
    if op == "Div" and len(ins) == 1 and node.input[0] in slots and node.input[1] in inits:
        c = inits[node.input[1]]
        if c.dtype == np.float32 and c.size == 1 and c.ndim <= 1:
            st_, val_ = step(floatops.div_const(c.reshape(())), vs[0])
            st_.into = floatops.div_const_into(c.reshape(()))
            return st_, val_
        return None
    if op == "Relu" and len(ins) == 1 == len(node.input):
        return step(floatops.relu, vs[0])
    if op == "Concat" and len(ins) == len(node.input) and all(v.kind == "f4" for v in vs):
        if at.get("axis") not in (1, -3) or any(v.shape[1:] != vs[0].shape[1:] for v in vs):
            return None
        return step(floatops.concat_channels, Val("f4", (sum(v.shape[0] for v in vs),) + vs[0].shape[1:]))
    if op == "BatchNormalization" and len(node.input) == 5 and len(ins) == 1 and node.input[0] in slots \
            and vs[0].kind == "f4":
        c = vs[0].shape[0]
        params = [initializer(node, i, inits, np.float32, (c,)) for i in node.input[1:]]
        eps = float(at.get("epsilon", 1e-5))
        fn = floatops.batchnorm(*params, eps)
        st_, val_ = step(fn, vs[0])
        st_.into = fn.into
        return st_, val_
    if op in ("MaxPool", "AveragePool") and len(ins) == 1 == len(node.input) and vs[0].kind == "f4":
        ks = tuple(at.get("kernel_shape", ()))
        st = tuple(at.get("strides", (1, 1)))
        pads = tuple(at.get("pads", (0, 0, 0, 0)))
        plain = (at.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and at.get("ceil_mode", 0) == 0
                 and tuple(at.get("dilations", (1, 1))) == (1, 1) and at.get("storage_order", 0) == 0
                 and at.get("count_include_pad", 1) == 1)
        if not plain or len(ks) != 2 or len(st) != 2 or len(pads) != 4 or min(ks + st) < 1 or min(pads) < 0:
            return None
        c, h, w = vs[0].shape
        if any(pads) or ks != st:
            return None
        ho, wo = (h + pads[0] + pads[2] - ks[0]) // st[0] + 1, (w + pads[1] + pads[3] - ks[1]) // st[1] + 1
        if ho < 1 or wo < 1:
            raise node_error(node, f"a {ks} window does not fit the {h}x{w} input")
        return step(floatops.pool("max" if op == "MaxPool" else "avg", ks, st, pads), Val("f4", (c, ho, wo)))
    if op == "GlobalAveragePool" and len(ins) == 1 and vs[0].kind == "f4":
        return step(floatops.global_avg_pool, Val("f4", (vs[0].shape[0], 1, 1)))
    if op == "Flatten" and len(ins) == 1 and at.get("axis", 1) == 1:
        if vs[0].kind == "f4":
            return step(floatops.flatten_nhwc, Val("f", (int(np.prod(vs[0].shape)),)))
        return step(lambda x: x.reshape(x.shape[0], -1), Val("f", (int(np.prod(vs[0].shape)),)))
    return None
