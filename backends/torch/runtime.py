"""What a built network needs at run time, besides binarize.py and drop_path.py.

Torch-only (copied verbatim into the emitted standalone source): layer construction without
touching the global RNG, the seeded initialisation, the module tree whose paths equal IR ids,
the parameterless node kinds, and `NetworkControls`, the mode / drop-path switches shared by
the library-built network and the emitted class.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binarize import MODES, SignSTE  # inline: drop
from .drop_path import DropPathState, draw_drop_path  # inline: drop


def new_layer(cls: type, *args, **kwargs) -> nn.Module:
    """Construct a layer without running torch's default (global-RNG) initialisation."""
    return nn.utils.skip_init(cls, *args, **kwargs)


def attach(root: nn.Module, path: str, layer: nn.Module) -> None:
    """Register `layer` at dotted `path` below `root`, creating nested ModuleDicts on the way."""
    *parents, leaf = path.split(".")
    node = root
    for name in parents:
        if name not in node._modules:
            node.add_module(name, nn.ModuleDict())
        node = node._modules[name]
    node.add_module(leaf, layer)


@torch.no_grad()
def init_parameters(layers: Sequence[tuple[str, nn.Module]], seed: int) -> None:
    """Seeded, order-defined initialisation (the order is the IR's topological order).

    Conv, binary conv and linear weights (and biases) ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    torch's default bound, drawn from one generator seeded with `seed`; batch norms start at
    scale 1, shift 0, mean 0, variance 1; per-channel vectors (`ChannelParams`) at their
    constants (neither draws from the generator).
    """
    gen = torch.Generator().manual_seed(int(seed))
    for _, layer in layers:
        if isinstance(layer, (nn.BatchNorm2d, ChannelParams)):
            layer.reset_parameters()
            continue
        w = layer.weight
        bound = 1.0 / math.sqrt(w[0].numel())
        w.copy_(torch.empty(w.shape, dtype=w.dtype).uniform_(-bound, bound, generator=gen))
        if getattr(layer, "bias", None) is not None:
            b = layer.bias
            b.copy_(torch.empty(b.shape, dtype=b.dtype).uniform_(-bound, bound, generator=gen))


def activation(x: torch.Tensor, fn: str) -> torch.Tensor:
    if fn == "relu":
        return F.relu(x)
    if fn == "tanh":
        return torch.tanh(x)
    if fn == "sign":
        return SignSTE.apply(x)
    if fn == "sigmoid":
        # float64, rounded once: the same value as the native runtime's (whose float32 exp
        # would differ from torch's by an ulp, enough to flip a later sign)
        return torch.sigmoid(x.double()).to(x.dtype)
    return x


class ChannelParams(nn.Module):
    """Per-channel parameter vectors of one node (RSign's threshold, shift, scale, PReLU's
    slopes, RPReLU's shifts): a (C,) Parameter per name in `init`, each reset to its constant
    by `reset_parameters` (no random draw)."""

    def __init__(self, channels: int, init: tuple = (("bias", 0.0),), device=None, dtype=None):
        super().__init__()
        self._fc_init = tuple(init)
        for name, _ in self._fc_init:
            self.register_parameter(name, nn.Parameter(torch.empty(channels, device=device, dtype=dtype)))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for name, value in self._fc_init:
            getattr(self, name).fill_(value)


def per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) vector shaped to broadcast over `x` (N, C, ...) along the channels."""
    return v.view((-1,) + (1,) * (x.dim() - 2))


def rsign(x: torch.Tensor, p: ChannelParams) -> torch.Tensor:
    """x - t: the binary conv reading it binarizes sign(x - t) (ReActNet's RSign)."""
    return x - per_channel(p.threshold, x)


def channel_shift(x: torch.Tensor, p: ChannelParams) -> torch.Tensor:
    return x + per_channel(p.bias, x)


def channel_scale(x: torch.Tensor, p: ChannelParams) -> torch.Tensor:
    return x * per_channel(p.weight, x)


def prelu(x: torch.Tensor, p: ChannelParams) -> torch.Tensor:
    return F.prelu(x, p.weight)


def rprelu(x: torch.Tensor, p: ChannelParams) -> torch.Tensor:
    """PReLU(x + b1) + b2, three roundings in this order (ReActNet's RPReLU)."""
    return F.prelu(x + per_channel(p.shift_in, x), p.weight) + per_channel(p.shift_out, x)


def pool2d(x: torch.Tensor, kind: str, kernel: int, stride: int, padding: int,
           global_: bool) -> torch.Tensor:
    """max / avg pooling (avg counts zero padding, torch's default); global: over all of HxW."""
    if global_:
        return x.amax(dim=(2, 3), keepdim=True) if kind == "max" else x.mean(dim=(2, 3), keepdim=True)
    if kind == "max":
        return F.max_pool2d(x, kernel, stride, padding)
    return F.avg_pool2d(x, kernel, stride, padding)


def batchnorm_noscale(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn[scale=false]``: batch norm with gamma fixed at 1 (the layer's weight is not used, so
    it gets no gradient and stays at its initial 1); same statistics updates as ``bn(x)``."""
    use_batch = bn.training or bn.running_mean is None
    momentum = bn.momentum if bn.momentum is not None else 0.0
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean, bn.running_var, None, bn.bias, use_batch, momentum, bn.eps)


def blur_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """QuickNet's fixed blur pool: depthwise 3x3 [[1,2,1],[2,4,2],[1,2,1]]/16, zero padding 1.
    The kernel is a constant (exact in float32), not a parameter."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, kernel, None, stride, 1, 1, x.shape[1])


def add(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


class NetworkControls:
    """Mode and drop-path switches (a mixin for the network's nn.Module class).

    ``set_mode("fp" | "tanh" | "binary")`` changes how every binary conv treats its input and
    weights, without rebuilding or changing any parameter. Full-precision layers are the same
    in every mode. ``set_drop_path(enabled, p, global_ratio)`` configures FractalNet drop-path
    for the joins; it acts only in ``train()`` mode.
    """

    network_name: str = ""
    input_shape: tuple[int, ...] = ()  # (C, H, W) without the batch dimension
    output_shape: tuple[int, ...] = ()
    _fc_columns: tuple[int, ...] = ()

    def _fc_setup(self, mode: str, drop_path: bool | None, drop_prob: float,
                  global_ratio: float, has_binary: bool) -> None:
        self.set_mode(mode)
        # Off by default for binary networks: the binary recipes of the paper train without it.
        self.set_drop_path(not has_binary if drop_path is None else drop_path, drop_prob, global_ratio)

    @property
    def mode(self) -> str:
        return self._fc_mode

    def set_mode(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._fc_mode = mode
        return self

    def set_drop_path(self, enabled: bool = True, p: float = 0.15, global_ratio: float = 0.5):
        if not 0.0 <= p <= 1.0 or not 0.0 <= global_ratio <= 1.0:
            raise ValueError(f"drop-path p and global_ratio must lie in [0, 1], got {p}, {global_ratio}")
        self._fc_drop_path = bool(enabled)
        self._fc_drop_prob = float(p)
        self._fc_global_ratio = float(global_ratio)
        return self

    def _fc_drop_state(self, x: torch.Tensor) -> DropPathState | None:
        if not (self.training and self._fc_drop_path):
            return None
        return draw_drop_path(self._fc_columns, self._fc_drop_prob, self._fc_global_ratio, x.device)
