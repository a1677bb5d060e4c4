"""The float operators of lowered graphs, in numpy, on channels-last (NHWC) activations.

The executor keeps every 4-D float value NHWC, the layout the XNOR kernels read (PackBits) and
write (XnorConv float output), so no transpose is paid between binary layers. Each factory here
validates its (static) arguments and returns a closure ``f(*inputs) -> output`` that does no
checking at run time: the plan (`plan.py`) proved the shapes when the model was loaded.

Rounding: each op rounds like the torch backend and onnxruntime (one float32 rounding per
elementary operation, sums in input order), except BatchNormalization, computed as
``x * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` (what torch's CPU kernel does
too); the tests bound the difference by 1e-4 relative and count near-tie sign flips.
"""
from __future__ import annotations

import numpy as np


def add(n_inputs: int):
    if n_inputs == 2:
        return np.add

    def f(*xs):
        acc = np.add(xs[0], xs[1])
        for x in xs[2:]:
            np.add(acc, x, out=acc)
        return acc
    return f


def add_into(a, *rest):
    """In place into `a` (the plan only uses it where `a` is dead afterwards)."""
    for r in rest:
        np.add(a, r, out=a)
    return a


def div_const(c: np.ndarray):
    c = np.asarray(c, np.float32)
    return lambda x: np.divide(x, c)


def div_const_into(c: np.ndarray):
    c = np.asarray(c, np.float32)
    return lambda x: np.divide(x, c, out=x)


def relu(x):
    return np.maximum(x, np.float32(0))


def concat_channels(x, *rest):
    return np.concatenate((x,) + rest, axis=-1)


class DenseChain:
    """Concats that each extend the previous one's output (a dense block: x1 = [x0, y1],
    x2 = [x1, y2], ...) share one buffer as wide as the last: member k writes only its new
    channels and returns the channel prefix ``buf[..., :C_k]`` (a view), so a block costs one
    copy of each value instead of one copy of the whole stack per layer. Earlier prefixes stay
    valid, since channels are never rewritten; the plan keeps these views out of in-place ops
    and lets no prefix be extended twice. `width` is set by the plan as members are added.

    A new value may also come straight from a float binary conv (`convs[i]` not None: the
    member's input i is then the conv's packed input), which writes into the buffer slice."""

    def __init__(self):
        self.width = 0

    def head(self, c0: int, adds, convs):
        """The first member: allocates the buffer and copies its first input in."""
        def f(x, *rest, _c=self):
            if _c.width == c0 + sum(adds):  # a chain of one: a plain concat
                return np.concatenate((x,) + _c._values(rest, convs), axis=-1)
            buf = np.empty(x.shape[:-1] + (_c.width,), np.float32)
            buf[..., :c0] = x
            return _c._append(buf, c0, rest, adds, convs)
        return f

    def member(self, c_prev: int, adds, convs):
        """A later member: appends to the buffer behind its first input (or concatenates, when
        that input is not such a prefix view)."""
        def f(x, *rest, _c=self):
            b = x.base
            if not (isinstance(b, np.ndarray) and b.ndim == 4 and b.shape[:-1] == x.shape[:-1]
                    and b.shape[-1] == _c.width and x.shape[-1] == c_prev
                    and b.__array_interface__["data"][0] == x.__array_interface__["data"][0]):
                return np.concatenate((x,) + _c._values(rest, convs), axis=-1)
            return _c._append(b, c_prev, rest, adds, convs)
        return f

    @staticmethod
    def _values(rest, convs):
        return tuple(cv(r, check=False) if cv is not None else r for r, cv in zip(rest, convs))

    @staticmethod
    def _append(buf, c, rest, adds, convs):
        for r, n, cv in zip(rest, adds, convs):
            if cv is not None:
                cv(r, check=False, out=buf, out_offset=c)
            else:
                buf[..., c:c + n] = r
            c += n
        return buf[..., :c]


def bn_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, shift) with BN(x) = x * scale + shift (computed in float64, rounded once)."""
    g, b, m = (np.asarray(a, np.float64) for a in (gamma, beta, mean))
    # var + eps in float32 first, as torch and onnxruntime compute it
    s = np.sqrt(np.float32(np.asarray(var, np.float32) + np.float32(eps)).astype(np.float64))
    return (g / s).astype(np.float32), (b - m * g / s).astype(np.float32)


def batchnorm(gamma, beta, mean, var, eps: float):
    scale, shift = bn_affine(gamma, beta, mean, var, eps)

    def f(x):
        y = np.multiply(x, scale)
        np.add(y, shift, out=y)
        return y

    def f_into(x):
        np.multiply(x, scale, out=x)
        np.add(x, shift, out=x)
        return x
    f.into = f_into
    return f


def pool(kind: str, kernel, strides, pads):
    """Max or average pool with window == stride and no padding (others go to onnxruntime);
    average sums row by row then divides, like torch."""
    kh, kw = kernel
    assert tuple(strides) == (kh, kw) and not any(pads)

    def f(x):
        n, h, w, c = x.shape
        ho, wo = h // kh, w // kw
        v = x[:, :ho * kh, :wo * kw]
        acc = None
        for dy in range(kh):
            for dx in range(kw):
                s = v[:, dy::kh, dx::kw]
                if acc is None:
                    acc = s.copy()
                elif kind == "max":
                    np.maximum(acc, s, out=acc)
                else:
                    np.add(acc, s, out=acc)
        if kind == "avg":
            acc /= np.float32(kh * kw)
        return acc
    return f


def global_avg_pool(x):
    n, h, w, c = x.shape
    return (x.reshape(n, h * w, c).sum(axis=1, dtype=np.float32) / np.float32(h * w)).reshape(n, 1, 1, c)


def flatten_nhwc(x):
    """ONNX Flatten(axis=1) of the NCHW value whose NHWC storage is `x`."""
    n = x.shape[0]
    if x.shape[1] == 1 and x.shape[2] == 1:
        return x.reshape(n, -1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n, -1)
