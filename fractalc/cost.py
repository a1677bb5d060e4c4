"""The cost model: parameters in bits, FLOPs with binary multiplications / 64, and depth.

Conventions (reference doc, section 6):
- bits = 32 x float parameters + 1 x binary parameters; Mbit = bits / 1e6; MiB = bits / 8 / 2^20.
- ``float`` parameters include BN scale and shift (``bn`` reports those alone); BN running mean
  and variance are buffers, reported as ``bn_buffers`` (Keras-style tools count them too).
  Every BN counts 2 floats per channel, ``bn[scale=false]`` too (its gamma is fixed at 1 but
  kept as a tensor): larq's convention (2 per channel whatever scale/center are). Constant
  kernels (``blurpool``'s, role "fixed") count as float parameters and their products as float
  multiplications, as larq counts QuickNet's blur pool.
- A binary conv with ``binary_input=false`` has binary parameters but float multiplications
  (larq: a MAC is binary only when input and weights are both 1-bit). Grouped convs have
  1/groups of the weights and multiplications.
- A binary conv's weights are binary; its per-channel scale alpha is derived from the weights
  (mean |W|) and folds into the following BN, so it is not a parameter.
- FLOPs = float multiplications + binary multiplications / 64 (XNOR + popcount on 64-bit
  words). Multiplications: conv = weights x output pixels; linear = in x out. BN, pooling,
  activations, joins, adds and concats are not counted (the papers' convention).
- Depth = the number of Conv, BinaryConv and Linear nodes on the longest path from the input
  to the output (a shortcut branch beside the main path adds nothing).
"""
from __future__ import annotations


from fractalc import ir
from fractalc.ir import ops
from fractalc.records import fields, record


@record
class LayerCost:
    id: str
    op: str
    shape: tuple[int, ...]
    float_params: int = 0
    binary_params: int = 0
    bn_params: int = 0
    bn_buffers: int = 0
    float_mults: int = 0
    binary_mults: int = 0

    @property
    def bits(self) -> int:
        return 32 * self.float_params + self.binary_params

    @property
    def flops(self) -> float:
        return self.float_mults + self.binary_mults / 64


def layer_cost(g: ir.Graph, n: str) -> LayerCost:
    """The cost of node `n`, from its op-table entry: parameter tensors by role (a BN's scale
    and shift are float parameters and also reported as ``bn``; buffers are not parameters)
    and multiplications."""
    op = g.op(n)
    entry = ops.of(op)
    ins, out = [g.shape(s) for s in g.inputs(n)], g.shape(n)  # what ops.tensors / ops.mults read
    by_role = {"float": 0, "binary": 0, "bn": 0, "buffer": 0, "fixed": 0}
    for t in entry.tensors(op, ins, out):
        by_role[t.role] += t.size
    float_mults, binary_mults = entry.mults(op, ins, out)
    # every field positionally, in LayerCost's order: the record's fast constructor path
    return LayerCost(n, entry.name, tuple(out),
                     by_role["float"] + by_role["bn"] + by_role["fixed"],  # float_params
                     by_role["binary"], by_role["bn"], by_role["buffer"],  # binary, bn, bn_buffers
                     float_mults, binary_mults)


def depth(g: ir.Graph) -> int:
    """Longest input-to-output path, counting the nodes whose op-table entry has ``depth``
    (Conv, BinaryConv and Linear)."""
    best: dict[str, int] = {}
    for n in g.order():
        here = 1 if ops.of(g.op(n)).depth else 0
        best[n] = here + max((best[s] for s in g.inputs(n)), default=0)
    return best[g.output_id]


@record
class Cost:
    layers: tuple[LayerCost, ...]
    depth: int

    def total(self, field: str) -> int:
        return sum(getattr(l, field) for l in self.layers)

    @property
    def bits(self) -> int:
        return 32 * self.total("float_params") + self.total("binary_params")

    @property
    def flops(self) -> float:
        return self.total("float_mults") + self.total("binary_mults") / 64

    def to_json(self, per_layer: bool = True) -> dict:
        fp, bp = self.total("float_params"), self.total("binary_params")
        bits = self.bits
        fm, bm = self.total("float_mults"), self.total("binary_mults")
        out = {
            "params": {
                "float": fp, "binary": bp, "bn": self.total("bn_params"),
                "bn_buffers": self.total("bn_buffers"), "bits": bits, "mbit": bits / 1e6,
                "bytes": bits / 8, "mib": bits / 8 / 2**20,
                "mib_with_bn_buffers": (bits + 32 * self.total("bn_buffers")) / 8 / 2**20,
            },
            "flops": {"float_mults": fm, "binary_mults": bm, "total": fm + bm / 64,
                      "binary_mac_share": bm / (fm + bm) if fm + bm else 0.0},
            "depth": self.depth,
        }
        if per_layer:
            out["layers"] = [
                {**{f.name: getattr(l, f.name) for f in fields(l) if f.name != "shape"}, "shape": list(l.shape),
                 "bits": l.bits, "flops": l.flops}
                for l in self.layers
            ]
        return out


def cost(g: ir.Graph) -> Cost:
    """Per-layer and total cost of a shaped graph."""
    return Cost(tuple(layer_cost(g, n) for n in g.order()), depth(g))


def storage_bytes(c: Cost) -> int:
    """Bytes a float32 framework (torch, the standard ONNX export) holds for the network:
    every parameter as a float, binary ones as their float latent weights, plus BN buffers."""
    return 4 * (c.total("float_params") + c.total("binary_params") + c.total("bn_buffers"))


def refuse_if_too_large(g: ir.Graph, what: str, limit: int | None = None) -> None:
    """Raise `SizeGuardError` before a backend allocates a network whose float32 storage
    (`storage_bytes`) is over `limit` bytes (default: `limits.max_model_bytes()`, set by the
    environment variable FRACTALC_MAX_MODEL_BYTES)."""
    from .errors import SizeGuardError
    from .limits import max_model_bytes

    limit = max_model_bytes() if limit is None else limit
    c = cost(g)
    need = storage_bytes(c)
    if need > limit:
        floats = need // 4
        raise SizeGuardError(
            f"{what} refused: its parameters would need {need:,} bytes ({need / 2**30:.1f} GiB, "
            f"{floats:,} float32 values), over the limit of {limit:,} bytes",
            hint="lower the width/channels parameters, or raise the limit with the environment "
                 "variable FRACTALC_MAX_MODEL_BYTES")
