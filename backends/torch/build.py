"""IR -> nn.Module: the library-built network, an interpreter of the plan.

`GraphNetwork` registers one torch layer per IR node with parameters at the module path equal
to the node id (nested nn.ModuleDicts keyed by id segments), initialises them with
`runtime.init_parameters` in the plan's order, and precomputes the forward as a tuple of
steps, so the forward has no dict lookups and no data-dependent Python control flow.
The emitted source (source.py) performs the same calls in the same order.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fractalc import ir
from fractalc.ir import ops

from .binarize import binary_conv2d, deployed, deployed_sign_bn
from .drop_path import join, max_join, weighted_join
from .floatexact import deployed_float
from . import runtime
from .plan import RUNTIME_LAYERS, Plan
from .runtime import (NetworkControls, activation, add, attach, batchnorm_noscale, blur_pool, init_parameters,
                      new_layer, pool2d)


class GraphNetwork(NetworkControls, nn.Module):
    """A network built from a `Plan`.

    Args: ``seed`` (initial weights), ``mode`` ("fp" | "tanh" | "binary"), ``drop_path``
    (None: on only for networks without binary convs), ``drop_prob`` (local drop probability),
    ``global_ratio`` (share of batches using global drop-path).

    ``deployed_arithmetic`` (default True): in eval and binary mode, compute every layer as the
    native runtime computes the lowered graph: binary convs and the BNs around them exactly as
    lowered (binarize.py), float convs, linear layers, BNs, pools and ReLUs in the engine's
    order and roundings (floatexact.py, docs/float-arithmetic.md), so the output equals the
    runtime's byte for byte (float32 inputs). The float layers' emulated fmaf chains are slow
    (tens of tensor operations per multiply-add): ``"binary"`` computes only the binary layers
    as deployed (cheap; float layers in torch's order, within rounding of the runtime); False
    keeps torch's float arithmetic everywhere (what a standard ONNX export computes, up to
    rounding).
    """

    def __init__(self, plan: Plan, *, seed: int = 0, mode: str = "binary",
                 drop_path: bool | None = None, drop_prob: float = 0.15, global_ratio: float = 0.5):
        nn.Module.__init__(self)
        layers = []
        for st in plan.layers:
            cls, args, kwargs = st.layer
            layer = new_layer(getattr(runtime if cls in RUNTIME_LAYERS else nn, cls), *args, **dict(kwargs))
            attach(self, st.id, layer)
            layers.append((st.id, layer))
        init_parameters(layers, seed)
        self.network_name = plan.name
        self.input_shape = plan.input_shape
        self.output_shape = plan.output_shape
        self._fc_columns = plan.columns
        self._fc_output = plan.output
        self._fc_steps = tuple((st.kind, self.get_submodule(st.id) if st.layer else None,
                                st.inputs, st.args) for st in plan.steps)
        # per step, its `exact` role with the folded BN's module (run_step's `exact`)
        self._fc_exact = tuple(_exact_arg(self, st.exact) for st in plan.steps)
        self._fc_exact_binary = tuple(None if e is None or e[0] in FLOAT_ROLES else e for e in self._fc_exact)
        self._fc_setup(mode, drop_path, drop_prob, global_ratio, plan.has_binary)
        self.deployed_arithmetic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dp = self._fc_drop_state(x)
        mode = self._fc_mode
        vals: list[torch.Tensor] = []
        exact = self._fc_roles()
        for (kind, layer, ins, args), ex in zip(self._fc_steps, exact):
            vals.append(run_step(kind, layer, [vals[i] for i in ins], args, x, dp, mode, self.training, ex))
        return vals[self._fc_output]

    def _fc_roles(self) -> tuple:
        """Per step, the `exact` role the forward passes to run_step (by deployed_arithmetic)."""
        da = self.deployed_arithmetic
        if isinstance(da, str) and da == "binary":
            return self._fc_exact_binary
        if da is True:
            return self._fc_exact
        if da is False:
            return (None,) * len(self._fc_exact)
        raise ValueError(f"deployed_arithmetic must be True, False or 'binary', got {da!r}")


FLOAT_ROLES = ("float", "ffolded")  # plan.float_roles' roles (the rest are the binary layers')


def _exact_arg(net: nn.Module, role: tuple):
    """A plan step's `exact` role as run_step takes it: a binary conv's (BatchNorm2d module or
    None, BN scale flag, bits); a BN's role unchanged; None for the other steps."""
    if not role:
        return None
    if role[0] == "conv":
        return (net.get_submodule(role[1]) if role[1] else None, role[2], role[3])
    if role[0] == "float":
        return ("float", net.get_submodule(role[1]) if role[1] else None, role[2])
    return role


def run_step(kind, layer, xs, args, x, dp, mode, training, exact=None):
    """One node's forward; the emitted source inlines exactly these calls.

    In eval and binary mode, a step with an `exact` role computes what the lowered graph
    deploys, bit for bit (binarize.deployed_conv2d; a folded BN passes the conv's value on; a
    BN read only by binary convs gets the exact sign of BN(x); a float layer's role
    ("float", folded BN module or None, scale flag): floatexact.deployed_float)."""
    if exact is not None and exact[0] in FLOAT_ROLES:
        # the engine's float arithmetic is a float32 contract: other dtypes keep the float path
        if deployed(mode, training) and xs[0].dtype == torch.float32:
            return xs[0] if exact[0] == "ffolded" else deployed_float(kind, layer, xs, args, exact[1], exact[2])
        exact = None
    if exact is not None and deployed(mode, training):
        if kind == "bconv":
            return binary_conv2d(xs[0], layer.weight, *args[:4], mode, *args[4:], exact=exact)
        if exact[0] == "folded":
            return xs[0]
        return deployed_sign_bn(run_step(kind, layer, xs, args, x, dp, mode, training), xs[0], layer, exact[1])
    if kind == "input":
        return x
    if kind == "conv" or (kind == "bn" and not args):
        return layer(xs[0])
    if kind == "bn":
        return batchnorm_noscale(layer, xs[0])
    if kind == "bconv":
        return binary_conv2d(xs[0], layer.weight, *args[:4], mode, *args[4:])
    if kind == "blurpool":
        return blur_pool(xs[0], *args)
    if kind == "act":
        return activation(xs[0], *args)
    if kind == "pool":
        return pool2d(xs[0], *args)
    if kind == "linear":
        return layer(torch.flatten(xs[0], 1))
    if kind == "join":
        return join(xs, args[0], dp)
    if kind == "add":
        return add(xs)
    if kind == "concat":
        return torch.cat(xs, 1)
    if kind == "slice":
        return xs[0][:, args[0]:args[1]]
    if kind == "dropout":
        return F.dropout(xs[0], args[0], training)
    if kind == "output":
        return xs[0]
    return ops.hook(ops.by_name(kind).kind, "torch.forward", "torch")(layer, xs, args)


# the forwards of issue 14's primitives (plan.py makes their steps), all in runtime.py so that
# the emitted source calls the same functions
ops.set_hook(ir.RSign, "torch.forward", lambda layer, xs, args: runtime.rsign(xs[0], layer))
ops.set_hook(ir.Shift, "torch.forward", lambda layer, xs, args: runtime.channel_shift(xs[0], layer))
ops.set_hook(ir.Scale, "torch.forward", lambda layer, xs, args: runtime.channel_scale(xs[0], layer))
ops.set_hook(ir.PReLU, "torch.forward",
             lambda layer, xs, args: (runtime.rprelu if args[0] else runtime.prelu)(xs[0], layer))
ops.set_hook(ir.Mul, "torch.forward", lambda layer, xs, args: xs[0] * xs[1])
ops.set_hook(ir.WeightedJoin, "torch.forward",
             lambda layer, xs, args: weighted_join(xs, layer.weight if layer is not None else args[0]))
ops.set_hook(ir.MaxJoin, "torch.forward", lambda layer, xs, args: max_join(xs))
