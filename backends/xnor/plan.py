"""Load-time work of the executor: validate a lowered model completely and turn it into a plan.

A plan is a flat list of steps ``(fn, input slots, output slot, kind)``; running it is one loop
with no checks left (see executor.py). Everything the native kernels rely on is proved here,
from the model alone, before any kernel sees data: every node's operator, arity, attributes,
initializer dtypes and sizes, the bit packing of weights, and the static shape of every value
(for any batch size). A model that fails any check raises `ModelError` naming the node.

Values live in one of three forms (the `Val.kind`):
- ``"f4"``: a 4-D float32 activation, logically NCHW ``(N,) + shape`` but stored channels-last
  (NHWC), the layout the XNOR kernels read and write;
- ``"bits"``: a packed activation ``(N, H, W, ceil(C/64))`` uint64, ``shape = (C, H, W)``;
- ``"f"``: any other float32 tensor ``(N,) + shape`` (e.g. after Flatten);
- ``"f4c"``: the graph input when only float convs read it, kept NCHW.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from fractalc.errors import ModelError

from . import floatops, kernels

MAX_DIM = 1 << 20        # any single dimension
MAX_ELEMS = 1 << 28      # elements of one value per image (1 GiB of float32)
MAX_CHANNELS = 1 << 16   # binary conv channels (|dot| < 2^31 by far)


@dataclass
class Val:
    kind: str
    shape: tuple[int, ...]


@dataclass
class Step:
    fn: object
    ins: tuple[int, ...]
    out: int
    kind: str
    name: str
    into: object = None  # the same op writing into its first input (see _in_place)
    fast: object = None  # `into` where the plan proved it safe: what `run` calls


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()
    output_slot: int = 0
    output_val: Val | None = None
    n_slots: int = 1
    free_after: list[tuple[int, ...]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    input_nchw: bool = False
    inplace: int = 0
    names: dict[str, int] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)


def _err(node, msg):
    return ModelError(f"{node.op_type} node {node.name!r}: {msg}")


def _check_shape(shape, what):
    if any((not isinstance(d, (int, np.integer))) or d <= 0 or d > MAX_DIM for d in shape):
        raise ModelError(f"{what}: dimensions must be in 1..{MAX_DIM}, got {list(shape)}")
    if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMS:
        raise ModelError(f"{what}: {list(shape)} has more than {MAX_ELEMS} elements per image")
    return tuple(int(d) for d in shape)


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _initializers(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper
    out = {}
    for t in graph.initializer:
        if t.data_location == 1:  # EXTERNAL
            raise ModelError(f"initializer {t.name!r} uses external data; the runtime needs it in the file")
        if any(d < 0 or d > 1 << 40 for d in t.dims):
            raise ModelError(f"initializer {t.name!r} has invalid dimensions {list(t.dims)}")
        try:
            out[t.name] = numpy_helper.to_array(t)
        except Exception as exc:  # wrong byte counts surface as ValueError/TypeError from numpy
            raise ModelError(f"initializer {t.name!r} is malformed (its data does not match its "
                             f"type and dimensions {list(t.dims)}): {exc}") from None
    return out


def build(proto, threads: int, isa: str) -> Plan:
    """Validate `proto` (already passed `backends.onnx.load_model`) and compile its plan."""
    g = proto.graph
    inits = _initializers(g)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelError("model imports no standard ONNX opset")
    plan = Plan()
    runtime_inputs = [i for i in g.input if i.name not in inits]
    if len(runtime_inputs) != 1 or len(g.output) != 1:
        raise ModelError(f"the runtime runs models with one input and one output, got "
                         f"{len(runtime_inputs)} and {len(g.output)}")
    inp = runtime_inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type != 1:
        raise ModelError(f"graph input {inp.name!r} must be float32 (elem_type 1), got elem_type {tt.elem_type}")
    dims = list(tt.shape.dim)
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise ModelError(f"graph input {inp.name!r} must be (N, C, H, W) with static C, H, W")
    plan.input_name = inp.name
    plan.input_shape = _check_shape([d.dim_value for d in dims[1:]], f"graph input {inp.name!r}")

    slots: dict[str, int] = {inp.name: 0}
    if not any(n.domain == "ai.fractalc" for n in g.node):
        # nothing binary to run natively: the whole float graph is onnxruntime's
        from . import ortnode
        fn, tail = ortnode.whole(proto, inp.name, plan.input_shape, threads)
        plan.input_nchw = True
        plan.steps.append(Step(fn, (0,), 1, "onnxruntime (whole model)", "model"))
        plan.counts["onnxruntime (whole model)"] = 1
        plan.output_slot, plan.output_val, plan.n_slots = 1, Val("f", tail), 2
        plan.free_after = [()]
        plan.names = {inp.name: 0, g.output[0].name: 1}
        plan.kinds = ["f4c", "f"]
        return plan
    # an input read only by float convs (the stems) stays NCHW: onnxruntime wants that layout,
    # and a transpose there and back would cost 2.5 ms per 8 images at 224x224
    readers = [n for n in g.node if inp.name in n.input]
    plan.input_nchw = bool(readers) and all(n.domain in ("", "ai.onnx") and n.op_type == "Conv"
                                            and list(n.input).count(inp.name) == 1 and n.input[0] == inp.name
                                            for n in readers)
    vals: list[Val] = [Val("f4c" if plan.input_nchw else "f4", plan.input_shape)]

    def new(name, val, node):
        if name in slots or name in inits or not name:
            raise _err(node, f"output {name!r} is empty or already defined")
        _check_shape(val.shape, f"{node.op_type} node {node.name!r} output {name!r}")
        slots[name] = len(vals)
        vals.append(val)
        return slots[name]

    consumers: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    for o in g.output:
        consumers[o.name] = consumers.get(o.name, 0) + 1
    nodes = list(g.node)
    k = 0
    while k < len(nodes):
        node = nodes[k]
        chain = _float_chain(nodes, k, consumers, inits) if node.domain in ("", "ai.onnx") else []
        if chain:
            for nd in [node] + chain:
                if len(nd.output) != 1:
                    raise _err(nd, f"the runtime needs exactly one output per node, got {len(nd.output)}")
            if node.input[0] not in slots:
                raise _err(node, f"input {node.input[0]!r} is not produced by an earlier node")
            got = _pointwise(node, chain, slots, vals, inits, threads)
            step, val = got if got else _ort_step(node, slots, vals, inits, threads, opset, chain)
            step.out = new(chain[-1].output[0], val, chain[-1])
            plan.steps.append(step)
            plan.counts[step.kind] = plan.counts.get(step.kind, 0) + 1
            k += 1 + len(chain)
            continue
        k += 1
        if len(node.output) != 1:
            raise _err(node, f"the runtime needs exactly one output per node, got {len(node.output)}")
        for i in node.input:
            if i and i not in slots and i not in inits:
                raise _err(node, f"input {i!r} is not produced by an earlier node nor an initializer")
        if node.domain == "ai.fractalc":
            step, val = _fractalc_node(node, slots, vals, inits, threads, isa)
        elif node.domain in ("", "ai.onnx"):
            step, val = _standard_node(node, slots, vals, inits, threads, opset)
        else:
            raise _err(node, f"operator domain {node.domain!r} is not supported by the native runtime")
        step.out = new(node.output[0], val, node)
        plan.steps.append(step)
        plan.counts[step.kind] = plan.counts.get(step.kind, 0) + 1

    out = g.output[0].name
    if out not in slots:
        raise ModelError(f"graph output {out!r} is not computed by any node")
    plan.output_slot = slots[out]
    plan.output_val = vals[plan.output_slot]
    if plan.output_val.kind == "bits":
        raise ModelError(f"graph output {out!r} is bit-packed; the runtime returns float tensors")
    plan.n_slots = len(vals)
    plan.names = dict(slots)
    plan.kinds = [v.kind for v in vals]
    # drop every value after its last use, so big batches do not keep all activations alive
    last = {}
    for k, st in enumerate(plan.steps):
        for s in st.ins:
            last[s] = k
    free = [[] for _ in plan.steps]
    for s, k in last.items():
        if s != plan.output_slot:
            free[k].append(s)
    plan.free_after = [tuple(f) for f in free]
    _in_place(plan, free)
    return plan


# steps whose output is a new array (or their dying first input, reused): safe to overwrite
_FRESH = {"XnorConv", "Add", "Sum", "Div", "BatchNormalization", "Relu", "Concat", "MaxPool",
          "AveragePool", "GlobalAveragePool", "UnpackBits"}


def _in_place(plan: Plan, free) -> None:
    """Let float element-wise steps write into their first input where it dies at that step
    and no other value shares its memory: saves an allocation (page faults on a fresh buffer
    cost about as much as the add itself at 56x56x64x8)."""
    fresh = set()
    for k, st in enumerate(plan.steps):
        into = getattr(st, "into", None)
        if into is not None and st.ins and st.ins[0] in fresh and st.ins[0] in free[k] \
                and st.ins[0] not in st.ins[1:]:
            st.fast = into
            plan.inplace += 1
        if st.kind in _FRESH or "+" in st.kind or st.kind in ("Conv", "Gemm"):
            fresh.add(st.out)


def _value(node, name, slots, vals, kinds):
    if name not in slots:
        raise _err(node, f"input {name!r} must be a computed value, not an initializer")
    s = slots[name]
    if vals[s].kind not in kinds:
        raise _err(node, f"input {name!r} must be {' or '.join(kinds)}, got {vals[s].kind} {vals[s].shape}")
    return s, vals[s]


def _init(node, name, inits, dtype, shape=None):
    if name not in inits:
        raise _err(node, f"input {name!r} must be an initializer")
    a = inits[name]
    if a.dtype != dtype:
        raise _err(node, f"initializer {name!r} must be {np.dtype(dtype).name}, got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise _err(node, f"initializer {name!r} must have shape {tuple(shape)}, got {a.shape}")
    return a


# --- ai.fractalc -------------------------------------------------------------------------------

def _fractalc_node(node, slots, vals, inits, threads, isa):
    from fractalc.backends.onnx import ops
    try:
        ops.check_node(node)
    except ops.OpError as exc:
        raise ModelError(str(exc)) from None
    if node.op_type == "PackBits":
        s, v = _value(node, node.input[0], slots, vals, ("f4",))
        if len(node.input) == 1:
            def pack(x, _t=threads, _i=isa):
                return kernels.pack_activations(x, layout="nhwc", threads=_t, isa=_i)
            return Step(pack, (s,), -1, "PackBits", node.name), Val("bits", v.shape)
        c = v.shape[0]
        t = _init(node, node.input[1], inits, np.float32, (c,))
        f = _init(node, node.input[2], inits, np.bool_, (c,))
        # bit 1 where x < t (x > t with flip) == where s*x - s*t < 0 with s = -1 for flip:
        # s*x and s*t are exact, and with gradual underflow a float difference is < 0 exactly
        # when the first operand is smaller (NaN, also from inf - inf, packs +1 in both forms)
        sgn = np.where(f, np.float32(-1), np.float32(1)).astype(np.float32)
        st = np.negative(t, where=f, out=t.copy())

        def pack_thr(x, _s=sgn, _st=st, _t=threads, _i=isa):
            z = np.multiply(x, _s)
            np.subtract(z, _st, out=z)
            return kernels.pack_activations(z, layout="nhwc", threads=_t, isa=_i)
        return Step(pack_thr, (s,), -1, "PackBits", node.name), Val("bits", v.shape)
    if node.op_type == "UnpackBits":
        s, v = _value(node, node.input[0], slots, vals, ("bits",))
        c = _attrs(node)["channels"]
        if c != v.shape[0]:
            raise _err(node, f"channels={c} but its input has {v.shape[0]} channels")
        return (Step(lambda x, _c=c: kernels.unpack_activations(x, _c, layout="nhwc"), (s,), -1,
                     "UnpackBits", node.name), Val("f4", v.shape))
    return _xnor_conv(node, slots, vals, inits, threads, isa, ops)


def _xnor_conv(node, slots, vals, inits, threads, isa, ops):
    from fractalc.backends.onnx import packing
    a = ops.conv_attrs(_attrs(node), node.name)
    s, v = _value(node, node.input[0], slots, vals, ("bits",))
    c, h, w = v.shape
    ci, co, (kh, kw) = a.in_channels, a.out_channels, a.kernel
    if ci != c:
        raise _err(node, f"in_channels={ci} but its input has {c} channels")
    if co > MAX_CHANNELS or ci > MAX_CHANNELS or kh > MAX_DIM or kw > MAX_DIM \
            or max(a.strides) > MAX_DIM or max(a.pads) > MAX_DIM:
        raise _err(node, f"attributes out of range (channels <= {MAX_CHANNELS}, sizes <= {MAX_DIM})")
    ho, wo = a.out_hw(h, w)
    if ho < 1 or wo < 1:
        raise _err(node, f"a {kh}x{kw} kernel does not fit the {h}x{w} input with pads {list(a.pads)}")
    n = ci * kh * kw
    wname = node.input[1]
    wt = _init(node, wname, inits, np.uint64)
    canon = (co, kh, kw, (ci + 63) // 64)
    if wt.shape == canon:
        wc = np.ascontiguousarray(wt)
        if ci % 64 and (wc[..., -1] >> np.uint64(ci % 64)).any():
            raise _err(node, f"weights {wname!r} have bits set above channel {ci - 1} (unused bits must be 0)")
    elif wt.shape == ((co * n + 63) // 64,):
        if (co * n) % 64 and wt[-1] >> np.uint64((co * n) % 64):
            raise _err(node, f"tight weights {wname!r} have bits set after the last weight")
        wc = packing.tight_to_canonical(wt, co, ci, kh, kw)
    else:
        raise _err(node, f"weights {wname!r} must be {canon} (canonical) or ({(co * n + 63) // 64},) "
                         f"(tight) uint64 words, got {wt.shape}")
    if a.output == "float":
        mul = _init(node, node.input[2], inits, np.float32, (co,))
        bias = _init(node, node.input[3], inits, np.float32, (co,))
        extra = dict(mul=mul, bias=bias)
        val = Val("f4", (co, ho, wo))
    else:
        thr = _init(node, node.input[2], inits, np.int32, (co,)).astype(np.int64)
        flip = _init(node, node.input[3], inits, np.bool_, (co,))
        # ONNX: +1 iff (dot >= t) (no flip) or (dot <= t) (flip); the kernel: -1 iff
        # (dot < t') XOR flip, i.e. t' = t + 1 with flip. |dot| <= n, so clamping first is exact.
        thr = np.clip(thr, -n - 1, n + 1) + flip.astype(np.int64)
        extra = dict(threshold=thr.astype(np.int32), flip=flip.astype(np.int32))
        val = Val("bits", (co, ho, wo))
    t, l, b, r = a.pads
    if a.strides[0] == a.strides[1] and t == l == b == r:
        conv = kernels.BinaryConv2d(wc, ci, stride=a.strides[0], padding=t, padding_mode=a.padding,
                                    output=a.output, threads=threads, isa=isa, **extra)

        def fn(x, _c=conv):
            return _c(x, check=False)
    else:
        # asymmetric pads or strides: legal in the op contract, not in the kernels' API; the
        # exact numpy reference runs these (no lowered fractalc graph has one)
        from fractalc.backends.onnx import reference
        aa, bb = (mul, bias) if a.output == "float" else (
            _init(node, node.input[2], inits, np.int32), _init(node, node.input[3], inits, np.bool_))

        def fn(x, _a=a, _w=wc, _aa=aa, _bb=bb):
            y = reference.xnor_conv(x, _w, _aa, _bb, _a)
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if _a.output == "float" else y
    return Step(fn, (s,), -1, "XnorConv", node.name), val


# --- standard operators -----------------------------------------------------------------------

_ATTRS_OK = {
    "Identity": set(), "Add": set(), "Sum": set(), "Div": set(), "Relu": set(),
    "Concat": {"axis"}, "BatchNormalization": {"epsilon", "momentum"},
    "MaxPool": {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "dilations", "storage_order"},
    "AveragePool": {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode", "count_include_pad", "dilations"},
    "GlobalAveragePool": set(), "Flatten": {"axis"}, "Gemm": {"alpha", "beta", "transA", "transB"},
}


def _standard_node(node, slots, vals, inits, threads, opset):
    step = _native(node, slots, vals, inits)
    if step is not None:
        return step
    return _ort_step(node, slots, vals, inits, threads, opset)


# Chains run as one onnxruntime session: a float conv or Gemm with the BN / ReLU / pools around
# it (the stems, transitions and heads). onnxruntime then fuses Conv+BN(+ReLU) and keeps its
# blocked layout inside; measured on Bi-Real ResNet18 at 224, batch 1, 2 threads: the stem
# Conv, BN, MaxPool took 2.2 + 0.8 + 0.6 ms as separate steps, 1.5 ms as one chain.
_CHAIN_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
              "Flatten", "Gemm"}


def _float_chain(nodes, k, consumers, inits) -> list:
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


def _pointwise(node, chain, slots, vals, inits, threads):
    """[AveragePool 2x2/2 ->] 1x1 Conv [-> BatchNormalization] (Bi-Real's downsampling path)
    on channels-last values: numpy pool, then one MatMul+Add with the BN folded into the
    weights. Saves the two layout transposes of an NCHW chain (measured at 56x56x64, batch 8:
    2.1 ms as a chain, 1.2 ms this way). None where the chain is anything else."""
    seq = [node] + list(chain)
    ops_ = [n.op_type for n in seq]
    if ops_ and ops_[0] == "AveragePool":
        pool, seq = seq[0], seq[1:]
    else:
        pool = None
    if not seq or seq[0].op_type != "Conv" or len(seq) > 2 or (len(seq) == 2 and seq[1].op_type != "BatchNormalization"):
        return None
    src = node.input[0]
    if src not in slots or vals[slots[src]].kind != "f4":
        return None
    c, h, w = vals[slots[src]].shape
    if pool is not None:
        at = _attrs(pool)
        if (tuple(at.get("kernel_shape", ())) != (2, 2) or tuple(at.get("strides", ())) != (2, 2)
                or any(at.get("pads", (0, 0, 0, 0))) or at.get("ceil_mode", 0) != 0
                or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or h < 2 or w < 2
                or set(at) - {"kernel_shape", "strides", "pads", "ceil_mode", "auto_pad", "count_include_pad"}):
            return None
        h, w = h // 2, w // 2
    conv = seq[0]
    at = _attrs(conv)
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
    if len(seq) == 2:
        bn = seq[1]
        if len(bn.input) != 5 or set(_attrs(bn)) - {"epsilon", "momentum"}:
            return None
        g_, b_, m_, v_ = (inits.get(i) for i in bn.input[1:])
        if any(a is None or a.dtype != np.float32 or a.shape != (co,) for a in (g_, b_, m_, v_)):
            return None
        eps = np.float32(_attrs(bn).get("epsilon", 1e-5))
        s_ = np.sqrt((v_ + eps).astype(np.float64))  # var + eps rounded in float32, as torch
        scale = g_.astype(np.float64) / s_
        bias = (bias - m_) * scale + b_
    w2 = (wt[:, :, 0, 0].astype(np.float64) * scale[:, None]).T.astype(np.float32)
    from . import ortnode
    mm = ortnode.matmul_add(np.ascontiguousarray(w2), bias.astype(np.float32), threads)
    if pool is not None:
        def fn(x, _mm=mm):
            ho, wo = x.shape[1] // 2, x.shape[2] // 2
            v = x[:, :2 * ho, :2 * wo]
            # torch's avg_pool2d order: row by row, then the exact division by 4
            p = np.add(v[:, 0::2, 0::2], v[:, 0::2, 1::2])
            p += v[:, 1::2, 0::2]
            p += v[:, 1::2, 1::2]
            p *= np.float32(0.25)
            return _mm(p)
    else:
        fn = mm
    label = "+".join(n.op_type for n in [node] + list(chain))
    return Step(fn, (slots[src],), -1, label, node.name), Val("f4", (co, h, w))


def _ort_step(node, slots, vals, inits, threads, opset, chain=()):
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
                raise _err(node, f"input {i!r} is bit-packed; only ai.fractalc operators read bits")
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


# Gemm goes to onnxruntime: numpy's OpenBLAS threads spin after a call and steal the cores
# from the XNOR kernels (a 1000x512 Gemm measured 12 ms inside a model, 0.1 ms alone).
_NATIVE_GEMM = False
_NATIVE_PADDED_POOL = os.environ.get("FRACTALC_NUMPY_POOL") == "1"


def _native(node, slots, vals, inits):
    """A numpy step for the common float ops, or None to hand the node to onnxruntime."""
    op = node.op_type
    if op not in _ATTRS_OK or set(a.name for a in node.attribute) - _ATTRS_OK[op]:
        return None
    at = _attrs(node)
    if any(not i for i in node.input) or not node.input:
        return None
    if any(i in slots and vals[slots[i]].kind == "bits" for i in node.input) and op != "Identity":
        raise _err(node, "a bit-packed value feeds a float operator")
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
        params = [_init(node, i, inits, np.float32, (c,)) for i in node.input[1:]]
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
        if (any(pads) or ks != st) and not _NATIVE_PADDED_POOL:
            return None
        if max(pads[0], pads[2]) >= ks[0] or max(pads[1], pads[3]) >= ks[1]:
            return None  # onnxruntime decides what such pads mean
        ho, wo = (h + pads[0] + pads[2] - ks[0]) // st[0] + 1, (w + pads[1] + pads[3] - ks[1]) // st[1] + 1
        if ho < 1 or wo < 1:
            raise _err(node, f"a {ks} window does not fit the {h}x{w} input")
        return step(floatops.pool("max" if op == "MaxPool" else "avg", ks, st, pads), Val("f4", (c, ho, wo)))
    if op == "GlobalAveragePool" and len(ins) == 1 and vs[0].kind == "f4":
        return step(floatops.global_avg_pool, Val("f4", (vs[0].shape[0], 1, 1)))
    if op == "Flatten" and len(ins) == 1 and at.get("axis", 1) == 1:
        if vs[0].kind == "f4":
            return step(floatops.flatten_nhwc, Val("f", (int(np.prod(vs[0].shape)),)))
        return step(lambda x: x.reshape(x.shape[0], -1), Val("f", (int(np.prod(vs[0].shape)),)))
    if op == "Gemm" and _NATIVE_GEMM and len(ins) == 1 and node.input[0] in slots and vs[0].kind == "f" \
            and len(vs[0].shape) == 1 and at.get("transA", 0) == 0 and len(node.input) in (2, 3) \
            and float(at.get("alpha", 1.0)) == 1.0 and float(at.get("beta", 1.0)) == 1.0:
        b = _init(node, node.input[1], inits, np.float32)
        tb = bool(at.get("transB", 0))
        if b.ndim != 2 or (b.shape[1] if tb else b.shape[0]) != vs[0].shape[0]:
            raise _err(node, f"weight {node.input[1]!r} has shape {b.shape}, which does not match "
                             f"an input of {vs[0].shape[0]} features")
        m = b.shape[0] if tb else b.shape[1]
        cc = None
        if len(node.input) == 3:
            cc = _init(node, node.input[2], inits, np.float32)
            if cc.shape not in ((m,), (1, m), (1,), ()):
                raise _err(node, f"bias {node.input[2]!r} has shape {cc.shape}; expected ({m},)")
            cc = np.broadcast_to(cc.reshape(-1), (m,)).copy()
        return step(floatops.gemm(b, cc, 1.0, 1.0, tb), Val("f", (m,)))
    return None
