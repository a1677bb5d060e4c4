"""The primitive operations of the language and the scalar builtins.

Each primitive is written ``name[params](tensors)`` in a spec; this table is the one place that
says which parameters it takes (with types and defaults) and how many tensors. The expander
turns a fully bound primitive into an IR node via `make_op`.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ir

REQUIRED = object()


@dataclass(frozen=True)
class PrimSpec:
    name: str
    params: tuple[tuple[str, str, object], ...]  # (name, type, default or REQUIRED)
    tensors: int  # number of tensor inputs; -1 = two or more
    doc: str


def _p(name, typ, default=REQUIRED):
    return (name, typ, default)


PRIMS: dict[str, PrimSpec] = {p.name: p for p in [
    PrimSpec("conv", (_p("out", "int"), _p("k", "int", 3), _p("s", "int", 1), _p("p", "int", None),
                      _p("groups", "int", 1), _p("bias", "bool", False)), 1,
             "full-precision conv; p defaults to k//2"),
    PrimSpec("bconv", (_p("out", "int"), _p("k", "int", 3), _p("s", "int", 1), _p("p", "int", None),
                       _p("pad", "str", "zero"), _p("grad", "str", "approxsign")), 1,
             "binary conv of sign(input) with alpha*sign(W); pad = \"zero\" (exact) or \"one\"; "
             "grad = \"approxsign\" or \"ste\" (training backward of sign)"),
    PrimSpec("bn", (_p("eps", "num", 1e-5),), 1, "batch normalisation"),
    PrimSpec("relu", (), 1, "max(x, 0)"),
    PrimSpec("tanh", (), 1, "tanh(x)"),
    PrimSpec("sign", (), 1, "+1 where x >= 0, else -1 (sign(0) = +1)"),
    PrimSpec("identity", (), 1, "x (adds no node)"),
    PrimSpec("maxpool", (_p("k", "int"), _p("s", "int", None), _p("p", "int", 0)), 1, "max pooling; s defaults to k"),
    PrimSpec("avgpool", (_p("k", "int"), _p("s", "int", None), _p("p", "int", 0)), 1, "average pooling; s defaults to k"),
    PrimSpec("gap", (), 1, "global average pooling to Cx1x1"),
    PrimSpec("gmp", (), 1, "global max pooling to Cx1x1"),
    PrimSpec("linear", (_p("out", "int"), _p("bias", "bool", True)), 1, "fully connected on the flattened input"),
    PrimSpec("dropout", (_p("p", "num"),), 1, "dropout (p = 0 adds no node)"),
    PrimSpec("slice", (_p("start", "int"), _p("stop", "int")), 1, "channels [start, stop)"),
    PrimSpec("join", (), -1, "element-wise mean of all inputs (FractalNet join)"),
    PrimSpec("add", (), -1, "element-wise sum (residual); also written a + b"),
    PrimSpec("concat", (), -1, "channel concatenation (dense connectivity)"),
]}

#: Node-id stem used for each primitive (ids look like ``col1.conv2``).
ID_STEM = {"conv": "conv", "bconv": "conv", "bn": "bn", "relu": "relu", "tanh": "tanh",
           "sign": "sign", "maxpool": "pool", "avgpool": "pool", "gap": "pool", "gmp": "pool",
           "linear": "fc", "dropout": "drop", "slice": "slice", "join": "join", "add": "add",
           "concat": "concat"}

#: Scalar builtins, called with parentheses: round(x / 32) * 32, channels(z), ...
BUILTINS = ("round", "floor", "ceil", "min", "max", "abs", "int", "pow", "len",
            "channels", "height", "width")


def make_op(name: str, a: dict) -> ir.Op | None:
    """The IR op for primitive `name` with fully bound arguments `a` (None = no node)."""
    if name in ("conv", "bconv"):
        k = a["k"]
        p = k // 2 if a["p"] is None else a["p"]
        if name == "conv":
            return ir.Conv(a["out"], k, a["s"], p, a["groups"], a["bias"])
        return ir.BinaryConv(a["out"], k, a["s"], p, a["pad"], a["grad"])
    if name == "bn":
        return ir.BatchNorm(float(a["eps"]))
    if name in ("relu", "tanh", "sign"):
        return ir.Activation(name)
    if name == "identity":
        return None
    if name in ("maxpool", "avgpool"):
        k = a["k"]
        return ir.Pool(name[:3], k, k if a["s"] is None else a["s"], a["p"])
    if name in ("gap", "gmp"):
        return ir.Pool("avg" if name == "gap" else "max", global_=True)
    if name == "linear":
        return ir.Linear(a["out"], a["bias"])
    if name == "dropout":
        return ir.Dropout(float(a["p"])) if a["p"] else None
    if name == "slice":
        return ir.Slice(a["start"], a["stop"])
    return {"join": ir.Join, "add": ir.Add, "concat": ir.Concat}[name]()
