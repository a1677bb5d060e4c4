"""The standalone engine: lower a validated ``onnx-xnor`` model to an engine file, and run it.

The engine (C++, ``src/engine.cpp``, C API ``include/fractalc_rt.h``) runs every operator of a
lowered graph natively: no Python and no onnxruntime at inference. Its input is a compact model
file (``.frt``, layout in ``FORMAT.md``): the *planned* graph (fusions already applied) as a
flat op list over typed values, and one 64-byte-aligned weight blob, versioned and
CRC-32-checksummed. The C++ loader trusts nothing in it: every index, shape, parameter and
weight reference is validated before a kernel runs, and the arena (one buffer, values placed by
lifetime) is planned there.

`write_engine_file(model)` does the lowering here (it needs ``onnx``, not onnxruntime):
- ``XnorConv`` -> a binary conv op (thresholds moved to the kernel's convention); a float one
  read only by an ``Add`` takes that add in its epilogue, and a plain ``PackBits`` of a conv's
  or a join's output becomes the op's second output (the same fusions as plan.py, exact);
- ``Sum``/``Add`` [+ ``Div`` by a scalar] -> one join op (an add is a join with divisor 1, a
  division by 1 being exact), ``Div`` alone -> a join of one input;
- float ``Conv`` [+ ``BatchNormalization``] [+ ``Relu``] -> one direct conv, the BN folded into
  the weights in float64 (rounded once, as onnxruntime folds it); other BNs -> a per-channel
  affine map ``x * scale + shift`` (as floatops.batchnorm rounds); ``Relu``, pools, global
  average pool, ``Flatten``, ``Gemm`` (as a 1x1 product over the features), ``Concat``,
  ``PackBits``, ``UnpackBits``; ``Identity`` is an alias;
- ``XnorConv`` with ``group`` / ``dilations`` and a float ``Conv`` with them (depthwise, blur
  pool) -> the grouped ops of ``src/engine_ops2.cpp`` (types 40, 41, the same fusions);
  ``Max`` (maxjoin) and ``GlobalMaxPool`` -> types 42, 43.
Anything else raises `Unsupported` (a ModelError): `fractalc.runtime.Session` then falls back
to the planner/executor of plan.py (numpy + onnxruntime for the float ops).
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fractalc.errors import ModelError

MAGIC = b"FRCTLRT\0"
VERSION = 1
NONE = 0xFFFFFFFF
_HEADER = struct.Struct("<8sIIQIIIIQQQQQQQ")
_VALUE = struct.Struct("<Iiii")
_OP = struct.Struct("<II16III16i8Q")
assert _HEADER.size == 96 and _VALUE.size == 16 and _OP.size == 208

F4, BITS, FLAT = 0, 1, 2
XCONV, PACK, UNPACK, JOIN, AFFINE, POOL, GAP, FLATTEN, CONV, GEMM, CONCAT, SLICE, PWCONV = range(1, 14)
# issue 14's element-wise ops (src/chanwise.cpp), numbered apart from the others
PRELU, SIGMOID, MUL = 32, 33, 34
# grouped / dilated convs and the max ops (src/engine_ops2.cpp)
GXCONV, GCONV, MAX, GMP = 40, 41, 42, 43


class Unsupported(ModelError):
    """The graph has an operator (or a form of one) the standalone engine does not run."""


def _f32_bits(v: float) -> int:
    return struct.unpack("<i", struct.pack("<f", v))[0]


class _Writer:
    def __init__(self):
        self.values: list[tuple[int, int, int, int]] = []
        self.ops: list[bytes] = []
        self.blob = bytearray()

    def value(self, kind, shape) -> int:
        c, h, w = (tuple(shape) + (1, 1))[:3] if kind == FLAT else shape
        self.values.append((kind, int(c), int(h), int(w)))
        return len(self.values) - 1

    def weight(self, a: np.ndarray) -> tuple[int, int]:
        data = np.ascontiguousarray(a).tobytes()
        off = (len(self.blob) + 63) // 64 * 64
        self.blob.extend(b"\0" * (off - len(self.blob)))
        self.blob.extend(data)
        return off, len(data)

    def op(self, typ, ins, out, params=(), weights=(), out2=NONE):
        ins = list(ins)
        if not 1 <= len(ins) <= 16:
            raise Unsupported(f"an op with {len(ins)} inputs (the engine takes 1..16)")
        p = list(params) + [0] * (16 - len(params))
        w = []
        for a in weights:
            w.extend(self.weight(a))
        w += [0] * (8 - len(w))
        self.ops.append(_OP.pack(typ, len(ins), *(ins + [NONE] * (16 - len(ins))), out, out2, *p, *w))

    def tobytes(self, output: int, meta: dict) -> bytes:
        vals = b"".join(_VALUE.pack(*v) for v in self.values)
        ops = b"".join(self.ops)
        meta_b = json.dumps(meta, sort_keys=True).encode()
        values_off = _HEADER.size
        ops_off = values_off + len(vals)
        meta_off = ops_off + len(ops)
        blob_off = (meta_off + len(meta_b) + 63) // 64 * 64
        body = vals + ops + meta_b + b"\0" * (blob_off - meta_off - len(meta_b)) + bytes(self.blob)
        size = _HEADER.size + len(body)
        hdr = _HEADER.pack(MAGIC, VERSION, _HEADER.size, size, zlib.crc32(body), len(self.values), len(self.ops),
                           output, values_off, ops_off, blob_off, len(self.blob), meta_off, len(meta_b), 0)
        return hdr + body


def write_engine_file(model, path: str | os.PathLike | None = None) -> bytes:
    """The engine file of `model` (an onnx-xnor ModelProto, path or bytes; validated by
    ``backends.onnx.load_model`` first); written to `path` too when given."""
    from fractalc.backends.onnx.loader import load_model
    data = _lower(load_model(model))
    if path is not None:
        from fractalc.fileio import atomic_write
        atomic_write(str(path), data)
    return data


def _lower(proto) -> bytes:
    from onnx import helper

    from fractalc.backends.onnx import ops as xops

    from .floatops import bn_affine
    from .plan import MAX_CHANNELS, check_shape, initializers
    from .steps import canonical_weights
    g = proto.graph
    inits = initializers(g)
    runtime_inputs = [i for i in g.input if i.name not in inits]
    if len(runtime_inputs) != 1 or len(g.output) != 1:
        raise ModelError(f"the runtime runs models with one input and one output, got "
                         f"{len(runtime_inputs)} and {len(g.output)}")
    inp = runtime_inputs[0]
    tt = inp.type.tensor_type
    dims = list(tt.shape.dim)
    if tt.elem_type != 1 or len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise ModelError(f"graph input {inp.name!r} must be float32 (N, C, H, W) with static C, H, W")
    W = _Writer()
    vid = {inp.name: W.value(F4, check_shape([d.dim_value for d in dims[1:]], "graph input"))}
    alias: dict[str, str] = {}
    nodes = list(g.node)
    consumers: dict[str, list[int]] = {}
    for k, nd in enumerate(nodes):
        for i in nd.input:
            consumers.setdefault(i, []).append(k)
    for o in g.output:
        consumers.setdefault(o.name, []).append(-1)
    skip: set[int] = set()
    deferred: dict[int, list] = {}  # Add node index -> the float XnorConvs waiting for it
    pending: set[str] = set()  # outputs of those convs

    def err(nd, msg, cls=ModelError):
        return cls(f"{nd.op_type} node {nd.name!r}: {msg}")

    def attrs(nd):
        return {a.name: helper.get_attribute_value(a) for a in nd.attribute}

    def name_of(n):
        while n in alias:
            n = alias[n]
        return n

    def val(nd, n, kinds=(F4,)):
        n = name_of(n)
        if n not in vid:
            raise err(nd, f"input {n!r} is not a value computed before it")
        v = vid[n]
        if W.values[v][0] not in kinds:
            raise err(nd, f"input {n!r} has the wrong kind for this operator", Unsupported)
        return v

    def shape(v):
        return W.values[v][1:]

    def new(nd, name, kind, shp):
        if not name or name in vid or name in inits or name in alias:
            raise err(nd, f"output {name!r} is empty or already defined")
        check_shape(shp, f"{nd.op_type} node {nd.name!r} output {name!r}")
        vid[name] = W.value(kind, shp)
        return vid[name]

    def init(nd, name, dtype, shp=None):
        a = inits.get(name)
        if a is None:
            raise err(nd, f"input {name!r} must be an initializer", Unsupported)
        if a.dtype != dtype or (shp is not None and a.shape != tuple(shp)):
            raise err(nd, f"initializer {name!r} must be {np.dtype(dtype).name} {shp}, got {a.dtype} {a.shape}")
        return a

    def sole(name):
        c = consumers.get(name, [])
        return nodes[c[0]] if len(c) == 1 and c[0] >= 0 else None

    def sole_index(name):
        c = consumers.get(name, [])
        return c[0] if len(c) == 1 and c[0] >= 0 else None

    def sign_pack(name, shp):
        """A plain PackBits reading `name`: fused as a second output (its node skipped)."""
        for k in consumers.get(name, []):
            nd = nodes[k] if k >= 0 else None
            if (nd is not None and k not in skip and nd.op_type == "PackBits" and nd.domain == "ai.fractalc"
                    and len(nd.input) == 1 and len(nd.output) == 1 and not nd.attribute):
                try:
                    xops.check_node(nd)
                except xops.OpError as exc:
                    raise ModelError(str(exc)) from None
                skip.add(k)
                return new(nd, nd.output[0], BITS, shp)
        return NONE

    def emit_xconv(c, res_name=None, out_name=None):
        nd, x, wc, a, extra, (co, ho, wo) = c
        ins = [x]
        if res_name is not None:
            ins.append(res_name)
        out = new(nd, out_name or nd.output[0], F4 if a.output == "float" else BITS, (co, ho, wo))
        out2 = sign_pack(out_name or nd.output[0], (co, ho, wo)) if a.output == "float" else NONE
        params = [a.in_channels, co, a.kernel[0], a.kernel[1], a.strides[0], a.pads[0],
                  int(a.padding == "zero"), 1 if a.output == "float" else 2, int(res_name is not None)]
        grouped = a.group != 1 or a.dilations != (1, 1)  # GroupedConvPlan (src/engine_ops2.cpp)
        W.op(GXCONV if grouped else XCONV, ins, out, params + ([a.group, a.dilations[0]] if grouped else []),
             [wc] + extra, out2)

    def emit_join(ins, divisor, out_name, nd):
        shp = shape(ins[0])
        kind = W.values[ins[0]][0]
        if any(W.values[i][0] != kind or shape(i) != shp for i in ins):
            raise err(nd, "join inputs differ in kind or shape", Unsupported)
        out = new(nd, out_name, kind, shp)
        out2 = sign_pack(out_name, shp) if kind == F4 else NONE
        W.op(JOIN, ins, out, [_f32_bits(divisor)], (), out2)

    def pointwise(k) -> bool:
        """[BatchNormalization ->] [2x2/2 pool ->] [Relu ->] 1x1 Conv [-> BatchNormalization], with at
        least one op before the conv, as one pointwise op (the kernel of floatplan.pointwise: the
        prologue per input pixel, the BN after folded into the weights). False if not that."""
        from .floatplan import bn_params, pool2
        nd = nodes[k]
        if nd.op_type not in ("BatchNormalization", "AveragePool", "MaxPool", "Relu") or not nd.input \
                or name_of(nd.input[0]) not in vid or W.values[vid[name_of(nd.input[0])]][0] != F4:
            return False
        x = vid[name_of(nd.input[0])]
        c, h, w = shape(x)
        used, cur, pre, pool, relu = [], k, None, 0, 0

        def nxt(i):
            j = sole_index(nodes[i].output[0]) if len(nodes[i].output) == 1 else None
            return j if j is not None and nodes[j].input and nodes[j].input[0] == nodes[i].output[0] else None
        if nodes[cur].op_type == "BatchNormalization":
            ps = bn_params(nodes[cur], inits, c)
            if ps is None:
                return False
            pre = bn_affine(*ps)
            used.append(cur)
            cur = nxt(cur)
        if cur is not None and nodes[cur].op_type in ("AveragePool", "MaxPool"):
            kind = pool2(nodes[cur], h, w)
            if kind is None or len(nodes[cur].input) != 1:
                return False
            pool = 1 if kind == "avg" else 2
            used.append(cur)
            cur = nxt(cur)
        if cur is not None and nodes[cur].op_type == "Relu" and len(nodes[cur].input) == 1 \
                and not nodes[cur].attribute:
            relu = 1
            used.append(cur)
            cur = nxt(cur)
        if cur is None or not used or nodes[cur].op_type != "Conv" or len(nodes[cur].input) not in (2, 3):
            return False
        conv = nodes[cur]
        at = attrs(conv)
        if (set(at) - {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"}
                or tuple(at.get("kernel_shape", (1, 1))) != (1, 1) or tuple(at.get("strides", (1, 1))) != (1, 1)
                or any(at.get("pads", (0, 0, 0, 0))) or tuple(at.get("dilations", (1, 1))) != (1, 1)
                or at.get("group", 1) != 1 or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            return False
        wt = inits.get(conv.input[1])
        if wt is None or wt.dtype != np.float32 or wt.shape[1:] != (c, 1, 1) or wt.shape[0] > 65536:
            return False
        co = wt.shape[0]
        bias = np.zeros(co, np.float64)
        if len(conv.input) == 3:
            b = inits.get(conv.input[2])
            if b is None or b.dtype != np.float32 or b.shape != (co,):
                return False
            bias = b.astype(np.float64)
        used.append(cur)
        scale = np.ones(co, np.float64)
        out_name = conv.output[0]
        bk = nxt(cur)
        if bk is not None and nodes[bk].op_type == "BatchNormalization":
            ps = bn_params(nodes[bk], inits, co)
            if ps is not None:
                g_, b_, m_, v_, eps = ps
                s_ = np.sqrt((v_ + np.float32(eps)).astype(np.float64))  # var + eps in float32, as torch
                scale = g_.astype(np.float64) / s_
                bias = (bias - m_) * scale + b_
                used.append(bk)
                out_name = nodes[bk].output[0]
        w2 = np.ascontiguousarray((wt[:, :, 0, 0].astype(np.float64) * scale[:, None]).T.astype(np.float32))
        ho, wo = (h // 2, w // 2) if pool else (h, w)
        ws = [w2, bias.astype(np.float32)] + (list(pre) if pre is not None else [])
        out = new(nodes[used[-1]], out_name, F4, (co, ho, wo))
        W.op(PWCONV, [x], out, [c, co, pool, relu, int(pre is not None)], ws)
        skip.update(used[1:])
        return True

    for k, nd in enumerate(nodes):
        if k in skip:
            continue
        if len(nd.output) != 1:
            raise err(nd, f"the runtime needs exactly one output per node, got {len(nd.output)}")
        for i in nd.input:
            if i and name_of(i) not in vid and i not in inits and i not in pending:
                raise err(nd, f"input {i!r} is not produced by an earlier node nor an initializer")
        op, dom = nd.op_type, nd.domain
        at = attrs(nd)
        if dom in ("", "ai.onnx") and pointwise(k):
            continue
        if dom == "ai.fractalc":
            try:
                xops.check_node(nd)
            except xops.OpError as exc:
                raise ModelError(str(exc)) from None
            if op == "PackBits":
                x = val(nd, nd.input[0])
                c = shape(x)[0]
                out = new(nd, nd.output[0], BITS, shape(x))
                if len(nd.input) == 1:
                    W.op(PACK, [x], out, [0])
                else:
                    t = init(nd, nd.input[1], np.float32, (c,))
                    f = init(nd, nd.input[2], np.bool_, (c,))
                    W.op(PACK, [x], out, [1], [t, f.astype(np.uint8)])
                continue
            if op == "UnpackBits":
                x = val(nd, nd.input[0], (BITS,))
                if at["channels"] != shape(x)[0]:
                    raise err(nd, f"channels={at['channels']} but its input has {shape(x)[0]} channels")
                W.op(UNPACK, [x], new(nd, nd.output[0], F4, shape(x)))
                continue
            if op != "XnorConv":
                raise err(nd, "not supported by the engine", Unsupported)
            a = xops.conv_attrs(at, nd.name)
            if a.dilations[0] != a.dilations[1] or a.dilations[0] > 64:
                raise err(nd, "unequal or oversized dilations", Unsupported)
            x = val(nd, nd.input[0], (BITS,))
            c, h, w = shape(x)
            ci, co, (kh, kw) = a.in_channels, a.out_channels, a.kernel
            if ci != c:
                raise err(nd, f"in_channels={ci} but its input has {c} channels")
            if co > MAX_CHANNELS or ci > MAX_CHANNELS or max(kh, kw, *a.strides, *a.pads) > 64:
                raise err(nd, "attributes out of the engine's range (channels <= 65536, sizes <= 64)", Unsupported)
            t, l, b, r = a.pads
            if a.strides[0] != a.strides[1] or not t == l == b == r:
                raise err(nd, "asymmetric strides or pads", Unsupported)
            ho, wo = a.out_hw(h, w)
            if ho < 1 or wo < 1:
                raise err(nd, f"a {kh}x{kw} kernel does not fit the {h}x{w} input with pads {list(a.pads)}")
            n = a.group_channels * kh * kw
            wt = init(nd, nd.input[1], np.uint64)
            wc = canonical_weights(wt, co, a.group_channels, kh, kw, nd.input[1], lambda msg, nd=nd: err(nd, msg))
            if a.output == "float":
                extra = [init(nd, nd.input[2], np.float32, (co,)), init(nd, nd.input[3], np.float32, (co,))]
            else:
                thr = init(nd, nd.input[2], np.int32, (co,)).astype(np.int64)
                flip = init(nd, nd.input[3], np.bool_, (co,))
                # ONNX: +1 iff dot >= t (dot <= t with flip); the kernel: -1 iff (dot < t') XOR flip
                thr = np.clip(thr, -n - 1, n + 1) + flip.astype(np.int64)
                extra = [thr.astype(np.int32), flip.astype(np.int32)]
            conv = (nd, x, wc, a, extra, (co, ho, wo))
            add_k = sole_index(nd.output[0])
            if a.output == "float" and add_k is not None and nodes[add_k].op_type == "Add" \
                    and nodes[add_k].domain in ("", "ai.onnx") and len(nodes[add_k].input) == 2 \
                    and len(set(nodes[add_k].input)) == 2 and not nodes[add_k].attribute:
                deferred.setdefault(add_k, []).append(conv)
                pending.add(nd.output[0])
                continue
            emit_xconv(conv)
            continue
        if dom not in ("", "ai.onnx"):
            raise err(nd, f"operator domain {dom!r} is not supported", Unsupported)
        if any(not i for i in nd.input) or not nd.input:
            raise err(nd, "empty inputs", Unsupported)
        if op == "Identity":
            if len(nd.input) != 1 or name_of(nd.input[0]) not in vid or nd.output[0] in vid:
                raise err(nd, "Identity of a non-value", Unsupported)
            alias[nd.output[0]] = name_of(nd.input[0])
            continue
        if is_elementwise(nd, inits):
            for conv in deferred.pop(k, []):  # an XnorConv read only by this node: no residual to fuse
                emit_xconv(conv)
            _elementwise(nd, k, W, val, shape, new, inits, nodes, sole_index, skip, err)
            continue
        if op in ("Add", "Sum") and not nd.attribute:
            if op == "Add" and len(nd.input) != 2:
                raise err(nd, "Add takes two inputs")
            convs = deferred.pop(k, [])
            if len(convs) == 1:
                conv = convs[0]
                cname = conv[0].output[0]
                r = nd.input[1] if nd.input[0] == cname else nd.input[0]
                rv = vid.get(name_of(r))
                if rv is not None and W.values[rv][0] == F4 and shape(rv) == conv[5]:
                    emit_xconv(conv, res_name=rv, out_name=nd.output[0])
                    continue
            for conv in convs:  # both inputs are such convs, or the residual does not fit
                emit_xconv(conv)
            ins = [val(nd, i, (F4, FLAT)) for i in nd.input]
            dk = sole_index(nd.output[0])
            if dk is not None and nodes[dk].op_type == "Div" and len(nodes[dk].input) == 2 \
                    and nodes[dk].input[0] == nd.output[0] and not nodes[dk].attribute:
                d = inits.get(nodes[dk].input[1])
                if d is not None and d.dtype == np.float32 and d.size == 1 and d.ndim <= 1 \
                        and np.isfinite(d).all() and float(d.reshape(())) != 0:
                    skip.add(dk)
                    emit_join(ins, float(d.reshape(())), nodes[dk].output[0], nodes[dk])
                    continue
            emit_join(ins, 1.0, nd.output[0], nd)
            continue
        if op == "Div" and len(nd.input) == 2 and not nd.attribute:
            d = inits.get(nd.input[1])
            if d is None or d.dtype != np.float32 or d.size != 1 or d.ndim > 1 or not np.isfinite(d).all() \
                    or float(d.reshape(())) == 0:
                raise err(nd, "only division by a finite nonzero float32 scalar initializer", Unsupported)
            emit_join([val(nd, nd.input[0], (F4, FLAT))], float(d.reshape(())), nd.output[0], nd)
            continue
        if op == "Relu" and len(nd.input) == 1 and not nd.attribute:
            x = val(nd, nd.input[0], (F4, FLAT))
            W.op(AFFINE, [x], new(nd, nd.output[0], W.values[x][0], shape(x)), [0, 1])
            continue
        if op == "BatchNormalization" and len(nd.input) == 5 and not set(at) - {"epsilon", "momentum"}:
            x = val(nd, nd.input[0])
            c = shape(x)[0]
            ps = [init(nd, i, np.float32, (c,)) for i in nd.input[1:]]
            scale, shift = bn_affine(*ps, float(at.get("epsilon", 1e-5)))
            out_name, relu = nd.output[0], 0
            rk = sole_index(out_name)
            if rk is not None and nodes[rk].op_type == "Relu" and len(nodes[rk].input) == 1 \
                    and not nodes[rk].attribute:
                skip.add(rk)
                out_name, relu = nodes[rk].output[0], 1
            W.op(AFFINE, [x], new(nd, out_name, F4, shape(x)), [1, relu], [scale, shift])
            continue
        if op == "Conv":
            _conv(nd, at, W, val, shape, new, init, inits, nodes, sole_index, skip, err)
            continue
        if op in ("MaxPool", "AveragePool") and len(nd.input) == 1:
            x = val(nd, nd.input[0])
            c, h, w = shape(x)
            ks = tuple(at.get("kernel_shape", ()))
            st = tuple(at.get("strides", (1, 1)))
            pads = tuple(at.get("pads", (0, 0, 0, 0)))
            plain = (at.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and at.get("ceil_mode", 0) == 0
                     and tuple(at.get("dilations", (1, 1))) == (1, 1) and at.get("storage_order", 0) == 0
                     and at.get("count_include_pad", 1 if op == "AveragePool" else 0) == (op == "AveragePool"))
            if not plain or len(ks) != 2 or len(st) != 2 or len(pads) != 4 or min(ks + st) < 1 or min(pads) < 0 \
                    or max(ks + st) > 64 or pads[0] >= ks[0] or pads[2] >= ks[0] or pads[1] >= ks[1] \
                    or pads[3] >= ks[1]:
                raise err(nd, f"pool attributes {at} are not supported", Unsupported)
            ho = (h + pads[0] + pads[2] - ks[0]) // st[0] + 1
            wo = (w + pads[1] + pads[3] - ks[1]) // st[1] + 1
            if ho < 1 or wo < 1:
                raise err(nd, f"a {ks} window does not fit the {h}x{w} input")
            W.op(POOL, [x], new(nd, nd.output[0], F4, (c, ho, wo)),
                 [2 if op == "MaxPool" else 1, ks[0], ks[1], st[0], st[1], pads[0], pads[1], pads[2], pads[3]])
            continue
        if op == "GlobalAveragePool" and len(nd.input) == 1 and not nd.attribute:
            x = val(nd, nd.input[0])
            W.op(GAP, [x], new(nd, nd.output[0], F4, (shape(x)[0], 1, 1)))
            continue
        if op == "Flatten" and len(nd.input) == 1 and at.get("axis", 1) == 1:
            x = val(nd, nd.input[0], (F4, FLAT))
            if W.values[x][0] == FLAT:
                alias[nd.output[0]] = name_of(nd.input[0])
                continue
            c, h, w = shape(x)
            W.op(FLATTEN, [x], new(nd, nd.output[0], FLAT, (c * h * w,)))
            continue
        if op == "Gemm" and len(nd.input) in (2, 3) and not set(at) - {"transB", "transA", "alpha", "beta"} \
                and at.get("transA", 0) == 0 and at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0:
            x = val(nd, nd.input[0], (FLAT,))
            K = shape(x)[0]
            b = init(nd, nd.input[1], np.float32)
            if b.ndim != 2:
                raise err(nd, "B must be a matrix")
            wt = b.T if at.get("transB", 0) else b  # (K, Co)
            if wt.shape[0] != K:
                raise err(nd, f"B has {wt.shape[0]} rows for {K} features")
            co = wt.shape[1]
            bias = np.zeros(co, np.float32)
            if len(nd.input) == 3:
                bias = init(nd, nd.input[2], np.float32)
                if bias.size != co or bias.ndim > 2:
                    raise err(nd, "C must have one value per output", Unsupported)
                bias = bias.reshape(co)
            W.op(GEMM, [x], new(nd, nd.output[0], FLAT, (co,)), [K, co], [np.ascontiguousarray(wt), bias])
            continue
        if op == "Max" and 1 <= len(nd.input) <= 16 and not nd.attribute:  # maxjoin
            ins = [val(nd, i, (F4, FLAT)) for i in nd.input]
            if any(W.values[i][0] != W.values[ins[0]][0] or shape(i) != shape(ins[0]) for i in ins):
                raise err(nd, "Max inputs differ in kind or shape (no broadcasting)", Unsupported)
            W.op(MAX, ins, new(nd, nd.output[0], W.values[ins[0]][0], shape(ins[0])))
            continue
        if op == "GlobalMaxPool" and len(nd.input) == 1 and not nd.attribute:
            x = val(nd, nd.input[0])
            W.op(GMP, [x], new(nd, nd.output[0], F4, (shape(x)[0], 1, 1)))
            continue
        if op == "Concat" and len(nd.input) >= 2 and set(at) == {"axis"} and at["axis"] in (1, -3):
            ins = [val(nd, i) for i in nd.input]
            if len({shape(i)[1:] for i in ins}) != 1:
                raise err(nd, "inputs differ in height or width")
            c = sum(shape(i)[0] for i in ins)
            W.op(CONCAT, ins, new(nd, nd.output[0], F4, (c,) + shape(ins[0])[1:]))
            continue
        raise err(nd, "not supported by the standalone engine", Unsupported)
    if deferred:
        raise ModelError("internal: a fused conv was left without its Add")
    out = name_of(g.output[0].name)
    if out not in vid:
        raise ModelError(f"graph output {g.output[0].name!r} is not computed by any node")
    if W.values[vid[out]][0] == BITS:
        raise ModelError(f"graph output {out!r} is bit-packed; the runtime returns float tensors")
    if vid[out] == 0:
        raise Unsupported("the graph output is its input")
    meta = {p.key: p.value for p in proto.metadata_props}
    return W.tobytes(vid[out], meta)


def is_elementwise(nd, inits) -> bool:
    """Issue 14's element-wise nodes (ONNX backend, builder.py): Sigmoid; PRelu; Add / Sub / Mul
    of a value and an initializer; Mul of two values."""
    if nd.domain not in ("", "ai.onnx") or nd.attribute:
        return False
    if nd.op_type == "Sigmoid":
        return True
    if nd.op_type not in ("PRelu", "Add", "Sub", "Mul") or len(nd.input) != 2:
        return False
    return nd.op_type in ("PRelu", "Mul") or nd.input[1] in inits


def _elementwise(nd, k, W, val, shape, new, inits, nodes, sole_index, skip, err) -> None:
    """Lower one of `is_elementwise`'s nodes: a per-channel Add / Sub / Mul (initializer (C,1,1),
    or (C,) on a flat value) -> an affine op (x * 1 + b, x * 1 + (-t), x * s + 0: the same values
    as x + b, x - t, x * s); Add(b1) -> PRelu -> Add(b2), each read only by the next, -> one
    PReLU op with its shifts (and a PRelu alone, with the Add after it if any); Sigmoid -> the
    float64 sigmoid op; Mul of two values (same shape, or CxHxW by Cx1x1) -> the product op."""
    op = nd.op_type
    x = val(nd, nd.input[0], (F4, FLAT))
    kind, xs = W.values[x][0], shape(x)

    def per_channel(node, name):
        a = inits.get(name)
        want = (xs[0], 1, 1) if kind == F4 else (xs[0],)
        if a is not None and a.dtype == np.float32 and a.size == 1 and a.ndim <= 1:
            # a scalar (a weighted join's weight, builder._weighted_join): the same in every channel
            return np.full(xs[0], a.reshape(()), np.float32)
        if a is None or a.dtype != np.float32 or a.shape != want:
            raise err(node, f"{name!r} must be a float32 initializer of shape {want}", Unsupported)
        return np.ascontiguousarray(a.reshape(xs[0]))

    def follower(node, op_type):
        """The node after `node` if it is `op_type` with a per-channel initializer, reading only it."""
        j = sole_index(node.output[0])
        f = nodes[j] if j is not None else None
        if (f is not None and f.op_type == op_type and f.domain in ("", "ai.onnx") and not f.attribute
                and len(f.input) == 2 and f.input[0] == node.output[0] and f.input[1] in inits):
            return j
        return None

    if op == "Sigmoid":
        W.op(SIGMOID, [x], new(nd, nd.output[0], kind, xs))
        return
    if op == "Mul" and nd.input[1] not in inits:
        y = val(nd, nd.input[1], (F4, FLAT))
        ys = shape(y)
        if W.values[y][0] == kind and ys == xs:
            W.op(MUL, [x, y], new(nd, nd.output[0], kind, xs), [0])
            return
        for big, small in ((x, y), (y, x)):  # a CxHxW value times a per-channel Cx1x1 one
            bs, ss = shape(big), shape(small)
            if W.values[big][0] == W.values[small][0] == F4 and ss == (bs[0], 1, 1):
                W.op(MUL, [big, small], new(nd, nd.output[0], F4, bs), [1])
                return
        raise err(nd, f"Mul of shapes {xs} and {ys}", Unsupported)
    shift_in = None
    j = follower(nd, "PRelu") if op == "Add" else None
    if j is not None:  # RPReLU's first shift
        shift_in, nd, op = per_channel(nd, nd.input[1]), nodes[j], "PRelu"
        skip.add(j)
    if op == "PRelu":
        slope = per_channel(nd, nd.input[1])
        ws, out_name, j = [slope], nd.output[0], follower(nd, "Add")
        post = nodes[j] if j is not None else None
        if shift_in is not None:
            ws.append(shift_in)
        if post is not None:
            ws.append(per_channel(post, post.input[1]))
            skip.add(j)
            out_name = post.output[0]
        W.op(PRELU, [x], new(nd, out_name, kind, xs), [int(shift_in is not None), int(post is not None)], ws)
        return
    a = per_channel(nd, nd.input[1])
    one, zero = np.ones_like(a), np.zeros_like(a)
    scale, shift = {"Add": (one, a), "Sub": (one, -a), "Mul": (a, zero)}[op]
    W.op(AFFINE, [x], new(nd, nd.output[0], kind, xs), [1, 0], [scale, shift])


def _conv(nd, at, W, val, shape, new, init, inits, nodes, sole_index, skip, err):
    """A float Conv (+ BatchNormalization folded in float64) (+ Relu) as one direct conv op."""
    dil = tuple(at.get("dilations", (1, 1)))
    groups = at.get("group", 1)
    if set(at) - {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"} \
            or not isinstance(groups, int) or not 1 <= groups <= 65536 or len(dil) != 2 or dil[0] != dil[1] \
            or not 1 <= dil[0] <= 64 \
            or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(nd.input) not in (2, 3):
        raise err(nd, f"conv attributes {at} are not supported", Unsupported)
    x = val(nd, nd.input[0])
    c, h, w = shape(x)
    wt = init(nd, nd.input[1], np.float32)
    if wt.ndim != 4 or c % groups or wt.shape[0] % groups or wt.shape[1] * groups != c:
        raise err(nd, f"weights {wt.shape} do not match {c} input channels in {groups} groups")
    co, _, kh, kw = wt.shape
    st = tuple(at.get("strides", (1, 1)))
    pads = tuple(at.get("pads", (0, 0, 0, 0)))
    ks = tuple(at.get("kernel_shape", (kh, kw)))
    if ks != (kh, kw) or len(st) != 2 or st[0] != st[1] or len(set(pads)) > 1 or len(pads) != 4 \
            or max(kh, kw, st[0], pads[0]) > 64 or co > 65536:
        raise err(nd, "asymmetric or oversized conv attributes", Unsupported)
    s, p = st[0], pads[0]
    ho, wo = (h + 2 * p - dil[0] * (kh - 1) - 1) // s + 1, (w + 2 * p - dil[0] * (kw - 1) - 1) // s + 1
    if ho < 1 or wo < 1:
        raise err(nd, f"a {kh}x{kw} kernel does not fit the {h}x{w} input")
    bias = np.zeros(co, np.float64)
    if len(nd.input) == 3:
        bias = init(nd, nd.input[2], np.float32, (co,)).astype(np.float64)
    scale = np.ones(co, np.float64)
    out_name, relu = nd.output[0], 0
    bk = sole_index(out_name)
    if bk is not None and nodes[bk].op_type == "BatchNormalization" and len(nodes[bk].input) == 5:
        bn = nodes[bk]
        ps = [inits.get(i) for i in bn.input[1:]]
        from onnx import helper
        bat = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if all(a is not None and a.dtype == np.float32 and a.shape == (co,) for a in ps) \
                and not set(bat) - {"epsilon", "momentum"}:
            g_, b_, m_, v_ = ps
            s_ = np.sqrt((v_ + np.float32(bat.get("epsilon", 1e-5))).astype(np.float64))
            scale = g_.astype(np.float64) / s_
            bias = (bias - m_) * scale + b_
            skip.add(bk)
            out_name = bn.output[0]
    rk = sole_index(out_name)
    if rk is not None and nodes[rk].op_type == "Relu" and len(nodes[rk].input) == 1 and not nodes[rk].attribute:
        skip.add(rk)
        out_name, relu = nodes[rk].output[0], 1
    wf = (wt.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    hwio = np.ascontiguousarray(wf.transpose(2, 3, 1, 0))  # [ky][kx][ci][co] (ci of the group)
    grouped = groups != 1 or dil[0] != 1  # src/fgrouped.cpp, apart from the dense conv's kernels
    W.op(GCONV if grouped else CONV, [x], new(nd, out_name, F4, (co, ho, wo)),
         [c, co, kh, kw, s, p, relu] + ([groups, dil[0]] if grouped else []), [hwio, bias.astype(np.float32)])


def is_engine_file(model) -> bool:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model[:8]) == MAGIC
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):  # a FIFO or device would block (or never end) on read
            return False
        try:
            with open(model, "rb") as f:
                return f.read(8) == MAGIC
        except OSError:
            return False
    return False


class Engine:
    """A model in the standalone engine (a thin binding over its C API).

    `model`: an engine file (path: memory-mapped; or its bytes), or an onnx-xnor model (path,
    bytes or ModelProto), lowered here first (raises `Unsupported` where the engine lacks an
    operator). `threads`: as everywhere (None: ``$FRACTALC_THREADS`` or all CPUs); `isa`: None
    (``$FRACTALC_ISA`` or the best), ``"portable"``, ``"avx2"``, ``"avx512"``.
    """

    def __init__(self, model, threads: int | None = None, isa: str | None = None):
        from . import kernels
        self.threads = kernels._threads(threads)
        self.isa = kernels.resolve_isa(isa)
        ext = kernels._xnor
        self.metadata: dict[str, str] = {}
        try:
            if isinstance(model, (str, os.PathLike)) and is_engine_file(model):
                self._e = ext.Engine.from_file(str(model), self.threads)
            else:
                if not is_engine_file(model):
                    model = write_engine_file(str(model) if isinstance(model, Path) else model)
                self._e = ext.Engine.from_bytes(bytes(model), self.threads)
            self._e.set_isa(self.isa)
        except ValueError as exc:
            raise ModelError(f"engine: {exc}") from None
        except RuntimeError as exc:
            raise ModelError(f"engine: {exc}") from None
        try:
            self.metadata = {str(k): str(v) for k, v in json.loads(self._e.metadata() or "{}").items()}
        except (ValueError, AttributeError):
            self.metadata = {}
        self.input_shape = tuple(self._e.input_shape())
        self.output_shape = tuple(self._e.output_shape())
        self.kinds = list(self._e.op_kinds())

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out

    def arena_bytes(self, batch: int) -> tuple[int, int]:
        """(the arena a run of `batch` images uses, planned for its pass; the bytes of all values
        of `batch` images without reuse or passes)."""
        return tuple(self._e.arena_bytes(int(batch)))

    def batch_images(self, batch: int) -> int:
        """Images per pass when running `batch` images: the most whose arena fits in
        ``batch_budget()`` (at least 1), unless forced by `set_batch_images` or
        ``$FRACTALC_BATCH_IMAGES``. The results never depend on it."""
        return int(self._e.batch_images(int(batch)))

    def set_batch_images(self, images: int) -> None:
        """Force `images` per pass (>= 1), or 0 for the default."""
        try:
            self._e.set_batch_images(int(images))
        except ValueError as exc:
            raise ModelError(f"engine: {exc}") from None

    def run(self, x: np.ndarray, profile: dict | None = None) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ModelError(f"input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ModelError(f"input must be float32, got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or not 1 <= x.shape[0] <= 1 << 16:
            raise ModelError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}) with "
                             f"1 <= N <= {1 << 16}, got {tuple(x.shape)}")
        x = np.ascontiguousarray(x)
        out = np.empty((x.shape[0],) + self.output_shape, np.float32)
        if profile is not None:
            self._e.set_profile(True)
        try:
            self._e.run(x, out)
        except ValueError as exc:
            raise ModelError(f"engine: {exc}") from None
        if profile is not None:
            self._e.set_profile(False)
            for k, s in zip(self.kinds, self._e.op_seconds()):
                profile[k] = profile.get(k, 0.0) + s
        return out


def main(argv=None) -> int:
    """``python -m fractalc.backends.xnor.engine (MODEL.onnx | --spec SPEC.fr [--set K=V]...
    [--seed N]) -o OUT.frt``: write the engine file of an onnx-xnor model, or of a spec with
    random weights (seeded)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m fractalc.backends.xnor.engine", description=main.__doc__)
    ap.add_argument("model", nargs="?", help="an onnx-xnor model file")
    ap.add_argument("--spec", help="a spec (.fr) instead, compiled here with random weights")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    if (a.model is None) == (a.spec is None):
        ap.error("give an ONNX model or --spec")
    if a.spec:
        from fractalc.backends.onnx import lower, weights
        from fractalc.compiler import compile_spec
        c = compile_spec(a.spec, dict(s.split("=", 1) for s in a.sets))
        state, _ = weights.resolve(c, {"seed": a.seed})
        model = lower.to_onnx_xnor(c, state, Path(a.spec).name)
    else:
        model = a.model
    data = write_engine_file(model, a.output)
    print(f"wrote {a.output}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
