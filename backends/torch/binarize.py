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

import math

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
                  pad_one: bool, grad: str, mode: str, groups: int = 1, dilation: int = 1,
                  binary_input: bool = True, *, exact: tuple | None = None) -> torch.Tensor:
    """The BinaryConv node.

    binary: conv(sign(x), alpha * sign(W)); ``pad_one`` pads sign(x) with +1 instead of 0.
    tanh:   conv(tanh(x), W), zero padding (the paper's full-precision pre-training).
    fp:     conv(x, W), zero padding (a plain float conv on the raw input).
    ``groups`` and ``dilation`` are F.conv2d's. ``binary_input=False`` never binarizes the
    input: binary mode is conv(x, alpha * sign(W)), tanh mode conv(x, W).
    The latent float weight W is the only parameter in every mode, so checkpoints move freely
    between modes.
    ``exact`` (binary mode with a binarized input; the callers pass it in eval only):
    ``(bn, bn_scale, bits)``, the deployed arithmetic of `deployed_conv2d` instead of the float
    conv; `bn` the BatchNorm2d folded into this conv (None: none), `bn_scale` False for
    ``bn[scale=false]``, `bits` True when only binary convs read the result.
    """
    if exact is not None and binary_input and deployed(mode, False):
        return deployed_conv2d(x, weight, stride, padding, pad_one, groups, dilation, *exact, grad=grad)
    if mode == "fp":
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)
    if mode == "tanh":
        return F.conv2d(torch.tanh(x) if binary_input else x, weight, None, stride, padding, dilation, groups)
    if not binary_input:
        return F.conv2d(x, binary_weight(weight), None, stride, padding, dilation, groups)
    xb = binarize_activation(x, grad)
    if pad_one and padding:
        xb = F.pad(xb, (padding, padding, padding, padding), value=1.0)
        padding = 0
    return F.conv2d(xb, binary_weight(weight), None, stride, padding, dilation, groups)


# ---- the deployed arithmetic (torch eval in binary mode) ------------------------------------
# The lowered graph (backends/onnx/lower.py) computes a binary conv as an exact integer dot
# product, then either fmaf(multiplier, dot, bias) (multiplier = gamma * alpha / s, bias =
# beta - gamma * mean / s, s = sqrt(float32(var + eps)), all in float64 rounded once to
# float32; alpha and 0 without BN) or, when only binary convs read it, the exact sign of that
# affine map; a BatchNorm read only by binary convs becomes an exact sign of BN(x). These
# functions compute the same values in torch, so eval equals deployment bit for bit.

def deployed(mode: str, training: bool) -> bool:
    """Whether a forward computes the deployed arithmetic: eval, binary mode, and not while
    torch.compile / torch.export trace (its near-tie fallbacks are data-dependent Python; a
    traced network keeps the float path)."""
    return mode == "binary" and not training and not torch.compiler.is_compiling()


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def deployed_alpha(weight: torch.Tensor) -> torch.Tensor:
    """alpha = mean |W| per output channel in float64, rounded once to float32 (as lowered)."""
    w = _f64(weight).abs().reshape(weight.shape[0], -1)
    return (w.sum(dim=1) / w.shape[1]).to(torch.float32)


def deployed_affine(weight: torch.Tensor | None, bn, bn_scale: bool = True):
    """float32 (alpha, gamma, beta, mean, v = float32(var + eps)) of a conv (None: alpha 1) and
    its BN (None: gamma 1, beta 0, mean 0, v 1)."""
    alpha = deployed_alpha(weight) if weight is not None else torch.ones_like(bn.running_mean, dtype=torch.float32)
    c = alpha.shape[0]
    if bn is None:
        one = torch.ones(c, dtype=torch.float32, device=alpha.device)
        return alpha, one, torch.zeros_like(one), torch.zeros_like(one), one
    f32 = lambda t: t.detach().to(torch.float32)
    gamma = f32(bn.weight) if bn_scale and bn.weight is not None else torch.ones_like(alpha)
    beta = f32(bn.bias) if bn.bias is not None else torch.zeros_like(alpha)
    v = f32(bn.running_var) + torch.tensor(bn.eps, dtype=torch.float32)  # a float32 sum
    if not bool((v > 0).all()):
        raise ValueError("running_var + eps must be positive in every channel (as the lowered graph requires)")
    return alpha, gamma, beta, f32(bn.running_mean), v


def fma_f32(m: torch.Tensor, d: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float32(m * d + b) with one rounding (C's fmaf) for float32 m, b and integer-valued d
    (|d| < 2^29): m * d is exact in float64, the float64 sum's error e is recovered exactly
    (TwoSum), and a float64 sum exactly halfway between two float32 values is broken toward e."""
    p = m.to(torch.float64) * d.to(torch.float64)
    bb = b.to(torch.float64)
    s = p + bb
    bv = s - p
    e = (p - (s - bv)) + (bb - bv)
    r = s.to(torch.float32)
    fix = (e != 0) & (r.to(torch.float64) != s)
    if bool(fix.any()):
        toward = torch.where(s > r.to(torch.float64), torch.full_like(r, math.inf), torch.full_like(r, -math.inf))
        other = torch.nextafter(r, toward)
        tie = fix & ((r.to(torch.float64) + other.to(torch.float64)) == 2 * s)
        r = torch.where(tie, torch.where(e > 0, torch.maximum(r, other), torch.minimum(r, other)), r)
    return r


def _nonneg_exact(p, q, v) -> bool:
    """Exactly (Fractions): p + q * sqrt(v) >= 0 for v > 0."""
    if q == 0:
        return p >= 0
    if p >= 0 and q >= 0:
        return True
    if p <= 0 and q < 0:
        return False
    if p > 0:
        return p * p >= q * q * v
    return q * q * v >= p * p


def _exact_sign(z, bound, exact_at) -> torch.Tensor:
    """+1 where the real value whose float64 estimate is `z` (error below `bound`) is >= 0:
    decided by z where |z| > bound, else by `exact_at(flat index)` (rare near-ties). NaN: +1."""
    plus = ~(z < 0)
    unsure = (z.abs() <= bound).reshape(-1).nonzero().reshape(-1).tolist()
    if unsure:
        plus = plus.reshape(-1).clone()
        for i in unsure:
            plus[i] = exact_at(i)
        plus = plus.reshape(z.shape)
    return plus


def _with_sign(y: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """`y` where its sign (sign(0) = +1) is `plus`, else the smallest value of that sign."""
    tiny = torch.finfo(y.dtype).tiny
    fixed = torch.where(plus, torch.zeros_like(y), torch.full_like(y, -tiny))
    return torch.where((y >= 0) == plus, y, fixed)


def _channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (like.dim() - 2))


def deployed_conv2d(x, weight, stride, padding, pad_one, groups, dilation, bn, bn_scale, bits,
                    grad="approxsign") -> torch.Tensor:
    """A binary conv (+ its folded BatchNorm) as the lowered graph computes it.

    dot = conv(sign(x), sign(W)) exactly (a float32 conv of +-1 values: every partial sum is an
    integer below 2^24; rounded to integers in case a conv algorithm strays), then
    fmaf(multiplier, dot, bias) in float32; with `bits` that value with its sign replaced by the
    exact sign of the real affine map (the lowered integer threshold). With gradients enabled the
    value is this one and the gradient the float path's (conv, BN) of train mode.
    """
    xb = sign(x.detach())
    if pad_one and padding:
        xb = F.pad(xb, (padding, padding, padding, padding), value=1.0)
        pad = 0
    else:
        pad = padding
    wb = sign(weight.detach()).to(xb.dtype)
    dot = torch.round(F.conv2d(xb, wb, None, stride, pad, dilation, groups))
    alpha, gamma, beta, mean, v = deployed_affine(weight, bn, bn_scale)
    s = torch.sqrt(v.to(torch.float64))
    g64 = gamma.to(torch.float64)
    mul = (g64 * alpha.to(torch.float64) / s).to(torch.float32)
    bias = (beta.to(torch.float64) - g64 * mean.to(torch.float64) / s).to(torch.float32)
    y = fma_f32(_channel(mul, dot), dot, _channel(bias, dot))
    if bits:
        slope = g64 * alpha.to(torch.float64)  # exact: a product of two float32 values
        gm = g64 * mean.to(torch.float64)
        t1 = _channel(slope, dot) * dot.to(torch.float64)
        t3 = _channel(beta.to(torch.float64) * s, dot)
        z = (t1 - _channel(gm, dot)) + t3  # ~ s * y(dot)
        bound = 2.0 ** -46 * (t1.abs() + _channel(gm.abs(), dot) + t3.abs())
        shape = dot.shape

        def exact_at(i):
            from fractions import Fraction
            c = (i // (shape[2] * shape[3])) % shape[1]
            fr = lambda t: Fraction(float(t[c]))
            d = Fraction(float(dot.reshape(-1)[i]))
            return _nonneg_exact(fr(gamma) * fr(alpha) * d - fr(gamma) * fr(mean), fr(beta), fr(v))
        y = _with_sign(y, _exact_sign(z, bound, exact_at))
    y = y.to(x.dtype)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        ref = binary_conv2d(x, weight, stride, padding, pad_one, grad, "binary", groups, dilation)
        if bn is not None:
            ref = F.batch_norm(ref, bn.running_mean, bn.running_var, bn.weight if bn_scale else None,
                               bn.bias, False, 0.0, bn.eps)
        y = y + (ref - ref.detach())  # exactly y's value, the float path's gradient
    return y


def deployed_sign_bn(y: torch.Tensor, x: torch.Tensor, bn, bn_scale: bool = True) -> torch.Tensor:
    """BN output `y` = BN(x) of a BatchNorm read only by binary convs, with its sign replaced
    where it differs from the exact sign of the real BN(x) (the lowered PackBits threshold)."""
    _, gamma, beta, mean, v = deployed_affine(None, bn, bn_scale)
    x64 = _f64(x).to(torch.float32).to(torch.float64)  # the float32 value the runtime packs
    s = torch.sqrt(v.to(torch.float64))
    g, m = _channel(gamma.to(torch.float64), x64), _channel(mean.to(torch.float64), x64)
    t3 = _channel(beta.to(torch.float64) * s, x64)
    z = g * (x64 - m) + t3  # ~ s * BN(x)
    bound = 2.0 ** -46 * (g.abs() * (x64.abs() + m.abs()) + t3.abs())
    shape, flat = x64.shape, x64.reshape(-1)

    def exact_at(i):
        from fractions import Fraction
        c = (i // (shape[2] * shape[3])) % shape[1]
        xi = float(flat[i])
        if not math.isfinite(xi):
            return not bool(z.reshape(-1)[i] < 0)
        fr = lambda t: Fraction(float(t[c]))
        return _nonneg_exact(fr(gamma) * (Fraction(xi) - fr(mean)), fr(beta), fr(v))
    out = _with_sign(y.detach(), _exact_sign(z, bound, exact_at))
    if torch.is_grad_enabled() and y.requires_grad:
        out = out + (y - y.detach())  # exactly out's value, BN's gradient
    return out
