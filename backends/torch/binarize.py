"""Binarization for training: sign with sign(0) = +1, and the backward rules of the reference.

Torch-only on purpose: this file is copied verbatim into the standalone source that
``fractalc compile --target torch`` writes, so it imports nothing from fractalc.

- `sign(x)`: +1 where x >= 0, -1 where x < 0 (sign(0) = +1, as the ONNX export and the XNOR
  runtime; torch.sign would give 0).
- `SignApproxSign`: forward sign, backward Bi-Real's ApproxSign derivative
  2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere (= max(0, 2 - 2|x|)).
- `SignSTE`: forward sign, backward the straight-through estimator 1 on |x| <= 1, 0 elsewhere.
  Used for activations with ``grad="ste"`` and for weights (gradient passed where |W| <= 1).
- `binary_weight(w)`: alpha * sign(w), alpha = mean |w| per output channel, detached (Bi-Real).
- `binary_conv2d`: the BinaryConv node in each of the three modes (see its docstring).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("fp", "tanh", "binary")


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere, in x's dtype."""
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


class SignApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


class SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1.0).to(grad.dtype)


def binarize_activation(x: torch.Tensor, grad: str) -> torch.Tensor:
    """sign(x) whose backward is ApproxSign (``grad="approxsign"``) or the STE (``"ste"``)."""
    if grad == "ste":
        return SignSTE.apply(x)
    return SignApproxSign.apply(x)


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """alpha * sign(w) with alpha = mean |w| over (in, kh, kw), per output channel, detached."""
    alpha = w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    return alpha * SignSTE.apply(w)


def binary_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                  pad_one: bool, grad: str, mode: str) -> torch.Tensor:
    """The BinaryConv node.

    binary: conv(sign(x), alpha * sign(W)); ``pad_one`` pads sign(x) with +1 instead of 0.
    tanh:   conv(tanh(x), W), zero padding (the paper's full-precision pre-training).
    fp:     conv(x, W), zero padding (a plain float conv on the raw input).
    The latent float weight W is the only parameter in every mode, so checkpoints move freely
    between modes.
    """
    if mode == "fp":
        return F.conv2d(x, weight, None, stride, padding)
    if mode == "tanh":
        return F.conv2d(torch.tanh(x), weight, None, stride, padding)
    xb = binarize_activation(x, grad)
    if pad_one and padding:
        xb = F.pad(xb, (padding, padding, padding, padding), value=1.0)
        padding = 0
    return F.conv2d(xb, binary_weight(weight), None, stride, padding)
