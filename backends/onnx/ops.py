"""The ``ai.fractalc`` operator set, version 1: schemas, attribute checks and shape inference.

Three operators (their full contract is docs/onnx-ops.md; the bit layout is `packing`):

- ``PackBits(X: float NCHW [, threshold: float, flip: bool]) -> uint64 (N, H, W, ceil(C/64))``:
  bit 1 (-1) where x < 0, or with a per-channel threshold where x < t (x > t if flip).
- ``UnpackBits(X: uint64 NHWC-packed) -> float NCHW of +-1``; attribute ``channels``.
- ``XnorConv(X, W, A, B)``: binary convolution of packed input by packed weights. Attributes
  ``in_channels``, ``out_channels``, ``kernel_shape``, ``strides``, ``pads``, ``padding``
  ("zero" | "one"), ``output_type`` ("float" | "bits"), ``group`` (default 1: output channel o
  reads input channels [g * C_in/group, (g + 1) * C_in/group) with g = o // (C_out/group); W is
  then (C_out, kh, kw, ceil(C_in/group / 64))) and ``dilations`` ([dh, dw], default [1, 1]). With output_type="float", A = multiplier and
  B = bias (float32, per output channel) and Y is float32 NCHW; with output_type="bits", A =
  threshold (int32) and B = flip (bool) and Y is packed uint64 NHWC.

`register()` adds the schemas (with Python shape inference that also validates attributes) to
onnx's registry, so ``onnx.checker.check_model(full_check=True)`` checks our nodes' attributes,
input types and output shapes. `check_node` is the same validation for a loader.
"""
from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "ai.fractalc"
VERSION = 1
OP_TYPES = ("PackBits", "UnpackBits", "XnorConv")
PADDINGS = ("zero", "one")
OUTPUTS = ("float", "bits")


class OpError(ValueError):
    """An ``ai.fractalc`` node whose attributes or inputs break the operator contract."""


@dataclass(frozen=True)
class ConvAttrs:
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    padding: str
    output: str
    group: int = 1
    dilations: tuple[int, int] = (1, 1)

    @property
    def group_channels(self) -> int:
        """Input channels each output channel reads (in_channels / group)."""
        return self.in_channels // self.group

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.kernel
        dh, dw = self.dilations
        sh, sw = self.strides
        t, l, b, r = self.pads
        return (h + t + b - dh * (kh - 1) - 1) // sh + 1, (w + l + r - dw * (kw - 1) - 1) // sw + 1


_ALLOWED = {
    "PackBits": set(),
    "UnpackBits": {"channels"},
    "XnorConv": {"in_channels", "out_channels", "kernel_shape", "strides", "pads", "padding", "output_type",
                 "group", "dilations"},
}
_N_INPUTS = {"PackBits": (1, 3), "UnpackBits": (1,), "XnorConv": (4,)}


def _words(c: int) -> int:
    return (c + 63) // 64


def conv_attrs(attrs: dict, name: str = "") -> ConvAttrs:
    """Validate an XnorConv attribute dict (python values) and return it typed."""
    where = f"XnorConv {name!r}: " if name else "XnorConv: "

    def need_int(key):
        if key not in attrs:
            raise OpError(where + f"missing required attribute {key!r}")
        v = attrs[key]
        if not isinstance(v, int) or v <= 0:
            raise OpError(where + f"attribute {key!r} must be a positive int, got {v!r}")
        return v

    def ints(key, n, default, minimum):
        v = attrs.get(key, default)
        if v is None:
            raise OpError(where + f"missing required attribute {key!r}")
        if not isinstance(v, (list, tuple)):  # an INT where INTS is required
            raise OpError(where + f"attribute {key!r} must be {n} ints >= {minimum}, got {v!r}")
        v = tuple(v)
        if len(v) != n or any(not isinstance(i, int) or i < minimum for i in v):
            raise OpError(where + f"attribute {key!r} must be {n} ints >= {minimum}, got {list(v)}")
        return v

    def choice(key, options, default):
        v = attrs.get(key, default)
        if isinstance(v, bytes):
            v = v.decode()
        if v not in options:
            raise OpError(where + f"attribute {key!r} must be one of {', '.join(options)}, got {v!r}")
        return v

    a = ConvAttrs(need_int("in_channels"), need_int("out_channels"),
                  ints("kernel_shape", 2, None, 1), ints("strides", 2, (1, 1), 1),
                  ints("pads", 4, (0, 0, 0, 0), 0), choice("padding", PADDINGS, "zero"),
                  choice("output_type", OUTPUTS, "float"))
    group = attrs.get("group", 1)
    if not isinstance(group, int) or group <= 0 or a.in_channels % group or a.out_channels % group:
        raise OpError(where + f"attribute 'group' must be a positive int dividing in_channels "
                      f"{a.in_channels} and out_channels {a.out_channels}, got {group!r}")
    from dataclasses import replace
    return replace(a, group=group, dilations=ints("dilations", 2, (1, 1), 1))


def check_attr_names(op_type: str, names, name: str = "") -> None:
    if op_type not in _ALLOWED:
        raise OpError(f"unknown operator {DOMAIN}::{op_type} (node {name!r}); "
                      f"version {VERSION} of {DOMAIN} has: {', '.join(OP_TYPES)}")
    extra = sorted(set(names) - _ALLOWED[op_type])
    if extra:
        raise OpError(f"{op_type} {name!r}: unknown attribute(s) {', '.join(extra)}; "
                      f"allowed: {', '.join(sorted(_ALLOWED[op_type])) or 'none'}")


def attrs_of(node) -> dict:
    """The attributes of a NodeProto as python values."""
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def check_node(node) -> None:
    """Validate one ``ai.fractalc`` NodeProto (op type, attribute names and values, arity)."""
    check_attr_names(node.op_type, [a.name for a in node.attribute], node.name)
    n_in = _N_INPUTS[node.op_type]
    if len(node.input) not in n_in or len(node.output) != 1:
        raise OpError(f"{node.op_type} {node.name!r}: needs {' or '.join(map(str, n_in))} input(s) "
                      f"and 1 output, got {len(node.input)} and {len(node.output)}")
    attrs = attrs_of(node)
    if node.op_type == "XnorConv":
        conv_attrs(attrs, node.name)
    elif node.op_type == "UnpackBits":
        c = attrs.get("channels")
        if not isinstance(c, int) or c <= 0:
            raise OpError(f"UnpackBits {node.name!r}: attribute 'channels' must be a positive int, got {c!r}")


# --- schemas and shape inference -------------------------------------------------------------

def _dims(t):
    """Dims of a TypeProto as a list of (value or None, param or None)."""
    if not t.tensor_type.HasField("shape"):
        return None
    return [(d.dim_value if d.HasField("dim_value") else None,
             d.dim_param if d.HasField("dim_param") else None) for d in t.tensor_type.shape.dim]


def _type(elem, dims):
    import onnx
    t = onnx.TypeProto()
    t.tensor_type.elem_type = elem
    if dims is not None:
        shp = t.tensor_type.shape
        for v, p in dims:
            d = shp.dim.add()
            if v is not None:
                d.dim_value = v
            elif p:
                d.dim_param = p
    return t


def _ctx_attrs(ctx, op_type) -> dict:
    from onnx import helper
    out = {}
    for key in _ALLOWED[op_type]:
        a = ctx.get_attribute(key)
        if a is not None:
            out[key] = helper.get_attribute_value(a)
    return out


def _expect(ctx, i, elem, what, node):
    from onnx import TensorProto, helper
    t = ctx.get_input_type(i)
    if t is None:
        return None
    if t.tensor_type.elem_type != elem:
        got = helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type) if t.tensor_type.elem_type else "?"
        raise OpError(f"{node}: input {i} ({what}) must be {TensorProto.DataType.Name(elem).lower()}, got {got}")
    return _dims(t)


def _infer_pack(ctx):
    from onnx import TensorProto
    d = _expect(ctx, 0, TensorProto.FLOAT, "X", "PackBits")
    if d is not None and len(d) != 4:
        raise OpError(f"PackBits: input must be NCHW (rank 4), got rank {len(d)}")
    if ctx.get_num_inputs() not in (1, 3):
        raise OpError(f"PackBits: needs 1 input (X) or 3 (X, threshold, flip), got {ctx.get_num_inputs()}")
    if ctx.get_num_inputs() == 3:
        for i, elem, what in ((1, TensorProto.FLOAT, "threshold"), (2, TensorProto.BOOL, "flip")):
            v = _expect(ctx, i, elem, what, "PackBits")
            if v is not None and d is not None and [x for x, _ in v] != [d[1][0]]:
                raise OpError(f"PackBits: {what} must have shape [{d[1][0]}], got {[x for x, _ in v]}")
    out = None
    if d is not None:
        c = d[1][0]
        out = [d[0], d[2], d[3], (_words(c) if c else None, None)]
    ctx.set_output_type(0, _type(TensorProto.UINT64, out))


def _infer_unpack(ctx):
    from onnx import TensorProto
    c = _ctx_attrs(ctx, "UnpackBits").get("channels")
    if not isinstance(c, int) or c <= 0:
        raise OpError(f"UnpackBits: attribute 'channels' must be a positive int, got {c!r}")
    d = _expect(ctx, 0, TensorProto.UINT64, "X", "UnpackBits")
    out = None
    if d is not None:
        if len(d) != 4:
            raise OpError(f"UnpackBits: input must be packed NHWC (rank 4), got rank {len(d)}")
        if d[3][0] is not None and d[3][0] != _words(c):
            raise OpError(f"UnpackBits: {c} channels need {_words(c)} words, input has {d[3][0]}")
        out = [d[0], (c, None), d[1], d[2]]
    ctx.set_output_type(0, _type(TensorProto.FLOAT, out))


def _infer_conv(ctx):
    from onnx import TensorProto
    a = conv_attrs(_ctx_attrs(ctx, "XnorConv"))
    d = _expect(ctx, 0, TensorProto.UINT64, "X", "XnorConv")
    if d is not None and (len(d) != 4 or (d[3][0] is not None and d[3][0] != _words(a.in_channels))):
        raise OpError(f"XnorConv: X must be packed NHWC (N, H, W, {_words(a.in_channels)}) for "
                      f"in_channels={a.in_channels}, got {[v or p for v, p in d]}")
    w = _expect(ctx, 1, TensorProto.UINT64, "W", "XnorConv")
    kh, kw = a.kernel
    canon = [a.out_channels, kh, kw, _words(a.group_channels)]
    tight = [_words(a.out_channels * kh * kw * a.group_channels)]
    if w is not None and [v for v, _ in w] not in (canon, tight):
        raise OpError(f"XnorConv: W must have shape {canon} (canonical) or {tight} (tight), "
                      f"got {[v for v, _ in w]}")
    if a.output == "float":
        kinds = ((TensorProto.FLOAT, "multiplier"), (TensorProto.FLOAT, "bias"))
    else:
        kinds = ((TensorProto.INT32, "threshold"), (TensorProto.BOOL, "flip"))
    for i, (elem, what) in zip((2, 3), kinds):
        v = _expect(ctx, i, elem, what, f"XnorConv (output_type={a.output})")
        if v is not None and [x for x, _ in v] != [a.out_channels]:
            raise OpError(f"XnorConv: {what} must have shape [{a.out_channels}], got {[x for x, _ in v]}")
    out = None
    if d is not None:
        h, w_ = d[1][0], d[2][0]
        oh, ow = a.out_hw(h, w_) if h is not None and w_ is not None else (None, None)
        if oh is not None and (oh <= 0 or ow <= 0):
            raise OpError(f"XnorConv: empty output {oh}x{ow}")
        if a.output == "float":
            out = [d[0], (a.out_channels, None), (oh, None), (ow, None)]
        else:
            out = [d[0], (oh, None), (ow, None), (_words(a.out_channels), None)]
    ctx.set_output_type(0, _type(TensorProto.FLOAT if a.output == "float" else TensorProto.UINT64, out))


_registered = False


def register() -> None:
    """Register the ``ai.fractalc`` v1 schemas with onnx (idempotent, process-wide)."""
    global _registered
    if _registered:
        return
    from onnx import defs
    S = defs.OpSchema
    P = S.FormalParameter

    def schema(name, doc, inputs, outputs, constraints, attributes, infer):
        s = S(name, DOMAIN, VERSION, doc=doc, inputs=inputs, outputs=outputs,
              type_constraints=constraints, attributes=attributes)
        if hasattr(s, "set_type_and_shape_inference_function"):  # onnx >= 1.17
            s.set_type_and_shape_inference_function(infer)
        return s

    A = S.Attribute
    T = S.AttrType
    schemas = [
        schema("PackBits", "Float NCHW -> packed NHWC uint64 words; bit 1 where x < 0 (or "
               "x < threshold[c], x > threshold[c] where flip[c]).",
               [P("X", "T"), P("threshold", "T", param_option=S.FormalParameterOption.Optional),
                P("flip", "tensor(bool)", param_option=S.FormalParameterOption.Optional)],
               [P("Y", "tensor(uint64)")], [("T", ["tensor(float)"], "float input")],
               [], _infer_pack),
        schema("UnpackBits", "Packed NHWC uint64 words -> float NCHW of +1/-1.",
               [P("X", "tensor(uint64)")], [P("Y", "tensor(float)")], [],
               [A("channels", T.INT, "number of real channels", required=True)], _infer_unpack),
        schema("XnorConv", "Binary convolution of packed activations by packed weights "
               "(docs/onnx-ops.md).",
               [P("X", "tensor(uint64)"), P("W", "tensor(uint64)"), P("A", "TA"), P("B", "TB")],
               [P("Y", "TY")],
               [("TA", ["tensor(float)", "tensor(int32)"], "multiplier (float) or threshold (int32)"),
                ("TB", ["tensor(float)", "tensor(bool)"], "bias (float) or flip (bool)"),
                ("TY", ["tensor(float)", "tensor(uint64)"], "float NCHW or packed NHWC output")],
               [A("in_channels", T.INT, "real input channels", required=True),
                A("out_channels", T.INT, "output channels", required=True),
                A("kernel_shape", T.INTS, "[kh, kw]", required=True),
                A("strides", T.INTS, "[sh, sw], default [1, 1]", required=False),
                A("pads", T.INTS, "[top, left, bottom, right], default 0", required=False),
                A("padding", T.STRING, "zero | one", required=False),
                A("output_type", T.STRING, "float | bits", required=False),
                A("group", T.INT, "channel groups, default 1", required=False),
                A("dilations", T.INTS, "[dh, dw], default [1, 1]", required=False)],
               _infer_conv),
    ]
    for s in schemas:
        try:
            defs.get_schema(s.name, VERSION, DOMAIN)
            continue  # registered by an earlier import (e.g. a reloaded module)
        except defs.SchemaError:
            defs.register_schema(s)
    _registered = True


def opset_imports():
    from onnx import helper
    return [helper.make_opsetid(DOMAIN, VERSION)]
