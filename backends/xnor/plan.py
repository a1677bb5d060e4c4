"""Load-time work of the executor: validate a lowered model completely and turn it into a plan.

A plan is a flat list of steps ``(fn, input slots, output slot, kind)``; running it is one loop
with no checks left (see executor.py). Everything the native kernels rely on is proved here,
from the model alone, before any kernel sees data: every node's operator, arity, attributes,
initializer dtypes and sizes, the bit packing of weights, and the static shape of every value
(for any batch size). A model that fails any check raises `ModelError` naming the node.

With ``fuse`` (the default), a float ``XnorConv`` read only by an ``Add`` becomes one step with
the add in its epilogue, a mean join (``Sum`` or ``Add``, then ``Div`` by a constant) one
native kernel, and a ``PackBits`` (no threshold) of either's output is produced by the same step
(``Step.out`` is then a pair of slots), and a float ``XnorConv`` read only by a dense block's
``Concat`` writes into the block's shared buffer: each fused value is bit-identical to the
separate ops (see kernels.BinaryConv2d, kernels.mean_join), and each fusion saves a pass over
memory. `fuse=False` keeps every node's value (``Executor.run_all``). Dense blocks' concats
share one buffer either way (floatops.DenseChain): their outputs are views, never written in
place (``Step.view``).

Values live in one of three forms (the `Val.kind`):
- ``"f4"``: a 4-D float32 activation, logically NCHW ``(N,) + shape`` but stored channels-last
  (NHWC), the layout the XNOR kernels read and write;
- ``"bits"``: a packed activation ``(N, H, W, ceil(C/64))`` uint64, ``shape = (C, H, W)``;
- ``"f"``: any other float32 tensor ``(N,) + shape`` (e.g. after Flatten);
- ``"f4c"``: the graph input when only float convs read it, kept NCHW.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fractalc.errors import ModelError

from . import kernels
from .steps import Step, Val, canonical_weights, node_attrs, node_error, initializer

MAX_DIM = 1 << 20        # any single dimension
MAX_ELEMS = 1 << 28      # elements of one value per image (1 GiB of float32)
MAX_CHANNELS = 1 << 16   # binary conv channels (|dot| < 2^31 by far)


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


def check_shape(shape, what):
    if any((not isinstance(d, (int, np.integer))) or d <= 0 or d > MAX_DIM for d in shape):
        raise ModelError(f"{what}: dimensions must be in 1..{MAX_DIM}, got {list(shape)}")
    if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMS:
        raise ModelError(f"{what}: {list(shape)} has more than {MAX_ELEMS} elements per image")
    return tuple(int(d) for d in shape)


def initializers(graph) -> dict[str, np.ndarray]:
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


def build(proto, threads: int, isa: str, fuse: bool = True) -> Plan:
    """Validate `proto` (already passed `backends.onnx.load_model`) and compile its plan."""
    from . import floatplan
    g = proto.graph
    inits = initializers(g)
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
    plan.input_shape = check_shape([d.dim_value for d in dims[1:]], f"graph input {inp.name!r}")

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
            raise node_error(node, f"output {name!r} is empty or already defined")
        check_shape(val.shape, f"{node.op_type} node {node.name!r} output {name!r}")
        slots[name] = len(vals)
        vals.append(val)
        return slots[name]

    consumers: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    for o in g.output:
        consumers[o.name] = consumers.get(o.name, 0) + 1
    # dense blocks: how many channel Concats extend each value (a prefix may be extended once)
    extended: dict[str, int] = {}
    for node in g.node:
        if _channel_concat(node):
            extended[node.input[0]] = extended.get(node.input[0], 0) + 1
    chains: dict[int, object] = {}  # slot of a chain member's output -> its floatops.DenseChain
    nodes = list(g.node)
    k = 0
    while k < len(nodes):
        node = nodes[k]
        chain = floatplan.float_chain(nodes, k, consumers, inits) if node.domain in ("", "ai.onnx") else []
        if chain:
            for nd in [node] + chain:
                if len(nd.output) != 1:
                    raise node_error(nd, f"the runtime needs exactly one output per node, got {len(nd.output)}")
            if node.input[0] not in slots:
                raise node_error(node, f"input {node.input[0]!r} is not produced by an earlier node")
            got = floatplan.pointwise(node, chain, slots, vals, inits, threads, isa)
            step, val = got if got else floatplan.ort_step(node, slots, vals, inits, threads, opset, chain)
            step.out = new(chain[-1].output[0], val, chain[-1])
            plan.steps.append(step)
            k += 1 + len(chain)
            continue
        k += 1
        if len(node.output) != 1:
            raise node_error(node, f"the runtime needs exactly one output per node, got {len(node.output)}")
        for i in node.input:
            if i and i not in slots and i not in inits:
                raise node_error(node, f"input {i!r} is not produced by an earlier node nor an initializer")
        if fuse and _fuse(node, plan, slots, vals, consumers, new, inits, threads, isa):
            continue
        if _dense_concat(node, plan, slots, vals, consumers, new, chains, extended, fuse):
            continue
        if node.domain == "ai.fractalc":
            step, val = _fractalc_node(node, slots, vals, inits, threads, isa)
        elif node.domain in ("", "ai.onnx"):
            step, val = floatplan.standard_node(node, slots, vals, inits, threads, opset)
        else:
            raise node_error(node, f"operator domain {node.domain!r} is not supported by the native runtime")
        step.out = new(node.output[0], val, node)
        plan.steps.append(step)
    for st in plan.steps:
        plan.counts[st.kind] = plan.counts.get(st.kind, 0) + 1

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
    for k, st in enumerate(plan.steps):  # a fused output nothing reads dies at once
        for s in _outs(st):
            last.setdefault(s, k)
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
        if (st.kind in _FRESH or "+" in st.kind or st.kind in ("Conv", "Gemm")) and not st.view:
            fresh.add(_outs(st)[0])


def _dense_concat(node, plan: Plan, slots, vals, consumers, new, chains, extended, fuse) -> bool:
    """A channel Concat of channels-last values as a member of a dense chain
    (floatops.DenseChain): it extends the buffer of its first input where that input is a
    chain member's output that nothing else extends, else it starts a chain. With `fuse`, a new
    value read only here that a plain float XnorConv computes is written by the conv straight
    into the buffer (the conv step moves here; its packed input is read instead). True when
    the node is planned here."""
    if not (_channel_concat(node) and all(i in slots and vals[slots[i]].kind == "f4" for i in node.input)
            and len({vals[slots[i]].shape[1:] for i in node.input}) == 1):
        return False
    from .floatops import DenseChain
    vs = [vals[slots[i]] for i in node.input]
    width = sum(v.shape[0] for v in vs)
    parent = chains.get(slots[node.input[0]]) if extended.get(node.input[0]) == 1 else None
    chain = parent or DenseChain()
    ins, convs = [slots[node.input[0]]], []
    for name in node.input[1:]:
        st = next((t for t in reversed(plan.steps[-64:]) if t.out == slots[name]), None)
        if fuse and st is not None and st.kind == "XnorConv" and st.conv is not None \
                and consumers.get(name) == 1 and list(node.input).count(name) == 1:
            del plan.steps[next(i for i, t in enumerate(plan.steps) if t is st)]
            ins.append(st.ins[0])
            convs.append(st.conv)
        else:
            ins.append(slots[name])
            convs.append(None)
    adds = [v.shape[0] for v in vs[1:]]
    fn = (chain.member if parent else chain.head)(vs[0].shape[0], adds, convs)
    chain.width = width
    kind = "XnorConv+Concat" if any(cv is not None for cv in convs) else "Concat"
    step = Step(fn, tuple(ins), -1, kind, node.name, view=True)
    step.out = new(node.output[0], Val("f4", (width,) + vs[0].shape[1:]), node)
    chains[step.out] = chain
    plan.steps.append(step)
    return True


def _channel_concat(node) -> bool:
    """A standard Concat of two or more values along the channel axis (NCHW axis 1)."""
    if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or len(node.input) < 2 \
            or len(node.output) != 1 or not all(node.input):
        return False
    at = [a for a in node.attribute]
    return len(at) == 1 and at[0].name == "axis" and at[0].i in (1, -3)


def _outs(st: Step) -> tuple[int, ...]:
    return st.out if isinstance(st.out, tuple) else (st.out,)


def _fuse(node, plan: Plan, slots, vals, consumers, new, inits, threads, isa) -> bool:
    """Fold `node` into an earlier step where that is exact (see the module doc):
    ``Add(conv, r)`` (a float XnorConv read by nothing else, r a channels-last value of the same
    shape) into the conv's epilogue; ``Div(sum, d)`` (a numpy Add/Sum read by nothing else, d a
    float32 scalar) into one mean-join kernel; ``PackBits(v)`` without threshold where v is the
    only output of either. A moved step's inputs are alive at its new place: values are freed
    only after their last use, computed on the final plan. True when fused."""
    if len(node.output) != 1 or node.attribute:
        return False
    producer = {st.out: st for st in plan.steps[-64:] if st.conv is not None or st.join is not None}
    standard = node.domain in ("", "ai.onnx")
    if node.op_type == "Add" and standard and len(node.input) == 2:
        for a, r in (node.input, node.input[::-1]):
            st = producer.get(slots.get(a, -1))
            if (st is None or st.kind != "XnorConv" or consumers.get(a) != 1 or a == r or r not in slots
                    or vals[slots[r]].kind != "f4" or vals[slots[r]].shape != vals[st.out].shape):
                continue
            conv, x_slot = st.conv, st.ins[0]
            del plan.steps[next(i for i, s_ in enumerate(plan.steps) if s_ is st)]
            fused = Step(lambda r_, x_, _c=conv: _c(x_, check=False, residual=r_), (slots[r], x_slot), -1,
                         "XnorConv+Add", node.name, conv=conv)
            fused.into = lambda r_, x_, _c=conv: _c(x_, check=False, residual=r_, out=r_)
            fused.out = new(node.output[0], Val("f4", vals[st.out].shape), node)
            plan.steps.append(fused)
            return True
        return False
    if node.op_type == "Div" and standard and len(node.input) == 2 and plan.steps:
        st, d = plan.steps[-1], inits.get(node.input[1])
        if (st.kind not in ("Add", "Sum") or st.out != slots.get(node.input[0]) or consumers.get(node.input[0]) != 1
                or vals[st.out].kind != "f4" or d is None or d.dtype != np.float32 or d.size != 1 or d.ndim > 1):
            return False
        div = np.float32(d.reshape(()))
        fused = Step(lambda *xs, _d=div: kernels.mean_join(xs, _d, threads=threads, isa=isa), st.ins, -1,
                     st.kind + "+Div", node.name, join=div)
        fused.into = lambda *xs, _d=div: kernels.mean_join(xs, _d, out=xs[0], threads=threads, isa=isa)
        plan.steps[-1] = fused
        fused.out = new(node.output[0], Val("f4", vals[st.out].shape), node)
        return True
    if node.op_type == "PackBits" and node.domain == "ai.fractalc" and len(node.input) == 1:
        from fractalc.backends.onnx import ops
        try:
            ops.check_node(node)
        except ops.OpError as exc:
            raise ModelError(str(exc)) from None
        st = producer.get(slots.get(node.input[0], -1))
        if st is None or vals[st.out].kind != "f4":
            return False
        conv, div = st.conv, st.join
        if st.join is not None:
            st.fn = lambda *xs, _d=div: kernels.mean_join(xs, _d, sign_bits=True, threads=threads, isa=isa)
            st.into = lambda *xs, _d=div: kernels.mean_join(xs, _d, sign_bits=True, out=xs[0], threads=threads,
                                                            isa=isa)
        elif st.kind == "XnorConv":
            st.fn = lambda x_, _c=conv: _c(x_, check=False, sign_bits=True)
        else:
            st.fn = lambda r_, x_, _c=conv: _c(x_, check=False, residual=r_, sign_bits=True)
            st.into = lambda r_, x_, _c=conv: _c(x_, check=False, residual=r_, sign_bits=True, out=r_)
        st.out = (st.out, new(node.output[0], Val("bits", vals[st.out].shape), node))
        st.kind += "+PackBits"
        return True
    return False


def _value(node, name, slots, vals, kinds):
    if name not in slots:
        raise node_error(node, f"input {name!r} must be a computed value, not an initializer")
    s = slots[name]
    if vals[s].kind not in kinds:
        raise node_error(node, f"input {name!r} must be {' or '.join(kinds)}, got {vals[s].kind} {vals[s].shape}")
    return s, vals[s]


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
        t = initializer(node, node.input[1], inits, np.float32, (c,))
        f = initializer(node, node.input[2], inits, np.bool_, (c,))
        # bit 1 where x < t, or x > t with flip (NaN: +1), in one native pass
        tf, ff = np.ascontiguousarray(t), np.ascontiguousarray(f)

        def pack_thr(x, _t=tf, _f=ff, _n=threads, _i=isa):
            return kernels.pack_thresholded(x, _t, _f, threads=_n, isa=_i)
        return Step(pack_thr, (s,), -1, "PackBits", node.name), Val("bits", v.shape)
    if node.op_type == "UnpackBits":
        s, v = _value(node, node.input[0], slots, vals, ("bits",))
        c = node_attrs(node)["channels"]
        if c != v.shape[0]:
            raise node_error(node, f"channels={c} but its input has {v.shape[0]} channels")
        return (Step(lambda x, _c=c: kernels.unpack_activations(x, _c, layout="nhwc"), (s,), -1,
                     "UnpackBits", node.name), Val("f4", v.shape))
    return _xnor_conv(node, slots, vals, inits, threads, isa, ops)


def _xnor_conv(node, slots, vals, inits, threads, isa, ops):
    a = ops.conv_attrs(node_attrs(node), node.name)
    s, v = _value(node, node.input[0], slots, vals, ("bits",))
    c, h, w = v.shape
    ci, co, (kh, kw) = a.in_channels, a.out_channels, a.kernel
    if ci != c:
        raise node_error(node, f"in_channels={ci} but its input has {c} channels")
    if co > MAX_CHANNELS or ci > MAX_CHANNELS or kh > MAX_DIM or kw > MAX_DIM \
            or max(a.strides) > MAX_DIM or max(a.pads) > MAX_DIM:
        raise node_error(node, f"attributes out of range (channels <= {MAX_CHANNELS}, sizes <= {MAX_DIM})")
    ho, wo = a.out_hw(h, w)
    if ho < 1 or wo < 1:
        raise node_error(node, f"a {kh}x{kw} kernel does not fit the {h}x{w} input with pads {list(a.pads)}")
    cg = a.group_channels  # input channels per output channel
    n = cg * kh * kw
    wname = node.input[1]
    wt = initializer(node, wname, inits, np.uint64)
    wc = canonical_weights(wt, co, cg, kh, kw, wname, lambda msg: node_error(node, msg))
    if a.output == "float":
        mul = initializer(node, node.input[2], inits, np.float32, (co,))
        bias = initializer(node, node.input[3], inits, np.float32, (co,))
        extra = dict(mul=mul, bias=bias)
        val = Val("f4", (co, ho, wo))
    else:
        thr = initializer(node, node.input[2], inits, np.int32, (co,)).astype(np.int64)
        flip = initializer(node, node.input[3], inits, np.bool_, (co,))
        # ONNX: +1 iff (dot >= t) (no flip) or (dot <= t) (flip); the kernel: -1 iff
        # (dot < t') XOR flip, i.e. t' = t + 1 with flip. |dot| <= n, so clamping first is exact.
        thr = np.clip(thr, -n - 1, n + 1) + flip.astype(np.int64)
        extra = dict(threshold=thr.astype(np.int32), flip=flip.astype(np.int32))
        val = Val("bits", (co, ho, wo))
    t, l, b, r = a.pads
    if a.strides[0] == a.strides[1] and t == l == b == r and a.dilations[0] == a.dilations[1]:
        conv = kernels.BinaryConv2d(wc, ci, stride=a.strides[0], padding=t, padding_mode=a.padding,
                                    output=a.output, threads=threads, isa=isa, groups=a.group,
                                    dilation=a.dilations[0], **extra)

        def fn(x, _c=conv):
            return _c(x, check=False)
        if a.output == "float":
            return Step(fn, (s,), -1, "XnorConv", node.name, conv=conv), val
    else:
        # asymmetric pads or strides: legal in the op contract, not in the kernels' API; the
        # exact numpy reference runs these (no lowered fractalc graph has one)
        from fractalc.backends.onnx import reference
        aa, bb = (mul, bias) if a.output == "float" else (
            initializer(node, node.input[2], inits, np.int32), initializer(node, node.input[3], inits, np.bool_))

        def fn(x, _a=a, _w=wc, _aa=aa, _bb=bb):
            y = reference.xnor_conv(x, _w, _aa, _bb, _a)
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if _a.output == "float" else y
    return Step(fn, (s,), -1, "XnorConv", node.name), val
