"""The native engine's float arithmetic in torch: eval with ``deployed_arithmetic``.

Torch-only on purpose: this file is copied verbatim into the standalone source that
``fractalc compile --target torch`` writes, so it imports nothing from fractalc.

In eval and binary mode (float32 values), every float layer computes what the native engine
computes for the lowered graph, in its order and with its roundings (the contract:
docs/float-arithmetic.md), so torch eval equals the runtime byte for byte:

- a float conv (and a conv with ``binary_input=false``) sums with an fmaf chain per output over
  (ky, kx, c) from +0 and adds the bias last; grouped / dilated ones (and the blur pool)
  multiply and add separately, skipping taps in the padding; a BatchNorm read only by the conv
  is folded into its weights as the engine's loader folds it;
- a linear layer: an fmaf chain over the features, then the bias;
- a BatchNorm: x * scale + shift (two roundings) with scale and shift from float64;
- pools: taps in row-major window order, an average divided by the window size; a global
  average sums pixels in order, then divides; ReLU: x < 0 ? 0 : x;
- a scale node and a weighted join's products: x * s + 0 (the engine's affine map); a
  maxjoin: m < x ? x : m in input order.

torch has no fused multiply-add, so `fma` computes one exactly (see its docstring). The fmaf
chains loop over the reduction index (vectorised over all outputs, `FmaChain`): about 6 tensor
operations per step, slow for large inputs; where every partial sum is exact in float32 (`sums_exact`)
any order gives the exact sum, and one float64 conv computes it. Gradients in eval are the
float path's (as for the binary layers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .binarize import binary_conv2d, deployed_alpha, sign  # inline: drop
from .drop_path import max_join, weighted_join  # inline: drop
from .runtime import activation, batchnorm_noscale, blur_pool, channel_scale, pool2d  # inline: drop


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32(a * b + c) with a single rounding (C's fmaf), element-wise with broadcasting;
    a, b, c hold float32 values (float32 or float64 tensors).

    a * b is exact in float64; s = p + c rounds once, its error e is recovered exactly
    (TwoSum); s rounded to odd (one ulp toward e where e != 0 and s's last bit is even) and
    then to float32 is the correctly rounded a * b + c, since 53 >= 24 + 2."""
    p = a.to(torch.float64) * b.to(torch.float64)
    c = c.to(torch.float64)
    s = p + c
    bv = s - p
    e = (p - (s - bv)) + (c - bv)
    bits = s.view(torch.int64)
    fix = (e != 0) & ((bits & 1) == 0) & torch.isfinite(s)
    if bool(fix.any()):
        # bits + 1 moves away from zero, bits - 1 toward it, for either sign
        step = torch.where((e > 0) == (s > 0), 1, -1).to(bits.device)
        bits = torch.where(fix, bits + step, bits)
    return bits.view(torch.float64).to(torch.float32)


class FmaChain:
    """acc = fma(a, b, acc) step after step from acc = +0 (the engine's per-output chain,
    vectorised over all outputs); a, b float64 tensors holding float32 values.

    Fast form of `fma`: s = a * b + acc rounds once in float64, and float32(s) is already the
    correctly rounded result unless s lies exactly halfway between two float32 values or in
    float32's subnormal range; only those elements (rare on real data) go through `fma`.
    `grain`: every product a multiple of 2^-grain with grain <= 126 makes every nonzero sum
    at least 2^-126, so the subnormal test is skipped (None: always tested)."""

    def __init__(self, shape, grain=None, device=None):  # device: the tensors' (CPU or GPU)
        self.acc = torch.zeros(shape, dtype=torch.float32, device=device)
        self._tiny = grain is None or grain > 126

    def step(self, a: torch.Tensor, b: torch.Tensor) -> None:
        p = a * b  # exact
        s = p + self.acc
        sv = s.view(torch.int64)
        odd = (sv & 0x1FFFFFFF) == 0x10000000  # exactly half a float32 ulp from s's neighbours
        if self._tiny:
            m = sv & 0x7FFFFFFFFFFFFFFF
            odd = odd | ((m < (897 << 52)) & (m != 0))  # 0 < |s| < 2^-126
        new = s.to(torch.float32)
        if bool(odd.any()):
            idx = odd.reshape(-1).nonzero().reshape(-1)
            flat = new.reshape(-1)
            flat[idx] = fma(p.reshape(-1)[idx], torch.ones((), device=p.device), self.acc.reshape(-1)[idx])
            new = flat.reshape(s.shape)
        self.acc = new


def grain(x: torch.Tensor, w: torch.Tensor):
    """q with every product of a value of x and one of w a multiple of 2^-q (None: not finite)."""
    qx, qw = frac_bits(x), frac_bits(w)
    return None if qx is None or qw is None else qx + qw


def frac_bits(v: torch.Tensor):
    """The least q with every value of float32 `v` a multiple of 2^-q (None if any is not
    finite; -200 for an all-zero tensor)."""
    v = v.detach().to(torch.float32)
    if not bool(torch.isfinite(v).all()):
        return None
    bits = v.view(torch.int32).to(torch.int64) & 0x7FFFFFFF
    bits = bits[bits != 0]
    if bits.numel() == 0:
        return -200
    exp = bits >> 23
    mant = (bits & 0x7FFFFF) | torch.where(exp > 0, 0x800000, 0)
    low = torch.log2((mant & -mant).to(torch.float64)).to(torch.int64)
    return int(-(torch.clamp(exp, min=1) - 150 + low).min())


def sums_exact(x: torch.Tensor, w2: torch.Tensor, q="?") -> bool:
    """Whether every partial sum of x times the rows of w2 (Co, K) is exact in float32 in any
    order: products are multiples of 2^-q and no sum of their magnitudes reaches 2^(24-q).
    `q`: `grain(x, w2)` when already known."""
    q = grain(x, w2) if q == "?" else q
    if q is None:
        return False
    xm = float(x.detach().abs().max()) if x.numel() else 0.0
    wm = float(w2.detach().to(torch.float64).abs().sum(dim=1).max()) if w2.numel() else 0.0
    return xm * wm * 2.0 ** q < 2.0 ** 24


def conv2d(x, w, b, stride: int, padding: int, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """The engine's float convolution of float32 NCHW `x` (zero padding): dense (group 1,
    dilation 1): acc = +0, acc = fma(x, w, acc) over the padded taps in the order (ky, kx, c),
    y = acc + b; grouped or dilated: acc = acc + x * w (two roundings) over (ky, kx, i), taps in
    the padding skipped, y = acc + b."""
    x, w = x.detach(), w.detach().to(torch.float32)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    dev = x.device
    bias = torch.zeros(co, dtype=torch.float32, device=dev) if b is None else b.detach().to(torch.float32)
    bias = bias.reshape(1, co, 1, 1)
    s, p, d = stride, padding, dilation
    ho = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    wo = (wd + 2 * p - d * (kw - 1) - 1) // s + 1
    xp = F.pad(x, (p, p, p, p))

    def taps(t, ky, kx):
        return t[:, :, ky * d:ky * d + s * (ho - 1) + 1:s, kx * d:kx * d + s * (wo - 1) + 1:s]
    if groups == 1 and dilation == 1:
        q = grain(x, w)
        if sums_exact(x, w.reshape(co, -1), q):  # the exact sum: one float64 conv (+0: never -0)
            y = F.conv2d(x.to(torch.float64), w.to(torch.float64), None, s, p) + 0.0
            return y.to(torch.float32) + bias
        x64, w64 = xp.to(torch.float64), w.to(torch.float64)
        chain = FmaChain((n, co, ho, wo), q, dev)
        for ky in range(kh):
            for kx in range(kw):
                t = taps(x64, ky, kx).contiguous()  # strided operands are several times slower
                for ci in range(c):
                    chain.step(t[:, ci:ci + 1], w64[:, ci, ky, kx].reshape(1, co, 1, 1))
        return chain.acc + bias
    og = co // groups
    first = (torch.arange(co, device=dev) // og) * cg  # input channel 0 of output channel o's group
    oy, ox = torch.arange(ho, device=dev) * s - p, torch.arange(wo, device=dev) * s - p
    acc = torch.zeros((n, co, ho, wo), dtype=torch.float32, device=dev)
    for ky in range(kh):
        for kx in range(kw):
            iy, ix = oy + ky * d, ox + kx * d
            valid = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < wd))[None]
            t = taps(xp, ky, kx)
            for i in range(cg):
                prod = t[:, first + i] * w[:, i, ky, kx].reshape(1, co, 1, 1)
                acc = torch.where(valid, acc + prod, acc)
    return acc + bias


def linear(x: torch.Tensor, w: torch.Tensor, b) -> torch.Tensor:
    """x (N, K) times w (Co, K) transposed, + b: acc = +0, acc = fma(x[k], w[o][k], acc) over
    k ascending, y = acc + b (the engine's Gemm)."""
    x, w = x.detach(), w.detach().to(torch.float32)
    co = w.shape[0]
    bias = torch.zeros(co, dtype=torch.float32, device=x.device) if b is None else b.detach().to(torch.float32)
    q = grain(x, w)
    if sums_exact(x, w, q):
        return ((x.to(torch.float64) @ w.to(torch.float64).T + 0.0).to(torch.float32)) + bias
    x64, w64 = x.to(torch.float64), w.to(torch.float64)
    chain = FmaChain((x.shape[0], co), q, x.device)
    for k in range(x.shape[1]):
        chain.step(x64[:, k:k + 1], w64[None, :, k])
    return chain.acc + bias


def _bn_params(bn, bn_scale: bool):
    """float64 (gamma, beta, mean, s = sqrt(float32(var + eps))) of a BatchNorm2d."""
    f64 = lambda t: t.detach().to(torch.float32).to(torch.float64)
    c = bn.running_mean.shape[0]
    dev = bn.running_mean.device
    gamma = f64(bn.weight) if bn_scale and bn.weight is not None else torch.ones(c, dtype=torch.float64, device=dev)
    beta = f64(bn.bias) if bn.bias is not None else torch.zeros(c, dtype=torch.float64, device=dev)
    v = bn.running_var.detach().to(torch.float32) + torch.tensor(bn.eps, dtype=torch.float32, device=dev)
    return gamma, beta, f64(bn.running_mean), torch.sqrt(v.to(torch.float64))


def batchnorm(x: torch.Tensor, bn, bn_scale: bool = True) -> torch.Tensor:
    """A BatchNorm not folded into a conv: x * scale + shift, two float32 roundings, with
    scale = g / s and shift = beta - mean * g / s computed in float64 and rounded once."""
    g, beta, m, s = _bn_params(bn, bn_scale)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale, shift = (g / s).to(torch.float32), (beta - m * g / s).to(torch.float32)
    return x.detach() * scale.reshape(shape) + shift.reshape(shape)


def fold_bn(w: torch.Tensor, b, bn, bn_scale: bool = True):
    """(w', b') of a conv with the BatchNorm reading only it folded in (the engine loader's
    fold): scale = g / s in float64, w' = float32(w * scale), b' = float32((b - mean) * scale
    + beta)."""
    g, beta, m, s = _bn_params(bn, bn_scale)
    scale = g / s
    b64 = torch.zeros_like(scale) if b is None else b.detach().to(torch.float32).to(torch.float64)
    wf = (w.detach().to(torch.float32).to(torch.float64) * scale.reshape(-1, 1, 1, 1)).to(torch.float32)
    return wf, ((b64 - m) * scale + beta).to(torch.float32)


def pool(x: torch.Tensor, kind: str, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Max / average pool (the average counts the padding): per output the taps inside the
    input in row-major window order, the first copied, then s > o ? s : o or a sum; an
    average is divided by kernel * kernel."""
    x = x.detach()
    n, c, h, w = x.shape
    k, s, p = kernel, stride, padding
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = F.pad(x, (p, p, p, p))
    dev = x.device
    oy, ox = torch.arange(ho, device=dev) * s - p, torch.arange(wo, device=dev) * s - p
    acc = torch.zeros((n, c, ho, wo), dtype=x.dtype, device=dev)
    have = torch.zeros((ho, wo), dtype=torch.bool, device=dev)
    for ky in range(k):
        for kx in range(k):
            valid = ((oy + ky >= 0) & (oy + ky < h))[:, None] & ((ox + kx >= 0) & (ox + kx < w))[None]
            t = xp[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]
            step = torch.where(t > acc, t, acc) if kind == "max" else acc + t
            acc = torch.where(valid & ~have, t, torch.where(valid, step, acc))
            have = have | valid
    if kind == "max":
        return acc
    return acc / torch.tensor(float(k * k), dtype=x.dtype, device=dev)


def global_pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Global average (pixels summed in row-major order, then / HW) or max (o < s ? s : o)."""
    n, c = x.shape[:2]
    v = x.detach().reshape(n, c, -1)
    acc = v[:, :, 0]
    for i in range(1, v.shape[2]):
        acc = torch.where(acc < v[:, :, i], v[:, :, i], acc) if kind == "max" else acc + v[:, :, i]
    if kind == "avg":
        acc = acc / torch.tensor(float(v.shape[2]), dtype=x.dtype, device=x.device)
    return acc.reshape(n, c, 1, 1)


def relu(x: torch.Tensor) -> torch.Tensor:
    """x < 0 ? 0 : x (-0 and NaN kept)."""
    x = x.detach()
    return torch.where(x < 0, torch.zeros_like(x), x)


def _engine_value(kind, layer, xs, args, bn, bn_scale):
    """The engine's value of one float step (see `deployed_float`)."""
    x = xs[0]
    if kind == "conv":
        w, b = layer.weight, layer.bias
        if bn is not None:
            w, b = fold_bn(w, b, bn, bn_scale)
        return conv2d(x, w, b, layer.stride[0], layer.padding[0], layer.dilation[0], layer.groups)
    if kind == "bconv":  # binary_input=false: a float conv with alpha * sign(W), alpha as lowered
        groups, dilation = (args[4], args[5]) if len(args) > 4 else (1, 1)
        wt = layer.weight.detach()
        w = deployed_alpha(wt).reshape(-1, 1, 1, 1) * sign(wt.to(torch.float32))
        b = None
        if bn is not None:
            w, b = fold_bn(w, None, bn, bn_scale)
        return conv2d(x, w, b, args[0], args[1], dilation, groups)
    if kind == "bn":
        return batchnorm(x, layer, bn_scale)
    if kind == "linear":
        return linear(torch.flatten(x, 1), layer.weight, layer.bias)
    if kind == "pool":
        pkind, kernel, stride, padding, global_ = args
        return global_pool(x, pkind) if global_ else pool(x, pkind, kernel, stride, padding)
    if kind == "act":
        return relu(x)
    if kind == "blurpool":
        k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float32, device=x.device)
        kernel = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
        return conv2d(x, kernel, None, args[0], 1, 1, x.shape[1])
    if kind == "Scale":  # the engine's per-channel affine map: x * s + 0 (-0 becomes +0)
        return x.detach() * layer.weight.detach().reshape((-1,) + (1,) * (x.dim() - 2)) + 0.0
    if kind == "WeightedJoin":  # x_i * w_i + 0 each (as Scale), then summed in input order
        w = layer.weight.detach() if layer is not None else torch.tensor(args[0], dtype=torch.float32, device=x.device)
        out = xs[0].detach() * w[0] + 0.0
        for i in range(1, len(xs)):
            out = out + (xs[i].detach() * w[i] + 0.0)
        return out
    if kind == "MaxJoin":  # std::max in input order: m < x ? x : m
        out = xs[0].detach()
        for v in xs[1:]:
            out = torch.where(out < v.detach(), v.detach(), out)
        return out
    raise ValueError(f"no deployed float arithmetic for step kind {kind!r}")


def _float_value(kind, layer, xs, args, bn, bn_scale):
    """The float path's value (train arithmetic, eval statistics), for the gradient."""
    x = xs[0]
    if kind in ("conv", "bconv"):
        y = layer(x) if kind == "conv" else binary_conv2d(x, layer.weight, *args[:4], "binary", *args[4:])
        if bn is not None:
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight if bn_scale else None, bn.bias,
                             False, 0.0, bn.eps)
        return y
    if kind == "bn":
        return layer(x) if bn_scale else batchnorm_noscale(layer, x)
    if kind == "linear":
        return layer(torch.flatten(x, 1))
    if kind == "pool":
        return pool2d(x, *args)
    if kind == "act":
        return activation(x, *args)
    if kind == "Scale":
        return channel_scale(x, layer)
    if kind == "WeightedJoin":
        return weighted_join(xs, layer.weight if layer is not None else args[0])
    if kind == "MaxJoin":
        return max_join(xs)
    return blur_pool(x, *args)


def deployed_float(kind: str, layer, xs, args, bn=None, bn_scale: bool = True) -> torch.Tensor:
    """A float step (kind conv, bconv with binary_input=false, bn, linear, pool, act relu,
    blurpool, Scale, WeightedJoin, MaxJoin; `args` its plan arguments; `bn`: the BatchNorm2d
    folded into a conv, or None) as the native engine computes it, for float32 inputs. With
    gradients enabled the value is this one and the gradient the float path's."""
    y = _engine_value(kind, layer, xs, args, bn, bn_scale)
    params = list(layer.parameters()) if layer is not None else []
    if bn is not None:
        params += list(bn.parameters())
    if torch.is_grad_enabled() and (any(v.requires_grad for v in xs) or any(p.requires_grad for p in params)):
        ref = _float_value(kind, layer, xs, args, bn, bn_scale)
        y = y + (ref - ref.detach())  # exactly y's value, the float path's gradient
    return y
